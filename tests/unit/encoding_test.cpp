#include "common/encoding.hpp"

#include <gtest/gtest.h>

namespace repeaterd {
namespace {

TEST(Base64, RoundTripsEveryLength) {
  std::string bytes;
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes) << i;
    bytes.push_back(static_cast<char>(i * 37));
  }
}

TEST(Base64, KnownValuesAndRejections) {
  EXPECT_EQ(base64_encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_EQ(base64_decode("dXNlcjpwYXNz"), "user:pass");
  EXPECT_EQ(base64_decode("YQ=="), "a");
  EXPECT_FALSE(base64_decode("YQ="));     // not a multiple of 4
  EXPECT_FALSE(base64_decode("Y Q=="));   // whitespace
  EXPECT_FALSE(base64_decode("YQ-_"));    // URL alphabet
}

}  // namespace
}  // namespace repeaterd
