// ctl_format: what repeaterctl puts on the wire and on the screen, with no I/O of its own.
//
// Two halves, both pure so they are tested without a daemon:
//  - query building: the record filters of docs/admin-api.md as a query string (values
//    percent-encoded, repeated parameters for several values), and path segments made safe;
//  - formatting: the API's JSON as aligned tables and key/value blocks for people. Every string
//    shown comes from the daemon, and through it from remote servers (errors, response bodies,
//    headers), so everything is passed through terminal_safe() before it reaches a terminal.
//
// The JSON readers here tolerate missing fields and nulls (shown as "-"): an older or newer
// daemon must not make the CLI throw.
#pragma once

#include "common/text.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace repeaterd::ctl {

// ordered_json keeps the API's key order, so --json shows its answers as they were sent.
using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// Query strings and paths

// RFC 3986 percent-encoding (common/text.hpp): safe for a query value and for one path segment.
using repeaterd::percent_encode;

// The filters shared by `GET /api/v1/records` and the bulk actions.
struct RecordFilter {
  std::vector<std::string> repeaters;  // each sent as its own repeater= parameter
  std::vector<std::string> states;     // each sent as its own state= parameter
  std::string connection;
  std::string domain;
  std::string payload_id;
  std::string case_id;
  std::string created_after;   // ISO 8601 UTC, passed as typed (the API validates it)
  std::string created_before;
  std::string error_contains;

  // True when no filter is set: a bulk action refuses to run then.
  bool empty() const;
};

// "repeater=a&repeater=b&state=failed&…" in the API's parameter order; empty when nothing is
// set. `limit` 0 and an empty `after` are left out; `dry_run` adds dry_run=true.
std::string record_query(const RecordFilter& filter, int limit = 0, std::string_view after = {},
                         bool dry_run = false);

// `path` + "?" + `query`, or `path` alone when the query is empty.
std::string with_query(std::string path, std::string_view query);

// ---------------------------------------------------------------------------------------------
// Text for terminals

// `s` with every control character (C0 but tab and, unless `one_line`, newline; DEL; C1 written
// as UTF-8) replaced by a visible \xNN escape, so a remote server's text cannot drive the
// terminal. With `one_line`, CR, LF and tab become spaces. Invalid UTF-8 bytes are escaped too.
std::string terminal_safe(std::string_view s, bool one_line);

// Width of `s` in code points (what a terminal shows for the text repeaterd deals in), and `s`
// cut to at most that many code points, ending in "…" when it was cut (common/text.hpp).
inline std::size_t display_width(std::string_view s) { return repeaterd::code_points(s); }
inline std::string truncate(std::string_view s, std::size_t max_width) { return repeaterd::shorten(s, max_width); }

// An age for people: "0s", "42s", "5m07s", "3h04m", "2d03h". Negative and NaN read as 0s.
std::string format_age(double seconds);

// Columns padded to their widest cell, two spaces apart, the last column unpadded; one line per
// row, each ending in '\n'. Cells are shown as given: make them terminal_safe first.
std::string format_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows);

// JSON as `--json` prints it: pretty, two-space indent, a final newline. Invalid UTF-8 in
// strings is replaced (U+FFFD), never a throw.
std::string pretty_json(const Json& j);

// `records list --all --json`: every page as one answer, {"records": [...], "next": null},
// written a record at a time so memory stays bounded, and byte for byte what pretty_json()
// prints for that document.
class MergedRecordsJson {
 public:
  std::string begin() const;
  std::string add(const Json& record);
  std::string end() const;

 private:
  bool empty_ = true;
};

// ---------------------------------------------------------------------------------------------
// The commands' output for people

// `GET /api/v1/status`: a line about the daemon, then one row per repeater (counts by state,
// oldest due age, in flight, paused), then each repeater's last error, if any.
std::string format_status(const Json& status);

// `GET /api/v1/repeaters`.
std::string format_repeaters(const Json& repeaters);

// The records table: kRecordHeaders and one record_row() per record (REASON cut to
// kReasonWidth). format_records() is both, or a line saying nothing matched.
inline constexpr std::size_t kReasonWidth = 60;
const std::vector<std::string>& record_headers();
std::vector<std::string> record_row(const Json& record);
std::string format_records(const std::vector<std::vector<std::string>>& rows);

// The last line of a page that has a next one: the same command again with `--after NEXT`
// (any --after in `args` replaced), shell-quoted so it can be pasted. `args` is argv without
// argv[0].
std::string next_page_hint(const std::vector<std::string>& args, std::string_view next);

// `GET /api/v1/records/{id}`: the record, its payload, the request and every attempt (status,
// duration, error, response headers, body excerpt).
std::string format_record_detail(const Json& detail);

// One line for `POST /api/v1/records/{id}/{action}`'s answer: "requeued 0193… (pending, …)".
std::string format_record_action(std::string_view action, const Json& answer);

// One line for the bulk action's answer: "would requeue 200 records (dry run)".
std::string format_bulk_action(const Json& answer);

// One line for a pause/resume answer.
std::string format_repeater_action(std::string_view action, const Json& answer);

// The daemon's reason for an error answer: the `error` of its JSON (with the `parameter` at
// fault, when named), else the status and the first line of the body. terminal_safe, one line.
std::string api_error_message(long status, std::string_view body);

// Quotes `s` for a POSIX shell when it needs it ('…', with embedded quotes handled).
std::string shell_quote(std::string_view s);

}  // namespace repeaterd::ctl
