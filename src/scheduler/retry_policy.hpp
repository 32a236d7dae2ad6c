// The record lifecycle's arithmetic (spec §5), free of I/O and clocks so it is tested with
// plain numbers: how an attempt's outcome is classified, and what happens to the record next.
#pragma once

#include <optional>
#include <string>

#include "repeaterd/config.hpp"
#include "repeaterd/time.hpp"
#include "sender/http_client.hpp"

namespace repeaterd::scheduler {

enum class ErrorClass {
  success,       // 2xx
  retryable,     // network, timeout, TLS handshake, 5xx, 408, 425, 429, 3xx
  client_error,  // other 4xx, TLS certificate failures
  cancel_now,    // 413: the receiver will never take this payload
};

ErrorClass classify(const sender::Response& r);

// The delay before attempt n+1 after n failed attempts (n >= 1):
// min(max_delay, initial × multiplier^(n-1)), spread by ±jitter. `unit_random` is uniform in
// [0, 1); 0.5 gives the undisturbed delay.
Duration backoff_delay(const config::Retry& retry, int attempts, double unit_random);

struct Decision {
  enum class Next { succeeded, retry, cancel } next = Next::retry;
  std::optional<Micros> next_attempt_at;  // set when next == retry
  std::string reason;                     // why it failed or was cancelled; empty on success
};

// What happens to a record after its attempt number `attempt` ended with `cls`.
// `client_errors` counts client-error attempts including this one. `retry_after` is the
// response's Retry-After (honoured on 429 and 503, capped at max_delay).
Decision decide(const config::Retry& retry, ErrorClass cls, int attempt, int client_errors,
                std::optional<Duration> retry_after, const std::string& error, Micros now, double unit_random);

// What happens to a record whose attempt number `attempt` failed while its connection's circuit
// was open (scheduler/circuit.hpp): the receiver's outage, not the record's failure. The attempt
// uses none of the budget, so the record is never cancelled for it and keeps its place in the
// backoff (the delay after attempt - 1).
Decision decide_outage(const config::Retry& retry, int attempt, const std::string& error, Micros now,
                       double unit_random);

// One line for people: "HTTP 500 Internal Server Error: <start of body>" or the network error.
std::string describe(const sender::Response& r);

}  // namespace repeaterd::scheduler
