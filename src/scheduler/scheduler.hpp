// scheduler: decides which record goes out when, and records what happened.
//
// One worker per connection, each with its own HttpClient, its own in-flight limit and its own
// wake-up timer, so a slow or dead connection only ever holds its own slots. A worker claims
// due records from the store's due index a page at a time (never the whole queue), sends each
// as its own coroutine, then stores the outcome and the next attempt time decided by
// retry_policy. New records wake the worker of their connection at once; otherwise it sleeps
// until the earliest due record of its repeaters. What the worker may send is decided by two
// I/O-free state machines it only carries out: the connection's circuit breaker
// (scheduler/circuit.hpp: no attempts but a probe while the receiver is down, and no budget
// used) and its pacer (scheduler/pacing.hpp: how many requests may be in flight, rising from 1
// after a start, a closed circuit or a resume, adapting to the receiver's latency and errors).
//
// Thread-safety: everything runs on the one executor given to the constructor, except
// notify(), which any thread may call.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/event_log.hpp"
#include "common/metrics.hpp"
#include "repeaterd/config.hpp"
#include "store/store.hpp"

namespace repeaterd::scheduler {

class Worker;
struct ActivityBoard;

// What the scheduler knows that the store does not: attempts in flight and how the last ones
// went since the daemon started (for the admin API's status). One per repeater and connection.
struct Activity {
  std::size_t in_flight = 0;
  // Connections only: the circuit and the pacer's current limit.
  std::string circuit = "closed";  // closed | open | probing
  std::optional<Micros> circuit_opened_at;
  std::optional<Micros> next_probe_at;
  std::size_t concurrency_limit = 0;
  std::optional<Micros> last_success;
  struct LastError {
    Micros at = 0;
    std::string record_id;
    std::string error;
  };
  std::optional<LastError> last_error;
};

struct Snapshot {
  std::map<std::string, Activity> repeaters;
  std::map<std::string, Activity> connections;
};

// Faults tests inject through REPEATERD_TEST_FAULT_* (docs/operations.md, "Testing hooks") to
// drive the containment below; none in production.
struct TestFaults {
  std::string payload_id;  // every attempt of a record of this payload throws inside its slot
  int worker_passes = 0;   // each connection worker's loop throws on its first N passes
};

// What an unexpected exception (a bug) costs: inside an attempt's slot, that attempt, which is
// stored as failed ("internal error") and retried under the record's retry policy, so one
// record that always throws ends cancelled, with its email, while the rest flow; the slot is
// freed either way. Escaping a connection worker's loop, a restart of that loop after 1 s,
// doubling to 60 s while it keeps failing, with a `scheduler.worker_failed` event each time.
class Scheduler {
 public:
  // `on_notification` is called (on the executor) after an attempt's outcome queued a
  // notification, to wake the notifier. `paused` are the repeaters an operator paused (from
  // the store); `metrics` may be null. `clock` is every "now" the scheduler decides with (it
  // is called from the store's writer thread too).
  Scheduler(boost::asio::any_io_executor executor, std::shared_ptr<const config::Config> config,
            store::Store& store, EventLog& events, std::function<void()> on_notification = {},
            const std::map<std::string, Micros>& paused = {}, Metrics* metrics = nullptr,
            std::function<Micros()> clock = now_micros);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the connection workers, the queue summary and the retention purge.
  void start();
  // REQUIRES: before start().
  void inject_faults(TestFaults faults);

  // A reload: from now on, work to `config` (see apply() in scheduler.cpp). Callable from any
  // thread; takes effect on the executor.
  void reconfigure(std::shared_ptr<const config::Config> config);

  // New records exist for `repeater`: wake its connection's worker. Callable from any thread.
  void notify(const std::string& repeater);

  // Stops claiming records and waits up to `grace` for attempts in flight to be stored.
  // Attempts still running after that are recorded as interrupted at the next start.
  boost::asio::awaitable<void> drain(Duration grace);

  std::size_t in_flight() const;

  // An operator paused or resumed a configured repeater (the store already says so): no new
  // attempts from now on / its due records go at once. Callable from any thread.
  void set_paused(const std::string& repeater, bool paused);

  // Callable from any thread.
  Snapshot snapshot() const;

 private:
  boost::asio::awaitable<void> summarize_every();
  boost::asio::awaitable<void> purge_every();

  void apply(std::shared_ptr<const config::Config> config);

  // All on the executor.
  boost::asio::any_io_executor executor_;
  std::shared_ptr<const config::Config> config_;
  store::Store& store_;
  EventLog& events_;
  std::function<void()> on_notification_;
  Metrics* metrics_;
  std::function<Micros()> clock_;
  // Repeaters an operator paused; the workers read it (declared first: it outlives them).
  std::set<std::string> operator_paused_;
  TestFaults faults_;  // read by the workers (declared before them, like operator_paused_)
  std::map<std::string, std::unique_ptr<Worker>> workers_;  // by connection name
  std::vector<std::unique_ptr<Worker>> retired_;  // replaced by a reload; finishing what is in flight
  std::map<std::string, Worker*> worker_of_repeater_;
  bool started_ = false;
  struct Timers;
  std::unique_ptr<Timers> timers_;  // the summary and purge timers, cancelled by drain()
  bool stopping_ = false;
  std::shared_ptr<ActivityBoard> board_;
};

}  // namespace repeaterd::scheduler
