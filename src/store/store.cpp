#include "store/store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <filesystem>
#include <map>
#include <tuple>
#include <nlohmann/json.hpp>

#include "common/ids.hpp"
#include "common/json_text.hpp"
#include "store/body_codec.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"

namespace repeaterd::store {

const char* to_string(RecordState s) {
  switch (s) {
    case RecordState::pending: return "pending";
    case RecordState::failed: return "failed";
    case RecordState::succeeded: return "succeeded";
    case RecordState::cancelled: return "cancelled";
  }
  return "?";
}

namespace {

// Transaction control runs for every job; prepared once, it costs no parsing.
void step(Db& db, const char* sql) { StmtGuard(db.prepare(sql))->run(); }

// What an operator can do about the errors that stop a start (SQLite's primary result codes).
std::string open_advice(int code) {
  switch (code & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return ". The file is damaged or is not a repeaterd database; nothing was changed. Restore it from a backup, "
             "or move it (with its -wal and -shm files) aside to start on an empty queue and recover what it holds "
             "with `sqlite3 FILE .recover` (docs/operations.md, \"A damaged database\")";
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return ". The file, its -wal and -shm files and its directory must be writable by the user repeaterd runs as "
             "(the packaged service runs as user repeaterd)";
    case SQLITE_FULL:
      return ". The disk is full: free space on its filesystem and start again";
    default:
      return {};
  }
}

}  // namespace

Result<std::unique_ptr<Store>> Store::open(const Options& options) {
  try {
    std::error_code ec;
    auto parent = std::filesystem::path(options.path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    auto lock = OwnerLock::take(options.path);
    if (!lock) return lock.error();
    auto db = std::make_unique<Db>(options.path, Db::Mode::read_write);
    sqlite3_busy_timeout(db->handle(), options.busy_timeout_ms);
    // WAL lets readers (admin, sqlite3 CLI) work beside the writer; FULL syncs the WAL on
    // every commit because a 2xx promises the payload survives power loss.
    db->exec("PRAGMA journal_mode = WAL");
    db->exec("PRAGMA synchronous = FULL");
    db->exec("PRAGMA foreign_keys = ON");
    migrate(*db);

    // Attempts that were in flight when the previous process died: keep them in the
    // history as interrupted and make their records due again at once.
    const Micros now = now_micros();
    db->exec("BEGIN IMMEDIATE");
    auto& due = db->prepare(
        "UPDATE records SET next_attempt_at = ?1, updated_at = ?1 "
        "WHERE id IN (SELECT record FROM attempts WHERE outcome = 'in_flight') AND state IN ('pending', 'failed') "
        "AND next_attempt_at IS NULL");
    const int requeued = StmtGuard(due)->bind(1, now).run();
    auto& mark = db->prepare(
        "UPDATE attempts SET outcome = 'interrupted', "
        "error = 'repeaterd stopped while this attempt was in flight; the record is sent again' "
        "WHERE outcome = 'in_flight'");
    const int interrupted = StmtGuard(mark)->run();
    db->exec("COMMIT");
    if (interrupted > 0) {
      spdlog::warn("store: {} attempt(s) were in flight when repeaterd last stopped; recorded as "
                   "interrupted, {} record(s) due again now",
                   interrupted, requeued);
    }
    return std::unique_ptr<Store>(new Store(std::move(lock).value(), std::move(db), options));
  } catch (const SqliteError& e) {
    return make_error("cannot open the queue database " + options.path + ": " + e.what() + open_advice(e.code()));
  } catch (const std::exception& e) {
    return make_error("cannot open the queue database " + options.path + ": " + e.what());
  }
}

Store::Store(OwnerLock lock, std::unique_ptr<Db> db, Options options)
    : lock_(std::move(lock)), options_(std::move(options)), db_(std::move(db)) {
  sqlite3_wal_hook(db_->handle(), &Store::wal_hook, this);
  writer_ = std::thread([this] { writer_loop(); });
}

Store::~Store() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

void Store::submit(Job job, Done done) {
  bool accepted = false;
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.push_back(Pending{std::move(job), std::move(done)});
      accepted = true;
    }
  }
  if (!accepted) {
    done(make_error("the queue database is shutting down"));
    return;
  }
  cv_.notify_one();
}

std::unique_ptr<Db> Store::open_reader() const {
  auto db = std::make_unique<Db>(options_.path, Db::Mode::read_only);
  sqlite3_busy_timeout(db->handle(), options_.busy_timeout_ms);
  return db;
}

std::uint64_t Store::batches_committed() const {
  std::lock_guard lock(mu_);
  return batches_;
}

std::uint64_t Store::jobs_committed() const {
  std::lock_guard lock(mu_);
  return jobs_;
}

namespace {

// What a failed job or batch tells its callers (an ingest's 503 quotes it): the cause in an
// operator's words first, SQLite's own text after.
Error storage_error(const std::exception& e, const std::string& path) {
  const auto* sql = dynamic_cast<const SqliteError*>(&e);
  if (sql != nullptr && sql->full()) {
    auto dir = std::filesystem::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
    return make_error("the disk holding the queue database is full (" + dir + "; " + e.what() +
                          "); free space on that filesystem",
                      ErrorKind::busy);
  }
  if (sql != nullptr && sql->busy()) {
    return make_error(std::string("the queue database is locked by another process (") + e.what() + ")",
                      ErrorKind::busy);
  }
  return make_error(std::string("the queue database could not commit: ") + e.what(),
                    sql != nullptr ? ErrorKind::busy : ErrorKind::failed);
}

// What a job that failed alone tells its caller.
Error job_error(const std::exception& e, const std::string& path) {
  const auto* sql = dynamic_cast<const SqliteError*>(&e);
  if (sql == nullptr) return make_error(e.what());
  if (sql->full() || sql->busy()) return storage_error(e, path);
  return make_error(e.what(), ErrorKind::io);
}

// A job that SQLite's own rollback ended the transaction under (SQLITE_FULL and I/O errors
// roll back the whole transaction, not just the statement): the batch is gone.
struct TransactionLost : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr auto kFaultReportEvery = std::chrono::seconds(60);

}  // namespace

