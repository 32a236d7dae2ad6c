// The notifier's throttle: which connections get an email now, and when to look again. Pure:
// no database, no clock, no sleeps.
#include "notify/throttle.hpp"

#include <gtest/gtest.h>

namespace repeaterd::notify {
namespace {

using Kind = store::Notification::Kind;

constexpr Micros kMinute = 60'000'000;
constexpr Micros kThrottle = 15 * kMinute;
constexpr Micros kNow = 1'795'448'518'000'000;

store::UnsentNotifications pending(std::string connection, Micros window_start, Micros oldest_at, std::int64_t count,
                                   std::vector<Kind> kinds = {Kind::failed}) {
  return {std::move(connection), window_start, oldest_at, count, std::move(kinds)};
}

std::vector<std::string> composed(const EmailPlan& plan) {
  std::vector<std::string> out;
  for (const auto& e : plan.compose) out.push_back(e.connection + (e.everything ? "" : " (oldest only)"));
  return out;
}

TEST(NotifyThrottle, NothingPendingNothingToDo) {
  const EmailPlan plan = plan_emails({}, kThrottle, kNow);
  EXPECT_TRUE(plan.compose.empty());
  EXPECT_FALSE(plan.next);
}

TEST(NotifyThrottle, AQuietConnectionsFirstNotificationGoesOutAtOnceAndAlone) {
  // Never emailed: the oldest opens a window; the other two wait for its end.
  EmailPlan plan = plan_emails({pending("crm", 0, kNow - kMinute, 3)}, kThrottle, kNow);
  EXPECT_EQ(composed(plan), (std::vector<std::string>{"crm (oldest only)"}));
  EXPECT_EQ(plan.next, kNow + kThrottle);
  // Alone: nothing is left to look at.
  plan = plan_emails({pending("crm", 0, kNow, 1)}, kThrottle, kNow);
  EXPECT_EQ(composed(plan), (std::vector<std::string>{"crm (oldest only)"}));
  EXPECT_FALSE(plan.next);
}

TEST(NotifyThrottle, RecordNotificationsWaitForTheWindowToEnd) {
  const Micros window_start = kNow - kMinute;
  const EmailPlan plan = plan_emails({pending("crm", window_start, kNow - 1, 40, {Kind::failed, Kind::cancelled})},
                                     kThrottle, kNow);
  EXPECT_TRUE(plan.compose.empty());
  EXPECT_EQ(plan.next, window_start + kThrottle);
}

TEST(NotifyThrottle, WhenTheWindowEndsWhatCameDuringItGoesOutAsOneSummary) {
  const Micros window_start = kNow - kThrottle;  // ends now
  const EmailPlan plan = plan_emails({pending("crm", window_start, kNow - kMinute, 40)}, kThrottle, kNow);
  EXPECT_EQ(composed(plan), (std::vector<std::string>{"crm"}));
  EXPECT_FALSE(plan.next);
}

TEST(NotifyThrottle, AfterAQuietSpellTheFirstNotificationGoesAloneAgain) {
  // The last window ended long before these came.
  const EmailPlan plan = plan_emails({pending("crm", kNow - 60 * kMinute, kNow - kMinute, 2)}, kThrottle, kNow);
  EXPECT_EQ(composed(plan), (std::vector<std::string>{"crm (oldest only)"}));
  EXPECT_EQ(plan.next, kNow + kThrottle);
}

TEST(NotifyThrottle, ACircuitChangeIsNotHeldByTheWindowAndTakesEverythingPendingAlong) {
  const Micros window_start = kNow - 1'000'000;  // an email went out a second ago
  for (Kind circuit : {Kind::circuit_opened, Kind::circuit_closed}) {
    const EmailPlan plan = plan_emails({pending("crm", window_start, kNow - 500'000, 7, {Kind::cancelled, circuit})},
                                       kThrottle, kNow);
    EXPECT_EQ(composed(plan), (std::vector<std::string>{"crm"}));
    EXPECT_FALSE(plan.next);
  }
  // A quiet connection's circuit change goes out with whatever else is pending, not alone.
  const EmailPlan quiet = plan_emails({pending("crm", 0, kNow - kMinute, 3, {Kind::failed, Kind::circuit_opened})},
                                      kThrottle, kNow);
  EXPECT_EQ(composed(quiet), (std::vector<std::string>{"crm"}));
  EXPECT_FALSE(quiet.next);
}

TEST(NotifyThrottle, EachConnectionHasItsOwnWindow) {
  const EmailPlan plan = plan_emails(
      {
          pending("held", kNow - 5 * kMinute, kNow - kMinute, 4),                              // in its window
          pending("circuit", kNow - 5 * kMinute, kNow - kMinute, 1, {Kind::circuit_opened}),  // bypasses it
          pending("fresh", 0, kNow, 2),                                                       // never emailed
          pending("ended", kNow - 20 * kMinute, kNow - 10 * kMinute, 9),                      // window over
          pending("later", kNow - 2 * kMinute, kNow - kMinute, 1),                            // in its window
      },
      kThrottle, kNow);
  EXPECT_EQ(composed(plan), (std::vector<std::string>{"circuit", "fresh (oldest only)", "ended"}));
  EXPECT_EQ(plan.next, kNow - 5 * kMinute + kThrottle);  // the earliest: "held"'s window ends
}

}  // namespace
}  // namespace repeaterd::notify
