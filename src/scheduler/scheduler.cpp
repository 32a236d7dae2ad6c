#include "scheduler/scheduler.hpp"

#include <spdlog/spdlog.h>

#include <boost/algorithm/string/predicate.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "scheduler/retry_policy.hpp"
#include "sender/auth.hpp"
#include "sender/authenticator.hpp"
#include "sender/http_client.hpp"
#include "store/async.hpp"

namespace repeaterd::scheduler {

namespace asio = boost::asio;
using asio::awaitable;

namespace {

constexpr auto kStoreRetryDelay = std::chrono::seconds(1);

// Runs a coroutine that must never take the daemon down: whatever escapes is logged.
void spawn_logged(asio::any_io_executor ex, awaitable<void> task, std::string what) {
  asio::co_spawn(ex, std::move(task), [what = std::move(what)](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& err) {
      spdlog::error("{}: {}", what, err.what());
    }
  });
}

nlohmann::json record_fields(const store::ClaimedRecord& r, const std::string& connection) {
  return {{"record_id", r.id},          {"repeater", r.repeater},         {"connection", connection},
          {"domain", r.domain},         {"payload_type", r.payload_type}, {"payload_id", r.payload_id},
          {"attempt", r.attempt}};
}

std::string headers_json(const sender::Headers& headers) {
  nlohmann::json h = nlohmann::json::object();
  for (const auto& [k, v] : headers) {
    auto& slot = h[k];
    slot = slot.is_null() ? v : slot.get<std::string>() + ", " + v;
  }
  return h.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Micros sleep_micros(Micros until) { return std::max<Micros>(0, until - now_micros()); }

const char* outcome_label(ErrorClass c) {
  switch (c) {
    case ErrorClass::success: return "success";
    case ErrorClass::retryable: return "retryable";
    case ErrorClass::client_error: return "client_error";
    case ErrorClass::cancel_now: return "cancel_now";
  }
  return "?";
}

}  // namespace

// The scheduler's Snapshot, written by the workers on the executor and read from any thread.
struct ActivityBoard {
  mutable std::mutex mu;
  Snapshot snapshot;  // GUARDED_BY(mu)

  void started(const std::string& repeater, const std::string& connection) {
    std::lock_guard lock(mu);
    ++snapshot.repeaters[repeater].in_flight;
    ++snapshot.connections[connection].in_flight;
  }
  void ended(const std::string& repeater, const std::string& connection, const std::string& record_id,
             bool succeeded, const std::string& error) {
    const Micros now = now_micros();
    std::lock_guard lock(mu);
    for (Activity* a : {&snapshot.repeaters[repeater], &snapshot.connections[connection]}) {
      --a->in_flight;
      if (succeeded) a->last_success = now;
      else a->last_error = Activity::LastError{now, record_id, error};
    }
  }
};

// One connection's share of the queue: its repeaters, its client, its in-flight slots.
class Worker {
 public:
  // `connection` points into `created`, which the worker keeps: its client and authenticator
  // hold the settings it was made with until it is gone. `operator_paused` is the scheduler's.
  Worker(asio::any_io_executor ex, std::shared_ptr<const config::Config> created, const config::Connection& connection,
         const std::set<std::string>& operator_paused, store::Store& store, EventLog& events,
         std::function<void()> on_notification, ActivityBoard& board, Metrics* metrics)
      : created_(std::move(created)),
        operator_paused_(operator_paused),
        on_notification_(std::move(on_notification)),
        board_(board),
        metrics_(metrics),
        executor_(ex),
        connection_(connection),
        store_(store),
        events_(events),
        client_(ex, connection),
        auth_(ex, connection),
        timer_(ex),
        random_(std::random_device{}()) {
    // A burst of one: requests are evenly spaced, so no window of any length sees more than
    // the rate allows (a bigger burst would let a second's worth out at once).
    if (connection.rate_limit) bucket_.emplace(*connection.rate_limit, 1.0, now_micros());
  }

