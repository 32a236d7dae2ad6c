// Reading case blocks: from an XForm (v2 blocks with any prefix, v1 blocks, never inside a device
// report) and from case JSON objects. Produces CaseBlocks only; apply_case_blocks (case.cpp)
// decides whether they make sense against the cases that exist.
#include <cctype>
#include <cstddef>
#include <optional>
#include <map>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <string>
#include <vector>

#include "payload/case.hpp"

#include "common/text_position.hpp"
#include "common/text.hpp"
#include "payload/untrusted.hpp"

namespace repeaterd::payload {
namespace {

std::string_view local_of(std::string_view qualified) {
  const auto colon = qualified.find(':');
  return colon == std::string_view::npos ? qualified : qualified.substr(colon + 1);
}

std::string_view prefix_of(std::string_view qualified) {
  const auto colon = qualified.find(':');
  return colon == std::string_view::npos ? std::string_view{} : qualified.substr(0, colon);
}

// The in-scope namespace bindings during a walk of the tree. A stack per prefix (the default
// namespace under ""), so entering and leaving an element costs only its own declarations and a
// lookup stays cheap even in absurdly deep documents.
class NamespaceScope {
 public:
  void enter(const pugi::xml_node& element) {
    for (const pugi::xml_attribute& a : element.attributes()) {
      if (auto p = declared_prefix(a.name())) bindings_[std::string(*p)].emplace_back(a.value());
    }
  }
  void leave(const pugi::xml_node& element) {
    for (const pugi::xml_attribute& a : element.attributes()) {
      if (auto p = declared_prefix(a.name())) {
        auto it = bindings_.find(std::string(*p));
        if (it != bindings_.end() && !it->second.empty()) it->second.pop_back();
      }
    }
  }
  std::string_view resolve(std::string_view prefix) const {
    auto it = bindings_.find(prefix);
    return it == bindings_.end() || it->second.empty() ? std::string_view{} : std::string_view(it->second.back());
  }

