#include "payload/untrusted.hpp"

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "common/text.hpp"
#include "common/text_position.hpp"

namespace repeaterd::payload {
namespace {

std::string at(std::string_view text, std::size_t offset) { return to_string(text_position(text, offset)); }

// Offset of the first byte that does not start a valid UTF-8 sequence, or npos.
std::size_t first_invalid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t len = utf8_sequence_length(s, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

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
  // Depth-first without recursion.
  std::vector<std::pair<pugi::xml_node, int>> stack;
  for (pugi::xml_node n = doc.first_child(); n; n = n.next_sibling()) {
    if (n.type() == pugi::node_doctype) {
      return make_error("the XML declares a DOCTYPE at " + at(body, tag_start(body, n)) +
                        ": entity declarations are not accepted in submissions (CommCare, ODK and Kobo never "
                        "send one); remove it");
    }
    if (n.type() == pugi::node_element) stack.emplace_back(n, 1);
  }
  while (!stack.empty()) {
    const auto [node, depth] = stack.back();
    stack.pop_back();
    if (depth > kMaxNesting) {
      return make_error(nesting_error("the XML", body, tag_start(body, node)));
    }
    for (pugi::xml_node c = node.first_child(); c; c = c.next_sibling()) {
      if (c.type() == pugi::node_element) stack.emplace_back(c, depth + 1);
    }
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
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxNesting) return make_error(nesting_error("the JSON", text, i));
    } else if (c == ']' || c == '}') {
      --depth;  // unbalanced text is the parser's to report
    }
  }
  return Ok{};
}

}  // namespace repeaterd::payload
