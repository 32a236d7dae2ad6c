// payload/form_json: forms as JSON and Kobo-style JSON submissions. See form_json.hpp.
#include "payload/form_json.hpp"

#include "common/text_position.hpp"
#include "common/text.hpp"

#include <algorithm>
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>
#include <pugixml.hpp>

// payload/form_json: forms as JSON and Kobo-style JSON submissions. See form_json.hpp.
//
// The form JSON is built in the order HQ's Python dicts hold their keys (PyDict below), because
// a few of HQ's steps expose that order (clean_metadata flattens dicts to "k:v, k:v"), and is
// turned into a key-sorted nlohmann::json only to be written.
#include "payload/form_json.hpp"

#include "common/text_position.hpp"
#include "common/text.hpp"
#include "payload/untrusted.hpp"
#include "payload/datetime.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <initializer_list>
#include <cmath>
#include <cstddef>
#include <regex>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>
#include <pugixml.hpp>

namespace repeaterd::payload {
namespace {

// Ordered so that the stub follows the spec's key order.
using OrderedJson = nlohmann::ordered_json;
// A Python dict as HQ builds it: keys in insertion order.
using PyDict = nlohmann::ordered_json;
// What HQ's serializer writes (json.dumps(sort_keys=True)): keys in code-point order, which
// for UTF-8 std::string keys is std::map's byte order.
using SortedJson = nlohmann::json;

constexpr std::string_view kXmlNamespace = "http://www.w3.org/XML/1998/namespace";
constexpr std::string_view kDeviceReportXmlns = "http://code.javarosa.org/devicereport";

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

// ---- xml2json --------------------------------------------------------------------------------

// Namespace declarations in scope, innermost last: pugixml does not resolve namespaces, and
// xml2json compares URIs, not prefixes.
struct Binding {
  std::string prefix;  // "" for the default namespace
  std::string uri;
};
using Scope = std::vector<Binding>;

void push_declarations(const pugi::xml_node& element, Scope& scope) {
  for (const pugi::xml_attribute& attr : element.attributes()) {
    const std::string_view name = attr.name();
    if (name == "xmlns") {
      scope.push_back({"", attr.value()});
    } else if (name.starts_with("xmlns:")) {
      scope.push_back({std::string(name.substr(6)), attr.value()});
    }
  }
}

// The URI `prefix` names, or nullopt for no namespace (lxml's None): no default namespace, a
// default undeclared with xmlns="", or a prefix nobody declared.
std::optional<std::string> resolve(const Scope& scope, std::string_view prefix) {
  if (prefix == "xml") return std::string(kXmlNamespace);
  for (auto it = scope.rbegin(); it != scope.rend(); ++it) {
    if (it->prefix == prefix) {
      return it->uri.empty() ? std::nullopt : std::optional<std::string>(it->uri);
    }
  }
  return std::nullopt;
}

// Python's str.isspace() for one code point.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

// Python's `not text.strip()` over UTF-8 text.
bool is_blank(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    std::size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > text.size()) return false;
    char32_t c = len == 1 ? b : len == 2 ? (b & 0x1f) : len == 3 ? (b & 0x0f) : (b & 0x07);
    for (std::size_t k = 1; k < len; ++k) c = (c << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3f);
    if (!is_python_space(c)) return false;
    i += len;
  }
  return true;
}

// Adds `value` under `key`; a second sibling of the same name turns the entry into a list at
// the first one's place, as xml2json does.
void add_child(PyDict& object, const std::string& key, PyDict value) {
  auto it = object.find(key);
  if (it == object.end()) {
    object[key] = std::move(value);
  } else if (it->is_array()) {
    it->push_back(std::move(value));
  } else {
    PyDict list = PyDict::array();
    list.push_back(std::move(*it));
    list.push_back(std::move(value));
    *it = std::move(list);
  }
}

