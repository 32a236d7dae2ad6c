// ingest/multipart: OpenRosa submissions as multipart/form-data (RFC 7578).
//
// ODK Collect and CommCare post the XForm instance in the part named "xml_submission_file"
// and any media as further parts. parse_multipart() splits a complete body (already bounded
// by listen.max_body) into its parts without copying more than once. Errors name what is wrong
// ("no boundary parameter", "part 2 has no Content-Disposition name", "the body ends before the
// closing boundary") so a client developer can fix the request.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "repeaterd/result.hpp"

namespace repeaterd::ingest {

struct Part {
  std::string name;          // Content-Disposition name
  std::string filename;      // Content-Disposition filename, if any
  std::string content_type;  // the part's Content-Type, "" when absent
  std::string body;
};

// A body of more parts is refused before they are stored: each part becomes a row and an
// attachment receivers may download, and no form has anywhere near as many media files (Django,
// which CommCare HQ runs on, refuses more than 1,000 fields and 100 files by default).
inline constexpr std::size_t kMaxParts = 1000;

// `content_type` is the request's Content-Type header (with its boundary parameter).
Result<std::vector<Part>> parse_multipart(std::string_view content_type, std::string_view body);

}  // namespace repeaterd::ingest
