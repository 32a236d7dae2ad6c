// service: what repeaterd tells systemd, over the sd_notify protocol (sd_notify(3)).
//
// The unit is Type=notify: ready() once storage is open and the listeners are bound,
// stopping() when SIGTERM starts the drain, reloading() then ready() around a config reload,
// status() for the one line `systemctl status` shows. Outside systemd (no $NOTIFY_SOCKET)
// every call does nothing, so the daemon runs the same from a shell or a test.
//
// The watchdog: when systemd set $WATCHDOG_USEC, watchdog() pings WATCHDOG=1 at half that
// interval from the main event loop, so a loop that stops turning (a deadlock, a blocking call
// that never returns) gets the service killed and restarted.
//
// Test-only fault hook: REPEATERD_TEST_STALL_SECONDS=N in the environment makes the main event
// loop block (sleep) for N seconds, once, kTestStallAfter after READY. The watchdog pings stop
// meanwhile, so a test (or a real systemd) sees the watchdog fire. repeaterd logs a loud
// warning at start when it is set; never set it in production (docs/operations.md, "Testing
// hooks").
//
// Thread-safety: the notify calls may be made from any thread (sd_notify opens a socket per
// call). status_line() is pure.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "store/store.hpp"

namespace repeaterd::service {

// How often status_every() refreshes STATUS= with the queue counts.
inline constexpr std::chrono::seconds kStatusEvery{10};
// How long after READY the test stall hook blocks the event loop.
inline constexpr std::chrono::seconds kTestStallAfter{1};
// The environment variable of the test stall hook.
inline constexpr const char* kTestStallVariable = "REPEATERD_TEST_STALL_SECONDS";

// READY=1 with STATUS=status: start-up (or a reload) is complete.
void ready(const std::string& status);
// RELOADING=1 with MONOTONIC_USEC=now (CLOCK_MONOTONIC, µs): a reload has begun; call ready()
// when it is done (whether the new config was taken or rejected). This is the protocol of
// Type=notify-reload (systemd 253+); systemd 252 (Debian 12) ignores it harmlessly.
void reloading();
// STOPPING=1: shutdown has begun.
void stopping();
// STATUS=text: a line for `systemctl status`.
void status(const std::string& text);

// The interval systemd asked the watchdog to be pinged within ($WATCHDOG_USEC, honouring
// $WATCHDOG_PID), or 0 when there is no watchdog.
std::uint64_t watchdog_usec();
// Pings WATCHDOG=1 now and every usec / 2 on the calling coroutine's executor, until its
// timer is cancelled or the executor stops.
boost::asio::awaitable<void> watchdog(std::uint64_t usec);

// The test stall hook's duration from $REPEATERD_TEST_STALL_SECONDS: nullopt when unset (or
// not a whole number of seconds from 1 to 3600, which is logged and ignored). When set, logs
// the warning that the hook is armed.
std::optional<std::chrono::seconds> test_stall_from_env();
// Parses a REPEATERD_TEST_STALL_SECONDS value: a whole number of seconds, 1 to 3600.
std::optional<std::chrono::seconds> parse_stall_seconds(const std::string& text);
// Waits kTestStallAfter, then blocks the calling thread (the event loop) for `stall`, once.
boost::asio::awaitable<void> test_stall(std::chrono::seconds stall);

// "accepting submissions; 12 pending, 3 failed, 0 in flight": pending and failed summed over
// the repeaters, in_flight as given.
std::string status_line(const std::vector<store::RepeaterSummary>& summary, std::size_t in_flight);

// Sends status(status_line(...)) now and every `every`: the counts come from
// Store::summarize (run through the store's writer), in_flight() from the scheduler. Skips a
// round while accepting() is false (stopping), and logs, rather than throws, a failed summary.
boost::asio::awaitable<void> status_every(store::Store& store, std::function<std::size_t()> in_flight,
                                          std::function<bool()> accepting, std::chrono::seconds every = kStatusEvery);

}  // namespace repeaterd::service
