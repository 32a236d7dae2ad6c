// What a reload changes (issue: live reload). Pure: given the config in force and a newly
// loaded, valid one, says what differs, what can be applied while running, and what needs a
// restart; and makes the config that is applied (the new one with the parts that cannot
// change live kept as they are).
#pragma once

#include <string>
#include <vector>

#include "repeaterd/config.hpp"

namespace repeaterd::config {

struct ReloadPlan {
  // What the reload applies, as a person reads it: "connection openfn changed",
  // "repeater cases-to-dhis2 added", "ingest_tokens", "smtp", "log.level info -> debug".
  std::vector<std::string> changed;
  // What differs but is kept until a restart: "listen", "storage.path", "admin".
  std::vector<std::string> restart_needed;
  // Names of connections whose settings changed or that are gone: their attempts in flight
  // finish on the old settings, new attempts use the new ones.
  std::vector<std::string> connections_replaced;
  Config applied;  // `next` with listen, storage.path and the admin listener of `current`
};

ReloadPlan plan_reload(const Config& current, const Config& next);

// What a reload did, for whoever asked for it (SIGHUP's log lines, POST /api/v1/reload).
struct ReloadOutcome {
  bool ok = false;
  std::vector<std::string> errors;  // FILE:LINE:COL: message, when the file was refused
  std::vector<std::string> changed;
  std::vector<std::string> restart_needed;
};

}  // namespace repeaterd::config
