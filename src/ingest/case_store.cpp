#include "ingest/case_store.hpp"

#include <stdexcept>

#include "store/store.hpp"

namespace repeaterd::ingest {
namespace {

// The store's cases as payload::CaseSource sees them.
class StoredCases final : public payload::CaseSource {
 public:
  StoredCases(store::Db& db, std::string domain) : db_(db), domain_(std::move(domain)) {}

  std::optional<payload::CaseState> current(const std::string& case_id) override {
    auto stored = store::Store::load_case(db_, domain_, case_id);
    if (!stored) return std::nullopt;
    return parsed(case_id, payload::case_from_storage_json(stored->state_json));
  }

  std::optional<payload::CaseState> base(const std::string& case_id) override {
    auto stored = store::Store::load_case(db_, domain_, case_id);
    if (!stored || !stored->base_json) return std::nullopt;
    return parsed(case_id, payload::case_from_storage_json(*stored->base_json));
  }

  std::vector<payload::CaseForm> forms(const std::string& case_id) override {
    std::vector<payload::CaseForm> out;
    for (auto& f : store::Store::case_forms(db_, domain_, case_id)) {
      auto blocks = payload::blocks_from_storage_json(f.blocks_json);
      if (!blocks) throw std::runtime_error("case " + case_id + " in the database is unreadable: " + blocks.error().message);
      out.push_back({std::move(f.form_id), std::move(f.user_id), f.server_date, std::move(*blocks)});
    }
    return out;
  }

 private:
  // A stored case that does not read back is corrupt: the job fails (503) rather than
  // overwriting it with a guess.
  static payload::CaseState parsed(const std::string& case_id, Result<payload::CaseState> state) {
    if (!state) throw std::runtime_error("case " + case_id + " in the database is unreadable: " + state.error().message);
    return std::move(*state);
  }

  store::Db& db_;
  std::string domain_;
};

}  // namespace

Result<std::vector<payload::CaseChange>> apply_and_save_cases(store::Db& db, const Submission& s,
                                                              const std::vector<std::string>* edited_cases,
                                                              bool with_xform_ids) {
  const auto& p = s.payload;
  payload::CaseSubmission in;
  in.domain = p.domain;
  in.form_id = p.payload_id;
  in.form_user_id = s.user_id;
  in.now = p.received_on;
  in.blocks = s.case_blocks;
  in.edit = edited_cases != nullptr;
  if (in.edit) in.also_rebuild = *edited_cases;
  StoredCases source(db, p.domain);
  auto changes = payload::process_case_blocks(in, source);
  if (!changes) return changes.error();  // nothing was written
  if (in.edit) store::Store::remove_case_forms(db, p.domain, p.payload_id, in.also_rebuild);
  for (auto& c : *changes) {
    store::Store::save_case(db, p.domain,
                            {c.state.case_id, c.state.case_type, c.state.closed, c.state.server_modified_on,
                             payload::case_to_storage_json(c.state), std::nullopt});
    if (!c.form.blocks.empty()) {
      store::Store::add_case_form(db, p.domain, c.state.case_id,
                                  {c.form.form_id, c.form.form_user_id, c.form.server_date,
                                   payload::blocks_to_storage_json(c.form.blocks)});
    }
    if (with_xform_ids) c.state.xform_ids = store::Store::case_form_ids(db, p.domain, c.state.case_id);
  }
  return changes;
}

}  // namespace repeaterd::ingest
