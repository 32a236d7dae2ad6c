#include "cli/daemon.hpp"

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <fmt/ranges.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <atomic>
#include <csignal>
#include <mutex>
#include <map>
#include <thread>
#include <cstdlib>

#include "admin/admin_api.hpp"
#include "cli/service.hpp"
#include "common/event_log.hpp"
#include "common/metrics.hpp"
#include "config/reload.hpp"
#include "ingest/receiver.hpp"
#include "ingest/server.hpp"
#include "notify/notifier.hpp"
#include "scheduler/scheduler.hpp"
#include "store/records.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd {

namespace asio = boost::asio;
using asio::awaitable;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

namespace {

// REPEATERD_TEST_FAULT_* (docs/operations.md, "Testing hooks"): bugs on demand, for the tests of
// what a bug in forwarding costs.
scheduler::TestFaults test_faults_from_env() {
  scheduler::TestFaults f;
  if (const char* v = std::getenv("REPEATERD_TEST_FAULT_PAYLOAD"); v != nullptr && *v != '\0') {
    f.payload_id = v;
    spdlog::warn("!!! TEST HOOK REPEATERD_TEST_FAULT_PAYLOAD={} is set: every attempt of that payload's records "
                 "throws. This is for tests only; unset it in production. !!!", f.payload_id);
  }
  if (const char* v = std::getenv("REPEATERD_TEST_FAULT_WORKER_PASSES"); v != nullptr && *v != '\0') {
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end != '\0' || n < 1 || n > 100) {
      spdlog::error("REPEATERD_TEST_FAULT_WORKER_PASSES=\"{}\" ignored: it takes a whole number from 1 to 100", v);
    } else {
      f.worker_passes = static_cast<int>(n);
      spdlog::warn("!!! TEST HOOK REPEATERD_TEST_FAULT_WORKER_PASSES={} is set: each connection's loop throws on "
                   "its first {} passes. This is for tests only; unset it in production. !!!", n, n);
    }
  }
  return f;
}

}  // namespace

