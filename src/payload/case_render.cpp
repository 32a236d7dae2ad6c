// A case as it is forwarded (v2 XML block, the seeds' case JSON) and as it is stored.
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <sstream>

#include "common/json_text.hpp"
#include "payload/case.hpp"

namespace repeaterd::payload {
namespace {

using nlohmann::json;

void add_text_child(pugi::xml_node parent, const std::string& name, const std::string& text) {
  parent.append_child(name.c_str()).text().set(text.c_str());
}

// Case text comes from phones and may not be valid UTF-8; replacing bad bytes beats throwing
// while rendering a payload that has already been accepted.

}  // namespace

std::string render_case_xml(const CaseState& c) {
  pugi::xml_document doc;
  pugi::xml_node root = doc.append_child("case");
  root.append_attribute("case_id").set_value(c.case_id.c_str());
  root.append_attribute("date_modified").set_value(c.date_modified.c_str());
  root.append_attribute("user_id").set_value(c.user_id.c_str());
  root.append_attribute("xmlns").set_value(std::string(kCaseV2Namespace).c_str());

  // HQ's V2CaseXMLGenerator with include_case_on_closed: the full state, and a closed case
  // adds <close/> after it (the 2015 page sent a close block alone; HQ has since sent the state
  // too, so that a receiver that never saw the case open can still create it).
  pugi::xml_node create = root.append_child("create");
  add_text_child(create, "case_type", c.case_type);
  add_text_child(create, "case_name", c.case_name);
  add_text_child(create, "owner_id", c.owner_id.empty() ? c.user_id : c.owner_id);

  // external_id when set, date_opened as a date, then every property by name.
  pugi::xml_node update = root.append_child("update");
  if (!c.external_id.empty()) add_text_child(update, "external_id", c.external_id);
  if (!c.date_opened.empty()) add_text_child(update, "date_opened", date_only(c.date_opened));
  for (const auto& [name, value] : c.properties) add_text_child(update, name, value);
  if (!update.first_child()) root.remove_child(update);

  if (!c.indices.empty()) {
    pugi::xml_node index = root.append_child("index");
    for (const auto& [identifier, i] : c.indices) {  // by identifier, as HQ sorts them
      pugi::xml_node e = index.append_child(identifier.c_str());
      e.append_attribute("case_type").set_value(i.case_type.c_str());
      // HQ writes the relationship only when it is not the default.
      if (i.relationship == "extension") e.append_attribute("relationship").set_value("extension");
      e.text().set(i.case_id.c_str());
    }
  }
  if (!c.attachments.empty()) {
    pugi::xml_node attachment = root.append_child("attachment");
    for (const auto& [name, a] : c.attachments) {
      pugi::xml_node e = attachment.append_child(name.c_str());
      e.append_attribute("src").set_value(a.src.c_str());
      e.append_attribute("from").set_value(a.from.c_str());
      if (!a.name.empty()) e.append_attribute("name").set_value(a.name.c_str());
    }
  }
  if (c.closed) root.append_child("close");
  std::ostringstream out;
  doc.save(out, "", pugi::format_raw | pugi::format_no_declaration, pugi::encoding_utf8);
  return out.str();
}

std::string render_case_json(const CaseState& c) {
  json properties = json::object();
  for (const auto& [name, value] : c.properties) properties[name] = value;
  // HQ's built-in fields override dynamic properties of the same name.
  properties["case_name"] = c.case_name;
  properties["case_type"] = c.case_type;
  properties["date_opened"] = c.date_opened.empty() ? json(nullptr) : json(c.date_opened);
  properties["owner_id"] = c.owner_id.empty() ? c.user_id : c.owner_id;
  properties["external_id"] = c.external_id.empty() ? json(nullptr) : json(c.external_id);

  json indices = json::object();
  for (const auto& [identifier, i] : c.indices) {
    indices[identifier] = {{"case_type", i.case_type}, {"case_id", i.case_id}, {"relationship", i.relationship}};
  }
  // HQ lists {url, content_type} of the attachment it stored; repeaterd keeps only the case
  // block's reference to the form's attachment, so both are null (see docs/payloads.md).
  json attachments = json::object();
  for (const auto& [name, a] : c.attachments) attachments[name] = {{"url", nullptr}, {"content_type", nullptr}};
  json j = json::object();
  j["attachments"] = std::move(attachments);
  j["case_id"] = c.case_id;
  j["closed"] = c.closed;
  j["date_closed"] = c.date_closed ? json(*c.date_closed) : json(nullptr);
  j["date_modified"] = c.date_modified;
  j["domain"] = c.domain;
  j["indices"] = std::move(indices);
  j["properties"] = std::move(properties);
  j["server_date_modified"] = format_iso8601(c.server_modified_on);
  j["server_date_opened"] = format_iso8601(c.server_opened_on);
  j["user_id"] = c.user_id;
  j["version"] = "2.0";
  j["xform_ids"] = c.xform_ids;
  return json_text::dump(j);
}

// Written directly, not through a json tree: every form rewrites its cases' state. The bytes are
// what nlohmann writes for the same object (keys sorted; case_test pins the two together).
// Members at the value case_from_storage_json() assumes when they are missing (no attachments,
// indices or properties, open, no external id) are left out: every case row is written with
// each of its forms and kept for good, and a new case is mostly defaults (~100 of ~450 bytes).
std::string case_to_storage_json(const CaseState& c) {
  using namespace json_text;
  std::string out;
  out.reserve(512);
  bool first = true;
  out += '{';
  if (!c.attachments.empty()) {
    append_key(out, first, "attachments");
    append_map(out, c.attachments, [&](const CaseAttachment& a) {
      append_object(out, {{"from", a.from}, {"name", a.name}, {"src", a.src}});
    });
  }
  append_member(out, first, "case_id", c.case_id);
  append_member(out, first, "case_name", c.case_name);
  append_member(out, first, "case_type", c.case_type);
  if (c.closed) {
    append_key(out, first, "closed");
    out += "true";
  }
  if (c.date_closed) {
    append_key(out, first, "date_closed");
    append_string(out, *c.date_closed);
  }
  append_member(out, first, "date_modified", c.date_modified);
  append_member(out, first, "date_opened", c.date_opened);
  append_member(out, first, "domain", c.domain);
  if (!c.external_id.empty()) append_member(out, first, "external_id", c.external_id);
  if (!c.indices.empty()) {
    append_key(out, first, "indices");
    append_map(out, c.indices, [&](const CaseIndex& i) {
      append_object(out, {{"case_id", i.case_id}, {"case_type", i.case_type}, {"relationship", i.relationship}});
    });
  }
  append_member(out, first, "owner_id", c.owner_id);
  if (!c.properties.empty()) {
    append_key(out, first, "properties");
    append_map(out, c.properties, [&](const std::string& value) { append_string(out, value); });
  }
  append_key(out, first, "server_modified_on");
  append_int(out, c.server_modified_on);
  append_key(out, first, "server_opened_on");
  append_int(out, c.server_opened_on);
  append_member(out, first, "user_id", c.user_id);
  out += '}';
  // Round-trips exactly for UTF-8 text. JSON cannot carry other bytes (pugixml does not check
  // encodings), so those become U+FFFD here rather than an exception after the form was accepted.
  return out;
}

Result<CaseState> case_from_storage_json(std::string_view text) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return make_error("stored case is not a JSON object");
  // value()/get() throw on a wrong type: a stored row that does not match is corrupt, and the
  // exception stops here as an error.
  try {
    CaseState c;
    c.case_id = j.at("case_id").get<std::string>();
    c.domain = j.value("domain", "");
    c.case_type = j.value("case_type", "");
    c.case_name = j.value("case_name", "");
    c.owner_id = j.value("owner_id", "");
    c.user_id = j.value("user_id", "");
    c.external_id = j.value("external_id", "");
    c.properties = j.value("properties", std::map<std::string, std::string>{});
    // Named, not iterated as temporaries: items() only refers to the object it walks.
    const json indices = j.value("indices", json::object());
    const json attachments = j.value("attachments", json::object());
    for (const auto& [identifier, i] : indices.items()) {
      c.indices[identifier] = CaseIndex{i.at("case_type").get<std::string>(), i.at("case_id").get<std::string>(),
                                        i.at("relationship").get<std::string>()};
    }
    for (const auto& [name, a] : attachments.items()) {
      c.attachments[name] = CaseAttachment{a.at("src").get<std::string>(), a.at("from").get<std::string>(),
                                           a.at("name").get<std::string>()};
    }
    c.closed = j.value("closed", false);
    if (auto it = j.find("date_closed"); it != j.end() && !it->is_null()) c.date_closed = it->get<std::string>();
    c.date_opened = j.value("date_opened", "");
    c.date_modified = j.value("date_modified", "");
    c.server_opened_on = j.value("server_opened_on", Micros{0});
    c.server_modified_on = j.value("server_modified_on", Micros{0});
    return c;
  } catch (const json::exception& e) {
    return make_error(std::string("stored case is corrupt: ") + e.what());
  }
}

