// The STATUS= line systemd shows, and the test stall hook's value (cli/service).
#include "cli/service.hpp"

#include <gtest/gtest.h>

namespace repeaterd::service {
namespace {

using namespace std::chrono_literals;

store::RepeaterSummary summary(std::string name, std::int64_t pending, std::int64_t failed) {
  store::RepeaterSummary s;
  s.repeater = std::move(name);
  s.pending = pending;
  s.failed = failed;
  s.succeeded = 1000;  // finished records are not part of the line
  s.cancelled = 7;
  return s;
}

TEST(StatusLine, EmptyQueue) {
  EXPECT_EQ(status_line({}, 0), "accepting submissions; 0 pending, 0 failed, 0 in flight");
}

TEST(StatusLine, SumsPendingAndFailedOverRepeaters) {
  EXPECT_EQ(status_line({summary("forms-to-openfn", 9, 1), summary("forms-to-dhis2", 3, 2)}, 3),
            "accepting submissions; 12 pending, 3 failed, 3 in flight");
}

TEST(StatusLine, LargeCounts) {
  EXPECT_EQ(status_line({summary("a", 4'000'000'000, 0), summary("b", 1, 5'000'000'000)}, 64),
            "accepting submissions; 4000000001 pending, 5000000000 failed, 64 in flight");
}

TEST(StallSeconds, WholeSecondsFromOneTo3600) {
  EXPECT_EQ(parse_stall_seconds("3"), 3s);
  EXPECT_EQ(parse_stall_seconds("1"), 1s);
  EXPECT_EQ(parse_stall_seconds("3600"), 3600s);
}

TEST(StallSeconds, AnythingElseIsIgnored) {
  for (const char* bad : {"", "0", "-1", "3601", "2.5", "3s", " 3", "3 ", "x", "99999999999999999999"}) {
    EXPECT_EQ(parse_stall_seconds(bad), std::nullopt) << '"' << bad << '"';
  }
}

}  // namespace
}  // namespace repeaterd::service
