#include "cli/ctl_format.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <utility>

namespace repeaterd::ctl {
namespace {

using json = Json;

constexpr std::string_view kHexDigits = "0123456789ABCDEF";

void append_hex_escape(std::string& out, unsigned char byte) {
  out += "\\x";
  out += kHexDigits[byte >> 4];
  out += kHexDigits[byte & 0x0F];
}

// Decodes the UTF-8 sequence at s[i]: its length, and its code point in `cp`; 0 when the bytes
// there are not valid UTF-8 (overlong forms, surrogates, past U+10FFFF, cut short).
std::size_t decode_utf8(std::string_view s, std::size_t i, std::uint32_t& cp) {
  const auto lead = static_cast<unsigned char>(s[i]);
  std::size_t len = 0;
  std::uint32_t min = 0;
  if (lead < 0x80) {
    cp = lead;
    return 1;
  }
  if ((lead & 0xE0) == 0xC0) {
    len = 2, min = 0x80, cp = lead & 0x1Fu;
  } else if ((lead & 0xF0) == 0xE0) {
    len = 3, min = 0x800, cp = lead & 0x0Fu;
  } else if ((lead & 0xF8) == 0xF0) {
    len = 4, min = 0x10000, cp = lead & 0x07u;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

// A field of a JSON object as text for a table cell or a key/value line: "-" for missing and
// null, strings terminal-safe on one line, numbers as JSON writes them, booleans as yes/no.
std::string text(const json& j, std::string_view key) {
  if (!j.is_object()) return "-";
  const auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return "-";
  if (it->is_string()) return terminal_safe(it->get_ref<const std::string&>(), true);
  if (it->is_boolean()) return it->get<bool>() ? "yes" : "no";
  return terminal_safe(it->dump(-1, ' ', false, json::error_handler_t::replace), true);
}

const json& member(const json& j, std::string_view key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(std::string(key));
  return it == j.end() ? kNull : *it;
}

bool flag(const json& j, std::string_view key) {
  const json& v = member(j, key);
  return v.is_boolean() && v.get<bool>();
}

const json& array_of(const json& j, std::string_view key) {
  static const json kEmpty = json::array();
  const json& v = member(j, key);
  return v.is_array() ? v : kEmpty;
}

// "no", or who paused it: the config file, an operator, or both.
std::string paused_text(const json& r) {
  if (!flag(r, "paused")) return "no";
  const bool config = flag(r, "paused_in_config");
  const bool op = flag(r, "paused_by_operator");
  if (config && op) return "config, operator";
  if (config) return "config";
  if (op) return "operator";
  return "yes";
}

// A repeater's name, marked when it is gone from the config but still has records.
std::string repeater_name(const json& r) {
  std::string name = text(r, "name");
  const json& configured = member(r, "configured");
  if (configured.is_boolean() && !configured.get<bool>()) name += " (not in config)";
  return name;
}

std::string past_tense(std::string_view action) {
  if (action == "resend") return "resent";
  if (action == "cancel") return "cancelled";
  if (action == "requeue") return "requeued";
  if (action == "pause") return "paused";
  if (action == "resume") return "resumed";
  return std::string(action) + "ed";
}

// Key/value lines: the key padded so values line up; a multi-line value continues under it.
class Block {
 public:
  explicit Block(std::string& out, std::size_t key_width, std::string indent = {})
      : out_(out), width_(key_width), indent_(std::move(indent)) {}

  void line(std::string_view key, std::string_view value) {
    out_ += indent_;
    out_ += key;
    out_.append(width_ > key.size() ? width_ - key.size() : 1, ' ');
    for (std::size_t start = 0;;) {
      const std::size_t end = value.find('\n', start);
      out_ += value.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
      out_ += '\n';
      if (end == std::string_view::npos) break;
      start = end + 1;
      out_ += indent_;
      out_.append(width_, ' ');
    }
  }

 private:
  std::string& out_;
  std::size_t width_;
  std::string indent_;
};

// Headers as "Name: value" lines, whether the API gives an object or a list of pairs.
std::vector<std::string> header_lines(const json& headers) {
  std::vector<std::string> lines;
  const auto add = [&](const json& name, const json& value) {
    const auto show = [](const json& v) {
      return v.is_string() ? terminal_safe(v.get_ref<const std::string&>(), true)
                           : terminal_safe(v.dump(-1, ' ', false, json::error_handler_t::replace), true);
    };
    lines.push_back(show(name) + ": " + show(value));
  };
  if (headers.is_object()) {
    for (const auto& [name, value] : headers.items()) add(json(name), value);
  } else if (headers.is_array()) {
    for (const auto& pair : headers) {
      if (pair.is_array() && pair.size() == 2) add(pair[0], pair[1]);
    }
  }
  return lines;
}

std::string size_text(const json& j, std::string_view key) {
  const json& v = member(j, key);
  if (!v.is_number()) return "-";
  return v.dump() + " bytes";
}

// "HTTP 503", with the reason phrase for the statuses the admin API uses.
std::string status_text(long status) {
  static constexpr std::pair<long, std::string_view> kReasons[] = {
      {400, "Bad Request"}, {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"},
      {405, "Method Not Allowed"}, {409, "Conflict"}, {413, "Content Too Large"},
      {431, "Request Header Fields Too Large"}, {500, "Internal Server Error"},
      {502, "Bad Gateway"}, {503, "Service Unavailable"}, {504, "Gateway Timeout"}};
  std::string out = "HTTP " + std::to_string(status);
  for (const auto& [code, reason] : kReasons) {
    if (code == status) out += " " + std::string(reason);
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------


bool RecordFilter::empty() const {
  return repeaters.empty() && states.empty() && connection.empty() && domain.empty() && payload_id.empty() &&
         case_id.empty() && created_after.empty() && created_before.empty() && error_contains.empty();
}

std::string record_query(const RecordFilter& filter, int limit, std::string_view after, bool dry_run) {
  std::string q;
  const auto add = [&q](std::string_view name, std::string_view value) {
    if (!q.empty()) q += '&';
    q += name;
    q += '=';
    q += percent_encode(value);
  };
  const auto add_if = [&add](std::string_view name, std::string_view value) {
    if (!value.empty()) add(name, value);
  };
  for (const auto& r : filter.repeaters) add("repeater", r);
  add_if("connection", filter.connection);
  for (const auto& s : filter.states) add("state", s);
  add_if("domain", filter.domain);
  add_if("payload_id", filter.payload_id);
  add_if("case_id", filter.case_id);
  add_if("created_after", filter.created_after);
  add_if("created_before", filter.created_before);
  add_if("error_contains", filter.error_contains);
  if (limit > 0) add("limit", std::to_string(limit));
  add_if("after", after);
  if (dry_run) add("dry_run", "true");
  return q;
}

std::string with_query(std::string path, std::string_view query) {
  if (!query.empty()) {
    path += '?';
    path += query;
  }
  return path;
}

// ---------------------------------------------------------------------------------------------

std::string terminal_safe(std::string_view s, bool one_line) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    std::uint32_t cp = 0;
    const std::size_t len = decode_utf8(s, i, cp);
    if (len == 0) {
      append_hex_escape(out, static_cast<unsigned char>(s[i]));
      ++i;
      continue;
    }
    if (cp == '\t' || cp == '\n' || cp == '\r') {
      if (one_line) out += ' ';
      else if (cp == '\r') out += "\\r";  // a bare CR would overwrite the line on a terminal
      else out += static_cast<char>(cp);
    } else if (cp < 0x20 || cp == 0x7F) {
      append_hex_escape(out, static_cast<unsigned char>(cp));
    } else if (cp >= 0x80 && cp <= 0x9F) {
      // C1 controls: some terminals read U+009B as CSI even in UTF-8 mode.
      for (std::size_t k = 0; k < len; ++k) append_hex_escape(out, static_cast<unsigned char>(s[i + k]));
    } else {
      out.append(s.substr(i, len));
    }
    i += len;
  }
  return out;
}

std::string format_age(double seconds) {
  if (!(seconds > 0)) return "0s";
  const auto total = static_cast<std::uint64_t>(std::min(seconds, 1e15));
  char buf[48];
  if (total < 60) {
    std::snprintf(buf, sizeof buf, "%llus", static_cast<unsigned long long>(total));
  } else if (total < 3600) {
    std::snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(total / 60),
                  static_cast<unsigned long long>(total % 60));
  } else if (total < 86400) {
    std::snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(total / 3600),
                  static_cast<unsigned long long>(total % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llud%02lluh", static_cast<unsigned long long>(total / 86400),
                  static_cast<unsigned long long>(total % 86400 / 3600));
  }
  return buf;
}

std::string format_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths(headers.size(), 0);
  const auto measure = [&widths](const std::vector<std::string>& row) {
    for (std::size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], display_width(row[c]));
    }
  };
  measure(headers);
  for (const auto& row : rows) measure(row);