 private:
  // "xmlns" declares the default namespace (prefix ""), "xmlns:p" declares p.
  static std::optional<std::string_view> declared_prefix(std::string_view attr) {
    if (attr == "xmlns") return std::string_view{};
    if (attr.starts_with("xmlns:")) return attr.substr(6);
    return std::nullopt;
  }
  std::map<std::string, std::vector<std::string>, std::less<>> bindings_;
};

pugi::xml_node child_by_local_name(const pugi::xml_node& parent, std::string_view name) {
  for (pugi::xml_node c = parent.first_child(); c; c = c.next_sibling()) {
    if (c.type() == pugi::node_element && local_of(c.name()) == name) return c;
  }
  return {};
}

// The element's text: its PCDATA/CDATA children (comments between them do not split it).
std::string text_of(const pugi::xml_node& element) {
  std::string out;
  for (pugi::xml_node c = element.first_child(); c; c = c.next_sibling()) {
    if (c.type() == pugi::node_pcdata || c.type() == pugi::node_cdata) out += c.value();
  }
  return out;
}

// Identifiers (case_id, user_id, ...) are compared byte for byte later; stray whitespace from
// pretty-printed forms would make "abc" and " abc\n" different cases.
// Line of an element in the submission. pugixml only knows byte offsets into its buffer; with
// the original text we count newlines in it. Without it we count them in pugixml's own copy of
// the buffer, which it has altered while parsing (a newline right after an element name became
// its terminator), so that count can be a little low: good enough to find the block by eye.
std::optional<long> line_of(const pugi::xml_node& element, std::string_view source) {
  const std::ptrdiff_t offset = element.offset_debug();
  if (offset < 0) return std::nullopt;
  std::string_view before;
  if (!source.empty()) {
    if (static_cast<std::size_t>(offset) > source.size()) return std::nullopt;
    before = source.substr(0, static_cast<std::size_t>(offset));
  } else {
    before = std::string_view(element.name() - offset, static_cast<std::size_t>(offset));
  }
  long line = 1;
  for (char c : before) line += c == '\n' ? 1 : 0;
  return line;
}

std::string describe(std::size_t number, const std::string& case_id, std::optional<long> line) {
  std::string where = "case block " + std::to_string(number) + " (";
  if (!case_id.empty()) where += "case_id \"" + case_id + "\"";
  if (line) where += std::string(case_id.empty() ? "" : ", ") + "line " + std::to_string(*line);
  if (case_id.empty() && !line) where += "no case_id";
  return where + ")";
}

// Property and index names become XML element names when the case is forwarded as XML, so a
// name that cannot be one is refused here rather than producing XML nobody can parse.
bool is_xml_name(std::string_view name) {
  if (name.empty()) return false;
  auto start_ok = [](unsigned char c) { return std::isalpha(c) || c == '_' || c >= 0x80; };
  auto rest_ok = [&](unsigned char c) { return start_ok(c) || std::isdigit(c) || c == '-' || c == '.'; };
  if (!start_ok(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name.substr(1)) {
    if (!rest_ok(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// create/update/close/index/attachment children, shared by v1 and v2: both name the actions the
// same way, and matching local names copes with whichever namespace they inherited.
// Errors: a property, index or attachment element whose local name is not an XML name (pugixml
// reads "<:1:foo/>" as an element named ":1:foo"); it would be forwarded as unparseable XML.
Status read_actions(const pugi::xml_node& block, std::string_view source, CaseBlock& out) {
  const auto named = [&](const pugi::xml_node& f, const char* what) -> Result<std::string> {
    std::string local(local_of(f.name()));
    if (is_xml_name(local)) return local;
    const std::optional<long> line = line_of(f, source);
    return make_error(out.where + ": " + what + " name \"" + local + "\"" +
                      (line ? " (line " + std::to_string(*line) + ")" : std::string()) + " is not a valid XML name");
  };
  for (pugi::xml_node action = block.first_child(); action; action = action.next_sibling()) {
    if (action.type() != pugi::node_element) continue;
    const std::string_view name = local_of(action.name());
    if (name == "create") {
      out.has_create = true;
      for (pugi::xml_node f = action.first_child(); f; f = f.next_sibling()) {
        if (f.type() != pugi::node_element) continue;
        const std::string_view field = local_of(f.name());
        std::string value = std::string(trim(text_of(f)));
        // v1 calls the type case_type_id and puts the creating user inside create.
        if (field == "case_type" || field == "case_type_id") {
          out.create_case_type = std::move(value);
        } else if (field == "case_name") {
          out.create_case_name = text_of(f);
        } else if (field == "owner_id") {
          out.create_owner_id = std::move(value);
        } else if (field == "external_id") {
          out.create_external_id = std::move(value);
        } else if (field == "user_id" && out.user_id.empty()) {
          out.user_id = std::move(value);
        }
      }
    } else if (name == "update") {
      for (pugi::xml_node f = action.first_child(); f; f = f.next_sibling()) {
        if (f.type() != pugi::node_element) continue;
        auto property = named(f, "property");
        if (!property) return property.error();
        out.update.emplace_back(std::move(property).value(), text_of(f));
      }
    } else if (name == "close") {
      out.has_close = true;
    } else if (name == "index") {
      for (pugi::xml_node f = action.first_child(); f; f = f.next_sibling()) {
        if (f.type() != pugi::node_element) continue;
        auto identifier = named(f, "index");
        if (!identifier) return identifier.error();
        CaseIndex index;
        index.case_type = std::string(trim(f.attribute("case_type").value()));
        index.case_id = std::string(trim(text_of(f)));
        if (const pugi::xml_attribute rel = f.attribute("relationship")) index.relationship = std::string(trim(rel.value()));
        out.index.emplace_back(std::move(identifier).value(), std::move(index));
      }
    } else if (name == "attachment") {
      for (pugi::xml_node f = action.first_child(); f; f = f.next_sibling()) {
        if (f.type() != pugi::node_element) continue;
        auto attachment = named(f, "attachment");
        if (!attachment) return attachment.error();
        CaseAttachment a{f.attribute("src").value(), f.attribute("from").value(), f.attribute("name").value()};
        out.attachment.emplace_back(std::move(attachment).value(), std::move(a));
      }
    }
  }
  return Ok{};
}

Result<CaseBlock> read_block(const pugi::xml_node& element, bool v1, std::size_t number, std::string_view source) {
  CaseBlock b;
  b.v1 = v1;
  const std::optional<long> line = line_of(element, source);
  if (v1) {
    b.case_id = std::string(trim(text_of(child_by_local_name(element, "case_id"))));
    b.date_modified = std::string(trim(text_of(child_by_local_name(element, "date_modified"))));
    b.user_id = std::string(trim(text_of(child_by_local_name(element, "user_id"))));
  } else {
    b.case_id = std::string(trim(element.attribute("case_id").value()));
    b.date_modified = std::string(trim(element.attribute("date_modified").value()));
    b.user_id = std::string(trim(element.attribute("user_id").value()));
  }
  b.where = describe(number, b.case_id, line);
  // HQ's IllegalCaseId: "case_id must not be empty".
  if (b.case_id.empty()) return make_error(b.where + ": case_id must not be empty");
  if (auto read = read_actions(element, source, b); !read) return read.error();
  return b;
}

}  // namespace

Result<std::vector<CaseBlock>> find_case_blocks(const pugi::xml_node& form_root, std::string_view source) {
  std::vector<CaseBlock> blocks;
  if (!form_root) return blocks;

  // Declarations above the starting node are in scope too (a caller may pass the root element).
  NamespaceScope scope;
  std::vector<pugi::xml_node> ancestors;
  for (pugi::xml_node p = form_root.parent(); p; p = p.parent()) {
    if (p.type() == pugi::node_element) ancestors.push_back(p);
  }
  for (auto it = ancestors.rbegin(); it != ancestors.rend(); ++it) scope.enter(*it);

  // Iterative pre-order walk: a submission nested thousands deep must not exhaust the stack.
  pugi::xml_node cur = form_root;
  for (;;) {
    bool descend = cur.type() == pugi::node_document;
    if (cur.type() == pugi::node_element) {
      scope.enter(cur);
      const std::string_view ns = scope.resolve(prefix_of(cur.name()));
      const bool is_case = local_of(cur.name()) == "case";
      if (ns == kDeviceReportNamespace) {
        descend = false;  // a phone's logs quote case blocks; they are not transactions
      } else if (is_case && ns == kCaseV2Namespace && !cur.attribute("case_id")) {
        descend = false;  // no case_id at all: HQ's has_case_id skips it, and so does repeaterd
      } else if (is_case && (ns == kCaseV2Namespace || child_by_local_name(cur, "case_id"))) {
        auto block = read_block(cur, ns != kCaseV2Namespace, blocks.size() + 1, source);
        if (!block) return block.error();
        blocks.push_back(std::move(block).value());
        descend = false;  // a block's children are its actions, never further blocks
      } else {
        descend = true;
      }
    }
    if (descend && cur.first_child()) {
      cur = cur.first_child();
      continue;
    }
    for (;;) {
      if (cur.type() == pugi::node_element) scope.leave(cur);
      if (cur == form_root) return blocks;
      if (pugi::xml_node next = cur.next_sibling()) {
        cur = next;
        break;
      }
      cur = cur.parent();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Case JSON

namespace {

using nlohmann::json;


// A string field, absent or null as nullopt; anything else is the sender's mistake.
Result<std::optional<std::string>> string_field(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>{};
  if (!it->is_string()) return make_error(where + ": \"" + key + "\" must be a string");
  return std::optional<std::string>{it->get<std::string>()};
}

// Property values are text in CommCare; numbers and booleans are accepted and kept as written.
Result<std::string> property_value(const json& v, const std::string& where, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return std::string{};
  if (v.is_number() || v.is_boolean()) return v.dump();
  return make_error(where + ": property \"" + key + "\" must be a string, number, boolean or null");
}

Result<CaseBlock> read_case_object(const json& obj, std::size_t number) {
  std::string where = "case object " + std::to_string(number);
  if (!obj.is_object()) return make_error(where + ": not a JSON object");
  auto id = string_field(obj, "case_id", where);
  if (!id) return id.error();
  if (!id->has_value() || (*id)->empty()) return make_error(where + ": case_id is missing");

  CaseBlock b;
  b.case_id = **id;
  b.where = where + " (case_id \"" + b.case_id + "\")";
  auto get = [&](const char* key, std::optional<std::string>& out) -> Status {
    auto r = string_field(obj, key, b.where);
    if (!r) return r.error();
    out = std::move(r).value();
    return Ok{};
  };
  std::optional<std::string> user_id, date_modified;
  for (auto [key, out] : {std::pair{"case_type", &b.create_case_type}, {"case_name", &b.create_case_name},
                          {"owner_id", &b.create_owner_id}, {"external_id", &b.create_external_id},
                          {"user_id", &user_id}, {"date_modified", &date_modified}}) {
    if (auto s = get(key, *out); !s) return s.error();
  }
  b.user_id = user_id.value_or("");
  b.date_modified = date_modified.value_or("");

  if (auto it = obj.find("properties"); it != obj.end() && !it->is_null()) {
    if (!it->is_object()) return make_error(b.where + ": \"properties\" must be an object");
    for (const auto& [key, value] : it->items()) {
      if (!is_xml_name(key)) return make_error(b.where + ": property name \"" + key + "\" is not a valid XML name");
      auto v = property_value(value, b.where, key);
      if (!v) return v.error();
      b.update.emplace_back(key, std::move(v).value());
    }
  }
  // The rendered case JSON keeps case_type/case_name/owner_id under "properties"; accept that
  // shape too, so a case forwarded by repeaterd can be posted back as it is.
  for (const auto& [key, value] : b.update) {
    if (key == "case_type" && !b.create_case_type) b.create_case_type = value;
    if (key == "case_name" && !b.create_case_name) b.create_case_name = value;
    if (key == "owner_id" && !b.create_owner_id) b.create_owner_id = value;
  }
  b.has_create = b.create_case_type || b.create_case_name || b.create_owner_id;

  if (auto it = obj.find("indices"); it != obj.end() && !it->is_null()) {
    if (!it->is_object()) return make_error(b.where + ": \"indices\" must be an object");
    for (const auto& [identifier, value] : it->items()) {
      const std::string iw = b.where + ": index \"" + identifier + "\"";
      if (!is_xml_name(identifier)) return make_error(iw + " is not a valid XML name");
      if (!value.is_object()) return make_error(iw + " must be an object");
      if (!value.contains("case_id")) return make_error(iw + " has no case_id (use \"\" to remove an index)");
      CaseIndex index;
      for (auto [key, out] : {std::pair{"case_type", &index.case_type}, {"case_id", &index.case_id},
                              {"relationship", &index.relationship}}) {
        auto r = string_field(value, key, iw);
        if (!r) return r.error();
        if (r->has_value()) *out = **r;
      }
      b.index.emplace_back(identifier, std::move(index));
    }
  }
  if (auto it = obj.find("closed"); it != obj.end() && !it->is_null()) {
    if (!it->is_boolean()) return make_error(b.where + ": \"closed\" must be true or false");
    b.has_close = it->get<bool>();
  }
  return b;
}

}  // namespace

Result<std::vector<CaseBlock>> parse_case_json(std::string_view text) {
  if (auto checked = check_untrusted_json(text); !checked) return checked.error();
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    // Only the exception carries the position; it stops here as an error.
    return make_error("invalid JSON at " + to_string(position_of_last_read(text, e.byte)));
  }
  std::vector<CaseBlock> blocks;
  if (doc.is_array()) {
    if (doc.empty()) return make_error("no case objects: the array is empty");
    for (std::size_t i = 0; i < doc.size(); ++i) {
      auto b = read_case_object(doc[i], i + 1);
      if (!b) return b.error();
      blocks.push_back(std::move(b).value());
    }
  } else {
    auto b = read_case_object(doc, 1);
    if (!b) return b.error();
    blocks.push_back(std::move(b).value());
  }
  return blocks;
}

}  // namespace repeaterd::payload
