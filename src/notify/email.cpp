// Notification emails: composing the RFC 5322 message a data manager reads, and handing it to
// an SMTP server with libcurl.
#include "notify/email.hpp"

#include "common/text.hpp"

#include <curl/curl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string_view>

#include "common/encoding.hpp"
#include "common/ids.hpp"

namespace repeaterd::notify {
namespace {

// ---------------------------------------------------------------------------------------------
// Text hygiene. Everything in an email comes from the config, the remote server or the
// payload, so none of it can be trusted to be valid UTF-8 or free of line breaks.

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one (overlong
// forms, surrogates and code points past U+10FFFF included).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  const auto b1 = static_cast<unsigned char>(s[i + 1]);
  if (b1 < lo || b1 > hi) return 0;
  for (std::size_t k = 2; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < 0x80 || b > 0xBF) return 0;
  }
  return len;
}

// Valid UTF-8 with "\n" line breaks: the body claims charset=UTF-8, and a remote that answers
// in Latin-1 or with stray control bytes must not make the email unreadable. With
// `single_line`, line breaks and tabs become spaces (names, ids, subjects).
std::string clean_text(std::string_view s, bool single_line) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t len = utf8_sequence_length(s, i);
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (len > 1) {
      out.append(s.substr(i, len));
      i += len;
      continue;
    }
    const char c = s[i++];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i < s.size() && s[i] == '\n') ++i;  // CRLF is one break
      out += single_line ? ' ' : '\n';
    } else if (c == '\t') {
      out += single_line ? ' ' : '\t';
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
      // Escape sequences and NULs help no reader and can confuse terminal mail clients.
      out += kReplacement;
    } else {
      out += c;
    }
  }
  return out;
}

std::string one_line(std::string_view s) { return clean_text(s, true); }

// Collapses runs of whitespace and trims, for one-line summaries and header words.
std::string squeeze_spaces(std::string_view s) {
  std::string out;
  bool pending_space = false;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    out += c;
  }
  return out;
}

// The config's connection URL has no userinfo by contract; this is the second line of defence
// for spec §8 (secrets never appear in emails), since an email leaves the machine.
std::string without_userinfo(std::string_view url) {
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const std::size_t host_start = scheme_end + 3;
  std::size_t authority_end = url.find_first_of("/?#", host_start);
  if (authority_end == std::string_view::npos) authority_end = url.size();
  const std::size_t at = url.substr(host_start, authority_end - host_start).rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  return std::string(url.substr(0, host_start)) + std::string(url.substr(host_start + at + 1));
}

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

constexpr std::size_t kMaxListed = 20;
constexpr std::size_t kSummaryErrorPoints = 300;
// A single email quotes the error in full, but the sender already caps response bodies; this
// only bounds what a misbehaving caller could put in one email.
constexpr std::size_t kDetailErrorPoints = 16 * 1024;
constexpr std::size_t kWrapColumn = 72;

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

std::string id_label(std::string_view payload_type) {
  if (payload_type.empty()) return "Payload id";
  std::string label = one_line(payload_type);
  if (label[0] >= 'a' && label[0] <= 'z') label[0] = static_cast<char>(label[0] - 'a' + 'A');
  return label + " id";
}

std::string payload_words(const Event& e) {
  return squeeze_spaces(one_line(e.payload_type) + " " + one_line(e.payload_id));
}

std::string next_retry_text(const Event& e) {
  if (e.kind == Event::Kind::cancelled) return "cancelled";
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
  out += wrap("repeaterd sends at most one email per connection in each smtp.throttle window; what happens in "
              "between is summarised in the next email.");
  return out;
}

std::string resend_hint() {
  return wrap("Cancelled records are not retried. Their payloads and every attempt stay in the queue "
              "database until storage.retention has passed, so the data can be sent again once the cause is "
              "fixed.");
}

std::string detail_body(const Message& m, const Event& e) {
  const std::string connection = one_line(m.connection);
  std::string out;
  if (e.kind == Event::Kind::failed) {
    out += wrap("A record could not be forwarded to " + connection + " and will be retried.");
  } else {
    out += wrap("A record for " + connection + " was cancelled and will not be retried.");
  }
  out += "\n";
  auto field = [&out](std::string_view label, std::string_view value) {
    std::string line(label);
    line += ':';
    line.resize(std::max<std::size_t>(line.size() + 1, 16), ' ');
    out += line;
    out += value;
    out += '\n';
  };
  field("Project space", one_line(e.domain));
  field("URL", one_line(without_userinfo(m.url)));
  field(id_label(e.payload_type), one_line(e.payload_id));
  field("Record id", one_line(e.record_id));
  field("Repeater", one_line(e.repeater));
  field("Attempt", std::to_string(e.attempt));
  field(e.kind == Event::Kind::failed ? "Failed at" : "Cancelled at", format_iso8601(e.at));
  field("Next retry", next_retry_text(e));
  if (e.http_status) field("HTTP status", std::to_string(*e.http_status));
  out += "\nThe error, as reported:\n\n";
  out += quote_block(e.error);
  out += "\n";
  if (e.kind == Event::Kind::cancelled) {
    out += resend_hint();
    out += "\n";
  }
  out += stop_section(m);
  return out;
}

