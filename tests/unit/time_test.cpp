#include "repeaterd/time.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <limits>

namespace repeaterd {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr Micros kSecond = 1'000'000;

TEST(NowMicros, IsWallClockInMicroseconds) {
  const std::time_t before = std::time(nullptr);
  const Micros now = now_micros();
  const std::time_t after = std::time(nullptr);
  EXPECT_GE(now, static_cast<Micros>(before) * kSecond);
  EXPECT_LT(now, (static_cast<Micros>(after) + 1) * kSecond);
}

TEST(FormatIso8601, MatchesCommCareReceivedOn) {
  EXPECT_EQ(format_iso8601(1429301674 * kSecond + 46462), "2015-04-17T20:14:34.046462Z");
}

TEST(FormatIso8601, Epoch) { EXPECT_EQ(format_iso8601(0), "1970-01-01T00:00:00.000000Z"); }

TEST(FormatIso8601, LeapDayAndEndOfDay) {
  EXPECT_EQ(format_iso8601(1709251199 * kSecond + 999999), "2024-02-29T23:59:59.999999Z");
}

TEST(FormatIso8601, BeforeEpochRoundsDownToTheEarlierSecond) {
  EXPECT_EQ(format_iso8601(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(format_iso8601(-kSecond), "1969-12-31T23:59:59.000000Z");
  EXPECT_EQ(format_iso8601(-2208988800 * kSecond), "1900-01-01T00:00:00.000000Z");
}

TEST(FormatIso8601, LastSecondOfYear9999) {
  EXPECT_EQ(format_iso8601(253402300799 * kSecond + 999999), "9999-12-31T23:59:59.999999Z");
}

TEST(FormatIso8601, ExtremeValuesPrintTheirTrueYear) {
  // Far outside any real timestamp, but they must not wrap to a plausible wrong date.
  EXPECT_EQ(format_iso8601(std::numeric_limits<Micros>::max()), "294247-01-10T04:00:54.775807Z");
  EXPECT_EQ(format_iso8601(std::numeric_limits<Micros>::min()), "-290308-12-21T19:59:05.224192Z");
}

TEST(ParseDuration, SingleTerms) {
  EXPECT_EQ(parse_duration("500ms"), milliseconds(500));
  EXPECT_EQ(parse_duration("30s"), seconds(30));
  EXPECT_EQ(parse_duration("5m"), minutes(5));
  EXPECT_EQ(parse_duration("24h"), hours(24));
  EXPECT_EQ(parse_duration("7d"), hours(24 * 7));
  EXPECT_EQ(parse_duration("0s"), milliseconds(0));
  EXPECT_EQ(parse_duration("007s"), seconds(7));
}

TEST(ParseDuration, CompoundTermsFromLargestToSmallest) {
  EXPECT_EQ(parse_duration("1h30m"), minutes(90));
  EXPECT_EQ(parse_duration("1d12h"), hours(36));
  EXPECT_EQ(parse_duration("2m3s500ms"), milliseconds(123'500));
  EXPECT_EQ(parse_duration("1d1h1m1s1ms"), milliseconds(90'061'001));
}

TEST(ParseDuration, RejectsTermsOutOfOrderOrRepeated) {
  EXPECT_EQ(parse_duration("30m1h"), std::nullopt);
  EXPECT_EQ(parse_duration("1m1m"), std::nullopt);
  EXPECT_EQ(parse_duration("1s1m"), std::nullopt);
}

TEST(ParseDuration, RejectsMalformed) {
  for (const char* bad : {"", "5", "s", "ms", "-5s", "+5s", "5 s", " 5s", "5s ", "5S", "1.5h",
                          "5sec", "5min", "10 seconds", "1h30", "h1", "5us"}) {
    EXPECT_EQ(parse_duration(bad), std::nullopt) << '"' << bad << '"';
  }
}

TEST(ParseDuration, RejectsOverflow) {
  EXPECT_EQ(parse_duration("9223372036854775807ms"),
            milliseconds(std::numeric_limits<std::int64_t>::max()));
  EXPECT_EQ(parse_duration("9223372036854775808ms"), std::nullopt);
  EXPECT_EQ(parse_duration("99999999999999999999s"), std::nullopt);        // more than 64 bits
  EXPECT_EQ(parse_duration("106751991167d"), hours(106751991167LL * 24));  // the most days
  EXPECT_EQ(parse_duration("106751991168d"), std::nullopt);     // fits 64 bits, not in ms
  EXPECT_EQ(parse_duration("106751991167d23h"), std::nullopt);  // each term fits, the sum not
}

TEST(ParseSize, BinaryAndDecimalUnits) {
  EXPECT_EQ(parse_size("512"), 512u);
  EXPECT_EQ(parse_size("512B"), 512u);
  EXPECT_EQ(parse_size("64KiB"), 65536u);
  EXPECT_EQ(parse_size("10MiB"), 10u << 20);
  EXPECT_EQ(parse_size("1GiB"), 1u << 30);
  EXPECT_EQ(parse_size("2TiB"), 2ull << 40);
  EXPECT_EQ(parse_size("1KB"), 1000u);
  EXPECT_EQ(parse_size("3MB"), 3'000'000u);
  EXPECT_EQ(parse_size("1GB"), 1'000'000'000u);
  EXPECT_EQ(parse_size("0"), 0u);
}

TEST(ParseSize, RejectsGarbage) {
  for (const char* bad : {"", "KiB", "-1", "+1", "1.5MiB", "10 MiB", "10mib", "10kb", "10K", "10M",
                          "ten", "0x10", "10MiB ", " 10"}) {
    EXPECT_EQ(parse_size(bad), std::nullopt) << '"' << bad << '"';
  }
}

TEST(ParseSize, RejectsOverflow) {
  EXPECT_EQ(parse_size("18446744073709551615"), std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(parse_size("18446744073709551616"), std::nullopt);
  EXPECT_EQ(parse_size("16777216TiB"), std::nullopt);  // 2^24 * 2^40 = 2^64
  EXPECT_EQ(parse_size("16777215TiB"), 16777215ull << 40);
}

// "Sun, 06 Nov 1994 08:49:37 GMT", the RFC's own example.
constexpr Micros kRfcExample = 784111777 * kSecond;

TEST(ParseRetryAfter, DelaySeconds) {
  EXPECT_EQ(parse_retry_after("120", 0), seconds(120));
  EXPECT_EQ(parse_retry_after("0", 0), seconds(0));
  EXPECT_EQ(parse_retry_after(" 5\t", 0), seconds(5));
}

TEST(ParseRetryAfter, HugeDelaySaturates) {
  EXPECT_EQ(parse_retry_after("99999999999999999999999", 0), Duration::max());
  // The largest whole number of seconds that fits in milliseconds, and one more.
  EXPECT_EQ(parse_retry_after("9223372036854775", 0), seconds(9223372036854775));
  EXPECT_EQ(parse_retry_after("9223372036854776", 0), Duration::max());
}

TEST(ParseRetryAfter, RejectsMalformedDelays) {
  for (const char* bad : {"", " ", "-1", "1.5", "120s", "12 0", "abc", "+5"}) {
    EXPECT_EQ(parse_retry_after(bad, 0), std::nullopt) << '"' << bad << '"';
  }
}

TEST(ParseRetryAfter, HttpDateIsRelativeToNow) {
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kRfcExample - 30 * kSecond),
            seconds(30));
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", kRfcExample), seconds(60));
  EXPECT_EQ(parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", kRfcExample), hours(24));
}

TEST(ParseRetryAfter, HttpDateRoundsUpToTheMillisecond) {
  // Retrying a fraction of a millisecond before the server's time would be too early.
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kRfcExample - 1500),
            milliseconds(2));
}

TEST(ParseRetryAfter, PastOrPresentDateIsZero) {
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kRfcExample), milliseconds(0));
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kRfcExample + 3600 * kSecond),
            milliseconds(0));
}

