#include "payload/xform.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace repeaterd::payload {
namespace {

TEST(XForm, SeedFormIdAndXmlns) {
  const std::string xml = R"(<?xml version='1.0' ?>
<data uiVersion="1" version="10" name="Untitled Form" xmlns:jrm="http://dev.commcarehq.org/jr/xforms" xmlns="http://openrosa.org/formdesigner/B9C4EB51-A7CC-49B5-B7D5-10E9F10B450B">
  <question1>Trees</question1>
  <n1:meta xmlns:n1="http://openrosa.org/jr/xforms">
    <n1:instanceID>afcb3026-c4b3-463f-85ec-0cb9a2737fc5</n1:instanceID>
  </n1:meta>
</data>)";
  auto f = parse_xform(xml);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->instance_id, "afcb3026-c4b3-463f-85ec-0cb9a2737fc5");
  EXPECT_EQ(f->xmlns, "http://openrosa.org/formdesigner/B9C4EB51-A7CC-49B5-B7D5-10E9F10B450B");
}

TEST(XForm, UnprefixedMetaAndWhitespace) {
  auto f = parse_xform("<f xmlns='x'><meta><instanceID>\n  abc \n</instanceID></meta></f>");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->instance_id, "abc");
}

TEST(XForm, LegacyMetaUid) {
  auto f = parse_xform("<f><Meta><uid>legacy-1</uid></Meta></f>");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->instance_id, "legacy-1");
}

TEST(XForm, MalformedGivesLineAndColumn) {
  auto f = parse_xform("<f>\n  <a>\n  </b>\n</f>");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message.find("line 3, column"), std::string::npos) << f.error().message;
}

std::string nested(int depth) {
  std::string x = "<?xml version=\"1.0\"?><data xmlns=\"http://x\"><meta><instanceID>n</instanceID></meta>";
  for (int i = 1; i < depth; ++i) x += "<a>";
  for (int i = 1; i < depth; ++i) x += "</a>";
  return x + "</data>";
}

// payload/untrusted.hpp: what is refused before anything walks a document.
TEST(XForm, NestingIsLimitedTo256Levels) {
  EXPECT_TRUE(parse_xform(nested(256)).ok());  // the root and 255 levels under it
  auto f = parse_xform(nested(257));
  ASSERT_FALSE(f.ok());
  // The 257th level is the 256th <a>: the prolog, <data> and meta, then 255 × "<a>" before it.
  EXPECT_EQ(f.error().message, "the XML nests deeper than 256 levels at line 1, column " +
                                   std::to_string(1 + (nested(1).size() - 7) + 255 * 3) +
                                   "; no form or case needs that many");
  EXPECT_FALSE(parse_xform(nested(100000)).ok());
}

TEST(XForm, ADoctypeIsRefused) {
  auto f = parse_xform("<?xml version=\"1.0\"?>\n<!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n"
                       "<data><q>&x;</q></data>");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().message.rfind("the XML declares a DOCTYPE at line 2, column 1: entity declarations are not "
                                    "accepted", 0), 0u) << f.error().message;
}

TEST(XForm, BytesThatAreNotUtf8AreRefusedUnlessAnotherEncodingIsDeclared) {
  auto f = parse_xform("<data>\n<q>caf\xE9</q></data>");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().message.rfind("the XML is not valid UTF-8 at line 2, column 7", 0), 0u) << f.error().message;
  EXPECT_TRUE(parse_xform("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><data><q>caf\xE9</q></data>").ok());
  EXPECT_TRUE(parse_xform("<data><q>caf\xC3\xA9</q></data>").ok());
}

// HQ's FormProcessorSQL.new_xform: extract_meta_instance_id(form) or str(uuid.uuid4()).
TEST(XForm, MissingInstanceIdGetsAGeneratedOne) {
  auto f = parse_xform("<f><meta><deviceID>x</deviceID></meta></f>");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_TRUE(f->generated_id);
  EXPECT_EQ(f->instance_id.size(), 36u) << f->instance_id;
  auto g = parse_xform("<f><meta><deviceID>x</deviceID></meta></f>");
  ASSERT_TRUE(g.ok());
  EXPECT_NE(f->instance_id, g->instance_id);  // two sends without an id are two forms
  auto given = parse_xform("<f><meta><instanceID>abc</instanceID></meta></f>");
  ASSERT_TRUE(given.ok());
  EXPECT_FALSE(given->generated_id);
  EXPECT_EQ(given->instance_id, "abc");
}

TEST(XForm, EmptyInstanceIdAndEmptyBody) {
  auto blank = parse_xform("<f><meta><instanceID> </instanceID></meta></f>");
  ASSERT_TRUE(blank.ok());
  EXPECT_TRUE(blank->generated_id);
  EXPECT_FALSE(parse_xform("").ok());
  EXPECT_FALSE(parse_xform("just text").ok());
}

TEST(XForm, LocalName) {
  EXPECT_EQ(local_name("n1:meta"), "meta");
  EXPECT_EQ(local_name("meta"), "meta");
}

}  // namespace
}  // namespace repeaterd::payload

namespace repeaterd::payload {
namespace {

TEST(XForm, UserIdFromMetaAndLegacyMeta) {
  auto f = parse_xform("<f><meta><userID> u-1 </userID><instanceID>a</instanceID></meta></f>");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->user_id, "u-1");
  f = parse_xform("<f><Meta><uid>b</uid><user_id>u-2</user_id></Meta></f>");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->user_id, "u-2");
  ASSERT_TRUE(f->document);
  EXPECT_STREQ(f->document->document_element().name(), "f");
}

TEST(XForm, DeviceReportNeedsNoInstanceIdAndIsMarked) {
  const std::string report = "<device_report xmlns=\"http://code.javarosa.org/devicereport\"><device_id>1</device_id></device_report>";
  auto f = parse_xform(report);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_TRUE(f->device_report);
  EXPECT_EQ(f->instance_id.size(), 64u) << "the report's SHA-256 stands in for its id";
  EXPECT_EQ(parse_xform(report)->instance_id, f->instance_id);
  EXPECT_FALSE(parse_xform("<f><meta><instanceID>a</instanceID></meta></f>")->device_report);
}

}  // namespace
}  // namespace repeaterd::payload