  std::string out;
  const auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t c = 0; c < widths.size(); ++c) {
      const std::string& cell = c < row.size() ? row[c] : std::string();
      line += cell;
      if (c + 1 < widths.size()) line.append(widths[c] - display_width(cell) + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  emit(headers);
  for (const auto& row : rows) emit(row);
  return out;
}

std::string pretty_json(const json& j) {
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string MergedRecordsJson::begin() const { return "{\n  \"records\": ["; }

std::string MergedRecordsJson::add(const json& record) {
  std::string out = empty_ ? "\n    " : ",\n    ";
  empty_ = false;
  for (const char c : record.dump(2, ' ', false, json::error_handler_t::replace)) {
    out += c;
    if (c == '\n') out += "    ";
  }
  return out;
}

std::string MergedRecordsJson::end() const { return std::string(empty_ ? "" : "\n  ") + "],\n  \"next\": null\n}\n"; }

// ---------------------------------------------------------------------------------------------

std::string format_status(const json& status) {
  std::string out = "repeaterd " + text(status, "version");
  const json& uptime = member(status, "uptime_seconds");
  if (uptime.is_number()) out += ", up " + format_age(uptime.get<double>());
  if (member(status, "started_at").is_string()) out += " (since " + text(status, "started_at") + ")";
  const json& config = member(status, "config");
  if (member(config, "path").is_string()) out += ", config " + text(config, "path");
  out += "\n\n";

  const json& repeaters = array_of(status, "repeaters");
  if (repeaters.empty()) return out + "no repeaters\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : repeaters) {
    const json& counts = member(r, "counts");
    const json& age = member(r, "oldest_due_age_seconds");
    rows.push_back({repeater_name(r), text(r, "connection"), text(counts, "pending"), text(counts, "failed"),
                    text(counts, "succeeded"), text(counts, "cancelled"),
                    age.is_number() ? format_age(age.get<double>()) : "-", text(r, "in_flight"), paused_text(r)});
  }
  out += format_table({"REPEATER", "CONNECTION", "PENDING", "FAILED", "SUCCEEDED", "CANCELLED", "OLDEST DUE",
                       "IN FLIGHT", "PAUSED"},
                      rows);
  bool heading = false;
  for (const auto& r : repeaters) {
    const json& err = member(r, "last_error");
    if (!err.is_object()) continue;
    if (!heading) out += "\nlast errors since start:\n";
    heading = true;
    out += "  " + text(r, "name") + " at " + text(err, "at") + " (record " + text(err, "record_id") +
           "): " + truncate(text(err, "error"), 200) + "\n";
  }
  // Connections whose circuit is not closed: nothing of theirs goes out but probes.
  for (const auto& c : array_of(status, "connections")) {
    const json& circuit = member(c, "circuit");
    const std::string state = text(circuit, "state");
    if (!circuit.is_object() || state == "closed") continue;
    out += "\ncircuit " + state + ": " + text(c, "name") + " since " + text(circuit, "opened_at");
    if (member(circuit, "next_probe_at").is_string()) out += ", next probe at " + text(circuit, "next_probe_at");
    out += "\n";
  }
  return out;
}

std::string format_repeaters(const json& repeaters) {
  const json& list = array_of(repeaters, "repeaters");
  if (list.empty()) return "no repeaters\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : list) {
    rows.push_back({repeater_name(r), text(r, "type"), text(r, "connection"), text(r, "domain"), text(r, "format"),
                    paused_text(r), text(r, "paused_at")});
  }
  return format_table({"NAME", "TYPE", "CONNECTION", "DOMAIN", "FORMAT", "PAUSED", "PAUSED AT"}, rows);
}

const std::vector<std::string>& record_headers() {
  static const std::vector<std::string> kHeaders{"ID", "REPEATER", "STATE", "ATTEMPTS", "CREATED", "NEXT", "REASON"};
  return kHeaders;
}

std::string or_dash(std::string s) { return s.empty() ? "-" : s; }

std::vector<std::string> record_row(const json& record) {
  std::string reason = text(record, "reason");
  const std::string next = flag(record, "in_flight") ? "in flight" : text(record, "next_attempt_at");
  return {text(record, "id"),       text(record, "repeater"),   text(record, "state"),
          text(record, "attempts"), text(record, "created_at"), next,
          truncate(reason, kReasonWidth)};
}

std::string format_records(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return "no records match\n";
  return format_table(record_headers(), rows);
}

std::string shell_quote(std::string_view s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') ||
           std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
  });
  if (plain) return std::string(s);
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::string next_page_hint(const std::vector<std::string>& args, std::string_view next) {
  std::string out = "next page: repeaterctl";
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--after") {
      ++i;  // and its value
      continue;
    }
    if (args[i].starts_with("--after=")) continue;
    out += ' ';
    out += terminal_safe(shell_quote(args[i]), true);
  }
  out += " --after " + terminal_safe(shell_quote(next), true);
  return out + "   (--all prints every page)\n";
}

