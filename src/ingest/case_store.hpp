// ingest/case_store: a submission's case blocks applied against the case store (spec §3), in
// the store job that also stores the submission. Runs on the store's writer thread.
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ingest/submission.hpp"
#include "payload/case.hpp"
#include "repeaterd/result.hpp"

namespace repeaterd::store {
class Db;
}

namespace repeaterd::ingest {

// The states of recently updated cases, parsed, so that a busy case (every form of a day's visits
// updating it) does not have its stored JSON parsed again for each form. An entry is used only
// when the stored text is exactly the text it was made from, so a state changed elsewhere or a
// rolled-back job simply means one more parse. Holds at most `capacity` cases.
// Thread-safe (in practice used by the store's writer thread only).
class ParsedCases {
 public:
  explicit ParsedCases(std::size_t capacity = 256) : capacity_(capacity) {}

  // The state `json` (as stored for the case) holds, when it is the text last remembered for it.
  std::optional<payload::CaseState> find(const std::string& domain, const std::string& case_id,
                                         const std::string& json);
  // `state` is what `json` holds (xform_ids aside: the stored state has none).
  void remember(const std::string& domain, const std::string& case_id, const std::string& json,
                const payload::CaseState& state);

 private:
  struct Entry {
    std::string json;
    payload::CaseState state;
  };
  const std::size_t capacity_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // GUARDED_BY(mu_); key: domain, NUL, case id
};

// Applies `s`'s case blocks (payload::process_case_blocks) to the cases stored in `db` and saves
// the new states and this form's blocks for each case. `edited_cases`, when set: `s` replaces an
// earlier form with its id, which touched these cases; its blocks are removed and those cases
// rebuilt. With `with_xform_ids`, each state's xform_ids is filled in from the store (case JSON
// payloads carry them). `parsed`, when given, saves parsing the states of cases updated again.
// Errors: blocks HQ refuses too (nothing is written then). Throws when a stored case is
// unreadable.
Result<std::vector<payload::CaseChange>> apply_and_save_cases(store::Db& db, const Submission& s,
                                                              const std::vector<std::string>* edited_cases,
                                                              bool with_xform_ids, ParsedCases* parsed = nullptr);

// A stored case as the daemon reads it (its state rebuilt from its first form when it has only
// that: store::StoredCase::state_json), with its xform_ids; nullopt when it is not stored.
// Throws when it is unreadable. Reads only, in a transaction of its own (call it outside one): a
// read-only connection will do.
std::optional<payload::CaseState> read_case(store::Db& db, const std::string& domain, const std::string& case_id);

}  // namespace repeaterd::ingest