// xml2json's convert_xml_to_json(element, last_xmlns=parent_uri).
PyDict convert_element(const pugi::xml_node& element, const std::optional<std::string>& parent_uri,
                       Scope& scope) {
  const std::size_t outer = scope.size();
  push_declarations(element, scope);
  const std::optional<std::string> uri = resolve(scope, prefix_of(element.name()));

  PyDict attributes = PyDict::object();
  for (const pugi::xml_attribute& attr : element.attributes()) {
    const std::string_view name = attr.name();
    if (name == "xmlns" || name.starts_with("xmlns:")) continue;  // declarations, not data
    const std::string_view prefix = prefix_of(name);
    // lxml names a namespaced attribute "{uri}local"; an unprefixed one has no namespace.
    const std::optional<std::string> attr_uri =
        prefix.empty() ? std::nullopt : resolve(scope, prefix);
    std::string key = "@";
    if (attr_uri) key += "{" + *attr_uri + "}";
    key += local_of(name);
    attributes[key] = attr.value();
  }

  PyDict children = PyDict::object();
  std::string text;  // lxml's .text: the text before the first child element
  bool before_first_child = true;
  for (const pugi::xml_node& n : element.children()) {
    if (n.type() == pugi::node_element) {
      before_first_child = false;
      add_child(children, std::string(local_of(n.name())), convert_element(n, uri, scope));
    } else if (before_first_child && is_text(n)) {
      text += n.value();
    }
  }
  scope.resize(outer);

  if (uri && uri != parent_uri) attributes["@xmlns"] = *uri;
  if (attributes.empty() && children.empty()) return PyDict(std::move(text));
  PyDict result = std::move(attributes);
  for (auto& [key, value] : children.items()) result[key] = std::move(value);
  if (!is_blank(text)) result["#text"] = std::move(text);
  return result;
}

pugi::xml_node element_of(const pugi::xml_node& node) {
  // Accept a document as well as its root element: callers holding an xml_document should
  // not have to know the difference.
  if (node.type() != pugi::node_document) return node;
  return node.find_child([](const pugi::xml_node& n) { return n.type() == pugi::node_element; });
}

// xml2json of `element` as if it were the document's root: its parent's namespace counts as
// None, but the declarations of its ancestors are in scope.
PyDict xml2json(const pugi::xml_node& element) {
  Scope scope;
  std::vector<pugi::xml_node> ancestors;
  for (pugi::xml_node a = element.parent(); a && a.type() == pugi::node_element; a = a.parent()) {
    ancestors.push_back(a);
  }
  for (auto it = ancestors.rbegin(); it != ancestors.rend(); ++it) push_declarations(*it, scope);
  return convert_element(element, std::nullopt, scope);
}

// ---- HQ's processing of the form JSON ---------------------------------------------------------

// adjust_datetimes: every string that is a date and time becomes UTC with microseconds.
void adjust_datetimes(PyDict& value) {
  if (value.is_string()) {
    if (auto adjusted = adjust_datetime(value.get_ref<const std::string&>())) value = std::move(*adjusted);
  } else if (value.is_structured()) {
    for (auto& item : value) adjust_datetimes(item);
  }
}

// scrub_form_meta: pre-1.0 meta blocks ("Meta", "uid", "TimeStart", ...) in today's names.
void scrub_form_meta(PyDict& form) {
  if (form.contains("Meta")) {
    form["meta"] = form["Meta"];
    form.erase("Meta");
  }
  const auto meta = form.find("meta");
  if (meta == form.end()) return;
  // Several meta blocks: HQ picks the first, when they are blocks at all.
  if (meta->is_array() && !meta->empty() && meta->front().is_object()) *meta = PyDict(meta->front());
  if (!meta->is_object()) return;
  static const std::pair<const char*, const char*> kRenames[] = {{"TimeStart", "timeStart"},
                                                                 {"TimeEnd", "timeEnd"},
                                                                 {"chw_id", "userID"},
                                                                 {"DeviceID", "deviceID"},
                                                                 {"uid", "instanceID"}};
  std::vector<std::string> keys;
  for (const auto& item : meta->items()) keys.push_back(item.key());
  for (const std::string& key : keys) {
    for (const auto& [from, to] : kRenames) {
      if (key == from && !meta->contains(to)) {
        (*meta)[to] = (*meta)[key];
        meta->erase(key);
      }
    }
  }
}

