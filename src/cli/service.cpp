#include "cli/service.hpp"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <cstring>
#include <cstdlib>
#include <thread>

#include "store/async.hpp"

namespace repeaterd::service {

namespace asio = boost::asio;
using asio::awaitable;

namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

void notify(const std::string& message) {
  // < 0 is an error talking to systemd, 0 means not run by systemd: neither stops the daemon.
  if (const int r = sd_notify(0, message.c_str()); r < 0) {
    spdlog::debug("sd_notify({}): {}", message.substr(0, message.find('\n')), std::strerror(-r));
  }
}

std::uint64_t monotonic_usec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1'000u;
}

}  // namespace

void ready(const std::string& status) { notify("READY=1\nSTATUS=" + status); }

void reloading() { notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec())); }

void stopping() { notify("STOPPING=1"); }

void status(const std::string& text) { notify("STATUS=" + text); }

std::uint64_t watchdog_usec() {
  std::uint64_t usec = 0;
  // Checks $WATCHDOG_PID against our pid when it is set (a child must not ping for us).
  if (sd_watchdog_enabled(0, &usec) > 0) return usec;
  return 0;
}

awaitable<void> watchdog(std::uint64_t usec) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer t(ex);
  for (;;) {
    notify("WATCHDOG=1");
    t.expires_after(std::chrono::microseconds(usec / 2));
    auto [ec] = co_await t.async_wait(kUseTuple);
    if (ec) co_return;
  }
}

std::optional<std::chrono::seconds> parse_stall_seconds(const std::string& text) {
  long n = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, n);
  if (ec != std::errc() || p != end || n < 1 || n > 3600) return std::nullopt;
  return std::chrono::seconds(n);
}

std::optional<std::chrono::seconds> test_stall_from_env() {
  const char* value = std::getenv(kTestStallVariable);
  if (value == nullptr) return std::nullopt;
  auto stall = parse_stall_seconds(value);
  if (!stall) {
    spdlog::error("{}=\"{}\" ignored: it takes a whole number of seconds from 1 to 3600", kTestStallVariable,
                  std::string(value));
    return std::nullopt;
  }
  spdlog::warn("!!! TEST HOOK {}={} is set: {} s after READY the event loop will block for {} s and the "
               "watchdog will stop being pinged. This is for tests only; unset it in production. !!!",
               kTestStallVariable, stall->count(), kTestStallAfter.count(), stall->count());
  return stall;
}

awaitable<void> test_stall(std::chrono::seconds stall) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(kTestStallAfter);
  auto [ec] = co_await t.async_wait(kUseTuple);
  if (ec) co_return;
  spdlog::warn("test hook {}: blocking the event loop for {} s", kTestStallVariable, stall.count());
  // Blocking the loop on purpose: this is the fault the watchdog exists to catch.
  std::this_thread::sleep_for(stall);
  spdlog::warn("test hook {}: the event loop runs again", kTestStallVariable);
}

std::string status_line(const std::vector<store::RepeaterSummary>& summary, std::size_t in_flight) {
  std::int64_t pending = 0, failed = 0;
  for (const auto& s : summary) {
    pending += s.pending;
    failed += s.failed;
  }
  return fmt::format("accepting submissions; {} pending, {} failed, {} in flight", pending, failed, in_flight);
}

awaitable<void> status_every(store::Store& store, std::function<std::size_t()> in_flight,
                             std::function<bool()> accepting, std::chrono::seconds every) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  for (;;) {
    // A status line is not worth stopping the daemon for: whatever goes wrong is logged.
    try {
      if (accepting()) {
        const Micros now = now_micros();
        std::function<std::vector<store::RepeaterSummary>(store::Db&)> job = [now](store::Db& db) {
          return store::Store::summarize(db, now);
        };
        auto s = co_await store::async_run<std::vector<store::RepeaterSummary>>(store, std::move(job));
        if (!s.ok()) spdlog::warn("systemd status: cannot count the queue: {}", s.error().message);
        // Checked again: a stop may have begun while the store counted.
        else if (accepting()) status(status_line(*s, in_flight()));
      }
    } catch (const std::exception& e) {
      spdlog::warn("systemd status: {}", e.what());
    }
    t.expires_after(every);
    auto [ec] = co_await t.async_wait(kUseTuple);
    if (ec) co_return;
  }
}

}  // namespace repeaterd::service
