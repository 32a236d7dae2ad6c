// The lifecycle arithmetic of spec §5, with a fixed clock and fixed randomness.
#include "scheduler/retry_policy.hpp"

#include <gtest/gtest.h>

namespace repeaterd::scheduler {
namespace {

using namespace std::chrono_literals;

constexpr Micros kNow = 1'700'000'000'000'000;

config::Retry retry() {
  config::Retry r;
  r.initial = 1min;
  r.multiplier = 3;
  r.max_delay = 24h;
  r.max_attempts = 8;
  r.max_attempts_client_error = 3;
  r.jitter = 0.2;
  return r;
}

sender::Response http(int status) {
  sender::Response r;
  r.outcome = sender::Outcome::response;
  r.status = status;
  return r;
}

sender::Response failure(sender::Outcome o) {
  sender::Response r;
  r.outcome = o;
  r.error = "boom";
  return r;
}

TEST(Classify, StatusClasses) {
  EXPECT_EQ(classify(http(200)), ErrorClass::success);
  EXPECT_EQ(classify(http(204)), ErrorClass::success);
  EXPECT_EQ(classify(http(299)), ErrorClass::success);
  EXPECT_EQ(classify(http(302)), ErrorClass::retryable);
  EXPECT_EQ(classify(http(500)), ErrorClass::retryable);
  EXPECT_EQ(classify(http(503)), ErrorClass::retryable);
  EXPECT_EQ(classify(http(408)), ErrorClass::retryable);
  EXPECT_EQ(classify(http(425)), ErrorClass::retryable);
  EXPECT_EQ(classify(http(429)), ErrorClass::retryable);
  EXPECT_EQ(classify(http(400)), ErrorClass::client_error);
  EXPECT_EQ(classify(http(401)), ErrorClass::client_error);
  EXPECT_EQ(classify(http(404)), ErrorClass::client_error);
  EXPECT_EQ(classify(http(413)), ErrorClass::cancel_now);
}

TEST(Classify, TransportFailures) {
  EXPECT_EQ(classify(failure(sender::Outcome::network_error)), ErrorClass::retryable);
  EXPECT_EQ(classify(failure(sender::Outcome::timeout)), ErrorClass::retryable);
  EXPECT_EQ(classify(failure(sender::Outcome::tls_error)), ErrorClass::retryable);
  EXPECT_EQ(classify(failure(sender::Outcome::tls_certificate)), ErrorClass::client_error);
}

TEST(Backoff, GrowsByMultiplierWithoutJitterAtMidpoint) {
  auto r = retry();
  EXPECT_EQ(backoff_delay(r, 1, 0.5), Duration(60'000));
  EXPECT_EQ(backoff_delay(r, 2, 0.5), Duration(180'000));
  EXPECT_EQ(backoff_delay(r, 3, 0.5), Duration(540'000));
  EXPECT_EQ(backoff_delay(r, 4, 0.5), Duration(1'620'000));
}

TEST(Backoff, CappedAtMaxDelay) {
  auto r = retry();
  EXPECT_EQ(backoff_delay(r, 20, 0.5), Duration(24h));
  EXPECT_EQ(backoff_delay(r, 20, 0.999), Duration(24h)) << "jitter never exceeds max_delay";
}

TEST(Backoff, JitterSpreadsWithinBounds) {
  auto r = retry();
  EXPECT_EQ(backoff_delay(r, 1, 0.0), Duration(48'000));
  EXPECT_NEAR(static_cast<double>(backoff_delay(r, 1, 0.9999).count()), 72'000.0, 10.0);
  r.jitter = 0;
  EXPECT_EQ(backoff_delay(r, 1, 0.0), Duration(60'000));
}

TEST(Decide, SuccessEndsTheRecord) {
  auto d = decide(retry(), ErrorClass::success, 1, 0, std::nullopt, "", kNow, 0.5);
  EXPECT_EQ(d.next, Decision::Next::succeeded);
  EXPECT_FALSE(d.next_attempt_at);
}

TEST(Decide, RetryableSchedulesBackoff) {
  auto d = decide(retry(), ErrorClass::retryable, 2, 0, std::nullopt, "HTTP 500", kNow, 0.5);
  EXPECT_EQ(d.next, Decision::Next::retry);
  ASSERT_TRUE(d.next_attempt_at);
  EXPECT_EQ(*d.next_attempt_at, kNow + 180'000'000);
  EXPECT_EQ(d.reason, "HTTP 500");
}

TEST(Decide, RetryableCancelsAtMaxAttempts) {
  auto r = retry();
  EXPECT_EQ(decide(r, ErrorClass::retryable, 7, 0, std::nullopt, "e", kNow, 0.5).next, Decision::Next::retry);
  auto d = decide(r, ErrorClass::retryable, 8, 0, std::nullopt, "HTTP 502 Bad Gateway", kNow, 0.5);
  EXPECT_EQ(d.next, Decision::Next::cancel);
  EXPECT_NE(d.reason.find("max_attempts 8"), std::string::npos);
  EXPECT_NE(d.reason.find("HTTP 502 Bad Gateway"), std::string::npos);
}

TEST(Decide, ClientErrorsHaveTheirOwnBudget) {
  auto r = retry();
  EXPECT_EQ(decide(r, ErrorClass::client_error, 1, 1, std::nullopt, "e", kNow, 0.5).next, Decision::Next::retry);
  EXPECT_EQ(decide(r, ErrorClass::client_error, 2, 2, std::nullopt, "e", kNow, 0.5).next, Decision::Next::retry);
  auto d = decide(r, ErrorClass::client_error, 3, 3, std::nullopt, "HTTP 400", kNow, 0.5);
  EXPECT_EQ(d.next, Decision::Next::cancel);
  EXPECT_NE(d.reason.find("max_attempts_client_error"), std::string::npos);
}

TEST(Decide, TooLargeCancelsAtOnce) {
  auto d = decide(retry(), ErrorClass::cancel_now, 1, 0, std::nullopt, "HTTP 413", kNow, 0.5);
  EXPECT_EQ(d.next, Decision::Next::cancel);
  EXPECT_NE(d.reason.find("413"), std::string::npos);
}

TEST(Decide, RetryAfterHonouredUpToMaxDelay) {
  auto r = retry();
  auto d = decide(r, ErrorClass::retryable, 1, 0, Duration(5000), "HTTP 429", kNow, 0.5);
  EXPECT_EQ(*d.next_attempt_at, kNow + 5'000'000);
  r.max_delay = 2s;
  d = decide(r, ErrorClass::retryable, 1, 0, Duration(3600'000), "HTTP 503", kNow, 0.5);
  EXPECT_EQ(*d.next_attempt_at, kNow + 2'000'000);
}

TEST(Decide, OutageUsesNoBudgetAndNeverCancels) {
  // At and past max_attempts: retried, with the delay of the attempt before (it did not count).
  for (int attempt : {1, 3, 8, 50}) {
    auto d = decide_outage(retry(), attempt, "HTTP 503", kNow, 0.5);
    EXPECT_EQ(d.next, Decision::Next::retry) << attempt;
    ASSERT_TRUE(d.next_attempt_at);
    EXPECT_EQ(*d.next_attempt_at, kNow + std::chrono::duration_cast<std::chrono::microseconds>(
                                             backoff_delay(retry(), attempt - 1, 0.5)).count());
    EXPECT_EQ(d.reason, "HTTP 503");
  }
  EXPECT_EQ(*decide_outage(retry(), 3, "e", kNow, 0.5).next_attempt_at, kNow + 180'000'000);
}

TEST(Describe, StatusLineAndExcerpt) {
  auto r = http(500);
  r.reason = "Internal Server Error";
  r.body = "line1\nline2";
  EXPECT_EQ(describe(r), "HTTP 500 Internal Server Error: line1 line2");
  r.body = std::string(1000, 'x');
  auto s = describe(r);
  EXPECT_LT(s.size(), 400u);
  EXPECT_EQ(describe(failure(sender::Outcome::timeout)), "boom");
}

}  // namespace
}  // namespace repeaterd::scheduler
