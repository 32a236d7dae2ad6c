// payload/untrusted: the limits every submitted document passes before anything walks it.
//
// Submissions come from phones and servers we do not control, and several parts of repeaterd
// walk a document recursively (form XML -> JSON, nlohmann's dump), so a document nested 100,000
// deep would exhaust a thread's stack and take the daemon down. Documents are refused, with the
// line and column, when they:
// - nest deeper than kMaxNesting (256: libxml2's default limit, which CommCare HQ's lxml parser
//   applies too; a real form nests groups and repeats a few levels);
// - declare a DOCTYPE (XML): entity declarations are how "billion laughs" and external-entity
//   attacks travel, repeaterd would pass them on to every receiver, and no CommCare, ODK or Kobo
//   client sends one;
// - are not UTF-8 where they say (or, by default, are) UTF-8: the ids in them are stored,
//   logged and echoed back.
#pragma once

#include <pugixml.hpp>

#include <string_view>

#include "repeaterd/result.hpp"

namespace repeaterd::payload {

inline constexpr int kMaxNesting = 256;

// Parses `body` into `doc` (pugi::parse_default plus `extra_flags`) and applies the limits
// above. Errors: "malformed XML at line 3, column 14: ...", "... nested deeper than 256 ...".
Status load_untrusted_xml(pugi::xml_document& doc, std::string_view body, unsigned extra_flags = 0);

// Whether `text` (JSON, not yet parsed) nests arrays and objects deeper than kMaxNesting, is
// not UTF-8 or holds a number too large for a double (which nlohmann reports as out_of_range, not as
// a parse_error), as an error naming the line and column; checked before nlohmann parses it.
Status check_untrusted_json(std::string_view text);

}  // namespace repeaterd::payload
