// The daemon: wires config, store, event log, scheduler and ingest listener together and runs
// them until SIGTERM/SIGINT.
//
// Start order: open the event log and the store (crash recovery happens here), bind the
// listener, tell systemd READY=1, then accept and forward. Stop order: stop accepting, let
// requests being handled get their answer, drain attempts in flight within the grace period,
// let the store commit what it has, exit 0.
#pragma once

#include "repeaterd/config.hpp"

namespace repeaterd {

// How long SIGTERM waits for attempts in flight before exiting anyway.
inline constexpr Duration kShutdownGrace = std::chrono::seconds(20);

// Runs until a stop signal; returns the process exit code.
int run_daemon(config::Config config);

}  // namespace repeaterd
