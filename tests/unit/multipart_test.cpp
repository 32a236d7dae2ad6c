// Tests for ingest/multipart: OpenRosa multipart/form-data submissions.
#include "ingest/multipart.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace repeaterd::ingest {
namespace {

using namespace std::string_literals;

constexpr const char* kCt = "multipart/form-data; boundary=XyZ123";

std::string expect_error(std::string_view content_type, std::string_view body) {
  const auto r = parse_multipart(content_type, body);
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.error().message;
}

// Bytes that a JPEG starts with, plus the things a naive parser trips on: NUL, CR, LF, a line
// that starts like the boundary, and a trailing CR.
std::string jpeg_bytes() {
  return "\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\r\n\r\n--XyZ12\r\n--XyZ123x\r\n"
         "\n--XyZ123 not a delimiter\r\n\x00\xFF\xD9\r"s;
}

std::string odk_body() {
  return "--XyZ123\r\n"
         "Content-Disposition: form-data; name=\"xml_submission_file\"; "
         "filename=\"xml_submission_file\"\r\n"
         "Content-Type: text/xml\r\n"
         "\r\n"
         "<?xml version='1.0' ?><data id=\"f\"><meta><instanceID>uuid:1</instanceID></meta>"
         "<photo>1700000000000.jpg</photo></data>\r\n"
         "--XyZ123\r\n"
         "Content-Disposition: form-data; name=\"1700000000000.jpg\"; "
         "filename=\"1700000000000.jpg\"\r\n"
         "Content-Type: image/jpeg\r\n"
         "\r\n" +
         jpeg_bytes() +
         "\r\n"
         "--XyZ123--\r\n";
}

TEST(ParseMultipart, OdkCollectSubmissionWithBinaryAttachment) {
  const std::string body = odk_body();
  const auto r = parse_multipart(kCt, body);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 2U);

  const Part& xml = (*r)[0];
  EXPECT_EQ(xml.name, "xml_submission_file");
  EXPECT_EQ(xml.filename, "xml_submission_file");
  EXPECT_EQ(xml.content_type, "text/xml");
  EXPECT_EQ(xml.body,
            "<?xml version='1.0' ?><data id=\"f\"><meta><instanceID>uuid:1</instanceID></meta>"
            "<photo>1700000000000.jpg</photo></data>");

  const Part& jpg = (*r)[1];
  EXPECT_EQ(jpg.name, "1700000000000.jpg");
  EXPECT_EQ(jpg.filename, "1700000000000.jpg");
  EXPECT_EQ(jpg.content_type, "image/jpeg");
  EXPECT_EQ(jpg.body, jpeg_bytes());  // byte-exact, trailing CR and NULs included
  EXPECT_EQ(jpg.body.size(), jpeg_bytes().size());
}

TEST(ParseMultipart, PreambleAndEpilogueAreIgnored) {
  const std::string body =
      "This is the preamble.\r\n--XyZ123 is mentioned but not at a line start\r\n"
      "--XyZ123\r\n"
      "Content-Disposition: form-data; name=a\r\n\r\n"
      "A\r\n"
      "--XyZ123--\r\n"
      "epilogue\r\n--XyZ123\r\nContent-Disposition: form-data; name=b\r\n\r\nB\r\n--XyZ123--";
  const auto r = parse_multipart(kCt, body);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 1U);
  EXPECT_EQ((*r)[0].name, "a");
  EXPECT_EQ((*r)[0].body, "A");
  EXPECT_EQ((*r)[0].filename, "");
  EXPECT_EQ((*r)[0].content_type, "");
}

