// Time as repeaterd stores and prints it.
//
// Timestamps are microseconds since the Unix epoch (UTC) in SQLite and in memory, and
// ISO 8601 with microseconds and a `Z` on the wire and in the event log
// (`2015-04-17T20:14:34.046462Z`, as CommCare's Received-On header).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace repeaterd {

using Micros = std::int64_t;  // microseconds since the Unix epoch, UTC
using Duration = std::chrono::milliseconds;

// A length of time in microseconds, the unit of Micros (truncated toward zero).
template <class Rep, class Period>
constexpr Micros to_micros(std::chrono::duration<Rep, Period> d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

// Wall-clock now, in microseconds.
Micros now_micros();

// 2015-04-17T20:14:34.046462Z
std::string format_iso8601(Micros t);

// Parses "500ms", "30s", "5m", "24h", "7d" (a whole number and a unit; several terms like
// "1h30m" are accepted too). Returns nullopt on anything else.
std::optional<Duration> parse_duration(std::string_view text);

// Parses "512", "64KiB", "10MiB", "1GiB" (and KB/MB/GB as powers of 1000) into bytes.
std::optional<std::uint64_t> parse_size(std::string_view text);

// Parses a rate: "20/s", "600/m", "3600/h" into events a second; nullopt unless positive.
std::optional<double> parse_rate(std::string_view text);

// Parses an HTTP Retry-After value: delay-seconds or an HTTP-date, relative to `now`.
std::optional<Duration> parse_retry_after(std::string_view value, Micros now);

}  // namespace repeaterd
