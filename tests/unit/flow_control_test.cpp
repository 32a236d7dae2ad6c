// The scheduler's flow-control rules, with plain numbers for time: the circuit breaker and the
// pacer (scheduler/circuit.hpp, scheduler/pacing.hpp).
#include <gtest/gtest.h>

#include "scheduler/circuit.hpp"
#include "scheduler/pacing.hpp"

namespace repeaterd::scheduler {
namespace {

constexpr Micros kSecond = 1'000'000;

config::Circuit settings(std::uint32_t failures = 3) {
  config::Circuit c;
  c.failures = failures;
  c.cooldown = std::chrono::seconds(5);
  c.max_cooldown = std::chrono::seconds(30);
  return c;
}

Circuit::Change fail(Circuit& c, Micros now, bool probe = false) {
  bool free = false;
  return c.on_result(Circuit::Result::failed, probe, now, free);
}

TEST(CircuitTest, OpensAfterConsecutiveRetryableFailures) {
  Circuit c(settings(3));
  EXPECT_EQ(fail(c, 0).what, Circuit::Change::What::none);
  EXPECT_EQ(fail(c, 1).what, Circuit::Change::What::none);
  const auto opened = fail(c, 2);
  EXPECT_EQ(opened.what, Circuit::Change::What::opened);
  EXPECT_EQ(opened.failures, 3);
  EXPECT_EQ(opened.next_probe_at, 2 + 5 * kSecond);
  EXPECT_EQ(c.state(), Circuit::State::open);
}

TEST(CircuitTest, AnAnswerBetweenFailuresStartsTheCountAgain) {
  Circuit c(settings(3));
  bool free = false;
  fail(c, 0);
  fail(c, 1);
  // A 4xx is an answer: the receiver is up, the record is at fault.
  c.on_result(Circuit::Result::answered, false, 2, free);
  fail(c, 3);
  fail(c, 4);
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(fail(c, 5).what, Circuit::Change::What::opened);
}

TEST(CircuitTest, ClientErrorFloodNeverOpens) {
  Circuit c(settings(3));
  bool free = true;
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(c.on_result(Circuit::Result::answered, false, i, free).what, Circuit::Change::What::none);
    EXPECT_FALSE(free);
  }
  EXPECT_TRUE(c.closed());
}

TEST(CircuitTest, ZeroFailuresNeverOpens) {
  Circuit c(settings(0));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(fail(c, i).what, Circuit::Change::What::none);
  EXPECT_TRUE(c.closed());
}

TEST(CircuitTest, OneProbeAfterTheCooldownAndFailuresWhileOpenAreFree) {
  Circuit c(settings(1));
  bool free = false;
  c.on_result(Circuit::Result::failed, false, 0, free);
  EXPECT_FALSE(free) << "the failure that opens it was sent while closed";
  // A request that was out before it opened fails: free.
  c.on_result(Circuit::Result::failed, false, 10, free);
  EXPECT_TRUE(free);
  EXPECT_FALSE(c.take_probe(5 * kSecond - 1));
  EXPECT_TRUE(c.take_probe(5 * kSecond));
  EXPECT_EQ(c.state(), Circuit::State::probing);
  EXPECT_FALSE(c.take_probe(5 * kSecond)) << "one probe at a time";
  // The probe fails: free, and the cooldown doubles.
  c.on_result(Circuit::Result::failed, true, 6 * kSecond, free);
  EXPECT_TRUE(free);
  EXPECT_EQ(c.state(), Circuit::State::open);
  EXPECT_EQ(c.next_probe_at(), 16 * kSecond);
}

TEST(CircuitTest, CooldownDoublesUpToTheMaximum) {
  Circuit c(settings(1));
  fail(c, 0);
  Micros now = 0;
  std::vector<Micros> waits;
  for (int i = 0; i < 6; ++i) {
    now = c.next_probe_at();
    ASSERT_TRUE(c.take_probe(now));
    fail(c, now, true);
    waits.push_back((c.next_probe_at() - now) / kSecond);
  }
  EXPECT_EQ(waits, (std::vector<Micros>{10, 20, 30, 30, 30, 30}));
}

TEST(CircuitTest, ProbeSuccessClosesWithTheOutageLength) {
  Circuit c(settings(1));
  bool free = false;
  fail(c, 100);
  ASSERT_TRUE(c.take_probe(5 * kSecond + 100));
  const auto closed = c.on_result(Circuit::Result::answered, true, 7 * kSecond + 100, free);
  EXPECT_EQ(closed.what, Circuit::Change::What::closed);
  EXPECT_EQ(closed.outage, 7 * kSecond);
  EXPECT_TRUE(c.closed());
  // It opens again on the same rule, with the cooldown back at its start.
  const auto again = fail(c, 8 * kSecond);
  EXPECT_EQ(again.what, Circuit::Change::What::opened);
  EXPECT_EQ(again.next_probe_at, 13 * kSecond);
}

TEST(CircuitTest, UnusedProbeMayBeTakenAgainAtOnce) {
  Circuit c(settings(1));
  fail(c, 0);
  ASSERT_TRUE(c.take_probe(5 * kSecond));
  c.probe_unused();
  EXPECT_EQ(c.state(), Circuit::State::open);
  EXPECT_TRUE(c.take_probe(5 * kSecond));
}

using std::chrono::milliseconds;

// Drives a pacer the way a worker with a deep backlog does: every round, as many requests as
// the limit allows, all answered with `latency(in_flight)`.
std::vector<std::size_t> rounds(Pacer& p, int n, const std::function<milliseconds(std::size_t)>& latency,
                                const std::function<bool(int)>& fails = [](int) { return false; }) {
  std::vector<std::size_t> limits;
  for (int r = 0; r < n; ++r) {
    const std::size_t in_flight = p.limit();
    limits.push_back(in_flight);
    // The pipe stays full: each answer's slot takes the next record.
    for (std::size_t i = 0; i < in_flight; ++i) p.on_result(fails(r), latency(in_flight), in_flight);
  }
  return limits;
}

TEST(PacerTest, StartsWithTheInitialWindowInSlowStart) {
  Pacer p(64);
  EXPECT_EQ(p.limit(), Pacer::kInitialWindow);
  EXPECT_TRUE(p.slow_start());
  EXPECT_EQ(Pacer(2).limit(), 2u);
}

TEST(PacerTest, SlowStartDoublesPerRoundUpToTheMaximum) {
  Pacer p(64);
  p.restart();
  EXPECT_EQ(p.limit(), 1u);
  const auto limits = rounds(p, 8, [](std::size_t) { return milliseconds(1); });
  EXPECT_EQ(limits, (std::vector<std::size_t>{1, 2, 4, 8, 16, 32, 64, 64}));
}

TEST(PacerTest, FailureHalvesThenGrowsByOnePerRound) {
  Pacer p(64);
  p.restart();
  rounds(p, 6, [](std::size_t) { return milliseconds(1); });  // 1..32, now 64
  ASSERT_EQ(p.limit(), 64u);
  p.on_result(true, milliseconds(1), 64);
  EXPECT_EQ(p.limit(), 32u);
  EXPECT_FALSE(p.slow_start());
  // The rest of the old round's answers are not counted again.
  for (int i = 0; i < 63; ++i) p.on_result(true, milliseconds(1), 64);
  EXPECT_EQ(p.limit(), 32u);
  const auto limits = rounds(p, 3, [](std::size_t) { return milliseconds(1); });
  EXPECT_EQ(limits, (std::vector<std::size_t>{32, 33, 34}));
}

TEST(PacerTest, LatencyRisingWithLoadHoldsTheLimitNearWhatTheReceiverServes) {
  // A fragile receiver: 30 ms a request, plus 30 ms for each other request it is serving.
  Pacer p(64);
  p.restart();
  const auto limits = rounds(p, 60, [](std::size_t n) { return milliseconds(30 * static_cast<int>(n)); });
  std::size_t highest = 0;
  for (std::size_t i = 10; i < limits.size(); ++i) highest = std::max(highest, limits[i]);
  EXPECT_LE(highest, 4u) << "the limit must settle where latency stays near its best";
  EXPECT_GE(limits.back(), 1u);
}

TEST(PacerTest, LatencyJitterBelowTheToleranceIsNoSignal) {
  // A healthy local receiver answers in 0-20 ms whatever the load.
  Pacer p(64);
  int i = 0;
  const auto limits = rounds(p, 12, [&i](std::size_t) { return milliseconds((i++ * 7) % 21); });
  EXPECT_EQ(limits.back(), 64u);
}

TEST(PacerTest, AnUnusedLimitDoesNotGrow) {
  Pacer p(64);
  // One request at a time (a trickle of new records): the limit stays where it was tested.
  for (int i = 0; i < 100; ++i) p.on_result(false, milliseconds(1), 1);
  EXPECT_EQ(p.limit(), Pacer::kInitialWindow);
}

TEST(PacerTest, RestartBeginsASlowStartAgain) {
  Pacer p(16);
  rounds(p, 6, [](std::size_t) { return milliseconds(1); });
  ASSERT_EQ(p.limit(), 16u);
  p.restart();
  EXPECT_EQ(p.limit(), 1u);
  EXPECT_TRUE(p.slow_start());
}

}  // namespace
}  // namespace repeaterd::scheduler
