// store::Notification: one reason to tell a connection's contacts something (spec §6), as the
// outbox keeps it. The scheduler queues them with attempt outcomes and circuit changes; the
// notifier reads them back and turns them into emails. Plain data: no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "repeaterd/time.hpp"

namespace repeaterd::store {

struct Notification {
  std::int64_t id = 0;  // outbox row id
  enum class Kind {
    failed,          // a record's first failure in its connection's streak
    cancelled,       // a record was cancelled
    circuit_opened,  // the connection's circuit opened: nothing is attempted but one probe at a time
    circuit_closed,  // a probe succeeded: the backlog is being released
  } kind = Kind::failed;
  Micros at = 0;  // when it happened
  // Record kinds: the record. Circuit kinds: empty.
  std::string record_id;
  std::string repeater;
  std::string domain;        // project space
  std::string payload_type;  // form | case | app | ...
  std::string payload_id;    // the form or case id
  // Record kinds: the attempt number. circuit_opened: the consecutive failures that opened it.
  int attempt = 0;
  std::optional<int> http_status;
  std::string error;  // as the remote gave it: status line and body excerpt, or the network/TLS error
  // failed: when the record is retried. circuit_opened: when the first probe goes out.
  std::optional<Micros> next_attempt_at;
  std::optional<std::int64_t> backlog;    // circuit kinds: the connection's records waiting
  std::optional<std::int64_t> outage_ms;  // circuit_closed: how long the circuit was open
};

}  // namespace repeaterd::store
