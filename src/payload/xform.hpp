// payload: understanding what was submitted.
//
// parse_xform() checks that a body is well-formed XML and pulls out what repeaterd needs to
// route and identify it: the form's instanceID (from meta/instanceID with any namespace
// prefix, or the legacy Meta/uid; a new UUID when it has none, as HQ does) and the root
// element's xmlns. A device report
// (http://code.javarosa.org/devicereport) needs no instanceID: its id is its SHA-256, so an
// identical report sent twice is a duplicate. Errors say where the XML is
// broken (line and column) or what is missing, in words a form designer can act on.
#pragma once

#include <pugixml.hpp>

#include <memory>
#include <string>
#include <string_view>

#include "repeaterd/result.hpp"

namespace repeaterd::payload {

struct XForm {
  std::string instance_id;
  std::string xmlns;
  std::string user_id;         // meta/userID (or legacy Meta/user_id), for exclude_users
  bool device_report = false;
  bool generated_id = false;   // the form had no meta/instanceID (or an empty one): repeaterd made one  // a device report: stored, never forwarded, case blocks ignored
  std::shared_ptr<pugi::xml_document> document;  // the parsed form, for case blocks and JSON
};

Result<XForm> parse_xform(std::string_view body);

// Local name of an XML element or attribute name ("n1:meta" -> "meta").
std::string_view local_name(std::string_view qualified);

}  // namespace repeaterd::payload
