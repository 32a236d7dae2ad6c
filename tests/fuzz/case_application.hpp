// Applying fuzzed case blocks the way the receiver does, against cases held in memory, and
// checking what the store and the case repeaters would do with the result.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <string>
#include <vector>

#include "fuzz.hpp"
#include "payload/case.hpp"

namespace repeaterd::fuzz {

// The case store's part in process_case_blocks, in memory: states and each case's forms.
class MemoryCases : public payload::CaseSource {
 public:
  std::optional<payload::CaseState> current(const std::string& case_id) override {
    auto it = states_.find(case_id);
    if (it == states_.end()) return std::nullopt;
    return it->second;
  }
  std::optional<payload::CaseState> base(const std::string&) override { return std::nullopt; }
  std::vector<payload::CaseForm> forms(const std::string& case_id) override { return forms_[case_id]; }

  // Keeps a submission's changes, as the store job does, after checking that each survives the
  // store's JSON and renders as the XML and JSON a case repeater sends.
  void keep(const std::vector<payload::CaseChange>& changes) {
    for (const auto& change : changes) {
      const std::string stored = payload::case_to_storage_json(change.state);
      auto back = payload::case_from_storage_json(stored);
      FUZZ_CHECK(back.ok());
      FUZZ_CHECK(payload::case_to_storage_json(*back) == stored);
      const std::string blocks = payload::blocks_to_storage_json(change.form.blocks);
      auto blocks_back = payload::blocks_from_storage_json(blocks);
      FUZZ_CHECK(blocks_back.ok());
      FUZZ_CHECK(payload::blocks_to_storage_json(*blocks_back) == blocks);
      pugi::xml_document doc;
      FUZZ_CHECK(doc.load_string(payload::render_case_xml(change.state).c_str()));
      FUZZ_CHECK(nlohmann::json::accept(payload::render_case_json(change.state)));
      states_[change.state.case_id] = change.state;
      if (!change.form.blocks.empty()) forms_[change.state.case_id].push_back(change.form);
    }
  }

 private:
  std::map<std::string, payload::CaseState> states_;
  std::map<std::string, std::vector<payload::CaseForm>> forms_;
};

// The blocks as one form, then again as a second form received earlier in client time (a
// rebuild) and as an edit of the first: the paths a case takes through process_case_blocks.
inline void apply_case_blocks(const std::vector<payload::CaseBlock>& blocks, const std::string& user_id) {
  MemoryCases cases;
  payload::CaseSubmission s;
  s.domain = "demo";
  s.form_id = "form-1";
  s.form_user_id = user_id;
  s.now = 1'765'000'000'000'000;
  s.blocks = blocks;
  for (const char* form_id : {"form-1", "form-2"}) {
    s.form_id = form_id;
    auto changes = payload::process_case_blocks(s, cases);
    if (!changes) {
      FUZZ_CHECK(!changes.error().message.empty());
      return;
    }
    cases.keep(*changes);
    s.now -= 86'400'000'000;
  }
  s.form_id = "form-1";
  s.edit = true;
  for (const auto& b : blocks) s.also_rebuild.push_back(b.case_id);
  if (auto changes = payload::process_case_blocks(s, cases)) cases.keep(*changes);
}

}  // namespace repeaterd::fuzz