bool truthy(const PyDict& v) {
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) return v != 0;
  if (v.is_string()) return !v.get_ref<const std::string&>().empty();
  return !v.empty();
}

// HQ's is_valid_date (dateutil accepts a value): here, a date or a date and time.
bool is_valid_date(const PyDict* v) {
  return v != nullptr && v->is_string() && !v->get_ref<const std::string&>().empty() &&
         parse_phone_time(v->get_ref<const std::string&>()).has_value();
}

const PyDict* find_key(const PyDict& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// Python's len() of UTF-8 text: code points.
std::size_t code_points(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; }));
}

// re.search(pattern, text).group(1) over the patterns in order.
std::optional<std::string> first_group_match(const std::string& text,
                                             std::initializer_list<const std::regex*> patterns) {
  for (const std::regex* pattern : patterns) {
    std::smatch m;
    if (std::regex_search(text, m, *pattern)) return m[1].str();
  }
  return std::nullopt;
}

// Decimal(n) as GeoPoint reads it: Python's decimal syntax (surrounding whitespace allowed,
// "Inf"/"NaN" too), and a tiny value in scientific notation read as 0.
std::optional<double> geo_decimal(std::string_view n) {
  static const std::regex kDecimal(R"(^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|s?nan\d*)$)",
                                   std::regex::icase);
  const std::string s(trim(n, " \t\n\r\v\f"));
  if (!std::regex_match(s, kDecimal)) return std::nullopt;
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  if (lower.find("nan") != std::string::npos) return std::nan("");
  const bool negative = lower.starts_with('-');
  if (lower.find("inf") != std::string::npos) return negative ? -HUGE_VAL : HUGE_VAL;
  std::string_view digits = s;
  if (digits.starts_with('+')) digits.remove_prefix(1);
  double value = 0;
  const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (r.ec == std::errc::result_out_of_range) {
    // Decimal has no range: a huge value fails the range check, a tiny one is 0 below.
    const bool tiny = lower.find("e-") != std::string::npos;
    value = tiny ? 0.0 : (negative ? -HUGE_VAL : HUGE_VAL);
  } else if (r.ec != std::errc() || r.ptr != digits.data() + digits.size()) {
    return std::nullopt;
  }
  if (lower.find('e') != std::string::npos && std::fabs(value) < 0.001) value = 0;
  return value;
}

// GeoPoint.from_string(location).lat_lon: "lat lon altitude accuracy", space-separated.
PyDict geo_point(const PyDict* location) {
  if (location == nullptr || !location->is_string()) return nullptr;
  const std::string& text = location->get_ref<const std::string&>();
  std::vector<std::string_view> parts;
  std::size_t from = 0;
  for (std::size_t at = text.find(' '); ; at = text.find(' ', from)) {
    parts.emplace_back(std::string_view(text).substr(from, at == std::string::npos ? std::string::npos : at - from));
    if (at == std::string::npos) break;
    from = at + 1;
  }
  if (parts.size() != 4) return nullptr;
  const auto lat = geo_decimal(parts[0]), lon = geo_decimal(parts[1]);
  if (!lat || !lon || !geo_decimal(parts[2]) || !geo_decimal(parts[3])) return nullptr;
  if (std::isnan(*lat) || *lat < -90 || *lat > 90 || std::isnan(*lon) || *lon < -180 || *lon > 180) {
    return nullptr;
  }
  PyDict out = PyDict::object();
  out["lat"] = *lat;
  out["lon"] = *lon;
  return out;
}