namespace {

std::optional<std::string> optional_text(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

// Compact: one row per case and form is written with every form, so only what a block says is
// kept (no defaults, no error-message position). Written directly, keys in nlohmann's order, so
// the bytes are what nlohmann wrote before (case_test pins the two together).
std::string blocks_to_storage_json(const std::vector<CaseBlock>& blocks) {
  using json_text::append_key;
  using json_text::append_string;
  std::string out;
  out.reserve(256 * blocks.size());
  out += '[';
  for (std::size_t n = 0; n < blocks.size(); ++n) {
    const CaseBlock& b = blocks[n];
    if (n > 0) out += ',';
    out += '{';
    bool first = true;
    const auto text = [&](std::string_view key, const std::optional<std::string>& v) {
      if (v) json_text::append_member(out, first, key, *v);
    };
    const auto strings = [&](std::initializer_list<std::string_view> values) {
      out += '[';
      bool first_value = true;
      for (const auto v : values) {
        if (!first_value) out += ',';
        first_value = false;
        append_string(out, v);
      }
      out += ']';
    };
    const auto array = [&](std::string_view key, const auto& items, const auto& write) {
      if (items.empty()) return;
      append_key(out, first, key);
      out += '[';
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += ',';
        write(items[i]);
      }
      out += ']';
    };
    array("attachment", b.attachment, [&](const auto& a) { strings({a.first, a.second.src, a.second.from, a.second.name}); });
    append_key(out, first, "case_id");
    append_string(out, b.case_id);
    text("case_name", b.create_case_name);
    text("case_type", b.create_case_type);
    if (b.has_close) {
      append_key(out, first, "close");
      out += "true";
    }
    if (b.has_create) {
      append_key(out, first, "create");
      out += "true";
    }
    if (!b.date_modified.empty()) text("date_modified", b.date_modified);
    text("external_id", b.create_external_id);
    array("index", b.index, [&](const auto& i) {
      strings({i.first, i.second.case_type, i.second.case_id, i.second.relationship});
    });
    text("owner_id", b.create_owner_id);
    array("update", b.update, [&](const auto& u) { strings({u.first, u.second}); });
    if (!b.user_id.empty()) text("user_id", b.user_id);
    if (b.v1) {
      append_key(out, first, "v1");
      out += "true";
    }
    out += '}';
  }
  out += ']';
  return out;
}

Result<std::vector<CaseBlock>> blocks_from_storage_json(std::string_view text) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) return make_error("stored case blocks are not a JSON array");
  try {
    std::vector<CaseBlock> out;
    const json none = json::array();
    for (const auto& e : j) {
      CaseBlock b;
      b.case_id = e.at("case_id").get<std::string>();
      b.user_id = e.value("user_id", "");
      b.date_modified = e.value("date_modified", "");
      b.v1 = e.value("v1", false);
      b.has_create = e.value("create", false);
      b.create_case_type = optional_text(e, "case_type");
      b.create_case_name = optional_text(e, "case_name");
      b.create_owner_id = optional_text(e, "owner_id");
      b.create_external_id = optional_text(e, "external_id");
      b.update = e.value("update", std::vector<std::pair<std::string, std::string>>{});
      b.has_close = e.value("close", false);
      const json& index = e.contains("index") ? e.at("index") : none;
      for (const auto& i : index) {
        b.index.emplace_back(i.at(0).get<std::string>(), CaseIndex{i.at(1).get<std::string>(), i.at(2).get<std::string>(),
                                                                   i.at(3).get<std::string>()});
      }
      const json& attachment = e.contains("attachment") ? e.at("attachment") : none;
      for (const auto& a : attachment) {
        b.attachment.emplace_back(a.at(0).get<std::string>(), CaseAttachment{a.at(1).get<std::string>(),
                                                                            a.at(2).get<std::string>(),
                                                                            a.at(3).get<std::string>()});
      }
      b.where = "case block (case_id \"" + b.case_id + "\")";
      out.push_back(std::move(b));
    }
    return out;
  } catch (const json::exception& e) {
    return make_error(std::string("stored case blocks are corrupt: ") + e.what());
  }
}

}  // namespace repeaterd::payload