std::string format_record_detail(const json& detail) {
  std::string out;
  const json& r = member(detail, "record");
  Block block(out, 10);
  block.line("record", text(r, "id"));
  block.line("repeater", text(r, "repeater") + " (connection " + text(r, "connection") + ")");
  std::string state = text(r, "state") + ", " + text(r, "attempts") + " attempt(s)";
  if (flag(r, "in_flight")) state += ", an attempt is in flight";
  block.line("state", state);
  block.line("next", text(r, "next_attempt_at"));
  block.line("created", text(r, "created_at"));
  block.line("updated", text(r, "updated_at"));
  block.line("reason", text(r, "reason"));

  const json& p = member(detail, "payload");
  if (p.is_object()) {
    block.line("payload", text(p, "payload_type") + " " + text(p, "payload_id") + " in domain " + text(p, "domain") +
                              "\nxmlns " + or_dash(text(p, "xmlns")) + ", app " + or_dash(text(p, "app_id")) +
                              ", case " + or_dash(text(r, "case_id")) + "\n" + text(p, "content_type") + ", " + size_text(p, "size") +
                              ", sha256 " + text(p, "sha256") + "\nreceived " + text(p, "received_on"));
  }
  const json& q = member(detail, "request");
  if (q.is_object()) {
    std::string request = text(q, "method") + " " + text(q, "url") + "\n" + text(q, "content_type") + ", " +
                          size_text(q, "size");
    const json& query = member(q, "query");
    if (!query.is_null() && !(query.is_string() && query.get_ref<const std::string&>().empty()) &&
        !(query.is_object() && query.empty())) {
      request += "\nquery " + text(q, "query");
    }
    for (const auto& h : header_lines(member(q, "headers"))) request += "\n" + h;
    block.line("request", request);
  }

  const json& attempts = array_of(detail, "attempts");
  if (attempts.empty()) out += "\nno attempts yet\n";
  for (const auto& a : attempts) {
    out += "\nattempt " + text(a, "number") + "  " + text(a, "started_at") + "  " + text(a, "duration_ms") +
           " ms  " + text(a, "outcome");
    if (member(a, "http_status").is_number()) out += "  HTTP " + text(a, "http_status");
    out += '\n';
    Block ab(out, 12, "  ");
    if (!member(a, "error").is_null()) ab.line("error", text(a, "error"));
    if (!member(a, "request_id").is_null()) ab.line("request id", text(a, "request_id"));
    const auto headers = header_lines(member(a, "response_headers"));
    if (!headers.empty()) {
      std::string joined;
      for (const auto& h : headers) joined += (joined.empty() ? "" : "\n") + h;
      ab.line("headers", joined);
    }
    const json& body = member(a, "response_body");
    const json& size = member(a, "response_size");
    if (body.is_string() && !body.get_ref<const std::string&>().empty()) {
      std::string excerpt = terminal_safe(body.get_ref<const std::string&>(), false);
      while (!excerpt.empty() && excerpt.back() == '\n') excerpt.pop_back();
      std::string shown = "| ";
      for (const char c : excerpt) shown += c == '\n' ? std::string("\n| ") : std::string(1, c);
      const bool cut = size.is_number() && size.get<double>() > 4096;
      ab.line(cut ? "body (cut)" : "body", shown);
    }
    if (size.is_number()) ab.line("body size", size_text(a, "response_size"));
  }
  return out;
}

