// payload/case: the CommCare case model (spec §3, §4; seeds/001 "Forward Cases").
//
// Finds case blocks in a submitted XForm (v2 namespace with any prefix, at any depth, and v1
// blocks; never inside a device report), reads case JSON objects (POST /a/{domain}/cases), applies
// them to the cases as leniently as CommCare HQ does (create first; actions in the order create,
// update, close, index, attachment; a repeated property element: the last wins), rebuilds a case
// from its forms when one arrives out of order or is edited, and renders a case the way HQ
// forwards it: a v2 <case> block with its full state, or case JSON. Pure code: no I/O, no clock
// (times are passed in).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "payload/datetime.hpp"
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
  // Every form that touched it, in arrival order. Not stored with the state: the store keeps
  // the case's forms and fills this in when a payload needs it.
  std::vector<std::string> xform_ids;
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
// (kDeviceReportNamespace) are skipped, and so are v2 blocks without a case_id attribute (as
// HQ skips them). Errors: an empty case_id (HQ's IllegalCaseId), malformed blocks.
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

// One form's blocks for one case: HQ's case transaction. The store keeps one per (case, form),
// so that a case can be rebuilt from the forms that stand (out-of-order arrival, form edits).
struct CaseForm {
  std::string form_id;
  std::string form_user_id;       // the form's meta/userID: the user of its blocks without user_id
  Micros server_date = 0;         // when repeaterd received the form
  std::vector<CaseBlock> blocks;  // this case's blocks in that form, in the order applied
};

// What the store knows of the cases a submission touches.
class CaseSource {
 public:
  virtual ~CaseSource() = default;
  // The case's current state; nullopt when it does not exist.
  virtual std::optional<CaseState> current(const std::string& case_id) = 0;
  // What a rebuild starts from: the state the case had before the store kept its forms (cases
  // from before schema 4), else nullopt; and the forms it keeps, in arrival order.
  virtual std::optional<CaseState> base(const std::string& case_id) = 0;
  virtual std::vector<CaseForm> forms(const std::string& case_id) = 0;
};

// One submission's case blocks (a form's, or a /cases post's).
struct CaseSubmission {
  std::string domain;
  std::string form_id;
  std::string form_user_id;  // meta/userID
  Micros now = 0;            // when it was received
  std::vector<CaseBlock> blocks;  // in document order
  // The form replaces an earlier one with its id (an edit): the earlier version's blocks in the
  // source are ignored, and every case either version touches (`also_rebuild`: those the
  // earlier one did) is rebuilt from the forms that stand.
  bool edit = false;
  std::vector<std::string> also_rebuild;
};

struct CaseChange {
  CaseState state;
  CaseForm form;  // this submission's blocks for the case (none when it was only rebuilt)
};

// Applies a submission's blocks as leniently as CommCare HQ does (spec §3):
// - a submission's blocks for one case are applied create first (otherwise in document order);
// - an update, index, close or attachment of a case not seen yet creates it, and so does a
//   create without case_type;
// - a block without user_id takes the form's meta/userID; owner_id defaults to the user_id;
// - date_modified never moves back; a form whose client date_modified is older than the case's
//   rebuilds the case from its forms in client-time order (ties: arrival order), so the result
//   is as if the forms had arrived in the order they were filled in;
// - update: case_type, case_name, owner_id, external_id and date_opened change the case's own
//   fields (an empty case_type or date_opened is ignored); every other element is a property;
// - index with an empty case_id removes it; attachment without src and from removes it.
// Refused, as HQ refuses them, rejecting the whole submission with an error naming the block:
// an index with a case_id but no case_type, an index relationship other than child/extension.
// Returns every touched (or rebuilt) case, in the order first touched.
Result<std::vector<CaseChange>> process_case_blocks(const CaseSubmission& s, CaseSource& source);

// A case rebuilt from scratch: `base` (if any), then `forms` (in arrival order) applied in
// client-time order, as process_case_blocks rebuilds one; server_modified_on is left at 0 (the
// store keeps it beside the case). nullopt when no form opens it.
std::optional<CaseState> rebuild_case(const std::string& case_id, const std::string& domain,
                                      std::optional<CaseState> base, std::vector<CaseForm> forms);

// The forwarded forms of a case (spec §4 case xml / case json), as HQ's V2CaseXMLGenerator and
// case API serializer write them. XML: <create> holds case_type, case_name and owner_id (the
// user_id when no owner is set); <update> holds external_id when set, date_opened as a date and
// every property by name, and is left out when empty; then <index> (relationship written only
// for extensions) and <attachment>; a closed case ends with <close/>. No XML declaration.
// JSON: the seeds' keys plus attachments and properties.external_id (null when unset).
std::string render_case_xml(const CaseState& c);
std::string render_case_json(const CaseState& c);

// CaseState <-> JSON for storage: every field but xform_ids, which the store keeps as the case's
// forms (so that adding a form to a case costs the same for its 1st and its 10,000th form).
std::string case_to_storage_json(const CaseState& c);
Result<CaseState> case_from_storage_json(std::string_view json);

// A case's blocks of one form <-> JSON for storage (CaseForm::blocks), lossless.
std::string blocks_to_storage_json(const std::vector<CaseBlock>& blocks);
Result<std::vector<CaseBlock>> blocks_from_storage_json(std::string_view json);

}  // namespace repeaterd::payload
