// The database schema as numbered migrations. A database records how far it got in
// PRAGMA user_version; open() applies the rest in one transaction. Never edit a migration
// that has shipped: add the next one.
#include "store/schema.hpp"

#include <array>
#include <string>

#include "store/sqlite.hpp"

namespace repeaterd::store {
namespace {

constexpr std::array kMigrations = {
    // 1: payloads, records, attempts.
    R"sql(
CREATE TABLE payloads (
  id           INTEGER PRIMARY KEY,
  domain       TEXT    NOT NULL,
  payload_type TEXT    NOT NULL,
  payload_id   TEXT    NOT NULL,
  xmlns        TEXT    NOT NULL DEFAULT '',
  app_id       TEXT    NOT NULL DEFAULT '',
  content_type TEXT    NOT NULL,
  body         BLOB    NOT NULL,
  sha256       TEXT    NOT NULL,
  received_on  INTEGER NOT NULL
) STRICT;
CREATE INDEX payloads_by_id ON payloads(domain, payload_type, payload_id);

CREATE TABLE records (
  id              TEXT    PRIMARY KEY,
  payload         INTEGER NOT NULL REFERENCES payloads(id),
  repeater        TEXT    NOT NULL,
  state           TEXT    NOT NULL CHECK (state IN ('pending', 'failed', 'succeeded', 'cancelled')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  client_errors   INTEGER NOT NULL DEFAULT 0,
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  -- When the next attempt is due. NULL while an attempt is in flight and once terminal, so
  -- the due index holds exactly the records the scheduler may claim.
  next_attempt_at INTEGER,
  reason          TEXT    NOT NULL DEFAULT '',
  content_type    TEXT    NOT NULL,
  query           TEXT    NOT NULL DEFAULT '',
  headers         TEXT    NOT NULL DEFAULT '{}',
  body            BLOB
) STRICT;
CREATE INDEX records_due ON records(repeater, next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX records_by_payload ON records(payload);

CREATE TABLE attempts (
  id               INTEGER PRIMARY KEY,
  record           TEXT    NOT NULL REFERENCES records(id),
  number           INTEGER NOT NULL,
  started_at       INTEGER NOT NULL,
  duration_ms      INTEGER,
  outcome          TEXT    NOT NULL CHECK (outcome IN ('in_flight', 'succeeded', 'failed', 'interrupted')),
  http_status      INTEGER,
  response_headers TEXT    NOT NULL DEFAULT '{}',
  response_body    BLOB,
  error            TEXT    NOT NULL DEFAULT '',
  request_id       TEXT    NOT NULL
) STRICT;
CREATE INDEX attempts_by_record ON attempts(record, number);
CREATE INDEX attempts_in_flight ON attempts(outcome) WHERE outcome = 'in_flight';
)sql",
    // 2: the case store, and the attachments of multipart submissions.
    R"sql(
CREATE TABLE cases (
  domain             TEXT    NOT NULL,
  case_id            TEXT    NOT NULL,
  case_type          TEXT    NOT NULL,
  closed             INTEGER NOT NULL,
  server_modified_on INTEGER NOT NULL,
  state              TEXT    NOT NULL,  -- the full case as JSON (payload::case_to_storage_json)
  PRIMARY KEY (domain, case_id)
) STRICT;

-- Case records carry one case of their payload; events and emails name the case.
ALTER TABLE records ADD COLUMN case_id TEXT;

CREATE TABLE attachments (
  payload      INTEGER NOT NULL REFERENCES payloads(id),
  name         TEXT    NOT NULL,
  filename     TEXT    NOT NULL DEFAULT '',
  content_type TEXT    NOT NULL DEFAULT '',
  body         BLOB    NOT NULL,
  PRIMARY KEY (payload, name)
) STRICT;
)sql",
    // 3: notification emails: the events that call for one, the emails built from them (the
    // outbox), and each connection's failure streak and throttle window.
    R"sql(
CREATE TABLE notify_state (
  connection   TEXT    PRIMARY KEY,
  failing      INTEGER NOT NULL DEFAULT 0,  -- in a streak of failures since its last success
  window_start INTEGER NOT NULL DEFAULT 0   -- when its last email was queued
) STRICT;

CREATE TABLE emails (
  id          INTEGER PRIMARY KEY,
  connection  TEXT    NOT NULL,
  created_at  INTEGER NOT NULL,
  recipients  TEXT    NOT NULL,  -- JSON array of addresses
  message     BLOB    NOT NULL,  -- the whole RFC 5322 message
  events      INTEGER NOT NULL,
  state       TEXT    NOT NULL CHECK (state IN ('pending', 'sent')),
  attempts    INTEGER NOT NULL DEFAULT 0,
  next_try_at INTEGER NOT NULL,
  last_error  TEXT    NOT NULL DEFAULT '',
  sent_at     INTEGER
) STRICT;
CREATE INDEX emails_pending ON emails(next_try_at) WHERE state = 'pending';

CREATE TABLE notifications (
  id              INTEGER PRIMARY KEY,
  connection      TEXT    NOT NULL,
  kind            TEXT    NOT NULL CHECK (kind IN ('failed', 'cancelled')),
  created_at      INTEGER NOT NULL,
  record_id       TEXT    NOT NULL,
  repeater        TEXT    NOT NULL,
  domain          TEXT    NOT NULL,
  payload_type    TEXT    NOT NULL,
  payload_id      TEXT    NOT NULL,
  attempt         INTEGER NOT NULL,
  http_status     INTEGER,
  error           TEXT    NOT NULL,
  next_attempt_at INTEGER,
  email           INTEGER REFERENCES emails(id)  -- NULL until an email carries it
) STRICT;
CREATE INDEX notifications_unsent ON notifications(connection, id) WHERE email IS NULL;
)sql",
    // 4: each case's forms (HQ's case transactions): one row per (case, form) with that form's
    // blocks for the case, so that a case can be rebuilt from the forms that stand and adding a
    // form to a case does not rewrite a list of every form before it. WITHOUT ROWID, keyed by
    // the case and arrival: a new row is one B-tree insert. A case's first form is kept in its
    // own row (cases.first_form) instead: most cases are opened by one form and seldom touched
    // again, and a column of a row being written anyway costs a commit no page.
    // A form's payload row lists the cases it touched, for an edit to find them. Cases stored
    // before this keep their state as the base a rebuild starts from, and their forms as rows
    // with no blocks.
    R"sql(
CREATE TABLE case_forms (
  domain      TEXT    NOT NULL,
  case_id     TEXT    NOT NULL,
  server_date INTEGER NOT NULL,             -- when the form was received (arrival order)
  form_id     TEXT    NOT NULL,
  user_id     TEXT    NOT NULL DEFAULT '',  -- the form's meta/userID
  blocks      TEXT    NOT NULL,             -- payload::blocks_to_storage_json
  PRIMARY KEY (domain, case_id, server_date, form_id)
) STRICT, WITHOUT ROWID;

ALTER TABLE payloads ADD COLUMN case_ids TEXT;  -- JSON array of the cases a form touched
ALTER TABLE cases ADD COLUMN base TEXT;
ALTER TABLE cases ADD COLUMN first_form TEXT;  -- {"form_id","user_id","server_date","blocks"}
INSERT INTO case_forms (domain, case_id, server_date, form_id, blocks)
  SELECT c.domain, c.case_id, COALESCE(json_extract(c.state, '$.server_opened_on'), 0) + x.key, x.value, '[]'
  FROM cases c, json_each(c.state, '$.xform_ids') x;
UPDATE cases SET base = json_remove(state, '$.xform_ids'), state = json_remove(state, '$.xform_ids');
)sql",
    // 5: operator actions (docs/admin-api.md).
    // version: bumped by every operator action; an attempt's outcome is stored on its record only
    // if the record is still at the version the attempt claimed, so a cancel wins over an attempt
    // in flight. round_start: the attempts made before the current attempt budget (resend and
    // requeue start a new one; attempt numbers keep counting, so the history stays in order).
    // records_list: the admin API's keyset pages, a range scan per (repeater, state) in id order
    // (ids are UUIDv7, so creation order). payloads_by_id leads with the form id so that a
    // record search by payload_id alone uses it (ingest's lookup names all three columns).
    // repeater_pauses: pauses an operator made, which outlive a restart.
    R"sql(
ALTER TABLE records ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE records ADD COLUMN round_start INTEGER NOT NULL DEFAULT 0;
CREATE INDEX records_list ON records(repeater, state, id);
CREATE INDEX records_by_case ON records(case_id) WHERE case_id IS NOT NULL;
DROP INDEX payloads_by_id;
CREATE INDEX payloads_by_id ON payloads(payload_id, domain, payload_type);
CREATE TABLE repeater_pauses (
  repeater  TEXT    PRIMARY KEY,
  paused_at INTEGER NOT NULL
) STRICT;
)sql",
    // 6: records_list cost every record an index entry at creation and another change at every
    // state change, so ingest and delivery paid ~15 % for an index only operators read. What an
    // operator looks for is what went wrong: index failed and cancelled records only. A record
    // on its way from pending to succeeded never touches it; lists of pending or succeeded
    // records page through the primary key instead (store/records.cpp).
    R"sql(
