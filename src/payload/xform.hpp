// payload: understanding what was submitted.
//
// parse_xform() checks that a body is well-formed XML and pulls out what repeaterd needs to
// route and identify it: the form's instanceID (from meta/instanceID with any namespace
// prefix, or the legacy Meta/uid) and the root element's xmlns. Errors say where the XML is
// broken (line and column) or what is missing, in words a form designer can act on.
#pragma once

#include <string>
#include <string_view>

#include "repeaterd/result.hpp"

namespace repeaterd::payload {

struct XForm {
  std::string instance_id;
  std::string xmlns;
};

Result<XForm> parse_xform(std::string_view body);

// Local name of an XML element or attribute name ("n1:meta" -> "meta").
std::string_view local_name(std::string_view qualified);

}  // namespace repeaterd::payload
