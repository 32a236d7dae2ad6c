// store: the durable queue. Payloads, their repeat records and every attempt live in one
// SQLite database (WAL, synchronous=FULL, STRICT tables, numbered migrations).
//
// One writer thread owns the only write connection. Callers hand it jobs; it runs every job
// that is waiting in one transaction (each job inside its own savepoint, so one failing job
// does not undo the others) and commits once: many concurrent submissions cost one fsync.
// A job's completion runs only after its batch is durable, so nobody acknowledges before
// commit. The store has no Asio in it; store/async.hpp adapts jobs to coroutines.
//
// Thread-safety: Store's public methods may be called from any thread. Completions run on the
// writer thread and must be quick (post elsewhere for real work).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "repeaterd/result.hpp"
#include "repeaterd/time.hpp"
#include "common/failure_run.hpp"
#include "store/notification.hpp"
#include "store/owner_lock.hpp"

struct sqlite3;

namespace repeaterd::store {

class Db;

// -- what goes in -----------------------------------------------------------------------

struct NewPayload {
  std::string domain;
  std::string payload_type;  // "form"
  std::string payload_id;    // the form's instanceID
  std::string xmlns;
  std::string app_id;
  std::string content_type;
  std::string body;
  Micros received_on = 0;
  std::vector<std::string> case_ids;  // forms: the cases its blocks touched (an edit finds them here)
  // Filled by prepare_payload (store/body_codec.hpp) off the writer thread; Store::ingest
  // computes the digest itself when it is empty, and without `deflated` the body is stored as
  // received.
  std::string sha256;                   // sha256_hex(body)
  std::optional<std::string> deflated;  // the body as stored, deflated
};

// One record to create with a payload: what to send is fixed now, at creation.
struct NewRecord {
  std::string id;             // UUIDv7
  std::string repeater;
  std::string content_type;   // of the request body
  std::string query;          // extra query string, encoded ("app_id=...")
  std::string headers_json;   // JSON object of extra request headers (Received-On ...)
  std::optional<std::string> body;  // nullopt: the payload's own bytes
  std::string case_id;        // case records: the case it carries (events name it, not the form)
  // The repeater delivers in order: the record waits while an earlier record of the same case
  // (case_id) or, without one, of the same payload id is pending or failed.
  bool ordered = false;
};

struct IngestResult {
  bool duplicate = false;  // same id, same bytes: nothing was created
  std::string rejected;    // set when the submission was refused (422); nothing was written
  std::int64_t payload_row = 0;
  std::vector<std::string> record_ids;
};

struct NewAttachment {
  std::string name;
  std::string filename;
  std::string content_type;
  std::string body;
};

// What load_attachment found: whether the form exists at all, and its attachment if it has
// one by that name (else the names it does have, to tell the caller what to ask for).
struct AttachmentLookup {
  bool form_found = false;
  std::optional<NewAttachment> attachment;
  std::vector<std::string> names;  // when the form exists but not the attachment
};

// A case as the store keeps it: the columns it is looked up by, and the whole state as JSON.
struct StoredCase {
  std::string case_id;
  std::string case_type;
  bool closed = false;
  Micros server_modified_on = 0;
  // The case as payload::case_to_storage_json writes it; empty for a case that one form opened
  // and nothing touched since: its state is that form's blocks (cases.first_form) applied, and
  // is not stored twice (ingest/case_store.cpp rebuilds it when the case is next touched).
  std::string state_json;
  std::optional<std::string> base_json;  // cases from before schema 4: what a rebuild starts from
};

// One form's blocks for one case (HQ's case transaction).
struct StoredCaseForm {
  std::string form_id;
  std::string user_id;  // the form's meta/userID
  Micros server_date = 0;
  std::string blocks_json;
};

// -- what comes out ---------------------------------------------------------------------

// A record claimed for an attempt: an 'in_flight' attempt row exists for it.
struct ClaimedRecord {
  std::string id;
  std::string repeater;
  std::int64_t attempt_row = 0;
  int attempt = 0;           // this attempt's number in the record's history, 1-based
  int round_attempt = 0;     // its number in the current attempt budget (resend/requeue start one)
  std::int64_t version = 0;  // the record's version when claimed (operator actions bump it)
  int client_errors = 0;     // client-error attempts before this one
  std::string request_id;    // X-Request-Id of this attempt
  std::string domain;
  std::string payload_type;
  std::string payload_id;
  std::string content_type;
  std::string query;
  std::string headers_json;
  // The bytes to send, as stored: deflated when body_encoding is "deflate" (body_size is then
  // their length inflated). claimed_body() (store/body_codec.hpp) gives them as sent; the
  // sender inflates them, not the writer thread.
  std::string body;
  std::string body_encoding;
  std::int64_t body_size = 0;
};

struct Claim {
  std::vector<ClaimedRecord> records;
  std::optional<Micros> next_due;  // earliest next_attempt_at left for these repeaters
};

enum class RecordState { pending, failed, succeeded, cancelled };
const char* to_string(RecordState s);

struct AttemptOutcome {
  std::int64_t attempt_row = 0;
  std::string record_id;
  std::int64_t version = 0;  // ClaimedRecord::version: the record is updated only if still there
  bool succeeded = false;
  std::optional<int> http_status;
  std::string response_headers_json;  // JSON object
  std::string response_body;          // at most 64 KiB
  std::string error;
  std::int64_t duration_ms = 0;
  bool client_error = false;          // counts toward max_attempts_client_error
  // The attempt uses none of the record's budget (its connection's circuit was open): the
  // current round starts one attempt later.
  bool free_attempt = false;
  RecordState new_state = RecordState::pending;
  std::optional<Micros> next_attempt_at;  // when new_state is failed
  std::string reason;                     // why the record is cancelled / last error
  // Set when the connection has people to notify: finish() then tracks its failure streak
  // and queues a notification for the first failure of a streak and for every cancellation,
  // in the same transaction. `kind` and `id` are filled in by finish().
  std::optional<Notification> notify;
  std::string connection;
};

// A connection with notifications no email has carried yet: what the notifier's throttle
// decides on.
struct UnsentNotifications {
  std::string connection;
  Micros window_start = 0;  // when its last email was queued (0: never)
  Micros oldest_at = 0;     // when its oldest unsent notification happened
  std::int64_t count = 0;   // how many are unsent
  std::vector<Notification::Kind> kinds;  // the kinds among them, each once
};

// An email waiting in the outbox.
struct OutboxEmail {
  std::int64_t id = 0;
  std::string connection;
  std::vector<std::string> recipients;
  std::string message;
  int events = 0;
  int attempts = 0;  // failed tries so far
};

struct RepeaterSummary {
  std::string repeater;
  std::int64_t pending = 0, failed = 0, succeeded = 0, cancelled = 0;
  std::optional<Micros> oldest_due;  // earliest next_attempt_at that is already due
};

// -- the store --------------------------------------------------------------------------

struct Options {
  std::string path;
  // How long a statement waits for another process's lock before the batch fails (503).
  int busy_timeout_ms = 3000;
  // The most jobs one transaction takes; bounds a batch's latency.
  std::size_t max_batch = 512;
  // Told after each committed batch: how many jobs it held and how long it took from BEGIN
  // to the end of COMMIT (the fsync included). Runs on the writer thread; keep it quick.
  std::function<void(std::size_t jobs, double seconds)> on_batch = nullptr;
};

class Store {
 public:
  // Takes the database's owner lock (store/owner_lock.hpp: a second process is refused), opens
  // (creating) the database, applies migrations, records attempts that were in flight
  // when the last process died as 'interrupted' and makes their records due now.
  static Result<std::unique_ptr<Store>> open(const Options& options);
  ~Store();  // finishes queued jobs, then stops the writer
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // A unit of work for the writer. It runs inside the batch's transaction (in its own
  // savepoint). Throwing undoes the job alone.
  using Job = std::function<void(Db&)>;
  // Called once the batch holding the job is committed (ok) or failed (error).
  using Done = std::function<void(Status)>;
  void submit(Job job, Done done);