DROP INDEX records_list;
CREATE INDEX records_trouble ON records(repeater, state, id) WHERE state IN ('failed', 'cancelled');
)sql",
    // 7: flow control (spec §5).
    // Ordered repeaters: order_key is the case id (case repeaters) or the form id (others); a
    // record created while an earlier record of the same key is open (pending or failed) waits
    // (waiting = 1, next_attempt_at NULL: outside the due index) until that one is done.
    // records_order holds open records of ordered repeaters only, so finding the next in line
    // is one range scan and an unordered record never touches it.
    // Circuit notifications: a connection's circuit opened or closed; the table is rebuilt
    // because its kind CHECK grows.
    R"sql(
ALTER TABLE records ADD COLUMN order_key TEXT;
ALTER TABLE records ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
CREATE INDEX records_order ON records(repeater, order_key, id)
  WHERE order_key IS NOT NULL AND state IN ('pending', 'failed');

CREATE TABLE notifications_new (
  id              INTEGER PRIMARY KEY,
  connection      TEXT    NOT NULL,
  kind            TEXT    NOT NULL CHECK (kind IN ('failed', 'cancelled', 'circuit_opened', 'circuit_closed')),
  created_at      INTEGER NOT NULL,
  record_id       TEXT    NOT NULL,
  repeater        TEXT    NOT NULL,
  domain          TEXT    NOT NULL,
  payload_type    TEXT    NOT NULL,
  payload_id      TEXT    NOT NULL,
  attempt         INTEGER NOT NULL,
  http_status     INTEGER,
  error           TEXT    NOT NULL,
  next_attempt_at INTEGER,
  email           INTEGER REFERENCES emails(id),  -- NULL until an email carries it
  backlog         INTEGER,  -- circuit kinds: records of the connection waiting
  outage_ms       INTEGER   -- circuit_closed: how long the circuit was open
) STRICT;
INSERT INTO notifications_new (id, connection, kind, created_at, record_id, repeater, domain, payload_type,
    payload_id, attempt, http_status, error, next_attempt_at, email)
  SELECT id, connection, kind, created_at, record_id, repeater, domain, payload_type, payload_id, attempt,
    http_status, error, next_attempt_at, email FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;
