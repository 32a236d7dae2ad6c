// common/failure_run: a run of failures starts at the first one and ends only once successes
// have lasted the settle time since the last failure.
#include "common/failure_run.hpp"

#include <gtest/gtest.h>

namespace repeaterd {
namespace {

using std::chrono::milliseconds;

TEST(FailureRun, StartsAtTheFirstFailureAndEndsAfterSuccessesHaveSettled) {
  FailureRun run(milliseconds(2000));
  const FailureRun::Clock::time_point t0{};
  EXPECT_FALSE(run.succeeded(t0));  // no run to end
  EXPECT_TRUE(run.failed(t0 + milliseconds(10)));
  EXPECT_FALSE(run.failed(t0 + milliseconds(20)));
  EXPECT_EQ(run.failures(), 2u);
  EXPECT_EQ(run.since(), t0 + milliseconds(10));
  // A success soon after the last failure (a nearly full disk's last bytes) ends nothing.
  EXPECT_FALSE(run.succeeded(t0 + milliseconds(500)));
  EXPECT_FALSE(run.failed(t0 + milliseconds(600)));
  EXPECT_EQ(run.last(), t0 + milliseconds(600));
  EXPECT_FALSE(run.succeeded(t0 + milliseconds(2599)));
  EXPECT_TRUE(run.active());
  EXPECT_TRUE(run.succeeded(t0 + milliseconds(2600)));
  EXPECT_FALSE(run.active());
  EXPECT_FALSE(run.succeeded(t0 + milliseconds(9000)));
  // The next failure starts a new run.
  EXPECT_TRUE(run.failed(t0 + milliseconds(9100)));
  EXPECT_EQ(run.failures(), 1u);
  EXPECT_EQ(run.since(), t0 + milliseconds(9100));
}

// With no settle time (the WAL checkpoint's run), the first success ends the run.
TEST(FailureRun, WithoutSettleTheFirstSuccessEndsIt) {
  FailureRun run(FailureRun::Clock::duration::zero());
  const FailureRun::Clock::time_point t0{};
  EXPECT_TRUE(run.failed(t0));
  EXPECT_TRUE(run.succeeded(t0));
  EXPECT_FALSE(run.active());
}

}  // namespace
}  // namespace repeaterd