// The case blocks extract_case_blocks finds: values under a "case" key that carry a case id,
// not looking inside device reports.
void collect_case_blocks(PyDict& data, std::vector<PyDict*>& out) {
  if (data.is_array()) {
    for (auto& item : data) collect_case_blocks(item, out);
    return;
  }
  if (!data.is_object()) return;
  if (const PyDict* ns = find_key(data, "@xmlns"); ns && *ns == kDeviceReportXmlns) return;
  for (auto& [key, value] : data.items()) {
    if (key != "case") {
      collect_case_blocks(value, out);
      continue;
    }
    auto consider = [&](PyDict& block) {
      if (!block.is_object()) return;
      const PyDict* id = find_key(block, "case_id");
      if (id == nullptr || !truthy(*id)) id = find_key(block, "@case_id");
      if (id != nullptr && truthy(*id)) out.push_back(&block);
    };
    if (value.is_array()) {
      for (auto& block : value) consider(block);
    } else {
      consider(value);
    }
  }
}

// The clean-up HQ's Elasticsearch transform (ElasticForm._from_dict) makes to `form` before the
// API reads it: meta times that are not dates become None, appVersion its text, the versions
// and geo_point are added; in case blocks, a date_modified that is not a date is removed (None
// when it was empty) and create/update/index/attachment that are not objects become None.
void es_transform(PyDict& form) {
  if (const auto it = form.find("meta"); it != form.end() && it->is_object()) {
    PyDict& meta = *it;
    if (!is_valid_date(find_key(meta, "timeEnd"))) meta["timeEnd"] = nullptr;
    if (!is_valid_date(find_key(meta, "timeStart"))) meta["timeStart"] = nullptr;
    if (const auto av = meta.find("appVersion"); av != meta.end() && av->is_object()) {
      PyDict text = av->contains("#text") ? PyDict((*av)["#text"]) : PyDict(nullptr);
      *av = std::move(text);
    }
    // get_meta_appversion_text: a string longer than 5 characters. HQ would first take the
    // build's own version from its database; repeaterd has no builds, so the text decides.
    AppVersionInfo info;
    if (const PyDict* av = find_key(meta, "appVersion");
        av && av->is_string() && code_points(av->get_ref<const std::string&>()) > 5) {
      info = parse_app_version_text(av->get_ref<const std::string&>());
    }
    meta["commcare_version"] = info.commcare_version ? PyDict(*info.commcare_version) : PyDict(nullptr);
    meta["app_build_version"] = info.build_version ? PyDict(*info.build_version) : PyDict(nullptr);
    PyDict point = geo_point(find_key(meta, "location"));
    meta["geo_point"] = std::move(point);
  }

  std::vector<PyDict*> blocks;
  collect_case_blocks(form, blocks);
  for (PyDict* block : blocks) {
    for (const char* key : {"date_modified", "@date_modified"}) {
      const PyDict* v = find_key(*block, key);
      if (is_valid_date(v)) continue;
      if (v != nullptr && *v == "") {
        (*block)[key] = nullptr;
      } else {
        block->erase(key);
      }
    }
    for (const char* key : {"index", "attachment", "create", "update"}) {
      if (const auto it = block->find(key); it != block->end() && !it->is_object()) *it = nullptr;
    }
  }
}

// Python's repr() of a string, as str() of a list or dict writes its items.
std::string python_repr(const std::string& s) {
  const char quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, quote);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '\\' || ch == quote) {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += ch;
    }
  }
  out += quote;
  return out;
}

std::string python_str(const PyDict& v, bool as_repr = false) {
  switch (v.type()) {
    case PyDict::value_t::string:
      return as_repr ? python_repr(v.get_ref<const std::string&>()) : v.get<std::string>();
    case PyDict::value_t::null:
      return "None";
    case PyDict::value_t::boolean:
      return v.get<bool>() ? "True" : "False";
    case PyDict::value_t::array: {
      std::string out = "[";
      for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + python_str(v[i], true);
      return out + "]";
    }
    case PyDict::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (const auto& [key, value] : v.items()) {
        out += (first ? "" : ", ") + python_repr(key) + ": " + python_str(value, true);
        first = false;
      }
      return out + "}";
    }
    default:
      return v.dump();  // numbers: nlohmann writes floats as Python's repr does (-21.0, 1e-05)
  }
}

