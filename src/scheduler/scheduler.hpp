// scheduler: decides which record goes out when, and records what happened.
//
// One worker per connection, each with its own HttpClient, its own max_in_flight and its own
// wake-up timer, so a slow or dead connection only ever holds its own slots. A worker claims
// due records from the store's due index a page at a time (never the whole queue), sends each
// as its own coroutine, then stores the outcome and the next attempt time decided by
// retry_policy. New records wake the worker of their connection at once; otherwise it sleeps
// until the earliest due record of its repeaters.
//
// Thread-safety: everything runs on the one executor given to the constructor, except
// notify(), which any thread may call.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/event_log.hpp"
#include "repeaterd/config.hpp"
#include "store/store.hpp"

namespace repeaterd::scheduler {

class Worker;

class Scheduler {
 public:
  // `on_notification` is called (on the executor) after an attempt's outcome queued a
  // notification, to wake the notifier.
  Scheduler(boost::asio::any_io_executor executor, const config::Config& config, store::Store& store,
            EventLog& events, std::function<void()> on_notification = {});
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the connection workers, the queue summary and the retention purge.
  void start();

  // New records exist for `repeater`: wake its connection's worker. Callable from any thread.
  void notify(const std::string& repeater);

  // Stops claiming records and waits up to `grace` for attempts in flight to be stored.
  // Attempts still running after that are recorded as interrupted at the next start.
  boost::asio::awaitable<void> drain(Duration grace);

  std::size_t in_flight() const;

 private:
  boost::asio::awaitable<void> summarize_every();
  boost::asio::awaitable<void> purge_every();

  boost::asio::any_io_executor executor_;
  const config::Config& config_;
  store::Store& store_;
  EventLog& events_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::map<std::string, Worker*> worker_of_repeater_;
  struct Timers;
  std::unique_ptr<Timers> timers_;  // the summary and purge timers, cancelled by drain()
  bool stopping_ = false;
};

}  // namespace repeaterd::scheduler
