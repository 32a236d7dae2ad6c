// Record ids: UUIDv7 whose order is the order they were made in (ordered delivery relies on it).
// Ids made in this process only grow, so the tests use times just ahead of the clock.
#include "common/ids.hpp"

#include <gtest/gtest.h>

#include <cstdio>

namespace repeaterd {
namespace {

// A time a few milliseconds ahead, at the start of its millisecond.
Micros soon() { return (now_micros() / 1000 + 5) * 1000; }

std::string hex_ms(Micros t) {
  char buf[16];
  const auto ms = static_cast<unsigned long long>(t / 1000);
  std::snprintf(buf, sizeof buf, "%012llx", ms);
  const std::string h(buf);
  return h.substr(0, 8) + "-" + h.substr(8, 4);
}

TEST(IdsTest, Uuid7CarriesTheTimeAndVersion) {
  const Micros t = soon();
  const std::string id = uuid_v7(t + 500);
  ASSERT_EQ(id.size(), 36u);
  EXPECT_EQ(id.substr(0, 13), hex_ms(t));  // the milliseconds, big-endian
  EXPECT_EQ(id[14], '7');
  EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos);  // RFC 9562 variant
}

TEST(IdsTest, Uuid7KeepsSubMillisecondOrder) {
  const Micros t = soon();
  const std::string a = uuid_v7(t + 100);
  const std::string b = uuid_v7(t + 900);
  EXPECT_EQ(a.substr(0, 13), b.substr(0, 13));
  EXPECT_LT(a, b);
}

TEST(IdsTest, Uuid7IncreasesInTheOrderMadeEvenWhenTheClockDoesNot) {
  const Micros t = soon();
  std::string prev = uuid_v7(t);
  for (int i = 0; i < 10000; ++i) {
    // The same microsecond, then a clock that stepped back a second: ids still only grow.
    const std::string id = uuid_v7(i < 5000 ? t : t - 1'000'000);
    ASSERT_LT(prev, id) << "at " << i;
    prev = id;
  }
}

}  // namespace
}  // namespace repeaterd
