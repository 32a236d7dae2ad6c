#include "notify/compose.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <map>
#include <set>
#include <string_view>
#include <utility>

#include "common/encoding.hpp"
#include "common/ids.hpp"
#include "common/text.hpp"
#include "notify/mail_text.hpp"

namespace repeaterd::notify {
namespace {

// ---------------------------------------------------------------------------------------------
// Header encoding.

constexpr std::size_t kHeaderLineLimit = 78;  // RFC 5322 §2.1.1 SHOULD

bool is_plain_header_text(std::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7E) return false;
  }
  // A literal "=?" could be taken for an encoded-word by the reader's mail client.
  return s.find("=?") == std::string_view::npos;
}

// "Name: w1 w2 ..." folded before a word whenever the line would pass 78 characters. Unfolding
// (removing the CRLFs) gives back the words separated by single spaces.
std::string fold_words(std::string_view name, const std::vector<std::string>& words) {
  std::string out(name);
  out += ':';
  std::size_t line_len = out.size();
  bool first = true;
  for (const auto& w : words) {
    if (!first && line_len + 1 + w.size() > kHeaderLineLimit) {
      out += "\r\n";
      line_len = 0;
    }
    out += ' ';
    out += w;
    line_len += 1 + w.size();
    first = false;
  }
  out += "\r\n";
  return out;
}

std::vector<std::string> split_words(std::string_view s) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    const std::size_t start = i;
    while (i < s.size() && s[i] != ' ') ++i;
    if (i > start) words.emplace_back(s.substr(start, i - start));
  }
  return words;
}

// An unstructured header (Subject). ASCII stays readable; anything else becomes RFC 2047
// encoded-words, each holding whole UTF-8 characters (§5 forbids splitting one) and short
// enough that every line, the first included, stays within 78 characters.
std::string unstructured_header(std::string_view name, std::string_view value) {
  const std::string text = squeeze_spaces(one_line(value));
  constexpr std::size_t kMaxPlainWord = 70;
  const auto words = split_words(text);
  const bool plain = is_plain_header_text(text) &&
                     std::all_of(words.begin(), words.end(), [](const std::string& w) { return w.size() <= kMaxPlainWord; });
  if (plain) return fold_words(name, words);

  // "=?UTF-8?B?" + base64 + "?=": 42 bytes are 56 base64 characters, a 68-character word, which
  // fits after "Subject: " and is under the 75 that §2 allows.
  constexpr std::size_t kChunkBytes = 42;
  std::vector<std::string> encoded;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t end = i;
    while (end < text.size()) {
      std::size_t len = utf8_sequence_length(text, end);
      if (len == 0) len = 1;  // cannot happen after clean_text; never loop forever
      if (end + len - i > kChunkBytes) break;
      end += len;
    }
    encoded.push_back("=?UTF-8?B?" + base64_encode(std::string_view(text).substr(i, end - i)) + "?=");
    i = end;
  }
  return fold_words(name, encoded);
}

// Header fields that must stay on one line and hold no line breaks (a CR or LF in an address
// from the config would otherwise inject headers).
std::string address_text(std::string_view s) { return squeeze_spaces(one_line(s)); }

std::string address_list_header(std::string_view name, const std::vector<std::string>& addresses) {
  std::vector<std::string> words;
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    auto parts = split_words(address_text(addresses[i]));
    if (parts.empty()) continue;
    if (i + 1 < addresses.size()) parts.back() += ',';
    for (auto& p : parts) words.push_back(std::move(p));
  }
  if (!words.empty() && words.back().back() == ',') words.back().pop_back();
  return fold_words(name, words);
}

// RFC 5322 §3.3 date-time in UTC: "Mon, 23 Nov 2026 15:41:58 +0000".
std::string rfc5322_date(Micros t) {
  static constexpr std::array<std::string_view, 7> kDays{"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
  static constexpr std::array<std::string_view, 12> kMonths{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  constexpr Micros kMicrosPerDay = 86'400'000'000;
  Micros day = t / kMicrosPerDay;
  if (t % kMicrosPerDay < 0) --day;
  const auto weekday = static_cast<std::size_t>(((day % 7) + 7) % 7);  // 1970-01-01 was a Thursday
  // Reuse format_iso8601's calendar maths: "YYYY-MM-DDTHH:MM:SS.ffffffZ".
  const std::string iso = format_iso8601(t);
  const std::size_t tpos = iso.find('T');
  const std::string year = iso.substr(0, tpos - 6);
  const int month = std::stoi(iso.substr(tpos - 5, 2));
  const std::string dd = iso.substr(tpos - 2, 2);
  const std::string hms = iso.substr(tpos + 1, 8);
  return std::string(kDays[weekday]) + ", " + dd + " " + std::string(kMonths[static_cast<std::size_t>(month - 1)]) +
         " " + year + " " + hms + " +0000";
}

std::string message_id(std::string_view domain) {
  std::string host;
  for (char c : domain) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-') host += c;
  }
  if (host.empty()) host = "repeaterd.local";
  return "<" + uuid_v4() + "@" + host + ">";
}

// ---------------------------------------------------------------------------------------------
// Quoted-printable (RFC 2045 §6.7): the body may hold long error lines and any UTF-8, and QP
// keeps every line under 76 characters while leaving ASCII readable in the raw message.

std::string hex_escape(unsigned char c) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  return {'=', kHex[c >> 4], kHex[c & 0xF]};
}

