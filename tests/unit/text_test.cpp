// common/text: the UTF-8 check request ids go through (RFC 3629's table and its edge cases).
#include "common/text.hpp"

#include <gtest/gtest.h>

#include <string>

namespace repeaterd {
namespace {

TEST(TextTest, ValidUtf8AcceptsEveryWellFormedLength) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("abc-123"));
  EXPECT_TRUE(valid_utf8("caf\xC3\xA9"));                    // U+00E9
  EXPECT_TRUE(valid_utf8("\xE0\xA0\x80"));                   // U+0800, the first three-byte
  EXPECT_TRUE(valid_utf8("\xED\x9F\xBF"));                   // U+D7FF, just below the surrogates
  EXPECT_TRUE(valid_utf8("\xEF\xBF\xBD"));                   // U+FFFD
  EXPECT_TRUE(valid_utf8("\xF0\x90\x80\x80"));               // U+10000
  EXPECT_TRUE(valid_utf8("\xF4\x8F\xBF\xBF"));               // U+10FFFF, the last
  EXPECT_TRUE(valid_utf8(std::string("a\0b", 3)));           // NUL is a character
}

TEST(TextTest, ValidUtf8RefusesWhatRfc3629Forbids) {
  EXPECT_FALSE(valid_utf8("\xFF"));
  EXPECT_FALSE(valid_utf8("x\x80"));                         // a lone continuation byte
  EXPECT_FALSE(valid_utf8("\xC0\xAF"));                      // overlong '/'
  EXPECT_FALSE(valid_utf8("\xC1\xBF"));
  EXPECT_FALSE(valid_utf8("\xE0\x9F\xBF"));                  // overlong three-byte
  EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));                  // U+D800, a surrogate
  EXPECT_FALSE(valid_utf8("\xF0\x8F\xBF\xBF"));              // overlong four-byte
  EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80"));              // U+110000
  EXPECT_FALSE(valid_utf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(valid_utf8("caf\xC3"));                       // cut short
  EXPECT_FALSE(valid_utf8("\xE2\x82"));
  EXPECT_FALSE(valid_utf8("\xC3\x28"));                      // second byte not a continuation
  EXPECT_FALSE(valid_utf8("\xE2\x82\x28"));
}

}  // namespace
}  // namespace repeaterd
