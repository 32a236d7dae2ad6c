// Case-block parsing and application (payload::find_case_blocks, process_case_blocks): an XML
// body, read as a form (POST /a/{domain}/receiver) and as bare case blocks (POST .../cases).
#include <pugixml.hpp>

#include "case_application.hpp"
#include "payload/untrusted.hpp"
#include "payload/xform.hpp"

namespace payload = repeaterd::payload;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body = repeaterd::fuzz::as_text(data, size);
  if (auto form = payload::parse_xform(body); form && !form->device_report) {
    if (auto blocks = payload::find_case_blocks(form->document->document_element(), body)) {
      repeaterd::fuzz::apply_case_blocks(*blocks, form->user_id);
    }
  }
  pugi::xml_document doc;
  if (payload::load_untrusted_xml(doc, body)) {
    if (auto blocks = payload::find_case_blocks(doc, body)) repeaterd::fuzz::apply_case_blocks(*blocks, "");
  }
  return 0;
}
