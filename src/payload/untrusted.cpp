#include "payload/untrusted.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <string>

#include "common/text.hpp"
#include "common/text_position.hpp"

namespace repeaterd::payload {
namespace {

std::string at(std::string_view text, std::size_t offset) { return to_string(text_position(text, offset)); }

// Offset of the first byte that does not start a valid UTF-8 sequence, or npos. Every
// submission passes here, and most of it is ASCII: eight bytes at a time skip it.
std::size_t first_invalid_utf8(std::string_view s) {
  constexpr std::uint64_t kHighBits = 0x8080808080808080ull;
  for (std::size_t i = 0; i < s.size();) {
    if (i + 8 <= s.size()) {
      std::uint64_t word;
      std::memcpy(&word, s.data() + i, 8);
      if ((word & kHighBits) == 0) {
        i += 8;
        continue;
      }
    }
    const std::size_t len = utf8_sequence_length(s, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

bool is_number_char(char c) { return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'; }

std::string nesting_error(std::string_view what, std::string_view text, std::size_t offset) {
  return std::string(what) + " nests deeper than " + std::to_string(kMaxNesting) + " levels at " + at(text, offset) +
         "; no form or case needs that many";
}

// The body is to be read as UTF-8: no byte-order mark of UTF-16/32 and no declaration of another
// encoding (pugixml converts Latin-1 and UTF-16/32 documents itself).
bool declared_utf8(const pugi::xml_document& doc, std::string_view body) {
  if (body.size() >= 2 && ((body[0] == '\xFE' && body[1] == '\xFF') || (body[0] == '\xFF' && body[1] == '\xFE'))) {
    return false;
  }
  for (pugi::xml_node n = doc.first_child(); n; n = n.next_sibling()) {
    if (n.type() != pugi::node_declaration) continue;
    std::string encoding = n.attribute("encoding").value();
    std::transform(encoding.begin(), encoding.end(), encoding.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return encoding.empty() || encoding == "utf-8" || encoding == "utf8";
  }
  return true;
}

// Where the node's markup starts: pugixml's offset_debug() is its name's (or a DOCTYPE's
// value's) offset, past the '<'.
std::size_t tag_start(std::string_view body, const pugi::xml_node& n) {
  const auto offset = static_cast<std::size_t>(std::max<std::ptrdiff_t>(n.offset_debug(), 0));
  const std::size_t lt = body.rfind('<', offset);
  return lt == std::string_view::npos ? offset : lt;
}

}  // namespace

Status load_untrusted_xml(pugi::xml_document& doc, std::string_view body, unsigned extra_flags) {
  const unsigned flags = pugi::parse_default | pugi::parse_declaration | pugi::parse_doctype | extra_flags;
  const auto parsed = doc.load_buffer(body.data(), body.size(), flags, pugi::encoding_auto);
  if (!parsed) {
    // pugixml reports a byte offset; people want line and column.
    return make_error("malformed XML at " + at(body, static_cast<std::size_t>(std::max<std::ptrdiff_t>(parsed.offset, 0))) +
                      ": " + parsed.description());
  }
  if (declared_utf8(doc, body)) {
    if (const std::size_t bad = first_invalid_utf8(body); bad != std::string_view::npos) {
      return make_error("the XML is not valid UTF-8 at " + at(body, bad) +
                        ": send it as UTF-8, or declare its encoding (<?xml version=\"1.0\" encoding=\"...\"?>)");
    }
  }
  for (pugi::xml_node n = doc.first_child(); n; n = n.next_sibling()) {
    if (n.type() == pugi::node_doctype) {
      return make_error("the XML declares a DOCTYPE at " + at(body, tag_start(body, n)) +
                        ": entity declarations are not accepted in submissions (CommCare, ODK and Kobo never "
                        "send one); remove it");
    }
  }
  // Each level opens with a '<': a document with no more of them than the limit cannot pass it,
  // and most forms are such (the seed form has 40). Counting them (memchr) costs
  // a fifth of the walk.
  std::size_t opened = 0;
  for (const char *p = body.data(), *end = p + body.size();
       opened <= static_cast<std::size_t>(kMaxNesting) &&
       (p = static_cast<const char*>(std::memchr(p, '<', static_cast<std::size_t>(end - p)))) != nullptr;
       ++p) {
    ++opened;
  }
  if (opened <= static_cast<std::size_t>(kMaxNesting)) return Ok{};
  // Depth-first without recursion or a stack of its own: down to the first child, else on to
  // the next sibling, else up until a parent has one. Only elements nest; text has no children.
  int depth = 0;
  for (pugi::xml_node n = doc.first_child(); n;) {
    if (n.type() == pugi::node_element) {
      if (++depth > kMaxNesting) return make_error(nesting_error("the XML", body, tag_start(body, n)));
      if (pugi::xml_node child = n.first_child()) {
        n = child;
        continue;
      }
      --depth;
    }
    while (!n.next_sibling()) {
      n = n.parent();
      if (n == doc) return Ok{};
      --depth;  // n is an element: only they have children
    }
    n = n.next_sibling();
  }
  return Ok{};
}

Status check_untrusted_json(std::string_view text) {
  if (const std::size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) {
    return make_error("the JSON is not valid UTF-8 at " + at(text, bad) + " (JSON is UTF-8: RFC 8259 section 8.1)");
  }
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character, whatever it is
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      // nlohmann reports a number past a double's range as out_of_range 406, not as the
      // parse_error its callers catch, and without a position: refuse it here, with one.
      std::size_t end = i;
      bool exponent = false;
      for (; end < text.size() && is_number_char(text[end]); ++end) exponent |= text[end] == 'e' || text[end] == 'E';
      // Without an exponent, a number of at most 308 characters is below 10^308 < DBL_MAX:
      // only the rest (rare) is worth converting.
      if ((exponent || end - i > 308) && std::isinf(std::strtod(std::string(text.substr(i, end - i)).c_str(), nullptr))) {
        return make_error("the JSON has a number too large for a double (about 1.8e308 at most) at " + at(text, i));
      }
      i = end - 1;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxNesting) return make_error(nesting_error("the JSON", text, i));
    } else if (c == ']' || c == '}') {
      --depth;  // unbalanced text is the parser's to report
    }
  }
  return Ok{};
}

}  // namespace repeaterd::payload
