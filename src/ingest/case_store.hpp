// ingest/case_store: a submission's case blocks applied against the case store (spec §3), in
// the store job that also stores the submission. Runs on the store's writer thread.
#pragma once

#include <string>
#include <vector>

#include "ingest/submission.hpp"
#include "payload/case.hpp"
#include "repeaterd/result.hpp"

namespace repeaterd::store {
class Db;
}

namespace repeaterd::ingest {

// Applies `s`'s case blocks (payload::process_case_blocks) to the cases stored in `db` and saves
// the new states and this form's blocks for each case. `edited_cases`, when set: `s` replaces an
// earlier form with its id, which touched these cases; its blocks are removed and those cases
// rebuilt. With `with_xform_ids`,
// each state's xform_ids is filled in from the store (case JSON payloads carry them). Errors:
// blocks HQ refuses too (nothing is written then). Throws when a stored case is unreadable.
Result<std::vector<payload::CaseChange>> apply_and_save_cases(store::Db& db, const Submission& s,
                                                              const std::vector<std::string>* edited_cases,
                                                              bool with_xform_ids);

}  // namespace repeaterd::ingest
