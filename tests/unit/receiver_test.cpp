// Token checks and the OpenRosa answer, without sockets.
#include "ingest/receiver.hpp"

#include <gtest/gtest.h>

#include <pugixml.hpp>

namespace repeaterd::ingest {
namespace {

std::vector<config::IngestToken> tokens() {
  return {{"demo", {"tok-demo", "inline"}}, {"other", {"tok-other", "inline"}}, {"demo", {"tok-demo-2", "inline"}}};
}

TEST(Authenticate, BearerForTheRightDomain) {
  EXPECT_EQ(authenticate(tokens(), "Bearer tok-demo", "demo"), AuthResult::ok);
  EXPECT_EQ(authenticate(tokens(), "bearer tok-demo-2", "demo"), AuthResult::ok);
}

TEST(Authenticate, BasicWithTokenAsPassword) {
  // base64("anyone:tok-demo")
  EXPECT_EQ(authenticate(tokens(), "Basic YW55b25lOnRvay1kZW1v", "demo"), AuthResult::ok);
  // base64("anyone:wrong")
  EXPECT_EQ(authenticate(tokens(), "Basic YW55b25lOndyb25n", "demo"), AuthResult::unknown_token);
}

TEST(Authenticate, Failures) {
  EXPECT_EQ(authenticate(tokens(), "", "demo"), AuthResult::missing);
  EXPECT_EQ(authenticate(tokens(), "Token tok-demo", "demo"), AuthResult::missing);
  EXPECT_EQ(authenticate(tokens(), "Bearer nope", "demo"), AuthResult::unknown_token);
  EXPECT_EQ(authenticate(tokens(), "Bearer tok-other", "demo"), AuthResult::wrong_domain);
  EXPECT_EQ(authenticate(tokens(), "Bearer tok-demo", "other"), AuthResult::wrong_domain);
  EXPECT_EQ(authenticate(tokens(), "Bearer tok-dem", "demo"), AuthResult::unknown_token);
}

TEST(OpenRosa, SuccessNamesFormAndRecords) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(openrosa_response(true, "ok & done", "f-1", 3).c_str()));
  auto root = doc.child("OpenRosaResponse");
  EXPECT_STREQ(root.attribute("xmlns").value(), "http://openrosa.org/http/response");
  EXPECT_STREQ(root.child("message").attribute("nature").value(), "submit_success");
  EXPECT_STREQ(root.child("message").child_value(), "ok & done");
  EXPECT_STREQ(root.child("form_id").child_value(), "f-1");
  EXPECT_STREQ(root.child("records_created").child_value(), "3");
}

TEST(OpenRosa, ErrorHasNoFormElements) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(openrosa_response(false, "bad <xml>").c_str()));
  auto root = doc.child("OpenRosaResponse");
  EXPECT_STREQ(root.child("message").attribute("nature").value(), "submit_error");
  EXPECT_STREQ(root.child("message").child_value(), "bad <xml>");
  EXPECT_FALSE(root.child("form_id"));
}

}  // namespace
}  // namespace repeaterd::ingest