std::string quoted_printable(std::string_view text) {
  constexpr std::size_t kMaxLine = 75;  // plus the "=" of a soft break: 76
  std::string out;
  std::size_t line_start = 0;
  while (line_start <= text.size()) {
    std::size_t line_end = text.find('\n', line_start);
    const bool last = line_end == std::string_view::npos;
    if (last) line_end = text.size();
    const std::string_view line = text.substr(line_start, line_end - line_start);
    std::string phys;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const auto c = static_cast<unsigned char>(line[i]);
      auto encode = [&](bool at_phys_start) {
        const bool at_line_end = i + 1 == line.size();
        if (c == '=' || c > 126 || (c < 32 && c != ' ' && c != '\t')) return hex_escape(c);
        if ((c == ' ' || c == '\t') && at_line_end) return hex_escape(c);  // §6.7 (3): no trailing white space
        // A lone "." ends SMTP DATA and "From " at a line start gets mangled by mbox tools;
        // escaping them makes the message survive any transport.
        if (at_phys_start && (c == '.' || (c == 'F' && line.substr(i, 5) == "From "))) return hex_escape(c);
        return std::string(1, static_cast<char>(c));
      };
      std::string token = encode(phys.empty());
      if (phys.size() + token.size() > kMaxLine) {
        out += phys;
        out += "=\r\n";
        phys.clear();
        token = encode(true);
      }
      phys += token;
    }
    out += phys;
    if (last) break;
    out += "\r\n";
    line_start = line_end + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Body text.

using Notification = store::Notification;
using Kind = Notification::Kind;

constexpr std::size_t kMaxListed = 20;
constexpr std::size_t kSummaryErrorPoints = 300;
// A single email quotes the error in full, but the sender already caps response bodies; this
// only bounds what a misbehaving caller could put in one email.
constexpr std::size_t kDetailErrorPoints = 16 * 1024;
constexpr std::size_t kWrapColumn = 72;

bool is_circuit(const Notification& e) { return e.kind == Kind::circuit_opened || e.kind == Kind::circuit_closed; }

// Word-wraps a paragraph of prose for mail clients that do not reflow plain text.
std::string wrap(std::string_view paragraph) {
  std::string out;
  std::size_t col = 0;
  for (const auto& w : split_words(squeeze_spaces(paragraph))) {
    const std::size_t len = code_points(w);
    if (col > 0 && col + 1 + len > kWrapColumn) {
      out += '\n';
      col = 0;
    } else if (col > 0) {
      out += ' ';
      ++col;
    }
    out += w;
    col += len;
  }
  return out + "\n";
}

// A detailed email's "Label:" padded to 16 columns, then the value.
void add_field(std::string& out, std::string_view label, std::string_view value) {
  std::string line(label);
  line += ':';
  line.resize(std::max<std::size_t>(line.size() + 1, 16), ' ');
  out += line;
  out += value;
  out += '\n';
}

std::string shown_url(const Message& m) { return one_line(without_userinfo(m.url)); }

std::string id_label(std::string_view payload_type) {
  if (payload_type.empty()) return "Payload id";
  std::string label = one_line(payload_type);
  if (label[0] >= 'a' && label[0] <= 'z') label[0] = static_cast<char>(label[0] - 'a' + 'A');
  return label + " id";
}

std::string payload_words(const Notification& e) {
  return squeeze_spaces(one_line(e.payload_type) + " " + one_line(e.payload_id));
}

std::string next_retry_text(const Notification& e) {
  if (e.kind == Kind::cancelled) return "cancelled";
  if (e.next_attempt_at) return format_iso8601(*e.next_attempt_at);
  return "not scheduled";
}

// The error on its own indented lines, so it reads as a quotation of the remote's words.
std::string quote_block(std::string_view error) {
  const std::string text = shorten(clean_text(error, false), kDetailErrorPoints);
  if (squeeze_spaces(text).empty()) return "    (no error text was recorded)\n";
  std::string out;
  std::size_t start = 0;
  std::string_view t = text;
  while (!t.empty() && t.back() == '\n') t.remove_suffix(1);
  while (start <= t.size()) {
    std::size_t end = t.find('\n', start);
    if (end == std::string_view::npos) end = t.size();
    out += "    ";
    out += t.substr(start, end - start);
    out += '\n';
    start = end + 1;
  }
  return out;
}

// The error on one line, cut to a summary's length.
std::string short_error(std::string_view error) {
  std::string text = squeeze_spaces(one_line(error));
  if (text.empty()) return "(no error text was recorded)";
  return shorten(text, kSummaryErrorPoints);
}

std::string config_file_name(const Message& m) {
  return m.config_file.empty() ? std::string("the repeaterd configuration file") : one_line(m.config_file);
}

std::string stop_section(const Message& m) {
  std::string out = "How to stop these emails\n------------------------\n";
  out += wrap("You get these emails because your address is listed in connections[].notify for the connection \"" +
              one_line(m.connection) + "\" in " + config_file_name(m) +
              ". To stop them, remove your address from that list and restart repeaterd "
              "(systemctl restart repeaterd).");
  out += "\n";
  out += wrap("repeaterd sends at most one email per connection in each smtp.throttle window (a circuit opening "
              "or closing is emailed at once); what happens in between is summarised in the next email.");
  return out;
}

std::string resend_hint() {
  return wrap("Cancelled records are not retried. Their payloads and every attempt stay in the queue "
              "database until storage.retention has passed, so the data can be sent again once the cause is "
              "fixed.");
}

// -- circuit changes

std::string records_waiting(std::int64_t n) {
  return std::to_string(n) + (n == 1 ? " record" : " records") + " waiting";
}

// What an open circuit means for the records: said wherever an email reports one open.
std::string open_circuit_hint() {
  return wrap("While the circuit is open, no record is attempted except one probe at a time, and no record's "
              "attempt budget is used: nothing is cancelled because of the outage. When a probe succeeds, the "
              "circuit closes, you get an email saying so and the records that waited are sent.");
}

std::string closed_circuit_hint() {
  return wrap("The records that waited are being released at a rising rate, so that the receiver is not "
              "flooded as it recovers.");
}

// The subject's words for a circuit change.
std::string circuit_headline(const Message& m, const Notification& e) {
  return e.kind == Kind::circuit_opened ? "circuit opened — " + shown_url(m) + " is failing"
                                        : "circuit closed — " + shown_url(m) + " is answering again";
}

// A circuit change on one line, for summaries.
std::string circuit_line(const Notification& e) {
  std::string out;
  if (e.kind == Kind::circuit_opened) {
    out = "Circuit opened at " + format_iso8601(e.at) + " after " + std::to_string(e.attempt) +
          " consecutive failures; first probe " +
          (e.next_attempt_at ? format_iso8601(*e.next_attempt_at) : std::string("not scheduled"));
    if (e.backlog) out += "; " + records_waiting(*e.backlog);
    out += ". Last error: " + short_error(e.error);
  } else {
    out = "Circuit closed at " + format_iso8601(e.at);
    if (e.outage_ms) out += " after an outage of " + human_duration(*e.outage_ms);
    if (e.backlog) out += "; " + records_waiting(*e.backlog) + ", being released at a rising rate";
    out += ".";
  }
  return out;
}

std::string circuit_detail_body(const Message& m, const Notification& e) {
  const std::string connection = one_line(m.connection);
  std::string out;
  if (e.kind == Kind::circuit_opened) {
    out += wrap("The circuit for " + connection + " opened after " + std::to_string(e.attempt) +
                " consecutive failures: " + shown_url(m) +
                " is failing, so repeaterd holds the connection's records back until it answers again.");
    out += "\n";
    add_field(out, "Connection", connection);
    add_field(out, "URL", shown_url(m));
    add_field(out, "Failures", std::to_string(e.attempt) + " in a row");
    add_field(out, "Opened at", format_iso8601(e.at));
    add_field(out, "First probe", e.next_attempt_at ? format_iso8601(*e.next_attempt_at) : "not scheduled");
    if (e.backlog) add_field(out, "Backlog", records_waiting(*e.backlog));
    if (e.http_status) add_field(out, "HTTP status", std::to_string(*e.http_status));
    out += "\nThe last error, as reported:\n\n";
    out += quote_block(e.error);
    out += "\n";
    out += open_circuit_hint();
  } else {
    out += wrap("The circuit for " + connection + " closed: " + shown_url(m) + " is answering again.");
    out += "\n";
    add_field(out, "Connection", connection);
    add_field(out, "URL", shown_url(m));
    add_field(out, "Closed at", format_iso8601(e.at));
    if (e.outage_ms) add_field(out, "Outage", human_duration(*e.outage_ms));
    if (e.backlog) add_field(out, "Backlog", records_waiting(*e.backlog));
    out += "\n";
    out += closed_circuit_hint();
  }
  out += "\n";
  out += stop_section(m);
  return out;
}

// -- records

std::string detail_body(const Message& m, const Notification& e) {
  const std::string connection = one_line(m.connection);
  std::string out;
  if (e.kind == Kind::failed) {
    out += wrap("A record could not be forwarded to " + connection + " and will be retried.");
  } else {
    out += wrap("A record for " + connection + " was cancelled and will not be retried.");
  }
  out += "\n";
  add_field(out, "Project space", one_line(e.domain));
  add_field(out, "URL", shown_url(m));
  add_field(out, id_label(e.payload_type), one_line(e.payload_id));
  add_field(out, "Record id", one_line(e.record_id));
  add_field(out, "Repeater", one_line(e.repeater));
  add_field(out, "Attempt", std::to_string(e.attempt));
  add_field(out, e.kind == Kind::failed ? "Failed at" : "Cancelled at", format_iso8601(e.at));
  add_field(out, "Next retry", next_retry_text(e));
  if (e.http_status) add_field(out, "HTTP status", std::to_string(*e.http_status));
  out += "\nThe error, as reported:\n\n";
  out += quote_block(e.error);
  out += "\n";
  if (e.kind == Kind::cancelled) {
    out += resend_hint();
    out += "\n";
  }
  out += stop_section(m);
  return out;
}

// What a summary holds: circuit changes in the order they happened, then the records (the
// newest event of each).
struct SummaryParts {
  std::vector<const Notification*> circuits;
  std::vector<const Notification*> records;
  std::size_t failed = 0;
  std::size_t cancelled = 0;
};

SummaryParts split_summary(const std::vector<const Notification*>& events) {
  SummaryParts parts;
  for (const Notification* e : events) {
    if (is_circuit(*e)) {
      parts.circuits.push_back(e);
    } else {
      parts.records.push_back(e);
      ++(e->kind == Kind::cancelled ? parts.cancelled : parts.failed);
    }
  }
  return parts;
}

std::string summary_body(const Message& m, const SummaryParts& parts) {
  const std::string connection = one_line(m.connection);
  std::string out;
  // The circuit's state now is what its newest change says.
  const Notification* circuit = parts.circuits.empty() ? nullptr : parts.circuits.back();
  if (circuit != nullptr) {
    out += wrap(circuit->kind == Kind::circuit_opened
                    ? "The circuit for " + connection + " is open: " + shown_url(m) + " is failing."
                    : "The circuit for " + connection + " closed: " + shown_url(m) + " is answering again.");
    if (!parts.records.empty()) out += "\n";
  }
  if (!parts.records.empty()) {
    out += wrap("repeaterd had trouble forwarding records to " + connection + ": " + std::to_string(parts.failed) +
                " failed (will be retried), " + std::to_string(parts.cancelled) + " cancelled (will not be retried).");
  }
  out += "\n";
  if (!parts.records.empty()) {
    std::set<std::string> domains;
    for (const Notification* e : parts.records) domains.insert(one_line(e->domain));
    std::string domain_list;
    for (const auto& d : domains) domain_list += (domain_list.empty() ? "" : ", ") + d;
    out += "Project space: " + domain_list + "\n";
  }
  out += "URL:           " + shown_url(m) + "\n\n";

  if (circuit != nullptr) {
    out += "Circuit:\n\n";
    for (const Notification* e : parts.circuits) out += "- " + circuit_line(*e) + "\n";
    out += "\n";
    out += circuit->kind == Kind::circuit_opened ? open_circuit_hint() : closed_circuit_hint();
    out += "\n";
  }

  if (!parts.records.empty()) {
    // Cancelled records first: they are the ones that need someone to act.
    std::vector<const Notification*> listed = parts.records;
    std::stable_partition(listed.begin(), listed.end(), [](const Notification* e) { return e->kind == Kind::cancelled; });
    out += "Records:\n\n";
    const std::size_t shown = std::min(listed.size(), kMaxListed);
    for (std::size_t i = 0; i < shown; ++i) {
      const Notification& e = *listed[i];
      out += std::to_string(i + 1) + ". Record " + one_line(e.record_id) + ": " + payload_words(e) +
             " (project space " + one_line(e.domain) + ", repeater " + one_line(e.repeater) + ")\n";
      if (e.kind == Kind::failed) {
        out += "   failed, attempt " + std::to_string(e.attempt) + ", next retry " + next_retry_text(e) + "\n";
      } else {
        out += "   cancelled, attempt " + std::to_string(e.attempt) + "\n";
      }
      out += "   Error: " + short_error(e.error) + "\n";
    }
    if (listed.size() > shown) {
      out += "\nand " + std::to_string(listed.size() - shown) +
             " more (the queue database's records table lists every one).\n";
    }
    out += "\n";
  }
  if (parts.cancelled > 0) {
    out += resend_hint();
    out += "\n";
  }
  out += stop_section(m);
  return out;
}

// The newest event of each record, in the order of those newest events: a record that failed
// and was then cancelled within one throttle window is one cancelled record, not two. Circuit
// changes have no record: each stands for itself.
std::vector<const Notification*> latest_per_record(const std::vector<Notification>& events) {
  std::map<std::string, std::size_t> latest;
  std::vector<std::string> keys;
  keys.reserve(events.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    const Notification& e = events[i];
    keys.push_back(e.record_id.empty() ? "#" + std::to_string(e.id) : e.record_id);
    latest[keys.back()] = i;
  }
  std::vector<const Notification*> out;
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (latest[keys[i]] == i) out.push_back(&events[i]);
  }
  return out;
}