void Store::writer_loop() {
  std::vector<Pending> batch;
  std::vector<Status> results;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty() && stopping_) break;
      const std::size_t n = std::min(queue_.size(), options_.max_batch);
      for (std::size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }

    results.assign(batch.size(), Status(Ok{}));
    Status commit = Ok{};
    const auto began = std::chrono::steady_clock::now();
    sqlite3* handle = db_->handle();
    try {
      step(*db_, "BEGIN IMMEDIATE");
      for (std::size_t i = 0; i < batch.size(); ++i) {
        step(*db_, "SAVEPOINT job");
        try {
          batch[i].job(*db_);
        } catch (const std::exception& e) {
          // SQLite rolled the whole transaction back (a full disk does): every job before this
          // one is undone too, and anything run now would commit on its own. Fail the batch with
          // this cause.
          if (sqlite3_get_autocommit(handle) != 0) throw;
          results[i] = job_error(e, options_.path);
          step(*db_, "ROLLBACK TO job");
          step(*db_, "RELEASE job");
          continue;
        }
        // A job that caught an error which ended the transaction: its writes since then, if
        // any, committed on their own; the batch's are gone.
        if (sqlite3_get_autocommit(handle) != 0) {
          throw TransactionLost("the transaction was rolled back by SQLite inside a job (an error it caught)");
        }
        step(*db_, "RELEASE job");
      }
      step(*db_, "COMMIT");
    } catch (const std::exception& e) {
      // A batch that fails is worth retrying: a lock held by another process, a full disk that
      // an operator frees. The connection stays usable once the transaction is rolled back.
      commit = storage_error(e, options_.path);
      try {
        if (sqlite3_get_autocommit(handle) == 0) db_->exec("ROLLBACK");
      } catch (const std::exception& e2) {
        spdlog::error("store: rollback failed: {}", e2.what());
      }
    }
    note_batch(commit);

    if (commit.ok()) {
      {
        std::lock_guard lock(mu_);
        ++batches_;
        jobs_ += batch.size();
      }
      if (options_.on_batch) {
        options_.on_batch(batch.size(),
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      batch[i].done(commit.ok() ? std::move(results[i]) : commit);
    }
    batch.clear();
  }
}

void Store::note_batch(const Status& commit) {
  const auto now = FailureRun::Clock::now();
  const auto seconds = [&] { return std::chrono::duration_cast<std::chrono::seconds>(now - failing_.since()).count(); };
  if (commit.ok()) {
    const std::uint64_t failed = failing_.failures();
    if (failing_.succeeded(now)) {
      spdlog::warn("store: commits succeed again, after {} failed batch(es) over {} s; what was held has been stored",
                   failed, seconds());
    }
    return;
  }
  // One line when the trouble starts, then one a minute while it lasts: a full disk fails
  // every batch, and the journal must not fill up with them.
  if (!failing_.active()) {
    last_fault_report_ = now;
    spdlog::error("store: {}. Until commits succeed, submissions are answered 503 with Retry-After, attempt "
                  "outcomes are held in memory and retried, and nothing acknowledged is touched",
                  commit.error().message);
  } else if (now - last_fault_report_ >= kFaultReportEvery) {
    last_fault_report_ = now;
    spdlog::error("store: still failing: {} batch(es) in {} s; the latest: {}", failing_.failures(), seconds(),
                  commit.error().message);
  }
  failing_.failed(now);
}

int Store::wal_hook(void* self, sqlite3* db, const char* name, int pages) {
  // SQLite's own auto-checkpoint, which would drop the checkpoint's error silently: here a
  // checkpoint that cannot write the database file (a full disk) is said once, and the next
  // commit past the threshold tries again. Always SQLITE_OK: the commit has happened, and an
  // error here would make COMMIT report a failure.
  constexpr int kCheckpointPages = 1000;  // SQLite's default wal_autocheckpoint
  if (pages < kCheckpointPages) return SQLITE_OK;
  auto* store = static_cast<Store*>(self);
  // While checkpoints fail, each try still copies every page that fits the database file before
  // failing at the first one past its end: try again at most once a second, not at every commit.
  constexpr auto kFailingRetry = std::chrono::seconds(1);
  FailureRun& failing = store->checkpoint_failing_;
  const auto now = FailureRun::Clock::now();
  if (failing.active() && now - failing.last() < kFailingRetry) return SQLITE_OK;
  const int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
    if (failing.failed(now)) {
      // A full disk is SQLITE_FULL with no system error: say one only when there is one.
      const int sys = sqlite3_system_errno(db);
      spdlog::warn("store: a WAL checkpoint (the -wal file holds {} frame(s)) could not write into {}: {}{}; nothing "
                   "committed is lost: commits go on in the space the -wal file has, and the checkpoint is tried "
                   "again each second while commits come",
                   pages, store->options_.path, sqlite3_errmsg(db),
                   sys != 0 ? " (system error " + std::to_string(sys) + ")" : std::string());
    }
  } else if (rc == SQLITE_OK && failing.succeeded(now)) {
    spdlog::info("store: WAL checkpoints succeed again");
  }
  return SQLITE_OK;
}

