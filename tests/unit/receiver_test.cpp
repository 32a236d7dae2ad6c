// Token checks and the OpenRosa answer, without sockets.
#include "ingest/receiver.hpp"

#include <gtest/gtest.h>

#include <sstream>

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

// openrosa_response() writes its text directly; pugixml wrote it before, and the bytes must not
// change under OpenRosa clients.
std::string pugixml_openrosa_response(bool success, const std::string& message, const std::string& form_id = {},
                                      int records_created = -1) {
  pugi::xml_document doc;
  auto decl = doc.append_child(pugi::node_declaration);
  decl.append_attribute("version") = "1.0";
  decl.append_attribute("encoding") = "UTF-8";
  auto root = doc.append_child("OpenRosaResponse");
  root.append_attribute("xmlns") = "http://openrosa.org/http/response";
  auto msg = root.append_child("message");
  msg.append_attribute("nature") = success ? "submit_success" : "submit_error";
  msg.text() = message.c_str();
  if (!form_id.empty()) root.append_child("form_id").text() = form_id.c_str();
  if (records_created >= 0) root.append_child("records_created").text() = records_created;
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default, pugi::encoding_utf8);
  return out.str();
}

TEST(OpenRosa, SameBytesAsPugixml) {
  std::string every_byte;
  for (int c = 1; c < 256; ++c) every_byte += static_cast<char>(c);
  const std::vector<std::string> texts = {"",
                                          "Thanks! Form abc received; 1 repeat record(s) queued.",
                                          "a & b < c > d \" e ' f",
                                          "tab\tnewline\ncr\r bell\x07 esc\x1b",
                                          "caf\xc3\xa9 \xe2\x9c\x93",
                                          std::string("before\0after", 12),
                                          every_byte};
  for (const auto& t : texts) {
    EXPECT_EQ(openrosa_response(true, t, t, 3), pugixml_openrosa_response(true, t, t, 3)) << t;
    EXPECT_EQ(openrosa_response(false, t), pugixml_openrosa_response(false, t)) << t;
    EXPECT_EQ(openrosa_response(true, t, "f-1", 0), pugixml_openrosa_response(true, t, "f-1", 0)) << t;
  }
}

TEST(EndpointName, FollowsTheRouter) {
  struct Case {
    const char* method;
    const char* target;
    const char* name;
  };
  const Case cases[] = {
      {"POST", "/a/demo/receiver", "receiver"},
      {"POST", "/a/demo/receiver?app_id=abc", "receiver"},
      {"POST", "/a/demo/cases", "cases"},
      {"POST", "/a/demo/apps/app-1", "apps"},
      {"GET", "/a/demo/receiver/attachments/form-1/photo.jpg", "attachments"},
      {"GET", "/a/demo/receiver/attachments/form%2F1/a%20b.jpg", "attachments"},
      // Everything else is "other". The wrong method for a known path is answered 405, not
      // by the endpoint's work.
      {"GET", "/a/demo/receiver", "other"},
      {"POST", "/a/demo/receiver/attachments/form-1/photo.jpg", "other"},
      // Paths the router does not take (it has no secure/ or trailing-slash variants).
      {"POST", "/a/demo/receiver/", "other"},
      {"POST", "/a/demo/receiver/secure", "other"},
      {"POST", "/a/demo/receiver/secure/app-1", "other"},
      {"POST", "/a//receiver", "other"},
      {"POST", "/a/demo/apps/", "other"},
      {"GET", "/a/demo/receiver/attachments/form-1", "other"},
      {"GET", "/metrics", "other"},
      {"POST", "not a path", "other"},
      // The server's own answers before the request line was read.
      {"", "", "other"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(Receiver::endpoint_name(c.method, c.target), c.name) << c.method << " " << c.target;
  }
}

}  // namespace
}  // namespace repeaterd::ingest