  // Typed convenience: runs fn on the writer and delivers its value after commit.
  template <class T>
  void run(std::function<T(Db&)> fn, std::function<void(Result<T>)> done) {
    auto out = std::make_shared<std::optional<T>>();
    submit(
        [fn = std::move(fn), out](Db& db) { out->emplace(fn(db)); },
        [out, done = std::move(done)](Status st) {
          if (!st.ok()) return done(st.error());
          done(std::move(**out));
        });
  }

  // Jobs (run on the writer thread):
  // Stores a payload and its records unless an identical payload (same domain, type, id and
  // bytes) exists, in which case nothing is written and duplicate is set.
  static IngestResult ingest(Db& db, const NewPayload& payload, const std::vector<NewRecord>& records,
                             Micros now);
  // The parts of ingest(), for a caller with work between them (the receiver applies case
  // blocks): the latest payload stored with the same domain, type and id (the same digest,
  // sha256_hex of the body: a duplicate; another: an edit), and storing a payload with its
  // records unconditionally.
  struct StoredVersion {
    std::string digest;
    Micros received_on = 0;
    std::vector<std::string> case_ids;  // NewPayload::case_ids (an edit rebuilds these cases)
  };
  static std::optional<StoredVersion> latest_version(Db& db, const NewPayload& payload);
  static IngestResult insert(Db& db, const NewPayload& payload, const std::string& digest,
                             const std::vector<NewRecord>& records, Micros now);
  static void add_attachments(Db& db, std::int64_t payload_row, const std::vector<NewAttachment>& attachments);
  // A form's attachment by name, from the newest payload stored for that form id (an edit
  // stores a new payload with the same id; only its attachments are current).
  static AttachmentLookup load_attachment(Db& db, const std::string& domain, const std::string& form_id,
                                          const std::string& name);
  static std::optional<StoredCase> load_case(Db& db, const std::string& domain, const std::string& case_id);
  static void save_case(Db& db, const std::string& domain, const StoredCase& c);
  // A case's forms, in arrival order; adding one costs the same whatever the case holds.
  static std::vector<StoredCaseForm> case_forms(Db& db, const std::string& domain, const std::string& case_id);
  static std::vector<std::string> case_form_ids(Db& db, const std::string& domain, const std::string& case_id);
  static void add_case_form(Db& db, const std::string& domain, const std::string& case_id, const StoredCaseForm& f);
  // Removes form_id from the forms of `case_ids` (an edit replaces it).
  static void remove_case_forms(Db& db, const std::string& domain, const std::string& form_id,
                                const std::vector<std::string>& case_ids);
  // The claim's scan of one repeater's due records (?1 repeater, ?2 now, ?3 limit): a range of
  // the records_due index (a unit test reads its query plan).
  static constexpr const char* kDueRecordsSql =
      "SELECT id, next_attempt_at, attempts, client_errors, content_type, query, headers, body, payload, case_id, "
      "version, round_start FROM records WHERE repeater = ?1 AND next_attempt_at IS NOT NULL "
      "AND next_attempt_at <= ?2 ORDER BY next_attempt_at LIMIT ?3";
  // Claims up to `limit` due records of `repeaters`, oldest due first.
  // Each claimed record gets an 'in_flight' attempt row with a fresh request id. Without
  // `want_next_due`, Claim::next_due is left empty (it costs a query per repeater).
  static Claim claim(Db& db, const std::vector<std::string>& repeaters, std::size_t limit, Micros now,
                     bool want_next_due = true);
  // Stores an attempt's outcome. The record takes it only if no operator acted on it since the
  // claim (the version still matches); the attempt row is updated either way.
  struct Finished {
    bool applied = false;   // the record took the outcome
    bool notified = false;  // a notification was queued
  };
  static Finished finish(Db& db, const AttemptOutcome& outcome, Micros now);