std::optional<Store::StoredVersion> Store::latest_version(Db& db, const NewPayload& p) {
  StmtGuard q(db.prepare(
      "SELECT sha256, received_on, case_ids FROM payloads WHERE domain = ?1 AND payload_type = ?2 AND payload_id = ?3 "
      "ORDER BY id DESC LIMIT 1"));
  q->bind(1, p.domain).bind(2, p.payload_type).bind(3, p.payload_id);
  if (!q->step()) return std::nullopt;
  StoredVersion out{q->text(0), q->int64(1), {}};
  if (!q->is_null(2)) {
    const auto ids = nlohmann::json::parse(q->text(2), nullptr, /*allow_exceptions=*/false);
    if (!ids.is_array()) throw SqliteError(SQLITE_CORRUPT, "payload " + p.payload_id + ": case_ids is not a JSON array");
    for (const auto& id : ids) {
      if (id.is_string()) out.case_ids.push_back(id.get<std::string>());
    }
  }
  return out;
}

void Store::add_attachments(Db& db, std::int64_t payload_row, const std::vector<NewAttachment>& attachments) {
  StmtGuard ins(db.prepare(
      "INSERT INTO attachments (payload, name, filename, content_type, body) VALUES (?1, ?2, ?3, ?4, ?5)"));
  for (const auto& a : attachments) {
    ins->bind(1, payload_row).bind(2, a.name).bind(3, a.filename).bind(4, a.content_type).bind_blob(5, a.body);
    ins->run();
    ins->reset();
  }
}

std::optional<StoredCase> Store::load_case(Db& db, const std::string& domain, const std::string& case_id) {
  StmtGuard q(db.prepare(
      "SELECT case_type, closed, server_modified_on, state, base FROM cases WHERE domain = ?1 AND case_id = ?2"));
  q->bind(1, domain).bind(2, case_id);
  if (!q->step()) return std::nullopt;
  StoredCase c;
  c.case_id = case_id;
  c.case_type = q->text(0);
  c.closed = q->int64(1) != 0;
  c.server_modified_on = q->int64(2);
  c.state_json = q->text(3);
  if (!q->is_null(4)) c.base_json = q->text(4);
  return c;
}

void Store::save_case(Db& db, const std::string& domain, const StoredCase& c) {
  StmtGuard up(db.prepare(
      "INSERT INTO cases (domain, case_id, case_type, closed, server_modified_on, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT (domain, case_id) DO UPDATE SET case_type = excluded.case_type, closed = excluded.closed, "
      "server_modified_on = excluded.server_modified_on, state = excluded.state"));
  up->bind(1, domain).bind(2, c.case_id).bind(3, c.case_type).bind(4, static_cast<std::int64_t>(c.closed ? 1 : 0));
  up->bind(5, c.server_modified_on).bind(6, c.state_json);
  up->run();
}

namespace {

// cases.first_form <-> StoredCaseForm. The blocks (the JSON array blocks_to_storage_json writes)
// go in as JSON, not as a string holding it, which would escape every quote of it again. Written
// directly, on the writer thread, with every new case.
std::string first_form_json(const StoredCaseForm& f) {
  using namespace json_text;
  std::string out;
  out.reserve(f.blocks_json.size() + f.form_id.size() + f.user_id.size() + 64);
  bool first = true;
  out += '{';
  append_key(out, first, "blocks");
  if (!f.blocks_json.empty() && f.blocks_json.front() == '[') {
    out += f.blocks_json;
  } else {
    append_string(out, f.blocks_json);
  }
  append_member(out, first, "form_id", f.form_id);
  append_key(out, first, "server_date");
  append_int(out, f.server_date);
  append_member(out, first, "user_id", f.user_id);
  out += '}';
  return out;
}

std::optional<StoredCaseForm> first_form_of(Db& db, const std::string& domain, const std::string& case_id) {
  // json_extract gives an array as its JSON text and a string (rows written before schema 8
  // kept the blocks as one) as its value: the blocks' JSON either way.
  StmtGuard q(db.prepare(
      "SELECT json_extract(first_form, '$.form_id'), json_extract(first_form, '$.user_id'), "
      "json_extract(first_form, '$.server_date'), json_extract(first_form, '$.blocks') FROM cases "
      "WHERE domain = ?1 AND case_id = ?2 AND first_form IS NOT NULL"));
  q->bind(1, domain).bind(2, case_id);
  if (!q->step()) return std::nullopt;
  if (q->is_null(0) || q->is_null(1) || q->is_null(2) || q->is_null(3)) {
    throw SqliteError(SQLITE_CORRUPT, "case " + case_id + ": first_form is corrupt");
  }
  return StoredCaseForm{q->text(0), q->text(1), q->int64(2), q->text(3)};
}

}  // namespace

