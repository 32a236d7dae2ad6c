#include "store/records.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/json_text.hpp"
#include "store/body_codec.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::store {

namespace {

constexpr std::array<const char*, 4> kStates = {"pending", "failed", "succeeded", "cancelled"};

// The columns of a RecordView, over `records r` joined with `payloads p`.
#define RECORD_COLUMNS                                                                                       \
  "r.id, r.repeater, r.state, r.attempts, r.created_at, r.updated_at, r.next_attempt_at, r.reason, r.case_id, " \
  "p.domain, p.payload_type, p.payload_id, "                                                                 \
  "EXISTS (SELECT 1 FROM attempts a INDEXED BY attempts_by_record WHERE a.record = r.id AND a.outcome = 'in_flight') "

// The filters that are checked row by row, parameters ?4 to ?8 (NULL: not asked for).
#define RESIDUAL_FILTERS                                                              \
  " AND (?4 IS NULL OR r.created_at >= ?4) AND (?5 IS NULL OR r.created_at < ?5)"     \
  " AND (?6 IS NULL OR instr(r.reason, ?6) > 0) AND (?7 IS NULL OR p.domain = ?7)"    \
  " AND (?8 = 0 OR NOT EXISTS (SELECT 1 FROM attempts a INDEXED BY attempts_by_record WHERE a.record = r.id AND a.outcome = 'in_flight'))"

}  // namespace

namespace sql {
// One (repeater, state) range of records_trouble (failed and cancelled records), from the
// cursor, in id order. The partial index's own condition is repeated so SQLite may use it.
const char* const kTroublePage =
    "SELECT " RECORD_COLUMNS
    "FROM records r INDEXED BY records_trouble CROSS JOIN payloads p ON p.id = r.payload "
    "WHERE r.state IN ('failed', 'cancelled') AND r.repeater = ?1 AND r.state = ?2 AND r.id > ?3" RESIDUAL_FILTERS
    " ORDER BY r.id LIMIT ?9";
// Pending and succeeded records (JSON arrays ?1 of repeaters, or NULL for all, and ?2 of states)
// in primary-key order from the cursor: the bulk of the queue, where a page is as dense as the
// queue is in those states.
const char* const kDensePage =
    "SELECT " RECORD_COLUMNS
    "FROM records r CROSS JOIN payloads p ON p.id = r.payload "
    "WHERE r.id > ?3 AND r.state IN (SELECT value FROM json_each(?2)) "
    "AND (?1 IS NULL OR +r.repeater IN (SELECT value FROM json_each(?1)))" RESIDUAL_FILTERS " ORDER BY r.id LIMIT ?9";
// Every record of one payload id (a form's records are few), or of one case.
const char* const kByPayload =
    "SELECT " RECORD_COLUMNS
    "FROM payloads p INDEXED BY payloads_by_id CROSS JOIN records r ON r.payload = p.id "
    "WHERE p.payload_id = ?1 AND r.id > ?3" RESIDUAL_FILTERS;
const char* const kByCase =
    "SELECT " RECORD_COLUMNS
    "FROM records r INDEXED BY records_by_case CROSS JOIN payloads p ON p.id = r.payload "
    "WHERE r.case_id = ?1 AND r.id > ?3" RESIDUAL_FILTERS;
}  // namespace sql

