#include "scheduler/circuit.hpp"

#include <algorithm>

namespace repeaterd::scheduler {

const char* to_string(Circuit::State s) {
  switch (s) {
    case Circuit::State::closed: return "closed";
    case Circuit::State::open: return "open";
    case Circuit::State::probing: return "probing";
  }
  return "?";
}

Micros Circuit::cooldown_micros() const {
  // cooldown × 2^(failed probes), without overflowing: stop doubling at the cap.
  Micros c = to_micros(settings_.cooldown);
  const Micros cap = to_micros(settings_.max_cooldown);
  for (int i = 0; i < probes_failed_ && c < cap; ++i) c *= 2;
  return std::min(c, cap);
}

bool Circuit::take_probe(Micros now) {
  if (state_ != State::open || now < next_probe_at_) return false;
  state_ = State::probing;
  return true;
}

void Circuit::probe_unused() {
  if (state_ == State::probing) state_ = State::open;
}

Circuit::Change Circuit::on_result(Result result, bool probe, Micros now, bool& free_attempt) {
  Change change;
  free_attempt = false;
  if (result == Result::answered) {
    consecutive_ = 0;
    if (state_ != State::closed) {
      change.what = Change::What::closed;
      change.outage = now - opened_at_;
      state_ = State::closed;
      probes_failed_ = 0;
    }
    return change;
  }
  if (state_ != State::closed) {
    // Out before it opened, or the probe: the receiver's outage, not the record's failure.
    free_attempt = true;
    if (probe && state_ == State::probing) {
      ++probes_failed_;
      state_ = State::open;
      next_probe_at_ = now + cooldown_micros();
    }
    return change;
  }
  ++consecutive_;
  if (settings_.failures == 0 || consecutive_ < static_cast<int>(settings_.failures)) return change;
  state_ = State::open;
  opened_at_ = now;
  probes_failed_ = 0;
  next_probe_at_ = now + cooldown_micros();
  change.what = Change::What::opened;
  change.failures = consecutive_;
  change.next_probe_at = next_probe_at_;
  return change;
}

}  // namespace repeaterd::scheduler
