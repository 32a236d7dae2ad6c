#include "scheduler/pacing.hpp"

#include <algorithm>
#include <cmath>

namespace repeaterd::scheduler {

Pacer::Pacer(std::uint32_t max_in_flight, Settings settings)
    : max_(std::max<std::uint32_t>(1, max_in_flight)), settings_(settings) {
  restart(kInitialWindow);
}

void Pacer::restart(std::size_t from) {
  limit_ = std::clamp(static_cast<double>(from), 1.0, static_cast<double>(max_));
  threshold_ = static_cast<double>(max_);
  hold_ = 0;
  acked_ = 0;
  window_min_ = last_window_min_ = Duration::max();
  window_count_ = 0;
}

void Pacer::decrease() {
  const double before = limit_;
  limit_ = std::max(1.0, std::floor(limit_ * settings_.decrease));
  threshold_ = limit_;  // leave slow start
  acked_ = 0;
  // The other requests sent under the old limit answer under the same conditions: one sign
  // of overload per round, not one per request.
  hold_ = static_cast<std::size_t>(std::ceil(before)) - 1;
}

void Pacer::on_result(bool retryable_failure, Duration latency, std::size_t in_flight) {
  if (!retryable_failure) {
    window_min_ = std::min(window_min_, latency);
    if (++window_count_ >= settings_.window) {
      last_window_min_ = window_min_;
      window_min_ = Duration::max();
      window_count_ = 0;
    }
  }
  const Duration baseline = std::min(window_min_, last_window_min_);
  const bool queueing = !retryable_failure && baseline != Duration::max() &&
                        static_cast<double>(latency.count()) >= settings_.latency_factor * static_cast<double>(baseline.count()) &&
                        latency - baseline >= settings_.latency_tolerance;
  if (hold_ > 0) {
    --hold_;
    return;
  }
  if (retryable_failure || queueing) {
    decrease();
    return;
  }
  // Grow only a limit in use (RFC 7661's validation: at least half of it).
  if (2 * in_flight < limit()) return;
  if (slow_start()) {
    limit_ += 1.0;  // doubles per round of answers
  } else if (++acked_ >= limit()) {
    limit_ += 1.0;  // one more per round
    acked_ = 0;
  }
  limit_ = std::min(limit_, static_cast<double>(max_));
}

}  // namespace repeaterd::scheduler