  // Ordered repeaters: makes the first open (pending or failed) record of (repeater,
  // order_key) due now if it is waiting. Called when a record of the key leaves the open states.
  static void release_next(Db& db, const std::string& repeater, const std::string& order_key, Micros now);
  // Records of `repeaters` that wait for an attempt (due or scheduled; not in flight or held
  // back by ordering).
  static std::int64_t backlog(Db& db, const std::vector<std::string>& repeaters);

  // The notification outbox (notify::Notifier drives these).
  static std::vector<UnsentNotifications> unsent_notifications(Db& db);
  // The unsent notifications of `connection`, oldest first.
  static std::vector<Notification> notifications_of(Db& db, const std::string& connection);
  // Queues a circuit change of `connection` (n.kind circuit_opened or circuit_closed) at `now`:
  // n.attempt (opened: the consecutive failures; closed: 0), n.http_status and n.error (opened:
  // the last failure's), n.next_attempt_at (opened: the first probe), n.backlog and n.outage_ms
  // (closed). The record fields are stored empty; n.id and n.at are ignored.
  static void queue_circuit_notification(Db& db, const std::string& connection, const Notification& n, Micros now);
  // Queues `message` carrying every unsent notification of `connection` up to `last_id`, and
  // starts the connection's throttle window at `now`.
  static std::int64_t queue_email(Db& db, const std::string& connection, const std::vector<std::string>& recipients,
                                  const std::string& message, int events, std::int64_t last_id, Micros now);
  // Emails to send now, at most one per connection: its oldest pending one, and only once it
  // is due, so a connection's emails go out in the order their events happened (a summary never
  // overtakes the first-failure email it follows, whatever retries delayed that one).
  static std::vector<OutboxEmail> due_emails(Db& db, Micros now, std::size_t limit);
  static std::optional<Micros> next_email_due(Db& db);
  static void email_sent(Db& db, std::int64_t id, Micros now);
  // A failed try. A permanent refusal (the server's 5xx) counts toward `max_refusals`: the email
  // reaching it is set aside as 'refused' (true is returned) and no longer holds back the
  // connection's later emails; anything else is tried again at `next_try_at`.
  static bool email_failed(Db& db, std::int64_t id, const std::string& error, bool refusal, int max_refusals,
                           Micros next_try_at);
  // Refused emails are queued again (each gets max_refusals more tries), due at `now`: after a
  // start or a reload, which is how an operator's fix (credentials, sender address) is taken
  // up. Returns how many.
  static int requeue_refused_emails(Db& db, Micros now);
  static std::vector<RepeaterSummary> summarize(Db& db, Micros now);
  // Deletes succeeded/cancelled records last updated before `cutoff`, their attempts, and
  // payloads older than cutoff that no record uses; at most `limit` records a call.
  static std::int64_t purge(Db& db, Micros cutoff, std::int64_t limit);