  const config::Connection& connection() const { return connection_; }

  // The repeaters this connection serves from now on, in the config `config` (a reload hands
  // a new one). Records claimed before keep the view they were claimed with.
  void set_repeaters(std::shared_ptr<const config::Config> config, const std::vector<const config::Repeater*>& repeaters) {
    auto v = std::make_shared<View>();
    v->config = std::move(config);
    for (const auto* r : repeaters) v->repeaters[r->name] = r;
    view_ = std::move(v);
    update_active();
    wake();
  }

  // Stopped, with nothing in flight and its loop ended: safe to destroy.
  bool done() const { return stopping_ && in_flight_ == 0 && run_ended_; }

  // The operator pauses changed. Takes effect at once: claims from now on leave a paused
  // repeater out (attempts in flight finish); a resumed one's due records are claimed now.
  void pauses_changed() {
    update_active();
    wake();
  }

  void start() { spawn_logged(executor_, run(), "scheduler[" + connection_.name + "]"); }

  void wake() {
    dirty_ = true;
    timer_.cancel();
  }

  void stop() {
    stopping_ = true;
    timer_.cancel();
    client_.close_idle();
  }

  std::size_t in_flight() const { return in_flight_; }

 private:
  awaitable<void> run() {
    while (!stopping_) {
      dirty_ = false;
      const std::size_t free = connection_.max_in_flight - in_flight_;
      std::optional<Micros> next_due;
      if (free > 0 && !active_.empty()) {
        // Named, not a temporary in the co_await expression: GCC 12 destroys such
        // temporaries twice.
        std::function<store::Claim(store::Db&)> job = [repeaters = active_, free](store::Db& db) {
          return store::Store::claim(db, repeaters, free, now_micros());
        };
        // Every record claimed now belongs to a repeater of this view.
        auto view = view_;
        auto claim = co_await store::async_run<store::Claim>(store_, std::move(job));
        if (!claim.ok()) {
          spdlog::error("scheduler[{}]: cannot claim due records: {}", connection_.name, claim.error().message);
          next_due = now_micros() + std::chrono::microseconds(kStoreRetryDelay).count();
        } else {
          for (auto& rec : claim->records) {
            ++in_flight_;
            board_.started(rec.repeater, connection_.name);
            spawn_logged(executor_, slot(std::move(rec), view), "attempt[" + connection_.name + "]");
          }
          next_due = claim->next_due;
        }
      }
      if (stopping_) break;
      if (dirty_) continue;
      if (in_flight_ >= connection_.max_in_flight || !next_due) {
        timer_.expires_at(asio::steady_timer::time_point::max());  // until woken
      } else {
        timer_.expires_after(std::chrono::microseconds(sleep_micros(*next_due)));
      }
      co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    // Set here, not by a guard's destructor: a frame destroyed with the io_context after the
    // scheduler is gone must not write into a freed worker.
    run_ended_ = true;
  }

  // One in-flight slot: sends its record, stores the outcome and, in the same store job,
  // claims the next due record of this connection, until none is due. Chaining the claim onto
  // the outcome halves the store round trips of a busy connection.
  struct View;
  awaitable<void> slot(store::ClaimedRecord first, std::shared_ptr<const View> first_view) {
    std::optional<store::ClaimedRecord> next = std::move(first);
    std::shared_ptr<const View> view = std::move(first_view);
    while (next) {
      store::ClaimedRecord rec = std::move(*next);
      next.reset();
      const Attempt done = co_await attempt(rec, *view);
      bool applied = true;
      next = co_await store_outcome(done.outcome, applied, view);
      board_.ended(rec.repeater, connection_.name, rec.id, done.outcome.succeeded, done.outcome.error);
      if (metrics_) metrics_->attempt(connection_.name, outcome_label(done.cls), static_cast<double>(done.outcome.duration_ms) / 1000.0);
      report(rec, done, applied);
      if (next) board_.started(next->repeater, connection_.name);
    }
    --in_flight_;
    wake();
  }

  struct Attempt {
    store::AttemptOutcome outcome;
    Decision decision;
    ErrorClass cls = ErrorClass::success;
  };

  // Runs on the settings of `view` (the config when the record was claimed), whatever a reload
  // does meanwhile.
  awaitable<Attempt> attempt(store::ClaimedRecord& rec, const View& view) {
    const config::Repeater* repeater = view.repeaters.at(rec.repeater);
    sender::Request req;
    req.method = repeater->method;
    req.query = rec.query;
    req.headers.emplace_back("Content-Type", rec.content_type);
    if (auto extra = nlohmann::json::parse(rec.headers_json, nullptr, false); extra.is_object()) {
      for (auto& [k, v] : extra.items()) req.headers.emplace_back(k, v.is_string() ? v.get<std::string>() : v.dump());
    }
    req.headers.emplace_back("Idempotency-Key", rec.id);
    req.headers.emplace_back("X-Request-Id", rec.request_id);
    req.body = std::move(rec.body);

    if (bucket_) {
      // rate_limit: wait for this request's turn; it never fails for being early.
      if (const Duration wait = bucket_->take(now_micros()); wait.count() > 0) {
        asio::steady_timer t(executor_, wait);
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
    }
    if (connection_.signing_secret) {
      // Standard Webhooks: signed as sent, so the timestamp is this attempt's.
      const std::int64_t ts = now_micros() / 1'000'000;
      req.headers.emplace_back("webhook-id", rec.id);
      req.headers.emplace_back("webhook-timestamp", std::to_string(ts));
      req.headers.emplace_back("webhook-signature",
                               sender::webhook_signature(connection_.signing_secret->value, rec.id, ts, req.body));
    }

    sender::Response resp = co_await auth_.send(client_, std::move(req));

    const ErrorClass cls = classify(resp);
    std::optional<Duration> retry_after;
    if (resp.outcome == sender::Outcome::response && (resp.status == 429 || resp.status == 503)) {
      for (const auto& [k, v] : resp.headers) {
        if (boost::iequals(k, "Retry-After")) retry_after = parse_retry_after(v, now_micros());
      }
    }
    const int client_errors = rec.client_errors + (cls == ErrorClass::client_error ? 1 : 0);
    const std::string error = cls == ErrorClass::success ? std::string() : describe(resp);

    Attempt a;
    a.cls = cls;
    // The budget counts the attempts since the last resend or requeue.
    a.decision = decide(repeater->retry, cls, rec.round_attempt, client_errors, retry_after, error, now_micros(),
                        std::uniform_real_distribution<double>(0.0, 1.0)(random_));
    store::AttemptOutcome& out = a.outcome;
    out.attempt_row = rec.attempt_row;
    out.record_id = rec.id;
    out.version = rec.version;
    out.succeeded = cls == ErrorClass::success;
    if (resp.outcome == sender::Outcome::response) out.http_status = resp.status;
    out.response_headers_json = headers_json(resp.headers);
    out.response_body = std::move(resp.body);
    out.error = error;
    out.duration_ms = resp.duration.count();
    out.client_error = cls == ErrorClass::client_error;
    out.new_state = a.decision.next == Decision::Next::succeeded ? store::RecordState::succeeded
                    : a.decision.next == Decision::Next::retry   ? store::RecordState::failed
                                                                 : store::RecordState::cancelled;
    out.next_attempt_at = a.decision.next_attempt_at;
    out.reason = a.decision.reason;
    out.connection = connection_.name;
    // The connection has contacts and there is an smtp section.
    if (view.config->smtp && !connection_.notify.empty()) {
      notify::Event e;
      e.record_id = rec.id;
      e.repeater = rec.repeater;
      e.domain = rec.domain;
      e.payload_type = rec.payload_type;
      e.payload_id = rec.payload_id;
      e.attempt = rec.attempt;
      e.http_status = out.http_status;
      e.error = error;
      e.next_attempt_at = a.decision.next_attempt_at;
      out.notify = std::move(e);
    }
    co_return a;
  }

  // Stores an attempt's outcome and claims this slot's next record (none when stopping).
  // The outcome must reach the database; until it does the record stays claimed, so this
  // retries. If we are stopping, the next start finds the attempt in flight and records it as
  // interrupted.
  // `applied` tells whether the record took the outcome (an operator may have acted on it).
  // `view` becomes the view the next record was claimed with.
  awaitable<std::optional<store::ClaimedRecord>> store_outcome(const store::AttemptOutcome& out, bool& applied,
                                                              std::shared_ptr<const View>& view) {
    for (;;) {
      std::vector<std::string> repeaters = stopping_ ? std::vector<std::string>{} : active_;
      auto claimed_with = view_;
      auto finished = std::make_shared<store::Store::Finished>();
      std::function<store::Claim(store::Db&)> job = [out, repeaters = std::move(repeaters), finished](store::Db& db) {
        *finished = store::Store::finish(db, out, now_micros());
        if (repeaters.empty()) return store::Claim{};
        return store::Store::claim(db, repeaters, 1, now_micros(), false);
      };
      auto stored = co_await store::async_run<store::Claim>(store_, std::move(job));
      applied = finished->applied;
      if (stored.ok() && finished->notified && on_notification_) on_notification_();
      if (stored.ok()) {
        if (stored->records.empty()) co_return std::nullopt;
        view = std::move(claimed_with);
        co_return std::move(stored->records.front());
      }
      spdlog::error("scheduler[{}]: cannot store the outcome of record {}: {}; retrying", connection_.name,
                    out.record_id, stored.error().message);
      if (stopping_) co_return std::nullopt;
      asio::steady_timer t(executor_, kStoreRetryDelay);
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  void report(const store::ClaimedRecord& rec, const Attempt& a, bool applied) {
    const auto& out = a.outcome;
    auto fields = record_fields(rec, connection_.name);
    fields["duration_ms"] = out.duration_ms;
    if (out.http_status) fields["http_status"] = *out.http_status;
    if (!applied) {
      // An operator cancelled, resent or requeued the record while this attempt was out: the
      // attempt is history, the record is as the operator left it.
      fields["superseded_by_operator"] = true;
      if (!out.succeeded) fields["error"] = out.error;
      events_.emit(out.succeeded ? "attempt.succeeded" : "attempt.failed", std::move(fields));
      return;
    }
    fields["state"] = store::to_string(out.new_state);
    if (out.succeeded) {
      events_.emit("attempt.succeeded", std::move(fields));
      return;
    }
    fields["error"] = out.error;
    if (a.decision.next_attempt_at) fields["next_attempt_at"] = format_iso8601(*a.decision.next_attempt_at);
    events_.emit("attempt.failed", std::move(fields));
    if (a.decision.next == Decision::Next::cancel) {
      auto c = record_fields(rec, connection_.name);
      c["state"] = "cancelled";
      c["error"] = a.decision.reason;
      events_.emit("record.cancelled", std::move(c));
    }
  }

  void update_active() {
    active_.clear();
    for (const auto& [name, r] : view_->repeaters) {
      if (!r->paused && !operator_paused_.contains(name)) active_.push_back(name);
    }
  }

  // A config and this connection's repeaters in it.
  struct View {
    std::shared_ptr<const config::Config> config;
    std::map<std::string, const config::Repeater*> repeaters;
  };

  const std::shared_ptr<const config::Config> created_;  // owns connection_
  const std::set<std::string>& operator_paused_;
  std::function<void()> on_notification_;
  ActivityBoard& board_;
  Metrics* metrics_;
  asio::any_io_executor executor_;
  const config::Connection& connection_;
  store::Store& store_;
  EventLog& events_;
  sender::HttpClient client_;
  sender::Authenticator auth_;
  std::optional<sender::TokenBucket> bucket_;
  asio::steady_timer timer_;
  std::mt19937_64 random_;
  std::shared_ptr<const View> view_ = std::make_shared<View>();
  std::vector<std::string> active_;  // repeaters paused neither in the config nor by an operator
  std::size_t in_flight_ = 0;
  bool dirty_ = false;     // woken while not waiting: look again before sleeping
  bool stopping_ = false;
  bool run_ended_ = false;
};

struct Scheduler::Timers {
  explicit Timers(asio::any_io_executor ex) : summary(ex), purge(ex) {}
  asio::steady_timer summary;
  asio::steady_timer purge;
};

Scheduler::Scheduler(asio::any_io_executor executor, std::shared_ptr<const config::Config> config,
                     store::Store& store, EventLog& events, std::function<void()> on_notification,
                     const std::map<std::string, Micros>& paused, Metrics* metrics)
    : executor_(executor), store_(store), events_(events), on_notification_(std::move(on_notification)),
      metrics_(metrics), timers_(std::make_unique<Timers>(executor)), board_(std::make_shared<ActivityBoard>()) {
  for (const auto& [name, at] : paused) operator_paused_.insert(name);
  apply(std::move(config));
}

// Makes the workers match `config`: a worker whose connection settings are unchanged keeps
// going (with the new repeaters); a changed or removed connection's worker stops claiming and
// is kept until its attempts in flight have finished on the settings they started with; a new
// or changed connection gets a new worker. Runs on the executor (or before start()).
void Scheduler::apply(std::shared_ptr<const config::Config> config) {
  std::erase_if(retired_, [](const auto& w) { return w->done(); });
  std::map<std::string, std::vector<const config::Repeater*>> by_connection;
  for (const auto& r : config->repeaters) by_connection[r.connection].push_back(&r);
  std::map<std::string, std::unique_ptr<Worker>> next;
  for (const auto& c : config->connections) {
    auto it = workers_.find(c.name);
    if (it != workers_.end() && it->second->connection() == c) {
      next[c.name] = std::move(it->second);
      workers_.erase(it);
      continue;
    }
    auto w = std::make_unique<Worker>(executor_, config, c, operator_paused_, store_, events_, on_notification_, *board_,
                                      metrics_);
    if (started_) w->start();
    next[c.name] = std::move(w);
  }
  for (auto& [name, w] : workers_) {  // changed or removed connections
    w->stop();
    retired_.push_back(std::move(w));
  }
  workers_ = std::move(next);
  worker_of_repeater_.clear();
  for (auto& [name, w] : workers_) {
    w->set_repeaters(config, by_connection[name]);
    for (const auto* r : by_connection[name]) worker_of_repeater_[r->name] = w.get();
  }
  {
    std::lock_guard lock(board_->mu);
    for (const auto& c : config->connections) board_->snapshot.connections[c.name];
    for (const auto& r : config->repeaters) board_->snapshot.repeaters[r.name];
  }
  config_ = std::move(config);
}

void Scheduler::reconfigure(std::shared_ptr<const config::Config> config) {
  asio::post(executor_, [this, config = std::move(config)]() mutable {
    if (!stopping_) apply(std::move(config));
  });
}

void Scheduler::set_paused(const std::string& repeater, bool paused) {
  asio::post(executor_, [this, repeater, paused] {
    if (paused) operator_paused_.insert(repeater);
    else operator_paused_.erase(repeater);
    auto it = worker_of_repeater_.find(repeater);
    if (it != worker_of_repeater_.end()) it->second->pauses_changed();
  });
}

Snapshot Scheduler::snapshot() const {
  std::lock_guard lock(board_->mu);
  return board_->snapshot;
}

Scheduler::~Scheduler() = default;

void Scheduler::start() {
  started_ = true;
  for (auto& [name, w] : workers_) w->start();
  spawn_logged(executor_, summarize_every(), "queue summary");
  spawn_logged(executor_, purge_every(), "retention purge");
}

void Scheduler::notify(const std::string& repeater) {
  // Looked up on the executor: a reload changes which worker serves a repeater.
  asio::post(executor_, [this, repeater] {
    auto it = worker_of_repeater_.find(repeater);
    if (it != worker_of_repeater_.end()) it->second->wake();
  });
}

std::size_t Scheduler::in_flight() const {
  std::size_t n = 0;
  for (const auto& [name, w] : workers_) n += w->in_flight();
  for (const auto& w : retired_) n += w->in_flight();
  return n;
}

awaitable<void> Scheduler::drain(Duration grace) {
  stopping_ = true;
  timers_->summary.cancel();
  timers_->purge.cancel();
  for (auto& [name, w] : workers_) w->stop();
  const auto deadline = std::chrono::steady_clock::now() + grace;
  asio::steady_timer t(executor_);
  while (in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    t.expires_after(std::chrono::milliseconds(20));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  if (const auto left = in_flight(); left > 0) {
    spdlog::warn("scheduler: {} attempt(s) still in flight after the {} ms grace period; they will be "
                 "recorded as interrupted and sent again at the next start",
                 left, grace.count());
  }
}

awaitable<void> Scheduler::summarize_every() {
  while (!stopping_) {
    timers_->summary.expires_after(config_->log.queue_summary_every);
    co_await timers_->summary.async_wait(asio::as_tuple(asio::use_awaitable));
    if (stopping_) break;
    const Micros now = now_micros();
    std::function<std::vector<store::RepeaterSummary>(store::Db&)> job = [now](store::Db& db) {
      return store::Store::summarize(db, now);
    };
    auto s = co_await store::async_run<std::vector<store::RepeaterSummary>>(store_, std::move(job));
    if (!s.ok()) {
      spdlog::error("queue summary: {}", s.error().message);
      continue;
    }
    nlohmann::json reps = nlohmann::json::array();
    for (const auto& r : *s) {
      const config::Repeater* cfg = config_->find_repeater(r.repeater);
      nlohmann::json j = {{"repeater", r.repeater},   {"pending", r.pending},     {"failed", r.failed},
                          {"succeeded", r.succeeded}, {"cancelled", r.cancelled},
                          {"oldest_due_age_ms", r.oldest_due ? (now - *r.oldest_due) / 1000 : 0}};
      j["connection"] = cfg != nullptr ? nlohmann::json(cfg->connection) : nlohmann::json(nullptr);
      // A repeater removed from the config keeps its records; say so rather than hide them.
      if (cfg == nullptr) j["configured"] = false;
      else if (cfg->paused || operator_paused_.contains(r.repeater)) j["paused"] = true;
      reps.push_back(std::move(j));
    }
    events_.emit("queue.summary", {{"repeaters", std::move(reps)}});
  }
}

awaitable<void> Scheduler::purge_every() {
  const Duration every = std::min<Duration>(std::chrono::hours(1), config_->storage.retention);
  while (!stopping_) {
    timers_->purge.expires_after(every);
    co_await timers_->purge.async_wait(asio::as_tuple(asio::use_awaitable));
    if (stopping_) break;
    const Micros cutoff =
        now_micros() - std::chrono::duration_cast<std::chrono::microseconds>(config_->storage.retention).count();
    std::int64_t total = 0;
    // Small batches keep each transaction short so ingest never waits long behind a purge.
    for (;;) {
      std::function<std::int64_t(store::Db&)> job = [cutoff](store::Db& db) {
        return store::Store::purge(db, cutoff, 500);
      };
      auto n = co_await store::async_run<std::int64_t>(store_, std::move(job));
      if (!n.ok()) {
        spdlog::error("retention purge: {}", n.error().message);
        break;
      }
      total += *n;
      if (*n < 500 || stopping_) break;
    }
    if (total > 0) spdlog::info("retention purge: removed {} finished record(s) older than the retention", total);
  }
}

}  // namespace repeaterd::scheduler