std::string subject_of(const Message& m, const std::vector<const Notification*>& events) {
  const std::string prefix = "[repeaterd] ";
  const std::string connection = one_line(m.connection);
  if (events.size() == 1) {
    const Notification& e = *events.front();
    switch (e.kind) {
      case Kind::failed:
        return prefix + "forwarding to " + connection + " failed: " + one_line(e.domain) + " " + payload_words(e);
      case Kind::cancelled:
        return prefix + "record cancelled for " + connection + ": " + one_line(e.domain) + " " + payload_words(e);
      case Kind::circuit_opened:
      case Kind::circuit_closed:
        return prefix + connection + ": " + circuit_headline(m, e);
    }
  }
  const SummaryParts parts = split_summary(events);
  std::string subject = prefix + connection + ": ";
  if (!parts.circuits.empty()) {
    subject += circuit_headline(m, *parts.circuits.back());
    if (parts.records.empty()) return subject;
    subject += "; ";
  }
  return subject + std::to_string(parts.failed) + " failed, " + std::to_string(parts.cancelled) + " cancelled";
}

}  // namespace

std::string human_duration(std::int64_t ms) {
  if (ms < 1000) return std::to_string(std::max<std::int64_t>(ms, 0)) + " ms";
  // Whole seconds: past a second, the milliseconds of an outage tell a reader nothing.
  std::int64_t left = ms / 1000;
  static constexpr std::array<std::pair<std::int64_t, std::string_view>, 4> kUnits{
      {{86'400, "d"}, {3'600, "h"}, {60, "min"}, {1, "s"}}};
  std::string out;
  for (const auto& [size, unit] : kUnits) {
    if (left < size) continue;
    if (!out.empty()) out += ' ';
    out += std::to_string(left / size) + " " + std::string(unit);
    left %= size;
  }
  return out;
}

std::string compose(const Message& m) {
  const std::vector<const Notification*> events = latest_per_record(m.events);
  const std::string subject = subject_of(m, events);
  std::string body;
  if (events.size() == 1) {
    const Notification& e = *events.front();
    body = is_circuit(e) ? circuit_detail_body(m, e) : detail_body(m, e);
  } else {
    body = summary_body(m, split_summary(events));
  }

  std::string out;
  out += "Date: " + rfc5322_date(m.now) + "\r\n";
  out += "Message-ID: " + message_id(m.message_id_domain) + "\r\n";
  out += fold_words("From", split_words(address_text(m.from)));
  out += address_list_header("To", m.to);
  out += unstructured_header("Subject", subject);
  out += "MIME-Version: 1.0\r\n";
  out += "Content-Type: text/plain; charset=UTF-8\r\n";
  out += "Content-Transfer-Encoding: quoted-printable\r\n";
  out += "Auto-Submitted: auto-generated\r\n";  // RFC 3834: vacation responders stay quiet
  out += "\r\n";
  out += quoted_printable(body);
  return out;
}

}  // namespace repeaterd::notify