TEST(ParseRetryAfter, LeapYearDate) {
  EXPECT_EQ(parse_retry_after("Thu, 29 Feb 2024 23:59:59 GMT", 1709251199 * kSecond - kSecond),
            seconds(1));
}

TEST(ParseRetryAfter, RejectsMalformedDates) {
  for (const char* bad : {
           "Sun, 31 Feb 1994 08:49:37 GMT",   // no such day
           "Sun, 06 Nov 1994 24:00:00 GMT",   // hour out of range
           "Sun, 06 Nov 1994 08:60:00 GMT",   // minute out of range
           "Sun, 06 Foo 1994 08:49:37 GMT",   // month
           "Xyz, 06 Nov 1994 08:49:37 GMT",   // day name
           "Sun, 06 Nov 1994 08:49:37 UTC",   // zone must be GMT
           "Sun, 6 Nov 1994 08:49:37 GMT",    // day is two digits
           "Sunday, 06-Nov-94 08:49:37 GMT",  // obsolete RFC 850 form
           "Sun Nov  6 08:49:37 1994",        // obsolete asctime form
           "Sun, 06 Nov 1994 08:49:37 GMT x",
           "sun, 06 nov 1994 08:49:37 gmt",
       }) {
    EXPECT_EQ(parse_retry_after(bad, 0), std::nullopt) << '"' << bad << '"';
  }
}

}  // namespace
}  // namespace repeaterd