std::string format_record_action(std::string_view action, const json& answer) {
  const json& r = member(answer, "record");
  std::string out = past_tense(action) + " " + text(r, "id") + ": now " + text(r, "state");
  if (member(r, "next_attempt_at").is_string()) out += ", next attempt " + text(r, "next_attempt_at");
  if (action == "cancel" && member(r, "reason").is_string()) out += " (" + text(r, "reason") + ")";
  return out + "\n";
}

std::string format_bulk_action(const json& answer) {
  const std::string action = text(answer, "action");
  if (flag(answer, "dry_run")) {
    return "would " + action + " " + text(answer, "matched") + " record(s) (dry run: nothing changed)\n";
  }
  return past_tense(action) + " " + text(answer, "changed") + " record(s)\n";
}

std::string format_repeater_action(std::string_view action, const json& answer) {
  const json& r = member(answer, "repeater");
  std::string out = past_tense(action) + " " + text(r, "name");
  if (action == "pause") out += ": no new attempts until it is resumed; attempts in flight finish";
  else if (action == "resume") out += ": its due records are sent again from now";
  return out + "\n";
}

std::string api_error_message(long status, std::string_view body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_object() && member(j, "error").is_string()) {
    std::string msg = text(j, "error");
    if (member(j, "parameter").is_string()) msg += " (parameter " + text(j, "parameter") + ")";
    return msg;
  }
  std::string out = status_text(status);
  std::string_view first = body.substr(0, body.find('\n'));
  if (!first.empty()) out += ": " + truncate(terminal_safe(first, true), 200);
  return out;
}

}  // namespace repeaterd::ctl
