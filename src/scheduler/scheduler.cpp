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

#include "common/json_text.hpp"
#include "scheduler/circuit.hpp"
#include "scheduler/pacing.hpp"
#include "scheduler/retry_policy.hpp"
#include "sender/auth.hpp"
#include "sender/authenticator.hpp"
#include "sender/http_client.hpp"
#include "store/async.hpp"
#include "store/body_codec.hpp"

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
             bool succeeded, const std::string& error, Micros now, std::size_t limit) {
    std::lock_guard lock(mu);
    snapshot.connections[connection].concurrency_limit = limit;
    for (Activity* a : {&snapshot.repeaters[repeater], &snapshot.connections[connection]}) {
      --a->in_flight;
      if (succeeded) a->last_success = now;
      else a->last_error = Activity::LastError{now, record_id, error};
    }
  }
  void circuit(const std::string& connection, const Circuit& c, std::size_t limit) {
    std::lock_guard lock(mu);
    Activity& a = snapshot.connections[connection];
    a.circuit = to_string(c.state());
    a.circuit_opened_at = c.closed() ? std::nullopt : std::optional<Micros>(c.opened_at());
    a.next_probe_at = c.state() == Circuit::State::open ? std::optional<Micros>(c.next_probe_at()) : std::nullopt;
    a.concurrency_limit = limit;
  }
};

