// Applying case blocks to case states, and the date normalisation CommCare applies to them.
// Reading blocks is in case_parse.cpp, rendering and storage in case_render.cpp.
#include "payload/case.hpp"

#include <algorithm>
#include <unordered_map>

namespace repeaterd::payload {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads exactly `n` digits at `pos`.
bool read_digits(std::string_view s, std::size_t& pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!is_digit(s[pos + i])) return false;
    v = v * 10 + (s[pos + i] - '0');
  }
  pos += n;
  out = v;
  return true;
}

int days_in_month(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// "Z", "+hh", "+hh:mm" or "+hhmm" (or "-").
bool valid_zone(std::string_view zone) {
  if (zone == "Z") return true;
  if (zone.empty() || (zone[0] != '+' && zone[0] != '-')) return false;
  std::size_t pos = 1;
  int hours = 0, minutes = 0;
  if (!read_digits(zone, pos, 2, hours) || hours > 23) return false;
  if (pos == zone.size()) return true;
  if (zone[pos] == ':') ++pos;
  return read_digits(zone, pos, 2, minutes) && minutes <= 59 && pos == zone.size();
}

std::string two(int v) { return std::string{static_cast<char>('0' + v / 10), static_cast<char>('0' + v % 10)}; }

// What the blocks of one submission have done so far: the working copy of every case touched,
// in the order first touched. Nothing reaches the caller unless every block is valid.
class Working {
 public:
  explicit Working(const std::function<std::optional<CaseState>(const std::string&)>& lookup) : lookup_(lookup) {}

  // The case as it stands in this submission, loading it on first use; null when it exists
  // neither in the store nor earlier in the submission.
  CaseState* find(const std::string& case_id) {
    if (auto it = index_.find(case_id); it != index_.end()) return &states_[it->second];
    std::optional<CaseState> stored = lookup_ ? lookup_(case_id) : std::nullopt;
    if (!stored) return nullptr;
    return &add(std::move(*stored));
  }

  CaseState& add(CaseState c) {
    index_.emplace(c.case_id, states_.size());
    states_.push_back(std::move(c));
    return states_.back();
  }

  std::vector<CaseState> take() && { return std::move(states_); }

 private:
  const std::function<std::optional<CaseState>(const std::string&)>& lookup_;
  std::vector<CaseState> states_;
  std::unordered_map<std::string, std::size_t> index_;
};

// The first action a block would perform on the case, to say what was refused.
std::string first_action(const CaseBlock& b) {
  if (!b.update.empty()) return "update";
  if (b.has_close) return "close";
  if (!b.index.empty()) return "index";
  if (!b.attachment.empty()) return "attachment";
  return "case block without create";
}

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

// The update block's known names change the case's own fields (as CommCare does); everything
// else is a dynamic property. An empty case_type or date_opened is ignored: a case always has a
// type and an opening date, and an empty form field is more likely a blank question than intent.
void apply_update(CaseState& c, const CaseBlock& b) {
  for (const auto& [name, value] : b.update) {
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

}  // namespace

Result<std::vector<CaseState>> apply_case_blocks(
    const std::vector<CaseBlock>& blocks, const std::string& domain, const std::string& form_id, Micros now,
    const std::function<std::optional<CaseState>(const std::string& case_id)>& lookup) {
  Working working(lookup);
  const std::string now_text = format_iso8601(now);

  for (const CaseBlock& b : blocks) {
    if (b.case_id.empty()) return make_error(b.where + ": the case block has no case_id");
    if (auto s = validate_indices(b); !s) return s.error();
    const std::string modified = b.date_modified.empty() ? std::string{} : normalize_datetime(b.date_modified);

    CaseState* c = working.find(b.case_id);
    if (c == nullptr) {
      if (!b.has_create) {
        return make_error(b.where + ": " + first_action(b) +
                          " of a case that does not exist and is not created earlier in this submission");
      }
      // A new case must have a type: repeaters filter and route by it, and CommCare itself
      // cannot open a case without one. The same block's update may supply it.
      std::string type = b.create_case_type.value_or("");
      for (const auto& [name, value] : b.update) {
        if (name == "case_type" && !value.empty()) type = value;
      }
      if (type.empty()) return make_error(b.where + ": create of a new case without case_type");
      CaseState fresh;
      fresh.case_id = b.case_id;
      fresh.domain = domain;
      fresh.server_opened_on = now;
      fresh.date_opened = modified.empty() ? now_text : modified;
      c = &working.add(std::move(fresh));
    }

    // The order CommCare applies actions in, whatever order the form wrote them.
    if (b.has_create) {
      // A create of a case that exists (a resubmitted form, a second create) refreshes its
      // fields; it does not reopen it or reset when it was opened.
      if (b.create_case_type && !b.create_case_type->empty()) c->case_type = *b.create_case_type;
      if (b.create_case_name) c->case_name = *b.create_case_name;
      if (b.create_owner_id) c->owner_id = *b.create_owner_id;
      if (b.create_external_id) c->external_id = *b.create_external_id;
    }
    apply_update(*c, b);
    if (b.has_close) {
      c->closed = true;
      c->date_closed = modified.empty() ? now_text : modified;
    }
    for (const auto& [identifier, index] : b.index) {
      if (index.case_id.empty()) {
        c->indices.erase(identifier);
      } else {
        c->indices[identifier] = index;
      }
    }
    for (const auto& [name, attachment] : b.attachment) {
      if (attachment.src.empty() && attachment.from.empty()) {
        c->attachments.erase(name);  // an attachment element without a source removes it
      } else {
        c->attachments[name] = attachment;
      }
    }

    // Every touched case, even by a block with no actions.
    if (!b.user_id.empty()) c->user_id = b.user_id;
    if (!modified.empty()) {
      c->date_modified = modified;
    } else if (c->date_modified.empty()) {
      c->date_modified = now_text;
    }
    c->server_modified_on = now;
    if (std::find(c->xform_ids.begin(), c->xform_ids.end(), form_id) == c->xform_ids.end()) {
      c->xform_ids.push_back(form_id);
    }
  }
  return std::move(working).take();
}

std::string normalize_datetime(std::string_view text) {
  std::size_t pos = 0;
  int year = 0, month = 0, day = 0;
  if (!read_digits(text, pos, 4, year) || pos >= text.size() || text[pos++] != '-' ||
      !read_digits(text, pos, 2, month) || pos >= text.size() || text[pos++] != '-' ||
      !read_digits(text, pos, 2, day)) {
    return std::string(text);
  }
  if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)) return std::string(text);
  const std::string date(text.substr(0, pos));
  if (pos == text.size()) return date + "T00:00:00.000000Z";

  if (text[pos] != 'T' && text[pos] != ' ') return std::string(text);
  ++pos;
  int hour = 0, minute = 0, second = 0;
  if (!read_digits(text, pos, 2, hour) || pos >= text.size() || text[pos++] != ':' ||
      !read_digits(text, pos, 2, minute)) {
    return std::string(text);
  }
  if (pos < text.size() && text[pos] == ':') {
    ++pos;
    if (!read_digits(text, pos, 2, second)) return std::string(text);
  }
  if (hour > 23 || minute > 59 || second > 60) return std::string(text);  // 60: a leap second
  std::string fraction;
  if (pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
    ++pos;
    while (pos < text.size() && is_digit(text[pos])) fraction += text[pos++];
    if (fraction.empty()) return std::string(text);
  }
  fraction.resize(6, '0');  // pads, or truncates beyond microseconds

  // The offset is dropped, not applied: CommCare keeps the phone's wall-clock digits (the seed
  // turns 16:04:54.950-04 into 16:04:54.950000Z). It is still checked, so that junk after a
  // time is not silently accepted as a date.
  if (pos < text.size() && !valid_zone(text.substr(pos))) return std::string(text);
  return date + "T" + two(hour) + ":" + two(minute) + ":" + two(second) + "." + fraction + "Z";
}

}  // namespace repeaterd::payload