CREATE INDEX notifications_unsent ON notifications(connection, id) WHERE email IS NULL;
)sql",
    // 8: bytes on disk (store/body_codec.hpp). A payload body is stored deflated when that saves
    // a tenth of it (encoding 'deflate'; '' is as received); size is its length as received
    // (NULL for rows stored before, whose length is the body's).
    R"sql(
ALTER TABLE payloads ADD COLUMN encoding TEXT NOT NULL DEFAULT '' CHECK (encoding IN ('', 'deflate'));
ALTER TABLE payloads ADD COLUMN size INTEGER;

)sql",
    // 9: a CHECK of `x IN (a list of more than two)` costs SQLite a temporary B-tree, built anew
    // each time the row is written: for every record and attempt, at creation, claim and
    // outcome. The same constraints as comparisons cost nothing. SQLite documents editing
    // sqlite_schema for constraint changes that leave every stored row valid
    // (sqlite.org/lang_altertable.html, "otherwise"); migrate() bumps the schema version.
    R"sql(
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (state IN (''pending'', ''failed'', ''succeeded'', ''cancelled''))',
    'CHECK (state = ''pending'' OR state = ''failed'' OR state = ''succeeded'' OR state = ''cancelled'')')
  WHERE type = 'table' AND name = 'records';
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (outcome IN (''in_flight'', ''succeeded'', ''failed'', ''interrupted''))',
    'CHECK (outcome = ''in_flight'' OR outcome = ''succeeded'' OR outcome = ''failed'' OR outcome = ''interrupted'')')
  WHERE type = 'table' AND name = 'attempts';
PRAGMA writable_schema = RESET;
)sql",
    // 10: an email the SMTP server refused for good (5xx) three times (notify/notifier.hpp) is set
    // aside as 'refused' (kept for the operator, tried again after a restart or reload);
    // `refusals` counts those answers since it was last queued. The CHECK gains the state as
    // comparisons (see 9), by the same documented edit of sqlite_schema.
    R"sql(
ALTER TABLE emails ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (state IN (''pending'', ''sent''))',
    'CHECK (state = ''pending'' OR state = ''sent'' OR state = ''refused'')')
  WHERE type = 'table' AND name = 'emails';
PRAGMA writable_schema = RESET;
)sql",
};

}  // namespace

int schema_version() { return static_cast<int>(kMigrations.size()); }

void migrate(Db& db, int target) {
  auto& get = db.prepare("PRAGMA user_version");
  get.step();
  const auto have = get.int64(0);
  get.reset();
  if (have > schema_version()) {
    throw SqliteError(SQLITE_ERROR, "database schema version " + std::to_string(have) +
                                        " is newer than this repeaterd understands (" +
                                        std::to_string(schema_version()) + "); upgrade repeaterd");
  }
  if (have >= target) return;
  db.exec("BEGIN IMMEDIATE");
  try {
    for (auto v = have; v < target; ++v) db.exec(kMigrations[static_cast<std::size_t>(v)]);
    db.exec(("PRAGMA user_version = " + std::to_string(target)).c_str());
    // Every connection re-reads the schema when this cookie moves; a migration that edits
    // sqlite_schema itself (9) does not move it.
    auto& cookie = db.prepare("PRAGMA schema_version");
    cookie.step();
    const auto schema_cookie = cookie.int64(0);
    cookie.reset();
    db.exec(("PRAGMA schema_version = " + std::to_string(schema_cookie + 1)).c_str());
    db.exec("COMMIT");
  } catch (...) {
    db.exec("ROLLBACK");
    throw;
  }
}

}  // namespace repeaterd::store