// One connection's share of the queue: its repeaters, its client, its in-flight slots.
class Worker {
 public:
  // `connection` points into `created`, which the worker keeps: its client and authenticator
  // hold the settings it was made with until it is gone. `operator_paused` is the scheduler's.
  Worker(asio::any_io_executor ex, std::shared_ptr<const config::Config> created, const config::Connection& connection,
         const std::set<std::string>& operator_paused, store::Store& store, EventLog& events,
         std::function<void()> on_notification, ActivityBoard& board, Metrics* metrics,
         std::function<Micros()> clock, const TestFaults& faults)
      : created_(std::move(created)),
        faults_(faults),
        operator_paused_(operator_paused),
        on_notification_(std::move(on_notification)),
        board_(board),
        metrics_(metrics),
        clock_(std::move(clock)),
        executor_(ex),
        connection_(connection),
        store_(store),
        events_(events),
        client_(ex, connection),
        auth_(ex, connection),
        timer_(ex),
        restart_timer_(ex),
        random_(std::random_device{}()),
        circuit_(connection.circuit),
        pacer_(connection.max_in_flight) {
    // A burst of one: requests are evenly spaced, so no window of any length sees more than
    // the rate allows (a bigger burst would let a second's worth out at once).
    if (connection.rate_limit) bucket_.emplace(*connection.rate_limit, 1.0, clock_());
    board_.circuit(connection_.name, circuit_, pacer_.limit());
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
  bool done() const { return stopping_ && in_flight_ == 0 && telling_ == 0 && run_ended_; }

  // The operator pauses changed. Takes effect at once: claims from now on leave a paused
  // repeater out (attempts in flight finish); a resumed one's due records are claimed now.
  void pauses_changed() {
    update_active();
    wake();
  }

  void start() {
    fault_passes_left_ = faults_.worker_passes;
    spawn_logged(executor_, supervise(), "scheduler[" + connection_.name + "]");
  }

  void wake() {
    dirty_ = true;
    timer_.cancel();
  }

  void stop() {
    stopping_ = true;
    timer_.cancel();
    restart_timer_.cancel();
    client_.close_idle();
  }

  std::size_t in_flight() const { return in_flight_; }

 private:
  struct View;

  // How many records to claim now, and whether the one claimed is the circuit's probe.
  struct Want {
    std::size_t count = 0;
    bool probe = false;
  };
  Want want(Micros now) {
    if (active_.empty()) return {};
    if (circuit_.closed()) {
      const std::size_t limit = pacer_.limit();
      return {limit > in_flight_ ? limit - in_flight_ : 0, false};
    }
    if (circuit_.take_probe(now)) {
      board_.circuit(connection_.name, circuit_, pacer_.limit());
      return {1, true};
    }
    return {};
  }

  // Runs the loop, and runs it again after a delay when a bug makes it throw: a connection
  // whose loop died would stop forwarding for good while the daemon looked healthy.
  awaitable<void> supervise() {
    constexpr Duration kFirstDelay = std::chrono::seconds(1);
    constexpr Duration kMaxDelay = std::chrono::seconds(60);
    Duration delay = kFirstDelay;
    while (!stopping_) {
      const Micros started = clock_();
      bool failed = false;
      std::string failure;
      try {
        co_await run();
      } catch (const std::exception& e) {
        failed = true;
        failure = e.what();
      }
      if (!failed || stopping_) break;
      // A loop that ran a while before failing starts the delays over.
      if (clock_() - started > std::chrono::microseconds(kMaxDelay).count()) delay = kFirstDelay;
      const auto delay_ms = std::chrono::duration_cast<std::chrono::milliseconds>(delay).count();
      spdlog::critical("scheduler[{}]: the connection's loop failed: {}; restarting it in {} ms (a bug: please "
                       "report it with this line)",
                       connection_.name, failure, delay_ms);
      events_.emit("scheduler.worker_failed",
                   {{"connection", connection_.name}, {"error", failure}, {"restart_in_ms", delay_ms}});
      restart_timer_.expires_after(delay);
      co_await restart_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      delay = std::min(delay * 2, kMaxDelay);
    }
    // Set here, not by a guard's destructor: a frame destroyed with the io_context after the
    // scheduler is gone must not write into a freed worker.
    run_ended_ = true;
  }

  awaitable<void> run() {
    while (!stopping_) {
      if (fault_passes_left_ > 0) {
        --fault_passes_left_;
        throw std::runtime_error("injected fault (REPEATERD_TEST_FAULT_WORKER_PASSES)");
      }
      dirty_ = false;
      const Micros now = clock_();
      const Want w = want(now);
      std::optional<Micros> next_due;
      if (w.count > 0) {
        // Named, not a temporary in the co_await expression: GCC 12 destroys such
        // temporaries twice.
        std::function<store::Claim(store::Db&)> job = [repeaters = active_, n = w.count, clock = clock_](store::Db& db) {
          return store::Store::claim(db, repeaters, n, clock());
        };
        // Every record claimed now belongs to a repeater of this view.
        auto view = view_;
        auto claim = co_await store::async_run<store::Claim>(store_, std::move(job));
        if (!claim.ok()) {
          // Once per run of failures (a full disk fails every claim until it is freed).
          if (!claim_failing_) {
            spdlog::error("scheduler[{}]: cannot claim due records: {}; trying again every {} s", connection_.name,
                          claim.error().message, std::chrono::seconds(kStoreRetryDelay).count());
          }
          claim_failing_ = true;
          next_due = clock_() + std::chrono::microseconds(kStoreRetryDelay).count();
        } else {
          if (claim_failing_) spdlog::info("scheduler[{}]: claiming due records again", connection_.name);
          claim_failing_ = false;
          bool probe = w.probe;
          for (auto& rec : claim->records) {
            ++in_flight_;
            board_.started(rec.repeater, connection_.name);
            spawn_logged(executor_, slot(std::move(rec), view, probe), "attempt[" + connection_.name + "]");
            probe = false;
          }
          next_due = claim->next_due;
        }
        if (w.probe && (!claim.ok() || claim->records.empty())) circuit_.probe_unused();
      }
      if (stopping_) break;
      if (dirty_) continue;
      // When to look again: closed, at the next due record unless every slot is taken (a
      // finishing slot wakes us); open, at the next probe, or later if nothing is due by then;
      // probing, when the probe's answer wakes us.
      std::optional<Micros> wake_at;
      if (circuit_.closed()) {
        if (in_flight_ < pacer_.limit()) wake_at = next_due;
      } else if (circuit_.state() == Circuit::State::open) {
        wake_at = next_due ? std::max(*next_due, circuit_.next_probe_at()) : circuit_.next_probe_at();
      }
      if (!wake_at) {
        timer_.expires_at(asio::steady_timer::time_point::max());  // until woken
      } else {
        timer_.expires_after(std::chrono::microseconds(std::max<Micros>(0, *wake_at - clock_())));
      }
      co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  // One in-flight slot: sends its record, stores the outcome and, in the same store job,
  // claims the next due record of this connection while the circuit is closed and the pacer's
  // limit has room for this slot. Chaining the claim onto the outcome halves the store round
  // trips of a busy connection.
  awaitable<void> slot(store::ClaimedRecord first, std::shared_ptr<const View> first_view, bool probe) {
    std::optional<store::ClaimedRecord> next = std::move(first);
    std::shared_ptr<const View> view = std::move(first_view);
    while (next) {
      store::ClaimedRecord rec = std::move(*next);
      next.reset();
      bool stored = false;  // the outcome is in the database
      bool failed = false;
      std::string failure;
      try {
        const Attempt done = co_await attempt(rec, *view, probe);
        probe = false;
        bool applied = true;
        const bool chain = circuit_.closed() && in_flight_ <= pacer_.limit();
        next = co_await store_outcome(done.outcome, chain, applied, view);
        stored = true;
        board_.ended(rec.repeater, connection_.name, rec.id, done.outcome.succeeded, done.outcome.error, clock_(),
                     pacer_.limit());
        if (metrics_) metrics_->attempt(connection_.name, outcome_label(done.cls), static_cast<double>(done.outcome.duration_ms) / 1000.0);
        report(rec, done, applied);
        if (done.change.what != Circuit::Change::What::none) circuit_changed(done.change, done.outcome.error);
        else if (!circuit_.closed()) board_.circuit(connection_.name, circuit_, pacer_.limit());  // a probe failed
      } catch (const std::exception& e) {
        failed = true;
        failure = e.what();
      }
      if (failed) {
        spdlog::error("attempt[{}]: record {}: internal error: {}{}", connection_.name, rec.id, failure,
                      stored ? " (after its outcome was stored)" : "; the attempt is stored as failed");
        if (probe) circuit_.probe_unused();
        probe = false;
        if (!stored) co_await store_internal_error(rec, *view, failure);
      }
      if (next) board_.started(next->repeater, connection_.name);
      // The limit grew past what is in flight: the loop claims the difference.
      if (circuit_.closed() && pacer_.limit() > in_flight_) wake();
    }
    --in_flight_;
    wake();
  }

  // A bug made an attempt throw before its outcome was stored: store it as a failed attempt,
  // retried under the record's policy like any failure (a record that always throws ends
  // cancelled, with its event and email), and tell the event log. Nothing here may throw: the
  // slot must be freed.
  awaitable<void> store_internal_error(const store::ClaimedRecord& rec, const View& view, const std::string& what) {
    bool ok = false;
    Attempt a;
    try {
      const config::Repeater* repeater = view.repeaters.at(rec.repeater);
      const std::string error = "internal error in repeaterd (the journal has the details): " + what;
      const Micros now = clock_();
      const double unit_random = std::uniform_real_distribution<double>(0.0, 1.0)(random_);
      a.cls = ErrorClass::retryable;
      a.decision = decide(repeater->retry, a.cls, rec.round_attempt, rec.client_errors, std::nullopt, error, now,
                          unit_random);
      fill_outcome(a, rec, view, nullptr, error, false);
      ok = true;
    } catch (const std::exception& e) {
      spdlog::error("attempt[{}]: record {}: cannot build its outcome: {}; it is retried at the next start",
                    connection_.name, rec.id, e.what());
    }
    if (!ok) co_return;
    bool applied = true;
    std::shared_ptr<const View> unused = view_;
    co_await store_outcome(a.outcome, false, applied, unused);
    board_.ended(rec.repeater, connection_.name, rec.id, false, a.outcome.error, clock_(), pacer_.limit());
    try {
      report(rec, a, applied);
    } catch (const std::exception& e) {
      spdlog::error("attempt[{}]: record {}: cannot log its outcome: {}", connection_.name, rec.id, e.what());
    }
  }

  struct Attempt {
    store::AttemptOutcome outcome;
    Decision decision;
    ErrorClass cls = ErrorClass::success;
    Circuit::Change change;
  };

  // Runs on the settings of `view` (the config when the record was claimed), whatever a reload
  // does meanwhile.
  awaitable<Attempt> attempt(store::ClaimedRecord& rec, const View& view, bool probe) {
    if (!faults_.payload_id.empty() && rec.payload_id == faults_.payload_id) {
      throw std::runtime_error("injected fault (REPEATERD_TEST_FAULT_PAYLOAD)");
    }
    const config::Repeater* repeater = view.repeaters.at(rec.repeater);
    auto body = store::claimed_body(rec);
    if (!body.ok()) {
      // The stored payload does not read back (a damaged database file): it can never be sent,
      // so the record is cancelled with the reason, and nothing reaches the receiver (the
      // circuit and the pacer learn nothing from it).
      if (probe) circuit_.probe_unused();
      Attempt a;
      a.cls = ErrorClass::cancel_now;
      a.decision.next = Decision::Next::cancel;
      a.decision.reason = body.error().message;
      fill_outcome(a, rec, view, nullptr, body.error().message, false);
      co_return a;
    }
    sender::Request req;
    req.method = repeater->method;
    req.query = rec.query;
    req.headers.emplace_back("Content-Type", rec.content_type);
    if (auto extra = nlohmann::json::parse(rec.headers_json, nullptr, false); extra.is_object()) {
      for (auto& [k, v] : extra.items()) req.headers.emplace_back(k, v.is_string() ? v.get<std::string>() : v.dump());
    }
    req.headers.emplace_back("Idempotency-Key", rec.id);
    req.headers.emplace_back("X-Request-Id", rec.request_id);
    req.body = std::move(*body);

    if (bucket_) {
      // rate_limit: wait for this request's turn; it never fails for being early.
      if (const Duration wait = bucket_->take(clock_()); wait.count() > 0) {
        asio::steady_timer t(executor_, wait);
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
    }
    if (connection_.signing_secret) {
      // Standard Webhooks: signed as sent, so the timestamp is this attempt's.
      const std::int64_t ts = clock_() / 1'000'000;
      req.headers.emplace_back("webhook-id", rec.id);
      req.headers.emplace_back("webhook-timestamp", std::to_string(ts));
      req.headers.emplace_back("webhook-signature",
                               sender::webhook_signature(connection_.signing_secret->value, rec.id, ts, req.body));
    }

    sender::Response resp = co_await auth_.send(client_, std::move(req));
    const Micros now = clock_();

    const ErrorClass cls = classify(resp);
    std::optional<Duration> retry_after;
    if (resp.outcome == sender::Outcome::response && (resp.status == 429 || resp.status == 503)) {
      for (const auto& [k, v] : resp.headers) {
        if (boost::iequals(k, "Retry-After")) retry_after = parse_retry_after(v, now);
      }
    }
    const int client_errors = rec.client_errors + (cls == ErrorClass::client_error ? 1 : 0);
    const std::string error = cls == ErrorClass::success ? std::string() : describe(resp);
    const double unit_random = std::uniform_real_distribution<double>(0.0, 1.0)(random_);

    Attempt a;
    a.cls = cls;
    const bool retryable = cls == ErrorClass::retryable;
    bool free_attempt = false;
    a.change = circuit_.on_result(retryable ? Circuit::Result::failed : Circuit::Result::answered, probe, now,
                                  free_attempt);
    pacer_.on_result(retryable, resp.duration, in_flight_);
    // The budget counts the attempts since the last resend or requeue.
    a.decision = free_attempt ? decide_outage(repeater->retry, rec.round_attempt, error, now, unit_random)
                              : decide(repeater->retry, cls, rec.round_attempt, client_errors, retry_after, error,
                                       now, unit_random);
    fill_outcome(a, rec, view, &resp, error, free_attempt);
    co_return a;
  }

  // The outcome to store for an attempt whose class and decision are made; `resp` is what the
  // receiver answered (nullptr: nothing was sent).
  void fill_outcome(Attempt& a, const store::ClaimedRecord& rec, const View& view, sender::Response* resp,
                    const std::string& error, bool free_attempt) {
    const ErrorClass cls = a.cls;
    const bool retryable = cls == ErrorClass::retryable;
    store::AttemptOutcome& out = a.outcome;
    out.attempt_row = rec.attempt_row;
    out.record_id = rec.id;
    out.version = rec.version;
    out.succeeded = cls == ErrorClass::success;
    if (resp != nullptr) {
      if (resp->outcome == sender::Outcome::response) out.http_status = resp->status;
      out.response_headers_json = json_text::headers_object(resp->headers);
      out.response_body = std::move(resp->body);
      out.duration_ms = resp->duration.count();
    }
    out.error = error;
    out.client_error = cls == ErrorClass::client_error;
    out.free_attempt = free_attempt;
    out.new_state = a.decision.next == Decision::Next::succeeded ? store::RecordState::succeeded
                    : a.decision.next == Decision::Next::retry   ? store::RecordState::failed
                                                                 : store::RecordState::cancelled;
    out.next_attempt_at = a.decision.next_attempt_at;
    out.reason = a.decision.reason;
    out.connection = connection_.name;
    // The connection has contacts and there is an smtp section. With a circuit breaker, the
    // receiver's failures (retryable ones) are told by the circuit's emails, once when it
    // opens and once when it closes; a record's own failures and every cancellation are told
    // per record.
    const bool circuit_tells = retryable && connection_.circuit.failures > 0 &&
                               a.decision.next != Decision::Next::cancel;
    if (view.config->smtp && !connection_.notify.empty() && !circuit_tells) {
      store::Notification e;
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
  }

  // Stores an attempt's outcome and, when `chain`, claims this slot's next record (never when
  // stopping). The outcome must reach the database; until it does the record stays claimed and
  // its slot taken, so this holds it and retries (a full disk: until space is freed). If we are
  // stopping, the next start finds the attempt in flight, records it as interrupted and sends
  // the record again: at least once, never a lost acknowledgement.
  // `applied` tells whether the record took the outcome (an operator may have acted on it).
  // `view` becomes the view the next record was claimed with.
  awaitable<std::optional<store::ClaimedRecord>> store_outcome(const store::AttemptOutcome& out, bool chain,
                                                              bool& applied, std::shared_ptr<const View>& view) {
    for (int failures = 0;; ++failures) {
      std::vector<std::string> repeaters = stopping_ || !chain ? std::vector<std::string>{} : active_;
      auto claimed_with = view_;
      auto finished = std::make_shared<store::Store::Finished>();
      std::function<store::Claim(store::Db&)> job = [out, repeaters = std::move(repeaters), finished,
                                                     clock = clock_](store::Db& db) {
        const Micros now = clock();
        *finished = store::Store::finish(db, out, now);
        if (repeaters.empty()) return store::Claim{};
        return store::Store::claim(db, repeaters, 1, now, false);
      };
      auto stored = co_await store::async_run<store::Claim>(store_, std::move(job));
      applied = finished->applied;
      if (stored.ok() && finished->notified && on_notification_) on_notification_();
      if (stored.ok()) {
        if (failures > 0) {
          spdlog::info("scheduler[{}]: the outcome of record {} is stored, after {} failed tries", connection_.name,
                       out.record_id, failures);
        }
        if (stored->records.empty()) co_return std::nullopt;
        view = std::move(claimed_with);
        co_return std::move(stored->records.front());
      }
      if (failures == 0) {
        spdlog::error("scheduler[{}]: cannot store the outcome of record {}: {}; it is held and stored again every {} s "
                      "until the database takes it",
                      connection_.name, out.record_id, stored.error().message,
                      std::chrono::seconds(kStoreRetryDelay).count());
      }
      if (stopping_) {
        spdlog::warn("scheduler[{}]: stopping with the outcome of record {} not stored: the next start records the "
                     "attempt as interrupted and sends the record again",
                     connection_.name, out.record_id);
        co_return std::nullopt;
      }
      asio::steady_timer t(executor_, kStoreRetryDelay);
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  // The circuit opened or closed: the event log, the contacts (at once, past the throttle), the
  // admin API's view; a closed circuit releases the backlog through a slow start.
  void circuit_changed(const Circuit::Change& change, const std::string& error) {
    board_.circuit(connection_.name, circuit_, pacer_.limit());
    const bool opened = change.what == Circuit::Change::What::opened;
    if (!opened) {
      pacer_.restart();
      wake();
    }
    ++telling_;
    spawn_logged(executor_, tell_circuit(change, error, view_->config), "circuit[" + connection_.name + "]");
  }

  awaitable<void> tell_circuit(Circuit::Change change, std::string error, std::shared_ptr<const config::Config> config) {
    const bool opened = change.what == Circuit::Change::What::opened;
    std::optional<store::Notification> note;
    if (config->smtp && !connection_.notify.empty()) {
      store::Notification n;
      n.kind = opened ? store::Notification::Kind::circuit_opened : store::Notification::Kind::circuit_closed;
      n.attempt = change.failures;
      n.error = error;
      if (opened) n.next_attempt_at = change.next_probe_at;
      else n.outage_ms = change.outage / 1000;
      note = std::move(n);
    }
    std::vector<std::string> repeaters;
    for (const auto& [name, r] : view_->repeaters) repeaters.push_back(name);
    std::function<std::int64_t(store::Db&)> job = [repeaters, note, connection = connection_.name,
                                                   clock = clock_](store::Db& db) {
      const std::int64_t backlog = store::Store::backlog(db, repeaters);
      if (note) {
        store::Notification n = *note;
        n.backlog = backlog;
        store::Store::queue_circuit_notification(db, connection, n, clock());
      }
      return backlog;
    };
    auto backlog = co_await store::async_run<std::int64_t>(store_, std::move(job));
    if (!backlog.ok()) {
      spdlog::error("circuit[{}]: cannot store the circuit change: {}", connection_.name, backlog.error().message);
    } else if (note && on_notification_) {
      on_notification_();
    }
    nlohmann::json fields = {{"connection", connection_.name}};
    if (backlog.ok()) fields["backlog"] = *backlog;
    if (opened) {
      fields["failures"] = change.failures;
      fields["error"] = error;
      fields["next_probe_at"] = format_iso8601(change.next_probe_at);
      spdlog::warn("circuit[{}]: opened after {} consecutive failures ({}); one probe at a time from now on",
                   connection_.name, change.failures, error);
    } else {
      fields["outage_ms"] = change.outage / 1000;
      spdlog::info("circuit[{}]: closed after {} ms; releasing the backlog", connection_.name, change.outage / 1000);
    }
    events_.emit(opened ? "circuit.opened" : "circuit.closed", std::move(fields));
    --telling_;
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
    if (out.free_attempt) fields["circuit_open"] = true;
    if (a.decision.next_attempt_at) fields["next_attempt_at"] = format_iso8601(*a.decision.next_attempt_at);
    events_.emit("attempt.failed", std::move(fields));
    if (a.decision.next == Decision::Next::cancel) {
      auto c = record_fields(rec, connection_.name);
      c["state"] = "cancelled";
      c["error"] = a.decision.reason;
      events_.emit("record.cancelled", std::move(c));
    }
  }

  // A repeater that becomes active again (resumed, unpaused by a reload) releases its backlog
  // through a slow start, not as a flood.
  void update_active() {
    std::vector<std::string> next;
    for (const auto& [name, r] : view_->repeaters) {
      if (!r->paused && !operator_paused_.contains(name)) next.push_back(name);
    }
    const bool resumed = std::any_of(next.begin(), next.end(), [this](const std::string& n) {
      return std::find(active_.begin(), active_.end(), n) == active_.end();
    });
    if (resumed && started_once_) {
      pacer_.restart();
      board_.circuit(connection_.name, circuit_, pacer_.limit());
    }
    started_once_ = true;
    active_ = std::move(next);
  }

  // A config and this connection's repeaters in it.
  struct View {
    std::shared_ptr<const config::Config> config;
    std::map<std::string, const config::Repeater*> repeaters;
  };

  const std::shared_ptr<const config::Config> created_;  // owns connection_
  const TestFaults& faults_;
  int fault_passes_left_ = 0;
  const std::set<std::string>& operator_paused_;
  std::function<void()> on_notification_;
  ActivityBoard& board_;
  Metrics* metrics_;
  std::function<Micros()> clock_;
  asio::any_io_executor executor_;
  const config::Connection& connection_;
  store::Store& store_;
  EventLog& events_;
  sender::HttpClient client_;
  sender::Authenticator auth_;
  std::optional<sender::TokenBucket> bucket_;
  asio::steady_timer timer_;
  asio::steady_timer restart_timer_;  // supervise(): the delay before a failed loop runs again
  std::mt19937_64 random_;
  Circuit circuit_;
  Pacer pacer_;
  std::shared_ptr<const View> view_ = std::make_shared<View>();
  std::vector<std::string> active_;  // repeaters paused neither in the config nor by an operator
  std::size_t in_flight_ = 0;
  std::size_t telling_ = 0;  // circuit changes being stored and logged (tell_circuit)
  bool started_once_ = false;  // the first set of repeaters is no resume
  bool claim_failing_ = false;  // the last claim failed (logged once per run of failures)
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
                     const std::map<std::string, Micros>& paused, Metrics* metrics, std::function<Micros()> clock)
    : executor_(executor), store_(store), events_(events), on_notification_(std::move(on_notification)),
      metrics_(metrics), clock_(std::move(clock)), timers_(std::make_unique<Timers>(executor)), board_(std::make_shared<ActivityBoard>()) {
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
                                      metrics_, clock_, faults_);
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

void Scheduler::inject_faults(TestFaults faults) { faults_ = std::move(faults); }

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
    const Micros now = clock_();
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
    const Micros cutoff = clock_() - to_micros(config_->storage.retention);
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