std::string summary_body(const Message& m, const std::vector<const Event*>& records, std::size_t failed,
                         std::size_t cancelled) {
  const std::string connection = one_line(m.connection);
  std::string out;
  out += wrap("repeaterd had trouble forwarding records to " + connection + ": " + std::to_string(failed) +
              " failed (will be retried), " + std::to_string(cancelled) + " cancelled (will not be retried).");
  out += "\n";
  std::set<std::string> domains;
  for (const Event* e : records) domains.insert(one_line(e->domain));
  std::string domain_list;
  for (const auto& d : domains) domain_list += (domain_list.empty() ? "" : ", ") + d;
  out += "Project space: " + domain_list + "\n";
  out += "URL:           " + one_line(without_userinfo(m.url)) + "\n\n";

  // Cancelled records first: they are the ones that need someone to act.
  std::vector<const Event*> listed = records;
  std::stable_partition(listed.begin(), listed.end(),
                        [](const Event* e) { return e->kind == Event::Kind::cancelled; });
  out += "Records:\n\n";
  const std::size_t shown = std::min(listed.size(), kMaxListed);
  for (std::size_t i = 0; i < shown; ++i) {
    const Event& e = *listed[i];
    out += std::to_string(i + 1) + ". Record " + one_line(e.record_id) + ": " + payload_words(e) +
           " (project space " + one_line(e.domain) + ", repeater " + one_line(e.repeater) + ")\n";
    if (e.kind == Event::Kind::failed) {
      out += "   failed, attempt " + std::to_string(e.attempt) + ", next retry " + next_retry_text(e) + "\n";
    } else {
      out += "   cancelled, attempt " + std::to_string(e.attempt) + "\n";
    }
    std::string error = squeeze_spaces(one_line(e.error));
    if (error.empty()) error = "(no error text was recorded)";
    out += "   Error: " + shorten(error, kSummaryErrorPoints) + "\n";
  }
  if (listed.size() > shown) {
    out += "\nand " + std::to_string(listed.size() - shown) +
           " more (the queue database's records table lists every one).\n";
  }
  out += "\n";
  if (cancelled > 0) {
    out += resend_hint();
    out += "\n";
  }
  out += stop_section(m);
  return out;
}

// The newest event of each record, in the order of those newest events: a record that failed
// and was then cancelled within one throttle window is one cancelled record, not two.
std::vector<const Event*> latest_per_record(const std::vector<Event>& events) {
  std::map<std::string, std::size_t> latest;
  std::vector<std::string> keys;
  keys.reserve(events.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    keys.push_back(e.record_id.empty() ? "#" + std::to_string(e.id) : e.record_id);
    latest[keys.back()] = i;
  }
  std::vector<const Event*> out;
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (latest[keys[i]] == i) out.push_back(&events[i]);
  }
  return out;
}

}  // namespace

