#include "notify/throttle.hpp"

#include <algorithm>

namespace repeaterd::notify {
namespace {

bool has_circuit_change(const store::UnsentNotifications& p) {
  return std::any_of(p.kinds.begin(), p.kinds.end(), [](store::Notification::Kind k) {
    return k == store::Notification::Kind::circuit_opened || k == store::Notification::Kind::circuit_closed;
  });
}

}  // namespace

EmailPlan plan_emails(const std::vector<store::UnsentNotifications>& pending, Micros throttle, Micros now) {
  EmailPlan plan;
  auto look_at = [&plan](Micros t) { plan.next = plan.next ? std::min(*plan.next, t) : t; };
  for (const auto& p : pending) {
    if (p.count <= 0) continue;
    const bool had_window = p.window_start != 0;
    const Micros window_end = p.window_start + throttle;
    // Circuit changes are rare by construction (a circuit opens once per outage) and tell an
    // operator that a whole connection is down or back: no window holds them.
    if (has_circuit_change(p)) {
      plan.compose.push_back({p.connection, true});
      continue;
    }
    if (had_window && now < window_end) {
      look_at(window_end);
      continue;
    }
    // Notifications that came while the last window was open are its summary, due now that it
    // has ended. Otherwise the connection was quiet: the oldest opens a window and goes out at
    // once and alone; the rest wait for that window's summary.
    const bool summary_due = had_window && p.oldest_at < window_end;
    plan.compose.push_back({p.connection, summary_due});
    if (!summary_due && p.count > 1) look_at(now + throttle);
  }
  return plan;
}

}  // namespace repeaterd::notify
