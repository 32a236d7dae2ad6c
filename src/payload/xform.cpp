#include "payload/xform.hpp"

#include <pugixml.hpp>

#include <algorithm>
#include <string>

#include "common/ids.hpp"
#include "common/text_position.hpp"
#include "common/text.hpp"
#include "payload/untrusted.hpp"

namespace repeaterd::payload {
namespace {

constexpr std::string_view kDeviceReportXmlns = "http://code.javarosa.org/devicereport";

pugi::xml_node child_named(pugi::xml_node parent, std::string_view local) {
  for (auto c : parent.children()) {
    if (c.type() == pugi::node_element && local_name(c.name()) == local) return c;
  }
  return {};
}

}  // namespace

std::string_view local_name(std::string_view qualified) {
  const auto colon = qualified.find(':');
  return colon == std::string_view::npos ? qualified : qualified.substr(colon + 1);
}

Result<XForm> parse_xform(std::string_view body) {
  if (body.empty()) return make_error("the request body is empty: expected an XForm instance (XML)");
  auto document = std::make_shared<pugi::xml_document>();
  pugi::xml_document& doc = *document;
  if (auto loaded = load_untrusted_xml(doc, body, pugi::parse_ws_pcdata_single); !loaded) return loaded.error();
  auto root = doc.document_element();
  if (!root) return make_error("the XML has no root element: expected an XForm instance");

  XForm form;
  form.xmlns = root.attribute("xmlns").value();
  form.document = document;
  if (form.xmlns == kDeviceReportXmlns) {
    form.device_report = true;
    form.instance_id = sha256_hex(body);
    return form;
  }

  // meta is a child of the form's root in every client we know; the legacy spelling is Meta/uid.
  pugi::xml_node id_node;
  if (auto meta = child_named(root, "meta")) {
    id_node = child_named(meta, "instanceID");
    form.user_id = std::string(trim(child_named(meta, "userID").child_value()));
  }
  if (!id_node) {
    if (auto meta = child_named(root, "Meta")) {
      id_node = child_named(meta, "uid");
      form.user_id = std::string(trim(child_named(meta, "user_id").child_value()));
    }
  }
  form.instance_id = id_node ? std::string(trim(id_node.child_value())) : std::string();
  // A form without an id is accepted and given one, as CommCare HQ does: refusing it would make
  // the phone resend it forever. (Two sends of it are then two forms.)
  if (form.instance_id.empty()) {
    form.instance_id = uuid_v4();
    form.generated_id = true;
  }
  if (form.instance_id.size() > 255) return make_error("the form's meta/instanceID is longer than 255 characters");
  return form;
}

}  // namespace repeaterd::payload
