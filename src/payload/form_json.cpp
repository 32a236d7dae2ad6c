// payload/form_json: forms as JSON and Kobo-style JSON submissions. See form_json.hpp.
#include "payload/form_json.hpp"

#include "common/text_position.hpp"
#include "common/text.hpp"

#include <algorithm>
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>
#include <pugixml.hpp>

namespace repeaterd::payload {
namespace {

// Ordered so that the JSON follows the document: receivers diff and eyeball these payloads,
// and CommCare's own output keeps document order too.
using OrderedJson = nlohmann::ordered_json;


std::string_view prefix_of(std::string_view qualified) {
  const auto colon = qualified.find(':');
  return colon == std::string_view::npos ? std::string_view{} : qualified.substr(0, colon);
}

std::string_view local_of(std::string_view qualified) {
  const auto colon = qualified.find(':');
  return colon == std::string_view::npos ? qualified : qualified.substr(colon + 1);
}

bool is_text(const pugi::xml_node& n) {
  return n.type() == pugi::node_pcdata || n.type() == pugi::node_cdata;
}

// Adds `value` under `key`; a second sibling of the same name turns the entry into an array,
// which keeps the position of the first one (ordered_json never moves an existing key).
void add_child(OrderedJson& object, const std::string& key, OrderedJson value) {
  auto it = object.find(key);
  if (it == object.end()) {
    object[key] = std::move(value);
  } else if (it->is_array()) {
    it->push_back(std::move(value));
  } else {
    OrderedJson array = OrderedJson::array();
    array.push_back(std::move(*it));
    array.push_back(std::move(value));
    *it = std::move(array);
  }
}

OrderedJson element_to_json(const pugi::xml_node& element) {
  const std::string_view name = element.name();
  const std::string_view own_prefix = prefix_of(name);
  // The attribute that binds the element's own namespace: "xmlns" for an unprefixed element,
  // "xmlns:p" for p:element. Inherited namespaces are not repeated on every descendant.
  const std::string own_decl =
      own_prefix.empty() ? std::string("xmlns") : "xmlns:" + std::string(own_prefix);

  OrderedJson object = OrderedJson::object();
  for (const pugi::xml_attribute& attr : element.attributes()) {
    const std::string_view attr_name = attr.name();
    if (attr_name == own_decl) {
      object["@xmlns"] = attr.value();
    } else if (attr_name == "xmlns" || attr_name.starts_with("xmlns:")) {
      continue;  // a declaration for other elements' use is not data
    } else {
      object["@" + std::string(local_of(attr_name))] = attr.value();
    }
  }

  const bool has_child_elements = static_cast<bool>(element.find_child(
      [](const pugi::xml_node& n) { return n.type() == pugi::node_element; }));

  if (!has_child_elements) {
    // Text-only content is an answer: keep it exactly, except that whitespace alone is only
    // layout (<close>\n</close>) and counts as empty.
    std::string text;
    for (const pugi::xml_node& n : element.children()) {
      if (is_text(n)) text += n.value();
    }
    if (trim(text).empty()) text.clear();
    if (object.empty()) return OrderedJson(std::move(text));
    if (!text.empty()) object["#text"] = std::move(text);
    return object;
  }

  // Mixed content: the text around child elements is mostly indentation, so each piece is
  // trimmed; "#text" sits where the first real text appears.
  std::string mixed_text;
  bool text_seen = false;
  for (const pugi::xml_node& n : element.children()) {
    if (n.type() == pugi::node_element) {
      add_child(object, std::string(local_of(n.name())), element_to_json(n));
    } else if (is_text(n)) {
      const std::string_view piece = trim(n.value());
      if (piece.empty()) continue;
      if (!text_seen) {
        object["#text"] = "";  // reserve the key's position; filled in below
        text_seen = true;
      }
      mixed_text += piece;
    }
  }
  if (text_seen) object["#text"] = std::move(mixed_text);
  return object;
}

OrderedJson to_json_value(const pugi::xml_node& node) {
  // Accept a document as well as its root element: callers holding an xml_document should
  // not have to know the difference.
  const pugi::xml_node element =
      node.type() == pugi::node_document ? node.find_child([](const pugi::xml_node& n) {
        return n.type() == pugi::node_element;
      })
                                         : node;
  if (!element) return OrderedJson("");
  return element_to_json(element);
}

// Forms may carry bytes pugixml accepted but that are not UTF-8 (it does not validate);
// replacing them beats throwing from a payload renderer.
std::string dump(const OrderedJson& j) {
  return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}


// nlohmann's message starts with its own id and position ("[json.exception.parse_error.101]
// parse error at line 1, column 5: syntax error ..."); keep only the reason.
std::string parse_reason(const std::string& what) {
  const auto tag_end = what.find("] ");
  std::string rest = tag_end == std::string::npos ? what : what.substr(tag_end + 2);
  if (rest.starts_with("parse error")) {
    const auto colon = rest.find(": ");
    if (colon != std::string::npos) rest = rest.substr(colon + 2);
  }
  return rest;
}

const std::string* non_empty_string(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return nullptr;
  const auto* s = it->get_ptr<const std::string*>();
  return s->empty() ? nullptr : s;
}

}  // namespace

std::string xml_to_json(const pugi::xml_node& element) { return dump(to_json_value(element)); }

std::string render_form_json(const pugi::xml_node& form_root, const FormJsonFields& fields) {
  OrderedJson j = OrderedJson::object();
  j["id"] = fields.id;
  j["domain"] = fields.domain;
  j["app_id"] = fields.app_id;
  j["xmlns"] = fields.xmlns;
  j["received_on"] = fields.received_on;
  j["form"] = to_json_value(form_root);
  return dump(j);
}

Result<JsonSubmission> parse_json_submission(std::string_view body) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(body.begin(), body.end());
  } catch (const nlohmann::json::parse_error& e) {
    return make_error("the body is not valid JSON (" + to_string(position_of_last_read(body, e.byte)) +
                      "): " + parse_reason(e.what()));
  }
  if (!doc.is_object()) {
    return make_error(std::string("a JSON submission must be an object, not ") + doc.type_name());
  }

  JsonSubmission out;
  // Kobo flattens groups into "group/question" keys, so its id arrives as "meta/instanceID";
  // an ODK-style nested meta group and Kobo's own "_uuid" are the fallbacks.
  if (const std::string* id = non_empty_string(doc, "meta/instanceID")) {
    out.instance_id = *id;
  } else if (const auto meta = doc.find("meta"); meta != doc.end() && meta->is_object() &&
                                                 non_empty_string(*meta, "instanceID")) {
    out.instance_id = *non_empty_string(*meta, "instanceID");
  } else if (const std::string* uuid = non_empty_string(doc, "_uuid")) {
    out.instance_id = *uuid;
  } else {
    return make_error(
        "the JSON submission has no id: looked for a non-empty string at \"meta/instanceID\", "
        "at \"meta\": {\"instanceID\"} and at \"_uuid\"");
  }
  if (const std::string* xmlns = non_empty_string(doc, "_xform_id_string")) out.xmlns = *xmlns;
  return out;
}

std::string apply_template(std::string_view tmpl, std::string_view json) {
  static constexpr std::string_view kPlaceholder = "%SUBMISSION%";
  std::string out;
  out.reserve(tmpl.size() + json.size());
  std::size_t from = 0;
  for (auto at = tmpl.find(kPlaceholder); at != std::string_view::npos;
       at = tmpl.find(kPlaceholder, from)) {
    out.append(tmpl.substr(from, at - from));
    out.append(json);
    from = at + kPlaceholder.size();
  }
  out.append(tmpl.substr(from));
  return out;
}

std::string render_form_stub(const std::string& received_on, const std::string& form_id,
                             const std::vector<std::string>& case_ids) {
  OrderedJson j = OrderedJson::object();
  j["received_on"] = received_on;
  j["form_id"] = form_id;
  j["case_ids"] = case_ids;
  return dump(j);
}

}  // namespace repeaterd::payload
