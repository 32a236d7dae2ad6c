// payload/form_json: forms as JSON (spec §4 "form, json") and JSON submissions (spec §3).
//
// xml_to_json() is CommCare's XML-to-JSON convention: element names without their prefix; an
// element with only text becomes a string (an empty element ""); attributes become "@name"
// keys and an element that declares its own namespace gets "@xmlns"; text beside child
// elements becomes "#text"; repeated sibling elements become an array in document order.
// Namespace-prefix declarations (xmlns:p) are not attributes and are left out.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "repeaterd/result.hpp"

namespace pugi {
class xml_node;
}

namespace repeaterd::payload {

// The element as a JSON value, serialised (an object, or a string for a text-only element).
std::string xml_to_json(const pugi::xml_node& element);

struct FormJsonFields {
  std::string id, domain, app_id, xmlns, received_on;  // received_on as ISO 8601
};

// {"id", "domain", "app_id", "xmlns", "received_on", "form": xml_to_json(root)}
std::string render_form_json(const pugi::xml_node& form_root, const FormJsonFields& fields);

// What repeaterd needs from a Kobo-style JSON submission: its id from "meta/instanceID",
// {"meta": {"instanceID"}} or "_uuid" (in that order), and its xmlns from "_xform_id_string".
// Errors: not JSON (with line and column), not an object, no id.
struct JsonSubmission {
  std::string instance_id;
  std::string xmlns;
};
Result<JsonSubmission> parse_json_submission(std::string_view body);

// `tmpl` with every "%SUBMISSION%" replaced by `json`.
std::string apply_template(std::string_view tmpl, std::string_view json);

// {"received_on", "form_id", "case_ids"} (spec §4 form_stub).
std::string render_form_stub(const std::string& received_on, const std::string& form_id,
                             const std::vector<std::string>& case_ids);

}  // namespace repeaterd::payload