int run_daemon(config::Config initial) {
  // The config in force; a reload swaps it (see reload below). What cannot change while running
  // (the listeners, the database, the event log file) is read from the config it started with.
  config::ConfigHolder holder(std::make_shared<const config::Config>(std::move(initial)));
  const std::shared_ptr<const config::Config> boot = holder.get();
  const config::Config& config = *boot;
  // First in, last out: coroutine frames still queued on it are destroyed after everything
  // they point into.
  asio::io_context io(1);
  // Forwarding runs on its own thread and io_context, so ingest parsing and forwarding use
  // both cores; they meet only in the store (thread-safe) and Scheduler::notify (posts).
  asio::io_context forward_io(1);
  auto forward_work = asio::make_work_guard(forward_io);
  // The signals are caught from here on (and queued until handled below): a SIGHUP or SIGTERM
  // that arrives while starting must not take the default action and kill the process.
  asio::signal_set reopen(io, SIGUSR1);
  asio::signal_set hangup(io, SIGHUP);
  asio::signal_set stop(io, SIGTERM, SIGINT);
  EventLog events;
  if (auto st = events.open(config.log.events_file); !st) {
    spdlog::critical("{}", st.error().message);
    return 1;
  }
  Metrics metrics(REPEATERD_VERSION);
  store::Options store_options{config.storage.path};
  store_options.on_batch = [&metrics](std::size_t jobs, double seconds) { metrics.store_batch(jobs, seconds); };
  auto opened = store::Store::open(store_options);
  if (!opened) {
    spdlog::critical("{}", opened.error().message);
    return 1;
  }
  std::unique_ptr<store::Store> store = std::move(opened).value();
  // Pauses an operator made before the last stop still hold.
  std::map<std::string, Micros> paused;
  try {
    paused = store::paused_repeaters(*store->open_reader());
  } catch (const store::SqliteError& e) {
    spdlog::critical("cannot read the operator pauses from {}: {}", config.storage.path, e.what());
    return 1;
  }
  for (const auto& [name, at] : paused) {
    if (config.find_repeater(name) != nullptr) {
      spdlog::warn("repeater {} was paused by an operator at {}: its records wait until `repeaterctl resume {}`",
                   name, format_iso8601(at), name);
    }
  }

  // Email goes out from a thread of its own, so a slow or absent SMTP server never holds up
  // forwarding; without an smtp section (a reload may add one) it waits.
  std::unique_ptr<notify::Notifier> notifier = std::make_unique<notify::Notifier>(holder, *store, events, &metrics);
  scheduler::Scheduler scheduler(
      forward_io.get_executor(), boot, *store, events,
      [&notifier] { notifier->wake(); },
      paused, &metrics);
  scheduler.inject_faults(test_faults_from_env());
  ingest::Receiver receiver(holder, *store, events, [&](const std::string& r) { scheduler.notify(r); });
  ingest::Server server(io.get_executor(), config.listen,
                        [&](ingest::IncomingRequest req) { return receiver.handle(std::move(req)); },
                        &ingest::Receiver::error_reply);
  server.observe([&metrics](const std::string& method, const std::string& target, int status, double seconds) {
    metrics.ingest_request(ingest::Receiver::endpoint_name(method, target), status, seconds);
  });
  if (auto st = server.bind(); !st) {
    spdlog::critical("{}", st.error().message);
    return 1;
  }

  // The admin API has a thread of its own: a long list or count never delays ingest.
  asio::io_context admin_io(1);
  auto admin_work = asio::make_work_guard(admin_io);
  std::atomic<bool> listening{false};

  // Reload (SIGHUP, systemctl reload, POST /api/v1/reload): read and check the whole file; an
  // invalid one changes nothing. A valid one replaces the config snapshot everything reads from
  // (ingest per request, the scheduler's workers, the notifier per pass, the admin API per
  // request); attempts in flight finish on the settings they started with.
  std::mutex reload_mu;
  auto reload = [&]() -> config::ReloadOutcome {
    std::lock_guard lock(reload_mu);
    service::reloading();
    config::ReloadOutcome out;
    auto loaded = config::load_config(boot->file);
    for (const auto& w : loaded.warnings) spdlog::warn("reload: {}", w.to_string());
    if (!loaded.config) {
      for (const auto& e : loaded.errors) {
        spdlog::error("{}", e.to_string());
        out.errors.push_back(e.to_string());
      }
      spdlog::error("reload: {} error(s) in {}; nothing changed, still running on the configuration loaded before",
                    out.errors.size(), boot->file);
      events.emit("config.reload_failed", {{"file", boot->file}, {"errors", out.errors}});
      service::ready("accepting submissions (the last reload failed: see the journal)");
      return out;
    }
    const auto current = holder.get();
    config::ReloadPlan plan = config::plan_reload(*current, *loaded.config);
    auto next = std::make_shared<const config::Config>(std::move(plan.applied));
    holder.set(next);
    scheduler.reconfigure(next);
    notifier->wake();
    spdlog::set_level(spdlog::level::from_str(next->log.level));
    for (const auto& r : plan.restart_needed) {
      spdlog::warn("reload: {} changed in {} but cannot change while running; restart repeaterd to apply it", r,
                   boot->file);
    }
    for (const auto& c : next->connections) {
      if (!c.tls.verify) spdlog::warn("connection {}: tls.verify is false: the server's certificate is not checked", c.name);
    }
    spdlog::info("reload: {} applied{}{}", boot->file, plan.changed.empty() ? ": nothing changed" : ": ",
                 fmt::join(plan.changed, "; "));
    events.emit("config.reloaded",
                {{"file", boot->file}, {"changed", plan.changed}, {"restart_needed", plan.restart_needed}});
    service::ready("accepting submissions");
    out.ok = true;
    out.changed = std::move(plan.changed);
    out.restart_needed = std::move(plan.restart_needed);
    return out;
  };

  admin::AdminApi admin_api(admin::Context{holder, *store, events, scheduler, metrics,
                                           [&] {
                                             return listening ? std::string()
                                                              : std::string("the listeners are not accepting (starting or stopping)");
                                           },
                                           reload});
  config::Listen admin_listen = config.listen;  // the ingest listener's limits
  admin_listen.unix_path = config.admin.unix_path;
  admin_listen.address = config.admin.address;
  admin_listen.port = config.admin.port;
  ingest::Server admin_server(admin_io.get_executor(), admin_listen,
                              [&](ingest::IncomingRequest req) { return admin_api.handle(std::move(req)); },
                              &admin::AdminApi::error_reply);
  admin_server.set_name("admin");
  if (auto st = admin_server.bind(); !st) {
    spdlog::critical("admin API on {}: {} (admin.listen in the config chooses another place)",
                     config.admin.describe(), st.error().message);
    return 1;
  }
  server.start();
  admin_server.start();
  std::thread admin_thread([&] { admin_io.run(); });
  listening = true;
  asio::post(forward_io, [&] { scheduler.start(); });
  std::thread forwarder([&] { forward_io.run(); });
  spdlog::info("repeaterd listening on {}:{}; admin API on {}; queue {}; events {}; {} connection(s), {} repeater(s)",
               config.listen.address, server.port(), config.admin.describe(), config.storage.path,
               config.log.events_file, config.connections.size(), config.repeaters.size());
  for (const auto& r : config.repeaters) {
    if (r.paused) spdlog::warn("repeater {} is paused: its records are queued but not sent", r.name);
  }
  for (const auto& c : config.connections) {
    if (!c.tls.verify) {
      spdlog::warn("connection {}: tls.verify is false: the server's certificate and host name are not checked",
                   c.name);
    }
  }

  if (const auto usec = service::watchdog_usec(); usec > 0) asio::co_spawn(io, service::watchdog(usec), asio::detached);
  service::ready("accepting submissions");
  if (const auto stall = service::test_stall_from_env()) asio::co_spawn(io, service::test_stall(*stall), asio::detached);
  asio::co_spawn(
      io,
      service::status_every(
          *store,
          [&scheduler] {
            std::size_t n = 0;
            for (const auto& [name, a] : scheduler.snapshot().connections) n += a.in_flight;
            return n;
          },
          [&listening] { return listening.load(); }),
      asio::detached);

  std::function<void()> arm_reopen = [&] {
    reopen.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (auto st = events.reopen(); !st) spdlog::error("{}", st.error().message);
      else spdlog::info("event log reopened");
      arm_reopen();
    });
  };
  arm_reopen();

  std::function<void()> arm_hangup = [&] {
    hangup.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      spdlog::info("SIGHUP: reloading {}", boot->file);
      (void)reload();
      arm_hangup();
    });
  };
  arm_hangup();

  stop.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("{}: stopping: no new submissions; finishing attempts in flight (up to {} s)",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 std::chrono::duration_cast<std::chrono::seconds>(kShutdownGrace).count());
    service::stopping();
    listening = false;
    server.stop();
    asio::co_spawn(
        io,
        [&]() -> awaitable<void> {
          // Submissions being handled get their answer (they wait only for a commit).
          asio::steady_timer t(io);
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
          while (server.busy() > 0 && std::chrono::steady_clock::now() < deadline) {
            t.expires_after(std::chrono::milliseconds(10));
            co_await t.async_wait(kUseTuple);
          }
          auto drain = scheduler.drain(kShutdownGrace);
          co_await asio::co_spawn(forward_io, std::move(drain), asio::use_awaitable);
          reopen.cancel();
          hangup.cancel();
          io.stop();
        },
        asio::detached);
  });

  io.run();
  // The admin API goes last among the listeners: it reads what the others leave behind.
  // Requests being answered get their answer (briefly); idle connections are closed.
  asio::post(admin_io, [&] { admin_server.stop(); });
  admin_work.reset();
  for (int i = 0; i < 200 && !admin_io.stopped(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  admin_io.stop();
  admin_thread.join();
  forward_work.reset();
  forward_io.stop();
  forwarder.join();
  notifier.reset();  // a send in progress finishes (bounded by its timeout); the rest waits in the outbox
  store.reset();     // commits whatever is queued, then joins the writer
  spdlog::info("repeaterd stopped");
  return 0;
}

}  // namespace repeaterd
