// payload/form_json: forms as JSON (spec §4 "form, json") and JSON submissions (spec §3).
//
// render_form_json() is the body CommCare HQ's form repeater sends in JSON format: its form
// API resource (XFormInstanceResource) over the stored form, serialised with sorted keys. The
// `form` inside is HQ's xml2json of the XML (convert_xform_to_json), after HQ's processing at
// submission (adjust_datetimes, scrub_form_meta) and at indexing (the meta and case-block
// clean-up of its Elasticsearch transform); `metadata` is HQ's clean_metadata of form.meta.
//
// xml_to_json() is xml2json alone: element names without their prefix; an element with only
// text becomes that text, untrimmed (an empty element ""); attributes become "@name" keys
// ("@{uri}local" for a namespaced attribute, as lxml names it); "@xmlns" appears where an
// element's namespace URI differs from its parent's; text before the first child becomes
// "#text" when it is not blank; repeated siblings become an array in document order; tail text,
// comments and processing instructions are dropped. Keys are sorted, as HQ's serializer does.
//
// Whitespace-only text is seen only if the document was parsed with pugi::parse_ws_pcdata or
// parse_ws_pcdata_single: pugixml's default drops it, so <a>  </a> would read as "".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "repeaterd/result.hpp"
#include "repeaterd/time.hpp"

namespace pugi {
class xml_node;
}

namespace repeaterd::payload {

// The element as a JSON value, serialised (an object, or a string for a text-only element).
// A document node stands for its root element.
std::string xml_to_json(const pugi::xml_node& element);

// One entry of the envelope's "attachments" (HQ: the form's blobs).
struct FormAttachment {
  std::string name;          // the key, as the submission named the part
  std::string content_type;
  std::uint64_t length = 0;  // bytes
};

// What the caller knows about the stored form; the rest of the envelope comes from the XML.
struct FormJsonFields {
  std::string id;                  // the form id (meta/instanceID or the one repeaterd gave)
  std::string domain;
  std::string app_id;              // "" is written as null
  std::string build_id;            // "" is written as null
  Micros received_on = 0;          // also "indexed_on"
  Micros server_modified_on = 0;
  std::optional<Micros> edited_on;  // set when this submission edited an earlier form
  std::string edited_by_user_id;   // written only when edited_on is set; "" is null
  bool is_phone_submission = false;  // HQ: the request carried X-OpenRosa-Version
  std::string submit_ip;           // "" is written as null
  std::vector<FormAttachment> attachments;
  // When not empty, each attachment gets "url": base + "/" + percent-encoded name. Empty: no
  // "url" key (repeaterd has nowhere public to serve them from).
  std::string attachment_url_base;
};

// HQ's form API envelope, keys sorted at every level:
// app_id, archived, attachments, build_id, domain, edited_by_user_id, edited_on, form, id,
// indexed_on, initial_processing_complete, is_phone_submission, metadata, problem, received_on,
// resource_uri, server_modified_on, submit_ip, type, uiversion, version.
std::string render_form_json(const pugi::xml_node& form_root, const FormJsonFields& fields);

// HQ's parsing of a meta/appVersion text (corehq/apps/receiverwrapper/util.py): the CommCare
// version ("2.19.8") and the app build version (10), each nullopt when the text has none.
struct AppVersionInfo {
  std::optional<std::string> commcare_version;
  std::optional<std::int64_t> build_version;
};
AppVersionInfo parse_app_version_text(std::string_view text);

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
