// ingest/submission: what a request becomes before it is stored, and the repeat records it
// creates (spec §3, §4). Pure: no I/O, no clock; the receiver supplies `now` and the case
// states after the submission's case blocks were applied.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "payload/case.hpp"
#include "payload/xform.hpp"
#include "repeaterd/config.hpp"
#include "store/store.hpp"

namespace repeaterd::ingest {

enum class SubmissionKind {
  xform,          // an XForm, raw or multipart: forwarded by form, form_stub and case repeaters
  json_form,      // a Kobo-style JSON submission: forwarded as submitted by form repeaters
  device_report,  // stored, never forwarded
  cases,          // POST /a/{domain}/cases: case repeaters only
  app_change,     // POST /a/{domain}/apps/{app_id}: app_structure repeaters only
};

struct Submission {
  SubmissionKind kind = SubmissionKind::xform;
  store::NewPayload payload;  // body, ids and content type as stored
  std::vector<store::NewAttachment> attachments;
  std::vector<payload::CaseBlock> case_blocks;
  std::string user_id;   // the submitting user (meta/userID), for exclude_users
  std::string build_id;  // app_change: the build id, when the app was built
  std::shared_ptr<pugi::xml_document> xform;  // kind == xform: the parsed form
  bool phone_submission = false;  // the request carried X-OpenRosa-Version (HQ's is_phone_submission)
  std::string submit_ip;          // the client's address
  // Set when the form replaces an earlier one with its id (an edit): when that one was received,
  // which the form keeps, as HQ's edited forms do.
  std::optional<Micros> edit_of_received_on;
};

// The ids of the cases a submission's blocks touch, in the order first touched.
std::vector<std::string> touched_case_ids(const std::vector<payload::CaseBlock>& blocks);

// One record per matching repeater (and per touched case for case repeaters), each with its
// request fixed now: body, content type, query and extra headers.
std::vector<store::NewRecord> make_records(const config::Config& config, const Submission& s,
                                           const std::vector<payload::CaseState>& cases, Micros now);

}  // namespace repeaterd::ingest