// _get_text_attribute: a node's text, None for attributes alone.
PyDict text_attribute(const PyDict* node) {
  if (node == nullptr || node->is_null()) return nullptr;
  const PyDict* value = node;
  if (node->is_object()) {
    if (node->contains("#text")) {
      value = &(*node)["#text"];
    } else if (std::all_of(node->items().begin(), node->items().end(),
                           [](const auto& item) { return item.key().starts_with('@'); })) {
      return nullptr;
    }
  }
  return value->is_string() ? *value : PyDict(python_str(*value));
}

// clean_metadata(form["meta"]): the API's "metadata".
PyDict clean_metadata(const PyDict& meta) {
  if (!meta.is_object() || meta.empty()) return PyDict::object();
  PyDict m = meta;
  std::vector<std::string> attributes;
  for (const auto& item : m.items()) {
    if (item.key().starts_with('@')) attributes.push_back(item.key());
  }
  for (const auto& key : attributes) m.erase(key);
  PyDict app_version = text_attribute(find_key(m, "appVersion"));
  PyDict location = text_attribute(find_key(m, "location"));
  m["appVersion"] = std::move(app_version);
  m["location"] = std::move(location);
  for (const char* key : {"timeStart", "timeEnd"}) {
    const auto it = m.find(key);
    if (it == m.end()) continue;
    // A date alone is midnight UTC; a time that will not parse is dropped.
    std::optional<PhoneTime> t;
    if (truthy(*it) && it->is_string()) t = parse_phone_time(it->get_ref<const std::string&>());
    if (t) {
      *it = format_iso8601(t->utc);
    } else {
      m.erase(key);
    }
  }
  for (auto& item : m.items()) {
    if (!item.value().is_object()) continue;
    std::string flat;
    for (const auto& [k, v] : item.value().items()) flat += (flat.empty() ? "" : ", ") + k + ":" + python_str(v);
    item.value() = std::move(flat);
  }
  return m;
}

// ---- writing ---------------------------------------------------------------------------------

SortedJson sorted(const PyDict& v) {
  switch (v.type()) {
    case PyDict::value_t::object: {
      SortedJson out = SortedJson::object();
      for (const auto& item : v.items()) out[item.key()] = sorted(item.value());
      return out;
    }
    case PyDict::value_t::array: {
      SortedJson out = SortedJson::array();
      for (const auto& item : v) out.push_back(sorted(item));
      return out;
    }
    case PyDict::value_t::string:
      return v.get<std::string>();
    case PyDict::value_t::boolean:
      return v.get<bool>();
    case PyDict::value_t::number_integer:
      return v.get<std::int64_t>();
    case PyDict::value_t::number_unsigned:
      return v.get<std::uint64_t>();
    case PyDict::value_t::number_float:
      return v.get<double>();
    default:
      return nullptr;
  }
}

// json.dumps(sort_keys=True, ensure_ascii=False) with its default separators ", " and ": ".
// Forms may carry bytes pugixml accepted but that are not UTF-8 (it does not validate);
// replacing them beats throwing from a payload renderer.
void write_python_json(const SortedJson& v, std::string& out) {
  if (v.is_object()) {
    out += '{';
    bool first = true;
    for (const auto& [key, value] : v.items()) {
      if (!first) out += ", ";
      first = false;
      out += SortedJson(key).dump(-1, ' ', false, SortedJson::error_handler_t::replace);
      out += ": ";
      write_python_json(value, out);
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i) out += ", ";
      write_python_json(v[i], out);
    }
    out += ']';
  } else {
    out += v.dump(-1, ' ', false, SortedJson::error_handler_t::replace);
  }
}

std::string python_json(const SortedJson& v) {
  std::string out;
  write_python_json(v, out);
  return out;
}

