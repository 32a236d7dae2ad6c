#include "scheduler/retry_policy.hpp"

#include <algorithm>
#include <cmath>

namespace repeaterd::scheduler {

ErrorClass classify(const sender::Response& r) {
  switch (r.outcome) {
    case sender::Outcome::network_error:
    case sender::Outcome::timeout:
    case sender::Outcome::tls_error:
      return ErrorClass::retryable;
    case sender::Outcome::tls_certificate:
    case sender::Outcome::auth_refused:
      return ErrorClass::client_error;
    case sender::Outcome::response:
      break;
  }
  const int s = r.status;
  if (s >= 200 && s < 300) return ErrorClass::success;
  if (s == 413) return ErrorClass::cancel_now;
  if (s == 408 || s == 425 || s == 429) return ErrorClass::retryable;
  if (s >= 400 && s < 500) return ErrorClass::client_error;
  // 5xx, and 1xx/3xx: redirects are not followed, so the receiver did not take the payload.
  return ErrorClass::retryable;
}

Duration backoff_delay(const config::Retry& retry, int attempts, double unit_random) {
  const double base_ms = static_cast<double>(retry.initial.count()) *
                         std::pow(retry.multiplier, static_cast<double>(std::max(attempts, 1) - 1));
  const double max_ms = static_cast<double>(retry.max_delay.count());
  double ms = std::min(base_ms, max_ms);
  ms *= 1.0 + retry.jitter * (2.0 * unit_random - 1.0);
  return Duration(static_cast<Duration::rep>(std::clamp(ms, 0.0, max_ms)));
}

namespace {

// Attempt `attempt` failed and the record is tried again after the backoff (or Retry-After).
Decision retry_later(const config::Retry& retry, int attempt, std::optional<Duration> retry_after,
                     const std::string& error, Micros now, double unit_random) {
  Duration delay = backoff_delay(retry, attempt, unit_random);
  if (retry_after) delay = std::min(*retry_after, retry.max_delay);
  Decision d;
  d.next = Decision::Next::retry;
  d.next_attempt_at = now + to_micros(delay);
  d.reason = error;
  return d;
}

}  // namespace

Decision decide(const config::Retry& retry, ErrorClass cls, int attempt, int client_errors,
                std::optional<Duration> retry_after, const std::string& error, Micros now, double unit_random) {
  Decision d;
  switch (cls) {
    case ErrorClass::success:
      d.next = Decision::Next::succeeded;
      return d;
    case ErrorClass::cancel_now:
      d.next = Decision::Next::cancel;
      d.reason = "cancelled: the receiver refused the payload as too large (413); it will not be retried. " + error;
      return d;
    case ErrorClass::client_error:
      if (client_errors >= static_cast<int>(retry.max_attempts_client_error)) {
        d.next = Decision::Next::cancel;
        d.reason = "cancelled after " + std::to_string(client_errors) + " client error(s) (max_attempts_client_error " +
                   std::to_string(retry.max_attempts_client_error) + "): " + error;
        return d;
      }
      break;
    case ErrorClass::retryable:
      break;
  }
  if (attempt >= static_cast<int>(retry.max_attempts)) {
    d.next = Decision::Next::cancel;
    d.reason = "cancelled after " + std::to_string(attempt) + " attempt(s) (max_attempts " +
               std::to_string(retry.max_attempts) + "): " + error;
    return d;
  }
  return retry_later(retry, attempt, retry_after, error, now, unit_random);
}

Decision decide_outage(const config::Retry& retry, int attempt, const std::string& error, Micros now,
                       double unit_random) {
  return retry_later(retry, attempt - 1, std::nullopt, error, now, unit_random);
}

std::string describe(const sender::Response& r) {
  if (r.outcome != sender::Outcome::response) return r.error;
  std::string s = "HTTP " + std::to_string(r.status);
  if (!r.reason.empty()) s += " " + r.reason;
  if (!r.body.empty()) {
    constexpr std::size_t kExcerpt = 300;
    std::string excerpt = r.body.substr(0, kExcerpt);
    for (auto& c : excerpt) {
      if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    }
    s += ": " + excerpt;
    if (r.body.size() > kExcerpt || r.body_truncated) s += "…";
  }
  return s;
}

}  // namespace repeaterd::scheduler
