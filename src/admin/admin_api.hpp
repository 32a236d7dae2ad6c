// admin::AdminApi: the operator's view of the queue and the actions on it (spec §5, §7;
// docs/admin-api.md). Beast-free like ingest::Receiver: it takes an IncomingRequest and answers
// a Reply; ingest::Server carries it on the admin listener (a Unix socket by default).
//
// Reads go through a read-only SQLite connection of its own (opened on first use, on the admin
// thread), so a long list or count never waits behind the writer and the writer never waits
// behind it. Actions are writer jobs: one per record, or one per page of 500 for a bulk action,
// so ingest interleaves with a bulk action over any number of records. Pauses are stored, then
// handed to the scheduler, which stops claiming the repeater's records at once.
//
// Thread-safety: handle() runs on the admin listener's executor (one thread).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <memory>
#include <string>

#include "common/event_log.hpp"
#include "common/metrics.hpp"
#include "config/reload.hpp"
#include "ingest/http_types.hpp"
#include "repeaterd/config.hpp"
#include "scheduler/scheduler.hpp"
#include "store/store.hpp"

namespace repeaterd::admin {

struct Context {
  config::ConfigHolder& config;  // each request reads one snapshot
  store::Store& store;
  EventLog& events;
  scheduler::Scheduler& scheduler;
  Metrics& metrics;
  // Empty when both listeners are bound; else what is not (for /readyz).
  std::function<std::string()> listeners_problem;
  // Reloads the config file (POST /api/v1/reload); callable from the admin thread.
  std::function<config::ReloadOutcome()> reload;
};

class AdminApi {
 public:
  explicit AdminApi(Context context);
  ~AdminApi();
  AdminApi(const AdminApi&) = delete;
  AdminApi& operator=(const AdminApi&) = delete;

  boost::asio::awaitable<ingest::Reply> handle(ingest::IncomingRequest request);

  // The JSON error answer (also the listener's own 400/413/431/503).
  static ingest::Reply error_reply(int status, const std::string& message, const std::string& target);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace repeaterd::admin