TEST(ParseMultipart, QuotedAndUnquotedBoundary) {
  const std::string body =
      "--a'b(c)=d\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--a'b(c)=d--";
  for (const char* ct : {"multipart/form-data; boundary=\"a'b(c)=d\"",
                         "Multipart/Form-Data;charset=utf-8;BOUNDARY=\"a'b(c)=d\"",
                         "multipart/form-data ; boundary=a'b(c)=d"}) {
    const auto r = parse_multipart(ct, body);
    ASSERT_TRUE(r.ok()) << ct << ": " << r.error().message;
    ASSERT_EQ(r->size(), 1U);
    EXPECT_EQ((*r)[0].body, "v");
  }
  // A quoted boundary may contain spaces (RFC 2046 allows them inside).
  const auto r = parse_multipart("multipart/form-data; boundary=\"with space\"",
                                 "--with space\r\nContent-Disposition: form-data; name=x\r\n\r\n"
                                 "v\r\n--with space--\r\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)[0].body, "v");
}

TEST(ParseMultipart, ContentTypeErrors) {
  EXPECT_NE(expect_error("multipart/form-data", "").find("no boundary parameter"),
            std::string::npos);
  EXPECT_NE(expect_error("multipart/form-data; charset=utf-8", "").find("no boundary parameter"),
            std::string::npos);
  EXPECT_NE(expect_error("text/xml; boundary=x", "").find("not multipart/form-data"),
            std::string::npos);
  EXPECT_NE(expect_error("multipart/form-data; boundary=\"\"", "").find("1 to 70"),
            std::string::npos);
  EXPECT_NE(expect_error("multipart/form-data; boundary=" + std::string(71, 'b'), "").find("1 to 70"),
            std::string::npos);
  EXPECT_NE(expect_error("multipart/form-data; boundary=\"open", "").find("unterminated"),
            std::string::npos);
}

TEST(ParseMultipart, MissingClosingBoundary) {
  const std::string truncated =
      "--XyZ123\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n"
      "--XyZ123\r\nContent-Disposition: form-data; name=b\r\n\r\nB-cut-off";
  const std::string m = expect_error(kCt, truncated);
  EXPECT_NE(m.find("part 2"), std::string::npos) << m;
  EXPECT_NE(m.find("ends before the closing boundary"), std::string::npos) << m;

  // A closing delimiter that is not at a line start does not count.
  EXPECT_NE(expect_error(kCt, "--XyZ123\r\nContent-Disposition: form-data; name=a\r\n\r\nA--XyZ123--")
                .find("ends before the closing boundary"),
            std::string::npos);
}

TEST(ParseMultipart, BodyWithoutTheBoundary) {
  const std::string m = expect_error(kCt, "--Other\r\nContent-Disposition: form-data; name=a\r\n\r\n"
                                          "A\r\n--Other--\r\n");
  EXPECT_NE(m.find("no boundary line"), std::string::npos) << m;
  EXPECT_NE(expect_error(kCt, "").find("no boundary line"), std::string::npos);
  EXPECT_NE(expect_error(kCt, "--XyZ123--\r\n").find("no parts"), std::string::npos);
}

TEST(ParseMultipart, PartWithoutName) {
  const std::string body =
      "--XyZ123\r\nContent-Disposition: form-data; name=\"xml_submission_file\"\r\n\r\n<a/>\r\n"
      "--XyZ123\r\nContent-Disposition: form-data; filename=\"photo.jpg\"\r\n\r\nJPG\r\n"
      "--XyZ123--\r\n";
  EXPECT_EQ(expect_error(kCt, body), "part 2 has no Content-Disposition name");

  const std::string no_disposition =
      "--XyZ123\r\nContent-Type: text/xml\r\n\r\n<a/>\r\n--XyZ123--\r\n";
  EXPECT_EQ(expect_error(kCt, no_disposition), "part 1 has no Content-Disposition header");

  const std::string attachment =
      "--XyZ123\r\nContent-Disposition: attachment; name=a\r\n\r\n<a/>\r\n--XyZ123--\r\n";
  EXPECT_NE(expect_error(kCt, attachment).find("must be form-data"), std::string::npos);
}

TEST(ParseMultipart, MalformedPartHeaders) {
  const std::string no_colon =
      "--XyZ123\r\nContent-Disposition: form-data; name=a\r\nbogus line\r\n\r\nA\r\n--XyZ123--";
  EXPECT_NE(expect_error(kCt, no_colon).find("part 1 has a header line without"),
            std::string::npos);

  const std::string no_blank_line =
      "--XyZ123\r\nContent-Disposition: form-data; name=a\r\nA\r\n--XyZ123--";
  EXPECT_NE(expect_error(kCt, no_blank_line).find("part 1"), std::string::npos);
}

TEST(ParseMultipart, LfOnlyBody) {
  const std::string body =
      "--XyZ123\n"
      "Content-Disposition: form-data; name=\"xml_submission_file\"; filename=\"s.xml\"\n"
      "Content-Type: text/xml\n"
      "\n"
      "<data>\n  <q>1</q>\n</data>\n"
      "--XyZ123\n"
      "Content-Disposition: form-data; name=\"note.txt\"\n"
      "\n"
      "ends in CR\r\n"
      "--XyZ123--\n";
  const auto r = parse_multipart(kCt, body);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 2U);
  EXPECT_EQ((*r)[0].name, "xml_submission_file");
  EXPECT_EQ((*r)[0].filename, "s.xml");
  EXPECT_EQ((*r)[0].content_type, "text/xml");
  EXPECT_EQ((*r)[0].body, "<data>\n  <q>1</q>\n</data>");
  // In an LF-only body the CR before the delimiter's LF is content.
  EXPECT_EQ((*r)[1].body, "ends in CR\r");
}