namespace {

using sql::kByCase;
using sql::kByPayload;
using sql::kDensePage;
using sql::kTroublePage;
constexpr const char* kOne =
    "SELECT " RECORD_COLUMNS "FROM records r CROSS JOIN payloads p ON p.id = r.payload WHERE r.id = ?1";

#undef RECORD_COLUMNS
#undef RESIDUAL_FILTERS

RecordView read_view(const Stmt& q) {
  RecordView v;
  v.id = q.text(0);
  v.repeater = q.text(1);
  v.state = q.text(2);
  v.attempts = q.int64(3);
  v.created_at = q.int64(4);
  v.updated_at = q.int64(5);
  v.next_attempt_at = q.opt_int64(6);
  v.reason = q.text(7);
  if (!q.is_null(8)) v.case_id = q.text(8);
  v.domain = q.text(9);
  v.payload_type = q.text(10);
  v.payload_id = q.text(11);
  v.in_flight = q.int64(12) != 0;
  return v;
}

void bind_residuals(Stmt& q, const RecordFilter& f) {
  q.bind(4, f.created_after);
  q.bind(5, f.created_before);
  if (f.error_contains) q.bind(6, *f.error_contains); else q.bind_null(6);
  if (f.domain) q.bind(7, *f.domain); else q.bind_null(7);
  q.bind(8, static_cast<std::int64_t>(f.exclude_in_flight ? 1 : 0));
}

template <class C>
bool contains(const C& c, const std::string& v) {
  return std::find(c.begin(), c.end(), v) != c.end();
}

// Records of one payload id or one case: few, so fetched whole and filtered here.
std::vector<RecordView> lookup(Db& db, const RecordFilter& f, const std::string& after) {
  const bool by_payload = f.payload_id.has_value();
  StmtGuard q(db.prepare(by_payload ? kByPayload : kByCase));
  q->bind(1, by_payload ? *f.payload_id : *f.case_id).bind(3, after);
  bind_residuals(*q, f);
  std::vector<RecordView> out;
  while (q->step()) {
    RecordView v = read_view(*q);
    if (f.repeaters && !contains(*f.repeaters, v.repeater)) continue;
    if (!f.states.empty() && !contains(f.states, v.state)) continue;
    if (by_payload && f.case_id && v.case_id != f.case_id) continue;
    out.push_back(std::move(v));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

std::vector<std::string> states_of(const RecordFilter& f) {
  if (!f.states.empty()) return f.states;
  return {kStates.begin(), kStates.end()};
}

}  // namespace

const char* to_string(Action a) {
  switch (a) {
    case Action::resend: return "resend";
    case Action::cancel: return "cancel";
    case Action::requeue: return "requeue";
  }
  return "?";
}

namespace {

// The repeaters with failed or cancelled records: a loose scan of records_trouble, one index
// seek per repeater.
std::vector<std::string> repeaters_in_trouble(Db& db) {
  StmtGuard q(db.prepare(
      "WITH RECURSIVE r(name) AS (SELECT MIN(repeater) FROM records WHERE state IN ('failed', 'cancelled') "
      "UNION ALL SELECT (SELECT MIN(repeater) FROM records WHERE state IN ('failed', 'cancelled') "
      "AND repeater > r.name) FROM r WHERE r.name IS NOT NULL) "
      "SELECT name FROM r WHERE name IS NOT NULL"));
  std::vector<std::string> out;
  while (q->step()) out.push_back(q->text(0));
  return out;
}

bool is_trouble(const std::string& state) { return state == "failed" || state == "cancelled"; }

// Up to `limit` records matching `f` after `after`, in id order (limit 0: all of them).
std::vector<RecordView> collect(Db& db, const RecordFilter& f, const std::string& after, std::size_t limit) {
  if (f.payload_id || f.case_id) {
    auto rows = lookup(db, f, after);
    if (limit > 0 && rows.size() > limit) rows.resize(limit);
    return rows;
  }
  const auto limit_param = limit > 0 ? static_cast<std::int64_t>(limit) : std::numeric_limits<std::int64_t>::max();
  std::vector<RecordView> rows;
  std::vector<std::string> dense;
  std::vector<std::string> trouble;
  for (const auto& st : states_of(f)) (is_trouble(st) ? trouble : dense).push_back(st);
  if (!trouble.empty()) {
    const auto repeaters = f.repeaters ? *f.repeaters : repeaters_in_trouble(db);
    StmtGuard q(db.prepare(kTroublePage));
    for (const auto& repeater : repeaters) {
      for (const auto& state : trouble) {
        q->bind(1, repeater).bind(2, state).bind(3, after);
        bind_residuals(*q, f);
        q->bind(9, limit_param);
        while (q->step()) rows.push_back(read_view(*q));
        q->reset();
      }
    }
  }
  if (!dense.empty() && !(f.repeaters && f.repeaters->empty())) {
    StmtGuard q(db.prepare(kDensePage));
    if (f.repeaters) q->bind(1, json_text::dump(*f.repeaters)); else q->bind_null(1);
    q->bind(2, json_text::dump(dense)).bind(3, after);
    bind_residuals(*q, f);
    q->bind(9, limit_param);
    while (q->step()) rows.push_back(read_view(*q));
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  if (limit > 0 && rows.size() > limit) rows.resize(limit);
  return rows;
}

}  // namespace

RecordPage list_records(Db& db, const RecordFilter& f, const std::string& after, std::size_t limit) {
  std::vector<RecordView> rows = collect(db, f, after, limit + 1);
  RecordPage page;
  if (rows.size() > limit) {
    rows.resize(limit);
    page.next = rows.back().id;
  }
  page.records = std::move(rows);
  return page;
}

std::int64_t count_records(Db& db, const RecordFilter& f) {
  return static_cast<std::int64_t>(collect(db, f, "", 0).size());
}

std::optional<RecordDetail> load_record(Db& db, const std::string& id, std::size_t body_excerpt) {
  RecordDetail d;
  {
    StmtGuard q(db.prepare(kOne));
    q->bind(1, id);
    if (!q->step()) return std::nullopt;
    d.record = read_view(*q);
  }
  {
    StmtGuard q(db.prepare(
        "SELECT p.domain, p.payload_type, p.payload_id, p.xmlns, p.app_id, p.content_type, p.sha256, "
        "COALESCE(p.size, length(p.body)), p.received_on, r.content_type, r.query, r.headers, "
        "COALESCE(length(r.body), p.size, length(p.body)) "
        "FROM records r JOIN payloads p ON p.id = r.payload WHERE r.id = ?1"));
    q->bind(1, id);
    if (q->step()) {
      PayloadMeta& m = d.payload;
      m.domain = q->text(0);
      m.payload_type = q->text(1);
      m.payload_id = q->text(2);
      m.xmlns = q->text(3);
      m.app_id = q->text(4);
      m.content_type = q->text(5);
      m.sha256 = q->text(6);
      m.size = q->int64(7);
      m.received_on = q->int64(8);
      d.content_type = q->text(9);
      d.query = q->text(10);
      d.headers_json = q->text(11);
      d.body_size = q->int64(12);
    }
  }
  StmtGuard a(db.prepare(
      "SELECT number, started_at, duration_ms, outcome, http_status, response_headers, substr(response_body, 1, ?2), "
      "COALESCE(length(response_body), 0), error, request_id FROM attempts WHERE record = ?1 ORDER BY id"));
  a->bind(1, id).bind(2, static_cast<std::int64_t>(body_excerpt));
  while (a->step()) {
    AttemptView v;
    v.number = a->int64(0);
    v.started_at = a->int64(1);
    v.duration_ms = a->opt_int64(2);
    v.outcome = a->text(3);
    v.http_status = a->opt_int64(4);
    v.response_headers_json = a->text(5);
    v.response_body = a->text(6);
    v.response_size = a->int64(7);
    v.error = a->text(8);
    v.request_id = a->text(9);
    d.attempts.push_back(std::move(v));
  }
  return d;
}

std::optional<RecordBody> record_body(Db& db, const std::string& id) {
  StmtGuard q(db.prepare(
      "SELECT r.content_type, r.body IS NOT NULL, COALESCE(r.body, p.body), p.encoding, p.size FROM records r "
      "JOIN payloads p ON p.id = r.payload WHERE r.id = ?1"));
  q->bind(1, id);
  if (!q->step()) return std::nullopt;
  if (q->int64(1) != 0) return RecordBody{q->text(0), q->text(2)};
  const std::string encoding = q->text(3);
  return RecordBody{q->text(0), stored_body(q->bytes(2), encoding, q->int64(4), "the payload of record " + id)};
}

RecordFilter applicable(Action action, RecordFilter f) {
  std::vector<std::string> allowed;
  switch (action) {
    case Action::cancel: allowed = {"pending", "failed"}; break;
    case Action::requeue: allowed = {"cancelled"}; break;
    case Action::resend:
      allowed = {kStates.begin(), kStates.end()};
      f.exclude_in_flight = true;
      break;
  }
  if (f.states.empty()) {
    f.states = allowed;
  } else {
    std::erase_if(f.states, [&](const std::string& s) { return !contains(allowed, s); });
    // Asked only for states the action does not apply to: nothing matches. An empty list
    // means "every state", so say it with a state no record has.
    if (f.states.empty()) f.states = {"none"};
  }
  return f;
}

namespace {

// The update for each action, guarded by the states it applies to. resend and requeue start a
// fresh attempt budget and make the record due now; every action bumps the version, so an
// attempt that was in flight leaves the record as the operator left it.
int apply(Db& db, Action action, const std::string& id, Micros now) {
  const char* sql = nullptr;
  switch (action) {
    case Action::cancel:
      sql = "UPDATE records SET state = 'cancelled', next_attempt_at = NULL, waiting = 0, "
            "reason = 'cancelled by operator', version = version + 1, updated_at = ?2 "
            "WHERE id = ?1 AND state IN ('pending', 'failed')";
      break;
    case Action::resend:
      sql = "UPDATE records SET state = 'pending', next_attempt_at = ?2, waiting = 0, round_start = attempts, "
            "client_errors = 0, reason = '', version = version + 1, updated_at = ?2 WHERE id = ?1 "
            "AND NOT EXISTS (SELECT 1 FROM attempts INDEXED BY attempts_by_record WHERE record = ?1 AND outcome = 'in_flight')";
      break;
    case Action::requeue:
      sql = "UPDATE records SET state = 'pending', next_attempt_at = ?2, waiting = 0, round_start = attempts, "
            "client_errors = 0, reason = '', version = version + 1, updated_at = ?2 WHERE id = ?1 AND state = 'cancelled' "
            "AND NOT EXISTS (SELECT 1 FROM attempts INDEXED BY attempts_by_record WHERE record = ?1 AND outcome = 'in_flight')";
      break;
  }
  StmtGuard q(db.prepare(sql));
  q->bind(1, id).bind(2, now);
  const int changed = q->run();
  if (changed > 0 && action == Action::cancel) {
    // A cancelled record of an ordered repeater lets the next of its case or form go.
    StmtGuard k(db.prepare("SELECT repeater, order_key FROM records WHERE id = ?1 AND order_key IS NOT NULL"));
    k->bind(1, id);
    if (k->step()) Store::release_next(db, k->text(0), k->text(1), now);
  }
  return changed;
}

std::optional<RecordView> view(Db& db, const std::string& id) {
  StmtGuard q(db.prepare(kOne));
  q->bind(1, id);
  if (!q->step()) return std::nullopt;
  return read_view(*q);
}

std::string why_not(Action action, const RecordView& r) {
  const std::string rec = "record " + r.id + " is " + r.state;
  switch (action) {
    case Action::cancel:
      if (r.state == "cancelled") return "record " + r.id + " is already cancelled";
      return rec + ": only pending or failed records can be cancelled (resend sends it again)";
    case Action::requeue:
      if (r.state != "cancelled") return rec + ": only cancelled records can be requeued (resend applies to any state)";
      return "record " + r.id + " has an attempt in flight; requeue it when the attempt has ended";
    case Action::resend:
      return "record " + r.id + " has an attempt in flight; resend it when the attempt has ended";
  }
  return rec;
}

}  // namespace

Result<RecordView> act(Db& db, Action action, const std::string& id, Micros now) {
  const int changed = apply(db, action, id, now);
  auto v = view(db, id);
  if (!v) return make_error("no record has the id " + id, ErrorKind::not_found);
  if (changed == 0) return make_error(why_not(action, *v), ErrorKind::conflict);
  return *v;
}

BulkStep act_page(Db& db, Action action, const RecordFilter& filter, const std::string& after, std::size_t limit,
                  Micros now) {
  RecordPage page = list_records(db, applicable(action, filter), after, limit);
  BulkStep out;
  for (const auto& r : page.records) {
    if (apply(db, action, r.id, now) > 0) {
      if (auto v = view(db, r.id)) out.changed.push_back(std::move(*v));
    }
  }
  out.next = page.next;
  return out;
}

std::int64_t emails_queued(Db& db) {
  StmtGuard q(db.prepare("SELECT COUNT(*) FROM emails WHERE state = 'pending'"));
  return q->step() ? q->int64(0) : 0;
}

std::map<std::string, Micros> paused_repeaters(Db& db) {
  StmtGuard q(db.prepare("SELECT repeater, paused_at FROM repeater_pauses"));
  std::map<std::string, Micros> out;
  while (q->step()) out[q->text(0)] = q->int64(1);
  return out;
}

bool set_paused(Db& db, const std::string& repeater, bool paused, Micros now) {
  if (paused) {
    StmtGuard q(db.prepare(
        "INSERT INTO repeater_pauses (repeater, paused_at) VALUES (?1, ?2) ON CONFLICT (repeater) DO NOTHING"));
    return q->bind(1, repeater).bind(2, now).run() > 0;
  }
  StmtGuard q(db.prepare("DELETE FROM repeater_pauses WHERE repeater = ?1"));
  return q->bind(1, repeater).run() > 0;
}

}  // namespace repeaterd::store