  // A read-only connection to the same database, for readers that must not wait behind the
  // writer (the admin API). Belongs to the caller's thread. Throws SqliteError.
  std::unique_ptr<Db> open_reader() const;
  const std::string& path() const { return options_.path; }

  // Counters for benchmarks and metrics.
  std::uint64_t batches_committed() const;
  std::uint64_t jobs_committed() const;

 private:
  Store(OwnerLock lock, std::unique_ptr<Db> db, Options options);
  void writer_loop();
  // The journal's account of failing batches: once when they start, once a minute while they
  // last, once when commits have succeeded for 2 s after the last failure. Writer thread only.
  void note_batch(const Status& commit);
  // sqlite3_wal_hook: the auto-checkpoint, with its failures told (store.cpp).
  static int wal_hook(void* self, sqlite3* db, const char* name, int pages);

  struct Pending {
    Job job;
    Done done;
  };

  OwnerLock lock_;  // first in, last out: held until the database is closed
  Options options_;
  std::unique_ptr<Db> db_;  // owned by the writer thread once it starts
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;      // GUARDED_BY(mu_)
  std::uint64_t batches_ = 0, jobs_ = 0;  // GUARDED_BY(mu_)
  // Writer thread only: the current run of failed batches (over once commits have succeeded
  // for 2 s), when it was last reported, and the run of failed checkpoints (over at the first
  // checkpoint that succeeds).
  FailureRun failing_{std::chrono::seconds(2)};
  FailureRun::Clock::time_point last_fault_report_;
  FailureRun checkpoint_failing_{FailureRun::Clock::duration::zero()};
  std::thread writer_;
};

}  // namespace repeaterd::store
