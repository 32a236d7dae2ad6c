#include "cli/daemon.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <thread>
#include <cstdlib>

#include "common/event_log.hpp"
#include "ingest/receiver.hpp"
#include "ingest/server.hpp"
#include "notify/notifier.hpp"
#include "scheduler/scheduler.hpp"
#include "store/store.hpp"

namespace repeaterd {

namespace asio = boost::asio;
using asio::awaitable;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

namespace {

// Pings systemd's watchdog at half the interval it asked for, while the event loop is alive.
awaitable<void> watchdog(std::uint64_t usec) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer t(ex);
  for (;;) {
    sd_notify(0, "WATCHDOG=1");
    t.expires_after(std::chrono::microseconds(usec / 2));
    auto [ec] = co_await t.async_wait(kUseTuple);
    if (ec) co_return;
  }
}

}  // namespace

int run_daemon(const config::Config& config) {
  // First in, last out: coroutine frames still queued on it are destroyed after everything
  // they point into.
  asio::io_context io(1);
  // Forwarding runs on its own thread and io_context, so ingest parsing and forwarding use
  // both cores; they meet only in the store (thread-safe) and Scheduler::notify (posts).
  asio::io_context forward_io(1);
  auto forward_work = asio::make_work_guard(forward_io);
  EventLog events;
  if (auto st = events.open(config.log.events_file); !st) {
    spdlog::critical("{}", st.error().message);
    return 1;
  }
  auto opened = store::Store::open(store::Options{config.storage.path});
  if (!opened) {
    spdlog::critical("{}", opened.error().message);
    return 1;
  }
  std::unique_ptr<store::Store> store = std::move(opened).value();

  // Email goes out from a thread of its own, so a slow or absent SMTP server never holds up
  // forwarding; without an smtp section there is no notifier.
  std::unique_ptr<notify::Notifier> notifier;
  if (config.smtp) notifier = std::make_unique<notify::Notifier>(config, *store, events);
  scheduler::Scheduler scheduler(forward_io.get_executor(), config, *store, events, [&notifier] {
    if (notifier) notifier->wake();
  });
  ingest::Receiver receiver(config, *store, events, [&](const std::string& r) { scheduler.notify(r); });
  ingest::Server server(io.get_executor(), config.listen,
                        [&](ingest::IncomingRequest req) { return receiver.handle(std::move(req)); },
                        &ingest::Receiver::error_reply);
  if (auto st = server.bind(); !st) {
    spdlog::critical("{}", st.error().message);
    return 1;
  }
  server.start();
  asio::post(forward_io, [&] { scheduler.start(); });
  std::thread forwarder([&] { forward_io.run(); });
  spdlog::info("repeaterd listening on {}:{}; queue {}; events {}; {} connection(s), {} repeater(s)",
               config.listen.address, server.port(), config.storage.path, config.log.events_file,
               config.connections.size(), config.repeaters.size());
  for (const auto& r : config.repeaters) {
    if (r.paused) spdlog::warn("repeater {} is paused: its records are queued but not sent", r.name);
  }
  for (const auto& c : config.connections) {
    if (!c.tls.verify) {
      spdlog::warn("connection {}: tls.verify is false: the server's certificate and host name are not checked",
                   c.name);
    }
  }

  std::uint64_t watchdog_usec = 0;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
    asio::co_spawn(io, watchdog(watchdog_usec), asio::detached);
  }
  sd_notify(0, "READY=1\nSTATUS=accepting submissions");

  asio::signal_set reopen(io, SIGUSR1);
  std::function<void()> arm_reopen = [&] {
    reopen.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (auto st = events.reopen(); !st) spdlog::error("{}", st.error().message);
      else spdlog::info("event log reopened");
      arm_reopen();
    });
  };
  arm_reopen();

  asio::signal_set hangup(io, SIGHUP);
  std::function<void()> arm_hangup = [&] {
    hangup.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      spdlog::warn("SIGHUP: this version does not reload its configuration; restart repeaterd to apply changes");
      arm_hangup();
    });
  };
  arm_hangup();

  asio::signal_set stop(io, SIGTERM, SIGINT);
  stop.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("{}: stopping: no new submissions; finishing attempts in flight (up to {} s)",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 std::chrono::duration_cast<std::chrono::seconds>(kShutdownGrace).count());
    sd_notify(0, "STOPPING=1");
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
  forward_work.reset();
  forward_io.stop();
  forwarder.join();
  notifier.reset();  // a send in progress finishes (bounded by its timeout); the rest waits in the outbox
  store.reset();     // commits whatever is queued, then joins the writer
  spdlog::info("repeaterd stopped");
  return 0;
}

}  // namespace repeaterd
