// store/records: the queue as an operator sees it and acts on it (spec §5, docs/admin-api.md).
//
// Reads (list, show, body, counts) take any Db: the admin API runs them on its own read-only
// connection, never through the writer. Actions change records and run as writer jobs; each
// takes one record, or one page of a bulk action, so a bulk action over a million records is
// many short transactions that ingest interleaves with.
//
// Lists are keyset pages in record id order (UUIDv7: creation order), each from the `after`
// cursor, so page 1,000 costs what page 1 does. Failed and cancelled records (what an operator
// looks for) come from records_trouble, a partial index of only those, one range scan per
// (repeater, state); pending and succeeded ones from the primary key in id order with the
// filters checked per row; a payload or case id is looked up by its own index. The hot path
// (pending -> succeeded) never touches an index kept for operators.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "repeaterd/result.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd::store {

class Db;

struct RecordFilter {
  std::optional<std::vector<std::string>> repeaters;  // nullopt: every repeater; empty: none
  std::vector<std::string> states;                    // empty: every state
  std::optional<std::string> domain;
  std::optional<std::string> payload_id;
  std::optional<std::string> case_id;
  std::optional<Micros> created_after;   // created_at >= this
  std::optional<Micros> created_before;  // created_at < this
  std::optional<std::string> error_contains;
  // Leave out records with an attempt in flight (resend does not apply to them).
  bool exclude_in_flight = false;
};

struct RecordView {
  std::string id;
  std::string repeater;
  std::string state;
  std::int64_t attempts = 0;
  bool in_flight = false;
  Micros created_at = 0;
  Micros updated_at = 0;
  std::optional<Micros> next_attempt_at;
  std::string reason;
  std::string domain;
  std::string payload_type;
  std::string payload_id;
  std::optional<std::string> case_id;
};

struct RecordPage {
  std::vector<RecordView> records;
  std::optional<std::string> next;  // the cursor for the next page; nullopt at the end
};

struct PayloadMeta {
  std::string domain, payload_type, payload_id, xmlns, app_id, content_type, sha256;
  std::int64_t size = 0;
  Micros received_on = 0;
};

struct AttemptView {
  std::int64_t number = 0;
  Micros started_at = 0;
  std::optional<std::int64_t> duration_ms;
  std::string outcome;
  std::optional<std::int64_t> http_status;
  std::string response_headers_json;
  std::string response_body;  // at most `body_excerpt` bytes
  std::int64_t response_size = 0;
  std::string error;
  std::string request_id;
};

struct RecordDetail {
  RecordView record;
  PayloadMeta payload;
  std::string content_type;  // of the request body
  std::string query;
  std::string headers_json;
  std::int64_t body_size = 0;
  std::vector<AttemptView> attempts;
};

struct RecordBody {
  std::string content_type;
  std::string bytes;
};

enum class Action { resend, cancel, requeue };
const char* to_string(Action a);

// A page of records matching `filter`, with ids after `after`, in id order.
RecordPage list_records(Db& db, const RecordFilter& filter, const std::string& after, std::size_t limit);
std::int64_t count_records(Db& db, const RecordFilter& filter);
std::optional<RecordDetail> load_record(Db& db, const std::string& id, std::size_t body_excerpt);
std::optional<RecordBody> record_body(Db& db, const std::string& id);

// The filter narrowed to the records `action` applies to (states, in flight).
RecordFilter applicable(Action action, RecordFilter filter);

// Applies `action` to one record (a writer job). The record as it is now, or not_found, or
// conflict with the reason the action does not apply.
Result<RecordView> act(Db& db, Action action, const std::string& id, Micros now);

// One page of a bulk action (a writer job): acts on up to `limit` records that match
// applicable(action, filter) after `after`. `changed` are the records it changed; `next` is
// where the next page starts (nullopt: done).
struct BulkStep {
  std::vector<RecordView> changed;
  std::optional<std::string> next;
};
BulkStep act_page(Db& db, Action action, const RecordFilter& filter, const std::string& after, std::size_t limit,
                  Micros now);

// The list statements, for tests that check their query plans: one (repeater, state) range of
// records_trouble, the primary-key walk, and the lookups by payload id and by case id.
namespace sql {
extern const char* const kTroublePage;
extern const char* const kDensePage;
extern const char* const kByPayload;
extern const char* const kByCase;
}  // namespace sql

// Operator pauses, which outlive a restart: repeater → when it was paused.
std::map<std::string, Micros> paused_repeaters(Db& db);
// Returns whether anything changed (false: already in that state).
bool set_paused(Db& db, const std::string& repeater, bool paused, Micros now);

// Emails in the outbox not sent yet.
std::int64_t emails_queued(Db& db);


}  // namespace repeaterd::store