std::vector<StoredCaseForm> Store::case_forms(Db& db, const std::string& domain, const std::string& case_id) {
  std::vector<StoredCaseForm> out;
  if (auto first = first_form_of(db, domain, case_id)) out.push_back(std::move(*first));
  StmtGuard q(db.prepare(
      "SELECT form_id, user_id, server_date, blocks FROM case_forms WHERE domain = ?1 AND case_id = ?2 "
      "ORDER BY server_date, form_id"));
  q->bind(1, domain).bind(2, case_id);
  while (q->step()) out.push_back({q->text(0), q->text(1), q->int64(2), q->text(3)});
  std::stable_sort(out.begin(), out.end(), [](const StoredCaseForm& a, const StoredCaseForm& b) {
    return std::tie(a.server_date, a.form_id) < std::tie(b.server_date, b.form_id);
  });
  return out;
}

std::vector<std::string> Store::case_form_ids(Db& db, const std::string& domain, const std::string& case_id) {
  // Only the ids (a case JSON payload lists them): no blocks are read or parsed. The first form
  // goes where case_forms() puts it, before the rows that sort equal to it.
  std::optional<std::pair<Micros, std::string>> first;
  {
    StmtGuard q(db.prepare(
        "SELECT json_extract(first_form, '$.server_date'), json_extract(first_form, '$.form_id') FROM cases "
        "WHERE domain = ?1 AND case_id = ?2 AND first_form IS NOT NULL"));
    q->bind(1, domain).bind(2, case_id);
    if (q->step()) {
      if (q->is_null(0) || q->is_null(1)) {
        throw SqliteError(SQLITE_CORRUPT, "case " + case_id + ": first_form is corrupt");
      }
      first.emplace(q->int64(0), q->text(1));
    }
  }
  std::vector<std::string> out;
  StmtGuard q(db.prepare(
      "SELECT server_date, form_id FROM case_forms WHERE domain = ?1 AND case_id = ?2 ORDER BY server_date, form_id"));
  q->bind(1, domain).bind(2, case_id);
  while (q->step()) {
    const Micros date = q->int64(0);
    std::string id = q->text(1);
    if (first && std::tie(first->first, first->second) <= std::tie(date, id)) {
      out.push_back(std::move(first->second));
      first.reset();
    }
    out.push_back(std::move(id));
  }
  if (first) out.push_back(std::move(first->second));
  return out;
}

