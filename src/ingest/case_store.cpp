#include "ingest/case_store.hpp"

#include <set>
#include <stdexcept>

#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::ingest {

namespace {

std::string key_of(const std::string& domain, const std::string& case_id) {
  std::string key;
  key.reserve(domain.size() + 1 + case_id.size());
  key += domain;
  key += '\0';
  key += case_id;
  return key;
}

}  // namespace

std::optional<payload::CaseState> ParsedCases::find(const std::string& domain, const std::string& case_id,
                                                    const std::string& json) {
  std::lock_guard lock(mu_);
  const auto it = entries_.find(key_of(domain, case_id));
  if (it == entries_.end() || it->second.json != json) return std::nullopt;
  return it->second.state;
}

void ParsedCases::remember(const std::string& domain, const std::string& case_id, const std::string& json,
                           const payload::CaseState& state) {
  if (capacity_ == 0) return;
  std::string key = key_of(domain, case_id);
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= capacity_) entries_.erase(entries_.begin());  // any one: they are cheap to rebuild
    it = entries_.emplace(std::move(key), Entry{}).first;
  }
  it->second.json = json;
  it->second.state = state;
  it->second.state.xform_ids.clear();  // as parsed from the stored text
}

namespace {

// The store's cases as payload::CaseSource sees them.
class StoredCases final : public payload::CaseSource {
 public:
  StoredCases(store::Db& db, std::string domain, ParsedCases* parsed)
      : db_(db), domain_(std::move(domain)), parsed_(parsed) {}

  std::optional<payload::CaseState> current(const std::string& case_id) override {
    auto stored = store::Store::load_case(db_, domain_, case_id);
    if (!stored) return std::nullopt;
    existing_.insert(case_id);
    if (stored->state_json.empty()) return from_first_form(case_id, *stored);
    if (parsed_ != nullptr) {
      if (auto state = parsed_->find(domain_, case_id, stored->state_json)) return state;
    }
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

  // Whether current() found the case stored: a case updated a second time is likely to be
  // updated again, one just opened mostly is not.
  bool existed(const std::string& case_id) const { return existing_.contains(case_id); }

  // A case stored without its state (StoredCase::state_json): rebuilt from the one form that
  // opened it, as it was when that form was applied.
  payload::CaseState from_first_form(const std::string& case_id, const store::StoredCase& stored) {
    auto built = payload::rebuild_case(case_id, domain_, std::nullopt, forms(case_id));
    if (!built) throw std::runtime_error("case " + case_id + " in the database is unreadable: no state and no form");
    built->server_modified_on = stored.server_modified_on;
    built->xform_ids.clear();  // as a state read from its stored text
    return std::move(*built);
  }

  // Before an edit takes a form away: a case whose state lives only in that form gets it
  // written out, so that a case the edited form no longer touches keeps what it had.
  void keep_state(const std::string& case_id) {
    auto stored = store::Store::load_case(db_, domain_, case_id);
    if (!stored || !stored->state_json.empty()) return;
    stored->state_json = payload::case_to_storage_json(from_first_form(case_id, *stored));
    store::Store::save_case(db_, domain_, *stored);
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
  ParsedCases* parsed_;
  std::set<std::string> existing_;
};

}  // namespace

Result<std::vector<payload::CaseChange>> apply_and_save_cases(store::Db& db, const Submission& s,
                                                              const std::vector<std::string>* edited_cases,
                                                              bool with_xform_ids, ParsedCases* parsed) {
  const auto& p = s.payload;
  payload::CaseSubmission in;
  in.domain = p.domain;
  in.form_id = p.payload_id;
  in.form_user_id = s.user_id;
  in.now = p.received_on;
  in.blocks = s.case_blocks;
  in.edit = edited_cases != nullptr;
  if (in.edit) in.also_rebuild = *edited_cases;
  StoredCases source(db, p.domain, parsed);
  auto changes = payload::process_case_blocks(in, source);
  if (!changes) return changes.error();  // nothing was written
  if (in.edit) {
    for (const auto& id : in.also_rebuild) source.keep_state(id);
    store::Store::remove_case_forms(db, p.domain, p.payload_id, in.also_rebuild);
  }
  for (auto& c : *changes) {
    // A case this form opens keeps its state in this form's blocks (its first form) until it is
    // touched again: most cases are opened by one form and seldom touched, and their state
    // would repeat the form's blocks (a third of what a delivered form costs on disk).
    const bool opened_here = !in.edit && !source.existed(c.state.case_id) && !c.form.blocks.empty();
    store::StoredCase stored{c.state.case_id, c.state.case_type, c.state.closed, c.state.server_modified_on,
                             opened_here ? std::string() : payload::case_to_storage_json(c.state), std::nullopt};
    store::Store::save_case(db, p.domain, stored);
    if (parsed != nullptr && source.existed(c.state.case_id)) {
      parsed->remember(p.domain, c.state.case_id, stored.state_json, c.state);
    }
    if (!c.form.blocks.empty()) {
      store::Store::add_case_form(db, p.domain, c.state.case_id,
                                  {c.form.form_id, c.form.form_user_id, c.form.server_date,
                                   payload::blocks_to_storage_json(c.form.blocks)});
    }
    if (with_xform_ids) c.state.xform_ids = store::Store::case_form_ids(db, p.domain, c.state.case_id);
  }
  return changes;
}

std::optional<payload::CaseState> read_case(store::Db& db, const std::string& domain, const std::string& case_id) {
  // One snapshot for the row and the forms: a case that a form touches between the two reads
  // would otherwise show an empty state next to a form list that no longer fits it.
  db.exec("BEGIN");
  try {
    StoredCases source(db, domain, nullptr);
    auto state = source.current(case_id);
    if (state) state->xform_ids = store::Store::case_form_ids(db, domain, case_id);
    db.exec("COMMIT");
    return state;
  } catch (...) {
    db.exec("ROLLBACK");
    throw;
  }
}

}  // namespace repeaterd::ingest
