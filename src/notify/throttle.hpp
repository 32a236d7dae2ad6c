// notify/throttle: which connections get a notification email composed now (spec §6).
//
// Per connection, at most one email goes out per throttle window: the first notification of a
// quiet connection goes out at once and alone and opens a window; what comes during the window
// is summarised in one email when it ends. A circuit change (opened or closed) is not held: it
// goes out at once, with everything else the connection has unsent, and opens a new window.
// Pure: no I/O; `now` is an input.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "repeaterd/time.hpp"
#include "store/store.hpp"

namespace repeaterd::notify {

struct EmailPlan {
  struct Email {
    std::string connection;
    // true: every unsent notification of the connection goes in; false: only the oldest (a
    // quiet connection's first), the rest wait for the window it opens.
    bool everything = true;
  };
  std::vector<Email> compose;  // in the order of the input
  std::optional<Micros> next;  // the earliest time an email falls due, if any notification waits
};

// `pending`: the connections with unsent notifications that have someone to tell (others keep
// theirs until someone is there). `throttle`: the window's length in microseconds.
EmailPlan plan_emails(const std::vector<store::UnsentNotifications>& pending, Micros throttle, Micros now);

}  // namespace repeaterd::notify