std::string compose(const Message& m) {
  const std::vector<const Event*> records = latest_per_record(m.events);
  const std::string connection = one_line(m.connection);
  std::string subject;
  std::string body;
  if (records.size() == 1) {
    const Event& e = *records.front();
    if (e.kind == Event::Kind::failed) {
      subject = "[repeaterd] forwarding to " + connection + " failed: " + one_line(e.domain) + " " + payload_words(e);
    } else {
      subject = "[repeaterd] record cancelled for " + connection + ": " + one_line(e.domain) + " " + payload_words(e);
    }
    body = detail_body(m, e);
  } else {
    const auto cancelled = static_cast<std::size_t>(std::count_if(
        records.begin(), records.end(), [](const Event* e) { return e->kind == Event::Kind::cancelled; }));
    const std::size_t failed = records.size() - cancelled;
    subject = "[repeaterd] " + connection + ": " + std::to_string(failed) + " failed, " + std::to_string(cancelled) +
              " cancelled";
    body = summary_body(m, records, failed, cancelled);
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

// =============================================================================================
// SMTP.

namespace {

std::string_view ascii_prefix_lower(std::string_view s, std::string& buf, std::size_t n) {
  buf.assign(s.substr(0, n));
  for (char& c : buf) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return buf;
}

// The address inside "<...>" when the config gave "Name <addr>", else the trimmed text. CR, LF
// and NUL would let an address smuggle SMTP commands; such an address is refused.
Result<std::string> envelope_address(std::string_view text) {
  std::string_view a = text;
  if (const auto open = a.find('<'); open != std::string_view::npos) {
    const auto close = a.find('>', open);
    if (close == std::string_view::npos) return make_error("malformed address \"" + one_line(text) + "\"");
    a = a.substr(open + 1, close - open - 1);
  }
  while (!a.empty() && (a.front() == ' ' || a.front() == '\t')) a.remove_prefix(1);
  while (!a.empty() && (a.back() == ' ' || a.back() == '\t')) a.remove_suffix(1);
  if (a.empty()) return make_error("empty address");
  if (a.find_first_of(std::string_view("\r\n\0<>", 5)) != std::string_view::npos) {
    return make_error("malformed address \"" + one_line(text) + "\"");
  }
  return "<" + std::string(a) + ">";
}

struct Upload {
  std::string_view data;
  std::size_t pos = 0;
};

std::size_t read_message(char* buffer, std::size_t size, std::size_t nitems, void* userp) {
  auto* up = static_cast<Upload*>(userp);
  const std::size_t n = std::min(size * nitems, up->data.size() - up->pos);
  std::memcpy(buffer, up->data.data() + up->pos, n);
  up->pos += n;
  return n;
}

// Keeps the server's latest error reply, so a failure can say what the server said ("535 5.7.8
// Authentication credentials invalid") rather than the "221 Bye" that follows it. Only
// CURLINFO_HEADER_IN is read: HEADER_OUT holds our own commands, AUTH credentials among them.
int on_debug(CURL* /*handle*/, curl_infotype type, char* data, std::size_t size, void* userp) {
  if (type != CURLINFO_HEADER_IN) return 0;
  std::string_view chunk(data, size);
  while (!chunk.empty()) {
    const std::size_t eol = chunk.find('\n');
    std::string_view line = chunk.substr(0, eol);
    chunk.remove_prefix(eol == std::string_view::npos ? chunk.size() : eol + 1);
    while (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool error_reply = line.size() >= 3 && (line[0] == '4' || line[0] == '5') &&
                             line[1] >= '0' && line[1] <= '9' && line[2] >= '0' && line[2] <= '9';
    constexpr std::size_t kMaxReply = 300;
    if (error_reply) *static_cast<std::string*>(userp) = shorten(one_line(line), kMaxReply);
  }
  return 0;
}

Status global_init() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (result != CURLE_OK) return make_error(std::string("libcurl initialisation failed: ") + curl_easy_strerror(result));
  return Ok{};
}

void replace_all(std::string& s, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (std::size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + with.size())) {
    s.replace(pos, what.size(), with);
  }
}

}  // namespace

namespace {

int on_progress(void* cancel, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const SmtpCancel*>(cancel)->cancelled() ? 1 : 0;
}

curl_socket_t on_open_socket(void* cancel, curlsocktype, curl_sockaddr* address) {
  const curl_socket_t fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  if (fd != CURL_SOCKET_BAD) static_cast<SmtpCancel*>(cancel)->attach(fd);
  return fd;
}

int on_close_socket(void* cancel, curl_socket_t fd) {
  static_cast<SmtpCancel*>(cancel)->detach(fd);
  return ::close(fd);
}

}  // namespace

void SmtpCancel::cancel() {
  cancelled_ = true;
  std::lock_guard lock(mu_);
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

void SmtpCancel::attach(int fd) {
  std::lock_guard lock(mu_);
  fd_ = fd;
  if (cancelled_) ::shutdown(fd_, SHUT_RDWR);
}

void SmtpCancel::detach(int fd) {
  std::lock_guard lock(mu_);
  if (fd_ == fd) fd_ = -1;
}

Status send_mail(const SmtpSettings& smtp, const std::string& from, const std::vector<std::string>& to,
                 const std::string& message) {
  const std::string shown_url = one_line(without_userinfo(smtp.url));
  // Every message leaves through here, so this is where the password is kept out of errors,
  // whatever libcurl or the server chose to echo.
  auto fail = [&](std::string text) -> Status {
    std::string out = "SMTP " + shown_url + ": " + std::move(text);
    replace_all(out, smtp.password, "[redacted]");
    return make_error(std::move(out));
  };

  std::string scheme_buf;
  const std::string_view scheme = ascii_prefix_lower(smtp.url, scheme_buf, 8);
  const bool smtps = scheme.substr(0, 8) == "smtps://";
  if (!smtps && scheme.substr(0, 7) != "smtp://") return fail("the URL must start with smtp:// or smtps://");
  if (to.empty()) return fail("no recipients");

  auto mail_from = envelope_address(from);
  if (!mail_from) return fail("sender: " + mail_from.error().message);

  if (auto init = global_init(); !init) return fail(init.error().message);

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) return fail("cannot create a libcurl handle");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> rcpts(nullptr, &curl_slist_free_all);
  for (const auto& address : to) {
    auto rcpt = envelope_address(address);
    if (!rcpt) return fail("recipient: " + rcpt.error().message);
    curl_slist* grown = curl_slist_append(rcpts.get(), rcpt->c_str());
    if (grown == nullptr) return fail("out of memory");
    (void)rcpts.release();  // `grown` now owns the list, including the old head
    rcpts.reset(grown);
  }

  Upload upload{message, 0};
  std::string last_error_reply;
  std::array<char, CURL_ERROR_SIZE> errbuf{};
  CURL* h = curl.get();
  CURLcode rc = CURLE_OK;
  // Stops at the first option libcurl refuses, so a failure names the option, not the transfer.
  auto set = [&](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, option, value);
  };
  set(CURLOPT_URL, smtp.url.c_str());
  set(CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  set(CURLOPT_NOSIGNAL, 1L);  // libcurl must not use SIGALRM for DNS timeouts in a threaded daemon
  set(CURLOPT_ERRORBUFFER, errbuf.data());
  set(CURLOPT_MAIL_FROM, mail_from->c_str());
  set(CURLOPT_MAIL_RCPT, rcpts.get());
  // One mistyped address must not keep the whole list from being told; the transfer still fails
  // when every recipient is refused.
  set(CURLOPT_MAIL_RCPT_ALLLOWFAILS, 1L);
  set(CURLOPT_UPLOAD, 1L);
  set(CURLOPT_READFUNCTION, &read_message);
  set(CURLOPT_READDATA, &upload);
  set(CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
  set(CURLOPT_USE_SSL, static_cast<long>(smtp.starttls_required || smtps ? CURLUSESSL_ALL : CURLUSESSL_TRY));
  if (!smtp.username.empty()) {
    set(CURLOPT_USERNAME, smtp.username.c_str());
    set(CURLOPT_PASSWORD, smtp.password.c_str());
  }
  // Debian's libcurl keeps its built-in CA path (/etc/ssl/certs) when CAINFO is replaced, so the
  // system store stays trusted next to ca_file.
  if (!smtp.ca_file.empty()) set(CURLOPT_CAINFO, smtp.ca_file.c_str());
  if (!smtp.tls_verify) {
    set(CURLOPT_SSL_VERIFYPEER, 0L);
    set(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(smtp.connect_timeout.count()));
  set(CURLOPT_TIMEOUT_MS, static_cast<long>(smtp.timeout.count()));
  // Without it, closing the handle sends QUIT and waits for the answer forever when a server
  // went silent; with it every reply, QUIT's too, is bounded.
  set(CURLOPT_SERVER_RESPONSE_TIMEOUT, static_cast<long>(std::max<long>(
      1, static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(smtp.timeout).count()))));
  if (smtp.cancel != nullptr) {
    // Shutting down: abandon the send at once; the email stays in the outbox for next time.
    set(CURLOPT_NOPROGRESS, 0L);
    set(CURLOPT_XFERINFOFUNCTION, &on_progress);
    set(CURLOPT_XFERINFODATA, smtp.cancel);
    set(CURLOPT_OPENSOCKETFUNCTION, &on_open_socket);
    set(CURLOPT_OPENSOCKETDATA, smtp.cancel);
    set(CURLOPT_CLOSESOCKETFUNCTION, &on_close_socket);
    set(CURLOPT_CLOSESOCKETDATA, smtp.cancel);
  }
  set(CURLOPT_DEBUGFUNCTION, &on_debug);
  set(CURLOPT_DEBUGDATA, &last_error_reply);
  set(CURLOPT_VERBOSE, 1L);  // only so that on_debug sees the replies; nothing is printed
  if (rc != CURLE_OK) return fail(std::string("cannot configure libcurl: ") + curl_easy_strerror(rc));

  rc = curl_easy_perform(h);
  if (rc == CURLE_OK) return Ok{};

  std::string text = errbuf[0] != '\0' ? std::string(errbuf.data()) : std::string(curl_easy_strerror(rc));
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  // A reply code of 400 or more means the server refused something; after a local failure (a
  // refused certificate, a timeout) there is no verdict of the server's to quote.
  if (code >= 400) {
    text += " (server said: " + (last_error_reply.empty() ? std::to_string(code) : last_error_reply) + ")";
  }
  return fail(std::move(text));
}

}  // namespace repeaterd::notify
