// Applying case blocks to case states as leniently as CommCare HQ does, and rebuilding a case
// from its forms. Reading blocks is in case_parse.cpp, rendering and storage in case_render.cpp.
#include "payload/case.hpp"

#include <algorithm>
#include <unordered_map>

namespace repeaterd::payload {
namespace {

Status validate_indices(const CaseBlock& b) {
  for (const auto& [identifier, index] : b.index) {
    const std::string which = b.where + ": index \"" + identifier + "\"";
    if (identifier.empty()) return make_error(b.where + ": an index has no identifier");
    if (index.case_id.empty()) continue;  // removes the index; type and relationship do not matter
    if (index.case_type.empty()) return make_error(which + " has no case_type");
    if (index.relationship != "child" && index.relationship != "extension") {
      return make_error(which + " has relationship \"" + index.relationship + "\"; expected child or extension");
    }
  }
  return Ok{};
}

// HQ runs adjust_datetimes over the whole form before it processes cases: a date and time in
// any case field reaches the case in UTC (a date alone stays as written).
std::string adjusted(const std::string& value) { return adjust_datetime(value).value_or(value); }

// The update block's known names change the case's own fields (as CommCare does); everything
// else is a dynamic property. An empty case_type or date_opened is ignored: a case always has a
// type and an opening date, and an empty form field is more likely a blank question than intent.
void apply_update(CaseState& c, const CaseBlock& b) {
  for (const auto& [name, raw] : b.update) {
    const std::string value = adjusted(raw);
    if (name == "case_type") {
      if (!value.empty()) c.case_type = value;
    } else if (name == "case_name") {
      c.case_name = value;
    } else if (name == "owner_id") {
      c.owner_id = value;
    } else if (name == "external_id") {
      c.external_id = value;
    } else if (name == "date_opened") {
      if (!value.empty()) c.date_opened = normalize_datetime(value);
    } else {
      c.properties[name] = value;  // in document order, so a repeated element: the last wins
    }
  }
}

// The instant a normalised time names, for ordering; nullopt for text that is not a time.
std::optional<Micros> instant(std::string_view text) {
  const auto t = parse_phone_time(text);
  return t ? std::optional<Micros>(t->utc) : std::nullopt;
}

// When the form was filled in, as far as this case is concerned: its blocks' client
// date_modified (the latest), else when repeaterd received it.
Micros client_time(const CaseForm& f) {
  std::optional<Micros> latest;
  for (const auto& b : f.blocks) {
    if (auto t = instant(b.date_modified); t && (!latest || *t > *latest)) latest = t;
  }
  return latest.value_or(f.server_date);
}

// Applies one form's blocks for one case. `exists` is false for a case nothing has opened yet;
// the first block opens it, whatever its actions (HQ's leniency).
void apply_form(CaseState& c, bool& exists, const CaseForm& f, const std::string& case_id, const std::string& domain) {
  for (const CaseBlock& b : f.blocks) {
    const std::string modified = b.date_modified.empty() ? std::string{} : normalize_datetime(b.date_modified);
    const std::string when = modified.empty() ? format_iso8601(f.server_date) : modified;
    if (!exists) {
      c = CaseState{};
      c.case_id = case_id;
      c.domain = domain;
      c.server_opened_on = f.server_date;
      c.date_opened = when;
      exists = true;
    }
    // The order CommCare applies actions in, whatever order the form wrote them.
    if (b.has_create) {
      // A create of a case that exists (a resubmitted form, a second create) refreshes its
      // fields; it does not reopen it or reset when it was opened.
      if (b.create_case_type && !b.create_case_type->empty()) c.case_type = adjusted(*b.create_case_type);
      if (b.create_case_name) c.case_name = adjusted(*b.create_case_name);
      if (b.create_owner_id && !b.create_owner_id->empty()) c.owner_id = adjusted(*b.create_owner_id);
      if (b.create_external_id) c.external_id = adjusted(*b.create_external_id);
    }
    apply_update(c, b);
    if (b.has_close) {
      c.closed = true;
      c.date_closed = when;
    }
    for (const auto& [identifier, index] : b.index) {
      if (index.case_id.empty()) {
        c.indices.erase(identifier);
      } else {
        c.indices[identifier] = index;
      }
    }
    for (const auto& [name, attachment] : b.attachment) {
      if (attachment.src.empty() && attachment.from.empty()) {
        c.attachments.erase(name);  // an attachment element without a source removes it
      } else {
        c.attachments[name] = attachment;
      }
    }

    // Every touched case, even by a block with no actions.
    const std::string& user = b.user_id.empty() ? f.form_user_id : b.user_id;
    if (!user.empty()) c.user_id = user;
    if (c.owner_id.empty()) c.owner_id = c.user_id;
    // date_modified never moves back: a late form's older time leaves it where it is.
    const auto at = instant(when);
    const auto current = instant(c.date_modified);
    if (c.date_modified.empty() || (at && (!current || *at > *current))) c.date_modified = when;
    if (std::find(c.xform_ids.begin(), c.xform_ids.end(), f.form_id) == c.xform_ids.end()) {
      c.xform_ids.push_back(f.form_id);
    }
  }
}

}  // namespace

// The case from scratch: its base (if any), then every form in client-time order, ties in
// arrival order. `forms` come in arrival order, which xform_ids keep. nullopt when nothing is
// left to build it from.
std::optional<CaseState> rebuild_case(const std::string& case_id, const std::string& domain,
                                      std::optional<CaseState> base, std::vector<CaseForm> forms) {
  std::vector<std::string> xform_ids;
  for (const auto& f : forms) {
    if (std::find(xform_ids.begin(), xform_ids.end(), f.form_id) == xform_ids.end()) xform_ids.push_back(f.form_id);
  }
  std::stable_sort(forms.begin(), forms.end(),
                   [](const CaseForm& a, const CaseForm& b) { return client_time(a) < client_time(b); });
  const bool had_base = base.has_value();
  bool exists = had_base;
  CaseState c = base ? std::move(*base) : CaseState{};
  for (const auto& f : forms) apply_form(c, exists, f, case_id, domain);
  if (!exists) return std::nullopt;
  if (!had_base) {  // first seen when its first form arrived, whichever was applied first
    for (const auto& f : forms) {
      if (!f.blocks.empty()) c.server_opened_on = std::min(c.server_opened_on, f.server_date);
    }
  }
  c.xform_ids = std::move(xform_ids);
  return c;
}

Result<std::vector<CaseChange>> process_case_blocks(const CaseSubmission& s, CaseSource& source) {
  // Everything is checked before anything is applied: a refused submission changes nothing.
  for (const CaseBlock& b : s.blocks) {
    if (b.case_id.empty()) return make_error(b.where + ": the case block has no case_id");
    if (auto st = validate_indices(b); !st) return st.error();
  }

  // This form's entry for each case, in the order first touched; its creates first.
  std::vector<CaseForm> entries;
  std::unordered_map<std::string, std::size_t> entry_of;
  for (const CaseBlock& b : s.blocks) {
    auto [it, fresh] = entry_of.emplace(b.case_id, entries.size());
    if (fresh) entries.push_back(CaseForm{s.form_id, s.form_user_id, s.now, {}});
    entries[it->second].blocks.push_back(b);
  }
  for (auto& e : entries) {
    std::stable_partition(e.blocks.begin(), e.blocks.end(), [](const CaseBlock& b) { return b.has_create; });
  }
  std::vector<std::string> ids;
  for (const auto& e : entries) ids.push_back(e.blocks.front().case_id);
  for (const auto& id : s.also_rebuild) {
    if (!entry_of.contains(id)) {
      entry_of.emplace(id, entries.size());
      entries.push_back(CaseForm{s.form_id, s.form_user_id, s.now, {}});
      ids.push_back(id);
    }
  }

  std::vector<CaseChange> out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::string& id = ids[i];
    CaseForm& entry = entries[i];
    CaseChange change;
    bool must_rebuild = s.edit || entry.blocks.empty();
    std::optional<CaseState> current;
    if (!must_rebuild) {
      current = source.current(id);
      if (current) {
        const auto latest = instant(current->date_modified);
        must_rebuild = latest && client_time(entry) < *latest;
      }
    }
    if (must_rebuild) {
      std::vector<CaseForm> forms = source.forms(id);
      if (s.edit) std::erase_if(forms, [&](const CaseForm& f) { return f.form_id == s.form_id; });
      if (!entry.blocks.empty()) forms.push_back(entry);
      auto built = rebuild_case(id, s.domain, source.base(id), std::move(forms));
      if (!built) continue;  // an edit took away the only form that touched it: leave it be
      change.state = std::move(*built);
    } else {
      bool exists = current.has_value();
      change.state = current ? std::move(*current) : CaseState{};
      apply_form(change.state, exists, entry, id, s.domain);
    }
    change.state.server_modified_on = s.now;
    change.form = std::move(entry);
    out.push_back(std::move(change));
  }
  return out;
}

}  // namespace repeaterd::payload