std::string dump(const OrderedJson& j) {
  return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

SortedJson string_or_null(const std::string& s) { return s.empty() ? SortedJson(nullptr) : SortedJson(s); }

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

std::string xml_to_json(const pugi::xml_node& element) {
  const pugi::xml_node e = element_of(element);
  return e ? python_json(sorted(xml2json(e))) : "\"\"";
}

AppVersionInfo parse_app_version_text(std::string_view text) {
  static const std::regex kHash(R"re( #(\d+) )re"), kBracket(R"re(b\[(\d+)\])re"),
      kApp(R"re(App v(\d+).)re");
  static const std::regex kVersion(R"re(version "([\d.]+)")re"),
      kQuotedBuild(R"re("([\d.]+)"\s+\(\d+\))re"), kQuoted(R"re("\s*([\d.]+)\s*")re");
  AppVersionInfo info;
  const std::string s(text);
  if (s.empty()) return info;
  if (auto build = first_group_match(s, {&kHash, &kBracket, &kApp})) {
    std::int64_t n = 0;
    const auto r = std::from_chars(build->data(), build->data() + build->size(), n);
    if (r.ec == std::errc() && n != 0) info.build_version = n;  // HQ: `if version_string` then int(); 0 is no version
  }
  if (auto version = first_group_match(s, {&kVersion, &kQuotedBuild, &kQuoted})) {
    // HQ pads a short version to three parts ("2.44" -> "2.44.0").
    while (!version->empty() && std::count(version->begin(), version->end(), '.') < 2) *version += ".0";
    info.commcare_version = std::move(*version);
  }
  return info;
}

std::string render_form_json(const pugi::xml_node& form_root, const FormJsonFields& fields) {
  const pugi::xml_node root = element_of(form_root);
  // HQ at submission: convert_xform_to_json, adjust_datetimes, scrub_form_meta; when the API
  // reads it back: the Elasticsearch transform, then clean_metadata for "metadata".
  PyDict form = root ? xml2json(root) : PyDict(PyDict::object());
  if (!form.is_object()) form = PyDict::object();  // a root with text only: HQ fails; keep the type
  form["#type"] = std::string(root ? local_of(root.name()) : std::string_view{});
  adjust_datetimes(form);
  scrub_form_meta(form);
  es_transform(form);

  auto string_at = [&](const char* key) {
    const PyDict* v = find_key(form, key);
    return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
  };

  SortedJson attachments = SortedJson::object();
  for (const FormAttachment& a : fields.attachments) {
    SortedJson entry = {{"content_type", a.content_type}, {"length", a.length}};
    if (!fields.attachment_url_base.empty()) entry["url"] = fields.attachment_url_base + "/" + percent_encode(a.name);
    attachments[a.name] = std::move(entry);
  }

  SortedJson j = SortedJson::object();
  j["app_id"] = string_or_null(fields.app_id);
  j["archived"] = false;
  j["attachments"] = std::move(attachments);
  j["build_id"] = string_or_null(fields.build_id);
  j["domain"] = fields.domain;
  // HQ names the editor only for an edit.
  j["edited_by_user_id"] = fields.edited_on ? string_or_null(fields.edited_by_user_id) : SortedJson(nullptr);
  j["edited_on"] = fields.edited_on ? SortedJson(format_iso8601(*fields.edited_on)) : SortedJson(nullptr);
  j["id"] = fields.id;
  j["indexed_on"] = format_iso8601(fields.received_on);
  j["initial_processing_complete"] = true;
  j["is_phone_submission"] = fields.is_phone_submission;
  const PyDict* meta = find_key(form, "meta");
  j["metadata"] = meta != nullptr ? sorted(clean_metadata(*meta)) : SortedJson(nullptr);
  j["problem"] = nullptr;
  j["received_on"] = format_iso8601(fields.received_on);
  j["resource_uri"] = "";
  j["server_modified_on"] = format_iso8601(fields.server_modified_on);
  j["submit_ip"] = string_or_null(fields.submit_ip);
  j["type"] = string_at("#type");
  j["uiversion"] = string_at("@uiVersion");
  j["version"] = string_at("@version");
  j["form"] = sorted(form);
  return python_json(j);
}

Result<JsonSubmission> parse_json_submission(std::string_view body) {
  if (auto checked = check_untrusted_json(body); !checked) return checked.error();
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