TEST(ParseMultipart, QuotedParameterEscapesAndHeaderCase) {
  const std::string body =
      "--XyZ123\r\n"
      "content-disposition: FORM-DATA; NAME=\"a \\\"quoted\\\" name; with semicolon\"; "
      "filename=\"C:\\\\dir\\\\f.xml\"\r\n"
      "CONTENT-TYPE:   text/xml; charset=utf-8  \r\n"
      "X-Other: ignored\r\n"
      "\r\n"
      "body\r\n"
      "--XyZ123--";
  const auto r = parse_multipart(kCt, body);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 1U);
  EXPECT_EQ((*r)[0].name, "a \"quoted\" name; with semicolon");
  EXPECT_EQ((*r)[0].filename, "C:\\dir\\f.xml");
  EXPECT_EQ((*r)[0].content_type, "text/xml; charset=utf-8");
}

TEST(ParseMultipart, EmptyBodiesAndPadding) {
  // Transport padding after a delimiter, an empty body, and a part whose headers run straight
  // into the next delimiter (RFC 2046 allows a body-part of headers alone).
  const std::string body =
      "--XyZ123  \t\r\n"
      "Content-Disposition: form-data; name=empty\r\n\r\n"
      "\r\n"
      "--XyZ123\r\n"
      "Content-Disposition: form-data; name=headers_only\r\n"
      "\r\n"
      "--XyZ123\r\n"
      "Content-Disposition: form-data; name=blank_line\r\n\r\n"
      "\r\n\r\n"
      "--XyZ123--";
  const auto r = parse_multipart(kCt, body);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 3U);
  EXPECT_EQ((*r)[0].name, "empty");
  EXPECT_EQ((*r)[0].body, "");
  EXPECT_EQ((*r)[1].name, "headers_only");
  EXPECT_EQ((*r)[1].body, "");
  EXPECT_EQ((*r)[2].name, "blank_line");
  EXPECT_EQ((*r)[2].body, "\r\n");
}

TEST(ParseMultipart, FoldedHeaderLine) {
  const std::string body =
      "--XyZ123\r\n"
      "Content-Disposition: form-data;\r\n"
      "\tname=\"folded\"\r\n"
      "\r\n"
      "v\r\n"
      "--XyZ123--\r\n";
  const auto r = parse_multipart(kCt, body);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)[0].name, "folded");
}

}  // namespace
}  // namespace repeaterd::ingest
