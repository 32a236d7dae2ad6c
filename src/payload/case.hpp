// payload/case: the CommCare case model (spec §3, §4; seeds/001 "Forward Cases").
//
// Finds case blocks in a submitted XForm (v2 namespace with any prefix, at any depth, and v1
// blocks; never inside a device report), reads case JSON objects (POST /a/{domain}/cases), applies
// them to the cases' previous states in CommCare's order (create, update, close, index,
// attachment; a repeated property element: the last wins), and renders a case the way it is
// forwarded: a v2 <case> block with its full state (a closed case: just a close block), or the
// seeds' case JSON. Pure code: no I/O, no clock (times are passed in).
#pragma once

#include <functional>
#include <map>
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

inline constexpr std::string_view kCaseV2Namespace = "http://commcarehq.org/case/transaction/v2";
inline constexpr std::string_view kDeviceReportNamespace = "http://code.javarosa.org/devicereport";

struct CaseIndex {
  std::string case_type;
  std::string case_id;
  std::string relationship = "child";  // "child" | "extension"
};

struct CaseAttachment {
  std::string src;   // the attachment's file name in the submission (or a URL)
  std::string from;  // "local" | "remote" | "inline"
  std::string name;  // the attachment's name attribute, when given
};

// Everything repeaterd knows about a case. Serialised to/from JSON for the store.
struct CaseState {
  std::string case_id;
  std::string domain;
  std::string case_type;
  std::string case_name;
  std::string owner_id;
  std::string user_id;      // the user who last modified it
  std::string external_id;  // v1 create's external_id, v2 create/update's external_id
  std::map<std::string, std::string> properties;    // dynamic properties (update block), sorted
  std::map<std::string, CaseIndex> indices;         // identifier -> index
  std::map<std::string, CaseAttachment> attachments;  // attachment element name -> attachment
  bool closed = false;
  std::optional<std::string> date_closed;  // ISO 8601 (date_modified of the closing block)
  std::string date_opened;                 // ISO 8601; from create's date_modified unless a property sets it
  std::string date_modified;               // ISO 8601, normalised (see normalize_datetime)
  Micros server_opened_on = 0;             // when repeaterd first saw the case
  Micros server_modified_on = 0;           // when repeaterd last changed it
  std::vector<std::string> xform_ids;      // every form that touched it, in order
};

// One case block (or case JSON object) as submitted.
struct CaseBlock {
  std::string case_id;
  std::string user_id;
  std::string date_modified;  // as written
  bool v1 = false;
  // create
  bool has_create = false;
  std::optional<std::string> create_case_type, create_case_name, create_owner_id, create_external_id;
  // update: in document order; a repeated element appears twice and the last wins
  std::vector<std::pair<std::string, std::string>> update;
  bool has_close = false;
  // index: identifier -> index (case_type may be empty here; validation rejects it)
  std::vector<std::pair<std::string, CaseIndex>> index;
  std::vector<std::pair<std::string, CaseAttachment>> attachment;
  // For error messages: "case block 2 (case_id \"abc\", line 12)" (XML; the line when known) or
  // "case object 2 (case_id \"abc\")" (JSON).
  std::string where;
};

// The case blocks of an XForm, in document order. Blocks inside a device report
// (kDeviceReportNamespace) are skipped. Errors: a block without case_id, malformed blocks.
// v2: a `case` element in kCaseV2Namespace (any prefix). v1: a `case` element in any other
// namespace with a case_id child (case_id, date_modified, user_id as children; create's
// case_type_id is the type and its user_id the user); a `case` without one is form data.
// `source`: the text the document was parsed from, so that error messages and CaseBlock::where
// give exact line numbers; without it they are counted in pugixml's buffer and may be low.
Result<std::vector<CaseBlock>> find_case_blocks(const pugi::xml_node& form_root, std::string_view source = {});

// Case JSON objects, one object or an array of them (POST /a/{domain}/cases):
// {"case_id", "case_type", "case_name", "owner_id", "user_id", "external_id", "date_modified",
//  "properties": {...}, "indices": {"parent": {"case_type", "case_id", "relationship"}},
//  "closed": true}. A case_type/case_name/owner_id on a case that does not exist yet creates it.
Result<std::vector<CaseBlock>> parse_case_json(std::string_view json);

// Applies `blocks` (from one submission `form_id`, received at `now`) on top of the current
// states that `lookup` returns (nullopt: the case does not exist). Atomic: any invalid block
// (no case_id, an update/close/index/attachment or an empty block for a case that neither exists
// nor is created earlier in the same submission, an index with a case_id but no case_type or an
// unknown relationship, a create of a new case with no case_type in its create or update)
// rejects the whole submission with an error that names the block. Returns the new states of
// every touched case, in the order first touched.
// - update: case_type, case_name, owner_id, external_id and date_opened change the case's own
//   fields (an empty case_type or date_opened is ignored); every other element is a property.
// - create of an existing case refreshes the fields it names; it does not reopen the case.
// - index with an empty case_id removes it; attachment without src and from removes it.
// - referenced cases of an index are not required to exist.
Result<std::vector<CaseState>> apply_case_blocks(
    const std::vector<CaseBlock>& blocks, const std::string& domain, const std::string& form_id, Micros now,
    const std::function<std::optional<CaseState>(const std::string& case_id)>& lookup);

// "2015-04-17T16:04:54.950-04" -> "2015-04-17T16:04:54.950000Z", "2010-06-29" ->
// "2010-06-29T00:00:00.000000Z" (CommCare keeps the wall-clock digits and drops the offset, as
// the seed shows). Text that is not a date/time is returned unchanged.
std::string normalize_datetime(std::string_view text);

// The forwarded forms of a case (spec §4 case xml / case json). XML: <create> always holds
// case_type, case_name, owner_id; <update> holds external_id when set, date_opened when it differs
// from date_modified (a receiver takes date_modified otherwise, as CommCare does) and every
// property, and is left out when empty; then <index> and <attachment>. No XML declaration.
std::string render_case_xml(const CaseState& c);
std::string render_case_json(const CaseState& c);

// CaseState <-> JSON for storage (all fields, lossless).
std::string case_to_storage_json(const CaseState& c);
Result<CaseState> case_from_storage_json(std::string_view json);

}  // namespace repeaterd::payload
