// Form XML -> JSON (payload::xml_to_json, render_form_json): an XForm body, parsed as the
// receiver parses it, rendered as the form repeater's JSON body.
#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include "fuzz.hpp"
#include "payload/form_json.hpp"
#include "payload/xform.hpp"

namespace payload = repeaterd::payload;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto form = payload::parse_xform(repeaterd::fuzz::as_text(data, size));
  if (!form) return 0;
  const pugi::xml_node root = form->document->document_element();
  // What goes to a receiver must be JSON it can read.
  FUZZ_CHECK(nlohmann::json::accept(payload::xml_to_json(root)));
  payload::FormJsonFields fields;
  fields.id = form->instance_id;
  fields.domain = "demo";
  fields.received_on = 1'765'000'000'000'000;
  fields.server_modified_on = fields.received_on;
  fields.attachments.push_back({"photo 1.jpg", "image/jpeg", 3});
  fields.attachment_url_base = "https://repeaterd.example/a/demo/receiver/attachments/" + form->instance_id;
  FUZZ_CHECK(nlohmann::json::accept(payload::render_form_json(root, fields)));
  payload::parse_app_version_text(root.child("meta").child_value("appVersion"));
  return 0;
}
