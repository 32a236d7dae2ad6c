// ingest/multipart: splitting multipart/form-data bodies (RFC 7578 over RFC 2046). See
// multipart.hpp.
#include "ingest/multipart.hpp"
#include "common/text.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <utility>

namespace repeaterd::ingest {
namespace {

constexpr std::string_view kSpaceTab = " \t";

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

std::string part_label(std::size_t n) { return "part " + std::to_string(n); }

// Header parameters: `; name=value` pairs where value is a token or a quoted-string with
// backslash escapes (RFC 9110 §5.6.6). Names are matched case-insensitively by the callers.
struct Param {
  std::string name;
  std::string value;
};

struct ParsedHeaderValue {
  std::string main;  // the part before the first ';' (media type or disposition type)
  std::vector<Param> params;
};

Result<ParsedHeaderValue> parse_header_value(std::string_view v) {
  ParsedHeaderValue out;
  std::size_t i = v.find(';');
  out.main = std::string(trim(v.substr(0, i)));
  while (i != std::string_view::npos && i < v.size()) {
    ++i;  // past ';'
    while (i < v.size() && kSpaceTab.find(v[i]) != std::string_view::npos) ++i;
    if (i >= v.size()) break;  // a trailing ';' is harmless
    const auto eq = v.find('=', i);
    const auto semi = v.find(';', i);
    if (eq == std::string_view::npos || (semi != std::string_view::npos && semi < eq)) {
      const std::string_view bare = trim(v.substr(i, semi == std::string_view::npos
                                                          ? std::string_view::npos
                                                          : semi - i));
      if (!bare.empty()) return make_error("parameter \"" + std::string(bare) + "\" has no value");
      i = semi;
      continue;
    }
    Param p;
    p.name = std::string(trim(v.substr(i, eq - i)));
    i = eq + 1;
    while (i < v.size() && kSpaceTab.find(v[i]) != std::string_view::npos) ++i;
    if (i < v.size() && v[i] == '"') {
      ++i;
      bool closed = false;
      while (i < v.size()) {
        const char c = v[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\' && i < v.size()) {
          p.value += v[i++];
        } else {
          p.value += c;
        }
      }
      if (!closed) return make_error("parameter \"" + p.name + "\" has an unterminated quoted value");
      i = v.find(';', i);  // anything between the closing quote and ';' is ignored
    } else {
      const auto end = v.find(';', i);
      p.value = std::string(trim(v.substr(i, end == std::string_view::npos ? end : end - i)));
      i = end;
    }
    out.params.push_back(std::move(p));
  }
  return out;
}

const std::string* find_param(const ParsedHeaderValue& h, std::string_view name) {
  for (const Param& p : h.params) {
    if (iequals(p.name, name)) return &p.value;
  }
  return nullptr;
}

Result<std::string> boundary_from(std::string_view content_type) {
  auto parsed = parse_header_value(content_type);
  if (!parsed) return make_error("Content-Type: " + parsed.error().message);
  if (!iequals(parsed->main, "multipart/form-data")) {
    return make_error("Content-Type is \"" + parsed->main + "\", not multipart/form-data");
  }
  const std::string* boundary = find_param(*parsed, "boundary");
  if (boundary == nullptr) return make_error("no boundary parameter in Content-Type");
  // RFC 2046 §5.1.1: 1 to 70 characters, not ending in a space.
  if (boundary->empty() || boundary->size() > 70 || boundary->back() == ' ') {
    return make_error("the boundary parameter must be 1 to 70 characters, not ending in a space");
  }
  return *boundary;
}

// Where a line ending starts at `pos`: its length (2 for CRLF, 1 for a bare LF), or 0.
std::size_t eol_at(std::string_view s, std::size_t pos) {
  if (pos < s.size() && s[pos] == '\n') return 1;
  if (pos + 1 < s.size() && s[pos] == '\r' && s[pos + 1] == '\n') return 2;
  return 0;
}

struct Delimiter {
  std::size_t start;  // where "--boundary" begins
  std::size_t next;   // first byte after the delimiter line (or after "--" when closing)
  bool closing;
  bool crlf;          // the delimiter line ended in CRLF (meaningless when closing)
};

// Checks whether "--boundary" at `start` is a real delimiter: it must be followed by "--"
// (the close) or by optional padding and a line ending. Anything else is content that merely
// starts like the boundary.
std::optional<Delimiter> delimiter_at(std::string_view body, std::size_t start,
                                      std::size_t dash_boundary_size) {
  std::size_t i = start + dash_boundary_size;
  if (body.compare(i, 2, "--") == 0) return Delimiter{start, i + 2, true, false};
  while (i < body.size() && kSpaceTab.find(body[i]) != std::string_view::npos) ++i;
  const std::size_t eol = eol_at(body, i);
  if (eol == 0) return std::nullopt;
  return Delimiter{start, i + eol, false, eol == 2};
}

// The next delimiter line at or after `from`, which must start a line: preceded by '\n', or
// at the very start of the body (no preamble).
std::optional<Delimiter> find_delimiter(std::string_view body, std::string_view dash_boundary,
                                        std::size_t from) {
  if (from == 0 && body.starts_with(dash_boundary)) {
    if (auto d = delimiter_at(body, 0, dash_boundary.size())) return d;
  }
  std::size_t search = from;
  while (true) {
    const auto nl = body.find(dash_boundary, search);
    if (nl == std::string_view::npos) return std::nullopt;
    if (nl > 0 && body[nl - 1] == '\n') {
      if (auto d = delimiter_at(body, nl, dash_boundary.size())) return d;
    }
    search = nl + 1;
  }
}

// Parses a part's header block (without the blank line that ends it) into `part`.
Status parse_part_headers(std::string_view headers, std::size_t number, Part& part) {
  // Unfold obsolete continuation lines (RFC 5322 §2.2.3) while splitting into fields.
  std::vector<std::string> fields;
  std::size_t i = 0;
  while (i < headers.size()) {
    auto end = headers.find('\n', i);
    if (end == std::string_view::npos) end = headers.size();
    std::string_view line = headers.substr(i, end - i);
    if (line.ends_with('\r')) line.remove_suffix(1);
    i = end + 1;
    if (!line.empty() && kSpaceTab.find(line.front()) != std::string_view::npos &&
        !fields.empty()) {
      fields.back() += ' ';
      fields.back() += trim(line);
    } else {
      fields.emplace_back(line);
    }
  }

  bool have_disposition = false;
  for (const std::string& field : fields) {
    const auto colon = field.find(':');
    if (colon == std::string::npos || colon == 0) {
      return make_error(part_label(number) + " has a header line without a name and ':' (\"" +
                        field.substr(0, 60) + "\")");
    }
    const std::string_view name = trim(std::string_view(field).substr(0, colon));
    const std::string_view value = trim(std::string_view(field).substr(colon + 1));
    if (iequals(name, "Content-Disposition")) {
      auto parsed = parse_header_value(value);
      if (!parsed) {
        return make_error(part_label(number) + " Content-Disposition: " + parsed.error().message);
      }
      if (!iequals(parsed->main, "form-data")) {
        return make_error(part_label(number) + " has Content-Disposition \"" + parsed->main +
                          "\"; multipart/form-data parts must be form-data");
      }
      const std::string* part_name = find_param(*parsed, "name");
      if (part_name == nullptr || part_name->empty()) {
        return make_error(part_label(number) + " has no Content-Disposition name");
      }
      part.name = *part_name;
      if (const std::string* filename = find_param(*parsed, "filename")) part.filename = *filename;
      have_disposition = true;
    } else if (iequals(name, "Content-Type")) {
      part.content_type = std::string(value);
    }
    // Other headers (Content-Transfer-Encoding is deprecated by RFC 7578) are ignored.
  }
  if (!have_disposition) return make_error(part_label(number) + " has no Content-Disposition header");
  return Ok{};
}

}  // namespace

Result<std::vector<Part>> parse_multipart(std::string_view content_type, std::string_view body) {
  auto boundary = boundary_from(content_type);
  if (!boundary) return boundary.error();
  const std::string dash_boundary = "--" + *boundary;

  auto delim = find_delimiter(body, dash_boundary, 0);
  if (!delim) {
    return make_error("the body has no boundary line \"" + dash_boundary +
                      "\"; does the Content-Type boundary match the body?");
  }
  if (delim->closing) return make_error("the body has no parts before its closing boundary");
  // Clients either follow RFC 2046 (CRLF everywhere) or use bare LF throughout; the first
  // delimiter line says which, so a part ending in '\r' keeps it in an LF-only body.
  const bool crlf = delim->crlf;

  std::vector<Part> parts;
  for (std::size_t number = 1;; ++number) {
    if (number > kMaxParts) {
      return make_error("the body has more than " + std::to_string(kMaxParts) +
                        " parts; a submission is its form and its media files, far fewer");
    }
    const std::size_t part_start = delim->next;
    // Search from the line ending that precedes the next delimiter: an empty part's ending
    // is shared with the delimiter line before it.
    const std::size_t search_from = part_start - (crlf ? 2 : 1);
    auto next = find_delimiter(body, dash_boundary, search_from);
    if (!next) {
      return make_error(part_label(number) + ": the body ends before the closing boundary \"" +
                        dash_boundary + "--\"");
    }
    // The line ending before the delimiter belongs to the delimiter, not to the content.
    std::size_t part_end = next->start - 1;
    if (crlf && part_end > 0 && body[part_end - 1] == '\r') --part_end;
    const std::string_view region =
        part_end > part_start ? body.substr(part_start, part_end - part_start) : std::string_view{};

    // Headers end at the first empty line; a part with no headers starts with it.
    std::size_t headers_end = 0;
    std::size_t body_start = 0;
    if (const std::size_t eol = eol_at(region, 0); eol != 0) {
      body_start = eol;
    } else {
      bool found = false;
      for (auto nl = region.find('\n'); nl != std::string_view::npos;
           nl = region.find('\n', nl + 1)) {
        if (const std::size_t eol2 = eol_at(region, nl + 1); eol2 != 0) {
          headers_end = nl + 1;
          body_start = nl + 1 + eol2;
          found = true;
          break;
        }
      }
      if (!found && region.ends_with('\n')) {
        // RFC 2046 lets a body-part be headers alone: their last line ending is followed
        // directly by the delimiter's, so the part is empty.
        headers_end = body_start = region.size();
        found = true;
      }
      if (!found) {
        return make_error(part_label(number) +
                          " has no empty line after its headers; the body must follow one");
      }
    }

    Part part;
    if (Status s = parse_part_headers(region.substr(0, headers_end), number, part); !s) {
      return s.error();
    }
    part.body.assign(region.substr(body_start));
    parts.push_back(std::move(part));

    if (next->closing) break;  // the epilogue after the close is ignored
    delim = next;
  }
  return parts;
}

}  // namespace repeaterd::ingest