void Store::add_case_form(Db& db, const std::string& domain, const std::string& case_id, const StoredCaseForm& f) {
  // The case's first form goes into its own row, which save_case has just written. Asked before
  // anything is built: a case's later forms (most of them, on a busy case) cost one row insert.
  bool first = false;
  {
    StmtGuard q(db.prepare(
        "SELECT first_form IS NULL AND base IS NULL AND NOT EXISTS (SELECT 1 FROM case_forms WHERE domain = ?1 AND "
        "case_id = ?2) FROM cases WHERE domain = ?1 AND case_id = ?2"));
    q->bind(1, domain).bind(2, case_id);
    first = q->step() && q->int64(0) != 0;
  }
  if (first) {
    StmtGuard up(db.prepare("UPDATE cases SET first_form = ?3 WHERE domain = ?1 AND case_id = ?2"));
    up->bind(1, domain).bind(2, case_id).bind(3, first_form_json(f));
    up->run();
    return;
  }
  StmtGuard ins(db.prepare(
      "INSERT INTO case_forms (domain, case_id, server_date, form_id, user_id, blocks) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  ins->bind(1, domain).bind(2, case_id).bind(3, f.server_date).bind(4, f.form_id).bind(5, f.user_id);
  ins->bind(6, f.blocks_json);
  ins->run();
}

void Store::remove_case_forms(Db& db, const std::string& domain, const std::string& form_id,
                              const std::vector<std::string>& case_ids) {
  StmtGuard del(db.prepare("DELETE FROM case_forms WHERE domain = ?1 AND case_id = ?2 AND form_id = ?3"));
  StmtGuard first(db.prepare(
      "UPDATE cases SET first_form = NULL WHERE domain = ?1 AND case_id = ?2 "
      "AND json_extract(first_form, '$.form_id') = ?3"));
  for (const auto& case_id : case_ids) {
    del->bind(1, domain).bind(2, case_id).bind(3, form_id);
    del->run();
    del->reset();
    first->bind(1, domain).bind(2, case_id).bind(3, form_id);
    first->run();
    first->reset();
  }
}

IngestResult Store::ingest(Db& db, const NewPayload& p, const std::vector<NewRecord>& records, Micros now) {
  const std::string digest = p.sha256.empty() ? sha256_hex(p.body) : p.sha256;
  if (auto latest = latest_version(db, p); latest && latest->digest == digest) {
    IngestResult out;
    out.duplicate = true;
    return out;
  }
  return insert(db, p, digest, records, now);
}

IngestResult Store::insert(Db& db, const NewPayload& p, const std::string& digest,
                           const std::vector<NewRecord>& records, Micros now) {
  IngestResult out;
  {
    StmtGuard ins(db.prepare(
        "INSERT INTO payloads (domain, payload_type, payload_id, xmlns, app_id, content_type, body, sha256, "
        "received_on, case_ids, encoding, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"));
    ins->bind(1, p.domain).bind(2, p.payload_type).bind(3, p.payload_id).bind(4, p.xmlns).bind(5, p.app_id);
    ins->bind(6, p.content_type).bind_blob(7, p.deflated ? std::string_view(*p.deflated) : std::string_view(p.body));
    ins->bind(8, digest).bind(9, p.received_on).bind(11, p.deflated ? kDeflate : std::string_view(""));
    ins->bind(12, static_cast<std::int64_t>(p.body.size()));
    if (p.case_ids.empty()) {
      ins->bind_null(10);
    } else {
      ins->bind(10, json_text::dump(p.case_ids));
    }
    ins->run();
  }
  const std::int64_t payload_row = db.last_insert_rowid();
  out.payload_row = payload_row;
  StmtGuard rec(db.prepare(
      "INSERT INTO records (id, payload, repeater, state, created_at, updated_at, next_attempt_at, content_type, "
      "query, headers, body, case_id, order_key, waiting) VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?12, ?5, ?6, ?7, "
      "?8, ?9, ?10, ?11)"));
  for (const auto& r : records) {
    rec->bind(1, r.id).bind(2, payload_row).bind(3, r.repeater).bind(4, now).bind(5, r.content_type);
    rec->bind(6, r.query).bind(7, r.headers_json);
    if (r.body) rec->bind_blob(8, *r.body); else rec->bind_null(8);
    if (r.case_id.empty()) rec->bind_null(9); else rec->bind(9, r.case_id);
    bool waiting = false;
    if (r.ordered) {
      const std::string& key = r.case_id.empty() ? p.payload_id : r.case_id;
      // Ids grow with time, so any open record of the key is an earlier one.
      StmtGuard earlier(db.prepare(
          "SELECT 1 FROM records INDEXED BY records_order WHERE repeater = ?1 AND order_key = ?2 "
          "AND state IN ('pending', 'failed') LIMIT 1"));
      earlier->bind(1, r.repeater).bind(2, key);
      waiting = earlier->step();
      rec->bind(10, key);
    } else {
      rec->bind_null(10);
    }
    rec->bind(11, static_cast<std::int64_t>(waiting ? 1 : 0));
    if (waiting) rec->bind_null(12); else rec->bind(12, now);
    rec->run();
    rec->reset();
    out.record_ids.push_back(r.id);
  }
  return out;
}

Claim Store::claim(Db& db, const std::vector<std::string>& repeaters, std::size_t limit, Micros now,
                   bool want_next_due) {
  Claim out;
  // Per repeater, the oldest due records straight from the due index; then the oldest overall.
  // The columns an attempt needs are read here and the claim is a plain UPDATE: an UPDATE ...
  // RETURNING would have SQLite buffer its rows in a temporary B-tree for every record.
  struct Due {
    Micros at = 0;
    ClaimedRecord rec;
    std::int64_t payload_row = 0;
    std::string case_id;
    bool own_body = false;
    bool operator<(const Due& o) const { return at != o.at ? at < o.at : rec.id < o.rec.id; }
  };
  std::vector<Due> due;
  {
    StmtGuard q(db.prepare(kDueRecordsSql));
    for (const auto& r : repeaters) {
      q->bind(1, r).bind(2, now).bind(3, static_cast<std::int64_t>(limit));
      while (q->step()) {
        Due d;
        d.at = q->int64(1);
        ClaimedRecord& c = d.rec;
        c.id = q->text(0);
        c.repeater = r;
        c.attempt = static_cast<int>(q->int64(2)) + 1;
        c.client_errors = static_cast<int>(q->int64(3));
        c.content_type = q->text(4);
        c.query = q->text(5);
        c.headers_json = q->text(6);
        d.own_body = !q->is_null(7);
        if (d.own_body) c.body = q->text(7);
        d.payload_row = q->int64(8);
        d.case_id = q->text(9);
        c.version = q->int64(10);
        c.round_attempt = c.attempt - static_cast<int>(q->int64(11));
        due.push_back(std::move(d));
      }
      q->reset();
    }
  }
  if (due.size() > limit) {
    std::partial_sort(due.begin(), due.begin() + static_cast<std::ptrdiff_t>(limit), due.end());
    due.resize(limit);
  } else {
    std::sort(due.begin(), due.end());
  }

  StmtGuard take(db.prepare(
      "UPDATE records SET next_attempt_at = NULL, attempts = attempts + 1, updated_at = ?2 "
      "WHERE id = ?1 AND next_attempt_at IS NOT NULL"));
  StmtGuard payload(db.prepare(
      "SELECT domain, payload_type, payload_id, body, encoding, size FROM payloads WHERE id = ?1"));
  StmtGuard attempt(db.prepare(
      "INSERT INTO attempts (record, number, started_at, outcome, request_id) VALUES (?1, ?2, ?3, 'in_flight', ?4)"));
  for (auto& d : due) {
    ClaimedRecord& c = d.rec;
    take->bind(1, c.id).bind(2, now);
    const int taken = take->run();
    take->reset();
    if (taken == 0) continue;

    payload->bind(1, d.payload_row);
    if (payload->step()) {
      c.domain = payload->text(0);
      c.payload_type = payload->text(1);
      c.payload_id = payload->text(2);
      if (!d.own_body) {
        c.body = payload->text(3);
        c.body_encoding = payload->text(4);
        c.body_size = payload->int64(5);
      }
    }
    if (!d.case_id.empty()) {
      c.payload_type = "case";
      c.payload_id = d.case_id;
    }
    payload->reset();

    c.request_id = uuid_v4();
    attempt->bind(1, c.id).bind(2, c.attempt).bind(3, now).bind(4, c.request_id);
    attempt->run();
    attempt->reset();
    c.attempt_row = db.last_insert_rowid();
    out.records.push_back(std::move(c));
  }

  if (!want_next_due) return out;
  StmtGuard next(db.prepare(
      "SELECT MIN(next_attempt_at) FROM records WHERE repeater = ?1 AND next_attempt_at IS NOT NULL"));
  for (const auto& r : repeaters) {
    next->bind(1, r);
    if (next->step() && !next->is_null(0)) {
      const Micros t = next->int64(0);
      if (!out.next_due || t < *out.next_due) out.next_due = t;
    }
    next->reset();
  }
  return out;
}

Store::Finished Store::finish(Db& db, const AttemptOutcome& o, Micros now) {
  {
    StmtGuard a(db.prepare(
        "UPDATE attempts SET outcome = ?2, duration_ms = ?3, http_status = ?4, response_headers = ?5, "
        "response_body = ?6, error = ?7 WHERE id = ?1"));
    a->bind(1, o.attempt_row).bind(2, o.succeeded ? "succeeded" : "failed").bind(3, o.duration_ms);
    if (o.http_status) a->bind(4, static_cast<std::int64_t>(*o.http_status)); else a->bind_null(4);
    a->bind(5, o.response_headers_json.empty() ? std::string_view("{}") : std::string_view(o.response_headers_json));
    a->bind_blob(6, o.response_body).bind(7, o.error);
    a->run();
  }
  {
    StmtGuard r(db.prepare(
        "UPDATE records SET state = ?2, next_attempt_at = ?3, client_errors = client_errors + ?4, reason = ?5, "
        "updated_at = ?6, round_start = round_start + ?8 WHERE id = ?1 AND version = ?7"));
    r->bind(1, o.record_id).bind(2, to_string(o.new_state)).bind(3, o.next_attempt_at);
    r->bind(4, static_cast<std::int64_t>(o.client_error ? 1 : 0)).bind(5, o.reason).bind(6, now);
    r->bind(7, o.version).bind(8, static_cast<std::int64_t>(o.free_attempt ? 1 : 0));
    // An operator acted on the record while this attempt was out: the attempt stays in the
    // history, the record stays as the operator left it.
    if (r->run() == 0) return Finished{false, false};
  }
  if (o.new_state == RecordState::succeeded || o.new_state == RecordState::cancelled) {
    // Done: the next record of its case (ordered repeaters) may go. A primary-key lookup, not
    // RETURNING, which costs a temporary B-tree per statement.
    StmtGuard q(db.prepare("SELECT repeater, order_key FROM records WHERE id = ?1 AND order_key IS NOT NULL"));
    q->bind(1, o.record_id);
    if (q->step()) {
      const std::string repeater = q->text(0), key = q->text(1);
      q->reset();
      release_next(db, repeater, key, now);
    }
  }
  if (!o.notify) return Finished{true, false};

  bool failing = false;
  {
    StmtGuard q(db.prepare("SELECT failing FROM notify_state WHERE connection = ?1"));
    q->bind(1, o.connection);
    if (q->step()) failing = q->int64(0) != 0;
  }
  {
    StmtGuard up(db.prepare(
        "INSERT INTO notify_state (connection, failing) VALUES (?1, ?2) "
        "ON CONFLICT (connection) DO UPDATE SET failing = excluded.failing"));
    up->bind(1, o.connection).bind(2, static_cast<std::int64_t>(o.succeeded ? 0 : 1)).run();
  }
  if (o.succeeded) return Finished{true, false};
  const bool cancelled = o.new_state == RecordState::cancelled;
  // The first failure of a streak and every cancellation; later failures of the same streak
  // would only repeat what the contacts were already told.
  if (!cancelled && failing) return Finished{true, false};
  const Notification& e = *o.notify;
  StmtGuard ins(db.prepare(
      "INSERT INTO notifications (connection, kind, created_at, record_id, repeater, domain, payload_type, "
      "payload_id, attempt, http_status, error, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
      "?11, ?12)"));
  ins->bind(1, o.connection).bind(2, cancelled ? "cancelled" : "failed").bind(3, now).bind(4, e.record_id);
  ins->bind(5, e.repeater).bind(6, e.domain).bind(7, e.payload_type).bind(8, e.payload_id);
  ins->bind(9, static_cast<std::int64_t>(e.attempt));
  if (e.http_status) ins->bind(10, static_cast<std::int64_t>(*e.http_status)); else ins->bind_null(10);
  ins->bind(11, e.error);
  if (cancelled) ins->bind_null(12); else ins->bind(12, e.next_attempt_at);
  ins->run();
  return Finished{true, true};
}

void Store::release_next(Db& db, const std::string& repeater, const std::string& order_key, Micros now) {
  StmtGuard q(db.prepare(
      "UPDATE records SET waiting = 0, next_attempt_at = ?3 WHERE id = (SELECT id FROM records INDEXED BY "
      "records_order WHERE repeater = ?1 AND order_key = ?2 AND state IN ('pending', 'failed') ORDER BY id LIMIT 1) "
      "AND waiting = 1"));
  q->bind(1, repeater).bind(2, order_key).bind(3, now).run();
}

std::int64_t Store::backlog(Db& db, const std::vector<std::string>& repeaters) {
  StmtGuard q(db.prepare("SELECT COUNT(*) FROM records WHERE repeater = ?1 AND next_attempt_at IS NOT NULL"));
  std::int64_t n = 0;
  for (const auto& r : repeaters) {
    q->bind(1, r);
    if (q->step()) n += q->int64(0);
    q->reset();
  }
  return n;
}

namespace {

// The notifications table's `kind` column.
const char* kind_text(Notification::Kind k) {
  switch (k) {
    case Notification::Kind::failed: return "failed";
    case Notification::Kind::cancelled: return "cancelled";
    case Notification::Kind::circuit_opened: return "circuit_opened";
    case Notification::Kind::circuit_closed: return "circuit_closed";
  }
  return "?";
}

Notification::Kind kind_from_text(std::string_view text) {
  for (auto k : {Notification::Kind::cancelled, Notification::Kind::circuit_opened, Notification::Kind::circuit_closed}) {
    if (text == kind_text(k)) return k;
  }
  return Notification::Kind::failed;  // the CHECK constraint allows nothing else
}

}  // namespace

std::vector<UnsentNotifications> Store::unsent_notifications(Db& db) {
  std::vector<UnsentNotifications> out;
  StmtGuard q(db.prepare(
      "SELECT n.connection, n.kind, n.oldest, n.count, COALESCE(s.window_start, 0) FROM (SELECT connection, kind, "
      "MIN(created_at) AS oldest, COUNT(*) AS count FROM notifications WHERE email IS NULL GROUP BY connection, kind) n "
      "LEFT JOIN notify_state s ON s.connection = n.connection ORDER BY n.connection"));
  while (q->step()) {
    const std::string connection = q->text(0);
    if (out.empty() || out.back().connection != connection) {
      out.push_back({connection, q->int64(4), q->int64(2), 0, {}});
    }
    UnsentNotifications& u = out.back();
    u.oldest_at = std::min(u.oldest_at, q->int64(2));
    u.count += q->int64(3);
    u.kinds.push_back(kind_from_text(q->text(1)));
  }
  return out;
}

std::vector<Notification> Store::notifications_of(Db& db, const std::string& connection) {
  std::vector<Notification> out;
  StmtGuard q(db.prepare(
      "SELECT id, kind, created_at, record_id, repeater, domain, payload_type, payload_id, attempt, http_status, "
      "error, next_attempt_at, backlog, outage_ms FROM notifications WHERE connection = ?1 AND email IS NULL "
      "ORDER BY id"));
  q->bind(1, connection);
  while (q->step()) {
    Notification e;
    e.id = q->int64(0);
    e.kind = kind_from_text(q->text(1));
    e.at = q->int64(2);
    e.record_id = q->text(3);
    e.repeater = q->text(4);
    e.domain = q->text(5);
    e.payload_type = q->text(6);
    e.payload_id = q->text(7);
    e.attempt = static_cast<int>(q->int64(8));
    if (auto s = q->opt_int64(9)) e.http_status = static_cast<int>(*s);
    e.error = q->text(10);
    e.next_attempt_at = q->opt_int64(11);
    e.backlog = q->opt_int64(12);
    e.outage_ms = q->opt_int64(13);
    out.push_back(std::move(e));
  }
  return out;
}

void Store::queue_circuit_notification(Db& db, const std::string& connection, const Notification& n, Micros now) {
  StmtGuard ins(db.prepare(
      "INSERT INTO notifications (connection, kind, created_at, record_id, repeater, domain, payload_type, "
      "payload_id, attempt, http_status, error, next_attempt_at, backlog, outage_ms) VALUES (?1, ?2, ?3, '', '', '', "
      "'', '', ?4, ?5, ?6, ?7, ?8, ?9)"));
  ins->bind(1, connection).bind(2, kind_text(n.kind)).bind(3, now).bind(4, static_cast<std::int64_t>(n.attempt));
  if (n.http_status) ins->bind(5, static_cast<std::int64_t>(*n.http_status)); else ins->bind_null(5);
  ins->bind(6, n.error).bind(7, n.next_attempt_at).bind(8, n.backlog).bind(9, n.outage_ms);
  ins->run();
}

std::int64_t Store::queue_email(Db& db, const std::string& connection, const std::vector<std::string>& recipients,
                                const std::string& message, int events, std::int64_t last_id, Micros now) {
  std::string to = "[";
  for (std::size_t i = 0; i < recipients.size(); ++i) {
    // Addresses were checked at load to hold no quotes or control characters.
    to += (i > 0 ? ",\"" : "\"") + recipients[i] + "\"";
  }
  to += "]";
  {
    StmtGuard ins(db.prepare(
        "INSERT INTO emails (connection, created_at, recipients, message, events, state, next_try_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?2)"));
    ins->bind(1, connection).bind(2, now).bind(3, to).bind_blob(4, message).bind(5, static_cast<std::int64_t>(events));
    ins->run();
  }
  const std::int64_t id = db.last_insert_rowid();
  {
    StmtGuard up(db.prepare(
        "UPDATE notifications SET email = ?1 WHERE connection = ?2 AND email IS NULL AND id <= ?3"));
    up->bind(1, id).bind(2, connection).bind(3, last_id).run();
  }
  StmtGuard win(db.prepare(
      "INSERT INTO notify_state (connection, window_start) VALUES (?1, ?2) "
      "ON CONFLICT (connection) DO UPDATE SET window_start = excluded.window_start"));
  win->bind(1, connection).bind(2, now).run();
  return id;
}

std::vector<OutboxEmail> Store::due_emails(Db& db, Micros now, std::size_t limit) {
  std::vector<OutboxEmail> out;
  StmtGuard q(db.prepare(
      "SELECT id, connection, recipients, message, events, attempts FROM emails e WHERE state = 'pending' "
      "AND next_try_at <= ?1 AND NOT EXISTS (SELECT 1 FROM emails o WHERE o.state = 'pending' "
      "AND o.connection = e.connection AND o.id < e.id) ORDER BY id LIMIT ?2"));
  q->bind(1, now).bind(2, static_cast<std::int64_t>(limit));
  while (q->step()) {
    OutboxEmail e;
    e.id = q->int64(0);
    e.connection = q->text(1);
    // The array repeaterd itself wrote: ["a@x","b@y"].
    const std::string to = q->text(2);
    for (std::size_t pos = to.find('"'); pos != std::string::npos;) {
      const auto end = to.find('"', pos + 1);
      if (end == std::string::npos) break;
      e.recipients.push_back(to.substr(pos + 1, end - pos - 1));
      pos = to.find('"', end + 1);
    }
    e.message = q->text(3);
    e.events = static_cast<int>(q->int64(4));
    e.attempts = static_cast<int>(q->int64(5));
    out.push_back(std::move(e));
  }
  return out;
}

std::optional<Micros> Store::next_email_due(Db& db) {
  StmtGuard q(db.prepare("SELECT MIN(next_try_at) FROM emails WHERE state = 'pending'"));
  if (q->step() && !q->is_null(0)) return q->int64(0);
  return std::nullopt;
}

void Store::email_sent(Db& db, std::int64_t id, Micros now) {
  StmtGuard up(db.prepare("UPDATE emails SET state = 'sent', sent_at = ?2, attempts = attempts + 1 WHERE id = ?1"));
  up->bind(1, id).bind(2, now).run();
}

bool Store::email_failed(Db& db, std::int64_t id, const std::string& error, bool refusal, int max_refusals,
                         Micros next_try_at) {
  StmtGuard up(db.prepare(
      "UPDATE emails SET attempts = attempts + 1, last_error = ?2, next_try_at = ?3, refusals = refusals + ?4, "
      "state = CASE WHEN refusals + ?4 >= ?5 THEN 'refused' ELSE state END WHERE id = ?1 RETURNING state"));
  up->bind(1, id).bind(2, error).bind(3, next_try_at).bind(4, static_cast<std::int64_t>(refusal ? 1 : 0));
  up->bind(5, static_cast<std::int64_t>(max_refusals));
  const bool refused = up->step() && up->text(0) == "refused";
  return refused;
}

int Store::requeue_refused_emails(Db& db, Micros now) {
  StmtGuard up(db.prepare("UPDATE emails SET state = 'pending', refusals = 0, next_try_at = ?1 WHERE state = 'refused'"));
  return up->bind(1, now).run();
}

std::vector<RepeaterSummary> Store::summarize(Db& db, Micros now) {
  std::map<std::string, RepeaterSummary> by;
  {
    StmtGuard q(db.prepare("SELECT repeater, state, COUNT(*) FROM records GROUP BY repeater, state"));
    while (q->step()) {
      auto& s = by[q->text(0)];
      s.repeater = q->text(0);
      const auto state = q->text(1);
      const auto n = q->int64(2);
      if (state == "pending") s.pending = n;
      else if (state == "failed") s.failed = n;
      else if (state == "succeeded") s.succeeded = n;
      else if (state == "cancelled") s.cancelled = n;
    }
  }
  StmtGuard oldest(db.prepare(
      "SELECT MIN(next_attempt_at) FROM records WHERE repeater = ?1 AND next_attempt_at IS NOT NULL "
      "AND next_attempt_at <= ?2"));
  std::vector<RepeaterSummary> out;
  for (auto& [name, s] : by) {
    oldest->bind(1, name).bind(2, now);
    if (oldest->step() && !oldest->is_null(0)) s.oldest_due = oldest->int64(0);
    oldest->reset();
    out.push_back(std::move(s));
  }
  return out;
}

std::int64_t Store::purge(Db& db, Micros cutoff, std::int64_t limit) {
  db.exec("CREATE TEMP TABLE IF NOT EXISTS purge_ids (id TEXT PRIMARY KEY)");
  db.exec("DELETE FROM purge_ids");
  {
    StmtGuard pick(db.prepare(
        "INSERT INTO purge_ids SELECT id FROM records WHERE state IN ('succeeded', 'cancelled') "
        "AND updated_at < ?1 LIMIT ?2"));
    pick->bind(1, cutoff).bind(2, limit).run();
  }
  {
    // Sent emails and the notifications they carried go with the retention too.
    StmtGuard n(db.prepare(
        "DELETE FROM notifications WHERE email IN (SELECT id FROM emails WHERE state = 'sent' AND sent_at < ?1)"));
    n->bind(1, cutoff).run();
    StmtGuard e(db.prepare("DELETE FROM emails WHERE state = 'sent' AND sent_at < ?1"));
    e->bind(1, cutoff).run();
  }
  db.exec("DELETE FROM attempts WHERE record IN (SELECT id FROM purge_ids)");
  db.exec("DELETE FROM records WHERE id IN (SELECT id FROM purge_ids)");
  const std::int64_t purged = sqlite3_changes(db.handle());
  {
    // A payload's attachments go with it; cases outlive the payloads that built them.
    StmtGuard attachments(db.prepare(
        "DELETE FROM attachments WHERE payload IN (SELECT id FROM payloads WHERE received_on < ?1 "
        "AND NOT EXISTS (SELECT 1 FROM records WHERE records.payload = payloads.id))"));
    attachments->bind(1, cutoff).run();
    StmtGuard payloads(db.prepare(
        "DELETE FROM payloads WHERE received_on < ?1 "
        "AND NOT EXISTS (SELECT 1 FROM records WHERE records.payload = payloads.id)"));
    payloads->bind(1, cutoff).run();
  }
  return purged;
}

}  // namespace repeaterd::store
