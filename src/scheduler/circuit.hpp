// scheduler::Circuit: one connection's circuit breaker (spec §5), an I/O-free state machine.
//
// Closed, every request may go. After `failures` consecutive retryable failures (network,
// timeout, 5xx, 408, 425, 429) across any of the connection's records it opens: nothing goes
// out, and failures that arrive while it is open (requests already out, probes) are free: they
// use no record's attempt budget, so an outage of any length cancels nothing. After a cooldown
// one probe may go; its success closes the circuit, its failure doubles the cooldown (up to
// max_cooldown). Any answer that is not a retryable failure counts as the receiver being back:
// a 4xx is the record's fault, not the receiver's, so a flood of them never opens the circuit.
//
// The worker asks (closed, take_probe), does the I/O, and reports (on_result); every call
// takes `now`, so the rules are tested with plain numbers.
#pragma once

#include <cstdint>

#include "repeaterd/config.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd::scheduler {

class Circuit {
 public:
  enum class State { closed, open, probing };
  // What an attempt's outcome means for the connection.
  enum class Result { answered, failed };  // failed: a retryable failure

  // What changed with a result.
  struct Change {
    enum class What { none, opened, closed } what = What::none;
    int failures = 0;       // opened: the consecutive failures that opened it
    Micros next_probe_at = 0;  // opened: when the first probe may go
    Micros outage = 0;      // closed: how long it was open (microseconds)
  };

  explicit Circuit(const config::Circuit& settings) : settings_(settings) {}

  State state() const { return state_; }
  bool closed() const { return state_ == State::closed; }
  // While open: when the next probe may go.
  Micros next_probe_at() const { return next_probe_at_; }
  Micros opened_at() const { return opened_at_; }

  // Open with the cooldown over: the caller may send one probe (the circuit is then probing).
  bool take_probe(Micros now);
  // The probe taken found nothing to send: open again, a probe allowed at once.
  void probe_unused();

  // An attempt ended. `probe` says it was the probe. Returns what changed; sets `free_attempt`
  // when the attempt must not use its record's budget (a failure while the circuit is open).
  Change on_result(Result result, bool probe, Micros now, bool& free_attempt);

 private:
  Micros cooldown_micros() const;

  config::Circuit settings_;
  State state_ = State::closed;
  int consecutive_ = 0;
  int probes_failed_ = 0;  // since it opened
  Micros opened_at_ = 0;
  Micros next_probe_at_ = 0;
};

const char* to_string(Circuit::State s);

}  // namespace repeaterd::scheduler
