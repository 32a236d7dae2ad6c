// Tests for payload/form_json: CommCare's XML-to-JSON convention, the JSON envelopes that
// repeaterd forwards, and Kobo-style JSON submissions.
#include "payload/form_json.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fixtures.hpp"
#include "seed_form.hpp"
#include <nlohmann/json.hpp>
#include <pugixml.hpp>

namespace repeaterd::payload {
namespace {

namespace fs = std::filesystem;
using OrderedJson = nlohmann::ordered_json;

using repeaterd::testing::read_fixture;

// Parses `xml` and converts its root element; the document must outlive nothing here because
// xml_to_json() returns a string.
OrderedJson convert(const std::string& xml) {
  pugi::xml_document doc;
  const pugi::xml_parse_result r = doc.load_buffer(xml.data(), xml.size());
  EXPECT_TRUE(r) << r.description();
  return OrderedJson::parse(xml_to_json(doc.document_element()));
}

std::vector<std::string> keys_of(const OrderedJson& j) {
  std::vector<std::string> keys;
  for (const auto& item : j.items()) keys.push_back(item.key());
  return keys;
}

// The "Forward Form" example from the CommCare data-forwarding docs (seed 001).
using testdata::kSeedForm;

TEST(XmlToJson, SeedFormMatchesCommCareConvention) {
  const OrderedJson expected = OrderedJson::parse(R"({
    "@uiVersion": "1",
    "@version": "10",
    "@name": "Untitled Form",
    "@xmlns": "http://openrosa.org/formdesigner/B9C4EB51-A7CC-49B5-B7D5-10E9F10B450B",
    "question1": "Trees",
    "case": {
      "@case_id": "b0916685-7247-4c44-b712-633d3d64e0c0",
      "@date_modified": "2015-04-17T16:04:54.950-04",
      "@user_id": "d0e472a6b36dfd3ee5059222e12b8c1b",
      "@xmlns": "http://commcarehq.org/case/transaction/v2",
      "create": {
        "case_name": "Trees",
        "owner_id": "d0e472a6b36dfd3ee5059222e12b8c1b",
        "case_type": "mscase"
      }
    },
    "meta": {
      "@xmlns": "http://openrosa.org/jr/xforms",
      "deviceID": "990005013558458",
      "timeStart": "2015-04-17T16:04:42.383-04",
      "timeEnd": "2015-04-17T16:04:54.950-04",
      "username": "danny",
      "userID": "d0e472a6b36dfd3ee5059222e12b8c1b",
      "instanceID": "afcb3026-c4b3-463f-85ec-0cb9a2737fc5",
      "appVersion": {
        "@xmlns": "http://commcarehq.org/xforms",
        "#text": "CommCare ODK, version \"2.19.8\"(350848). App v10. CommCare Version 2.19. Build 1000, built on: January-22-2015"
      }
    }
  })");
  const OrderedJson actual = convert(kSeedForm);
  // Comparing dumps checks key order as well as content.
  EXPECT_EQ(actual.dump(2), expected.dump(2));
}

TEST(XmlToJson, AcceptsTheDocumentNodeAsWellAsTheRoot) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string("<a><b>x</b></a>"));
  EXPECT_EQ(xml_to_json(doc), xml_to_json(doc.document_element()));
  EXPECT_EQ(xml_to_json(doc), R"({"b":"x"})");
}

TEST(XmlToJson, RepeatedSiblingsBecomeAnArrayAtTheFirstPosition) {
  const OrderedJson j = convert(
      "<f><child><n>1</n></child><other>o</other><child><n>2</n></child>"
      "<child><n>3</n></child><last/></f>");
  EXPECT_EQ(keys_of(j), (std::vector<std::string>{"child", "other", "last"}));
  ASSERT_TRUE(j["child"].is_array());
  ASSERT_EQ(j["child"].size(), 3U);
  EXPECT_EQ(j["child"][0]["n"], "1");
  EXPECT_EQ(j["child"][1]["n"], "2");
  EXPECT_EQ(j["child"][2]["n"], "3");
  EXPECT_EQ(j["last"], "");
}

TEST(XmlToJson, RepeatedTextSiblingsAndDuplicateCaseProperties) {
  const OrderedJson j = convert(read_fixture("casexml_bugs_duplicate_case_properties.xml"));
  // <n1:update> repeats <n1:foo /> twice: two empty strings in an array.
  const OrderedJson& update = j["case"]["update"];
  ASSERT_TRUE(update["foo"].is_array()) << update.dump();
  EXPECT_EQ(update["foo"], OrderedJson::parse(R"(["", ""])"));
}

TEST(XmlToJson, ElementShapes) {
  // Attributes and only text.
  EXPECT_EQ(convert(R"(<a x="1" y="2">t</a>)").dump(), R"({"@x":"1","@y":"2","#text":"t"})");
  // Attributes and no text (whitespace alone is layout).
  EXPECT_EQ(convert("<a x=\"1\">\n  </a>").dump(), R"({"@x":"1"})");
  // Empty and whitespace-only elements.
  EXPECT_EQ(convert("<a/>").dump(), R"("")");
  EXPECT_EQ(convert("<a>\n\t </a>").dump(), R"("")");
  // Text-only content is kept exactly, inner whitespace and all.
  EXPECT_EQ(convert("<a>  two  words </a>").dump(), R"("  two  words ")");
  // CDATA is text.
  EXPECT_EQ(convert("<a><![CDATA[<b>not an element</b>]]></a>").dump(),
            R"("<b>not an element</b>")");
  // Comments and processing instructions are not data.
  EXPECT_EQ(convert("<a><!-- c --><?pi x?>v</a>").dump(), R"("v")");
}

TEST(XmlToJson, MixedContentConcatenatesTrimmedTextAtItsFirstPosition) {
  const OrderedJson j = convert("<a k=\"v\">\n  <b>1</b>\n  hello\n  <c>2</c> world \n</a>");
  EXPECT_EQ(keys_of(j), (std::vector<std::string>{"@k", "b", "#text", "c"}));
  EXPECT_EQ(j["#text"], "helloworld");

  const OrderedJson first = convert("<a>lead<b>1</b></a>");
  EXPECT_EQ(keys_of(first), (std::vector<std::string>{"#text", "b"}));
  EXPECT_EQ(first["#text"], "lead");

  // Whitespace between children never yields "#text".
  EXPECT_FALSE(convert("<a>\n  <b>1</b>\n  <c>2</c>\n</a>").contains("#text"));
}

TEST(XmlToJson, PrefixesAndNamespaceDeclarations) {
  const OrderedJson j = convert(
      R"(<p:root xmlns:p="urn:p" xmlns:q="urn:q" q:attr="a" plain="b">)"
      R"(<p:child>c</p:child><q:other xmlns:r="urn:r">d</q:other>)"
      R"(<r:own xmlns:r="urn:r" xmlns:s="urn:s">e</r:own></p:root>)");
  // Prefixes go from element and attribute names; xmlns:q and xmlns:r are not data; only the
  // element's own namespace appears, as "@xmlns" at the place it was declared.
  EXPECT_EQ(j.dump(),
            R"({"@xmlns":"urn:p","@attr":"a","@plain":"b","child":"c","other":"d",)"
            R"("own":{"@xmlns":"urn:r","#text":"e"}})");
}

TEST(XmlToJson, CouchformsNamespacesFixture) {
  const OrderedJson j = convert(read_fixture("couchforms_posts_namespaces.xml"));
  const OrderedJson expected = OrderedJson::parse(R"({
    "@version": "1",
    "@uiVersion": "1",
    "@xmlns": "http://commcarehq.org/test/ns",
    "empty": "no namespace here",
    "flat": {"@xmlns": "http://commcarehq.org/test/flatns", "#text": "flat namespace"},
    "parent": {
      "@xmlns": "http://commcarehq.org/test/parent",
      "childwithout": "cwo",
      "childwith": {"@xmlns": "http://commcarehq.org/test/child1", "#text": "cw"},
      "childwithelement": {
        "@xmlns": "http://commcarehq.org/test/child2",
        "grandchild": "gc"
      },
      "lastchildwithout": "lcwo"
    },
    "lastempty": "nothing here either"
  })");
  EXPECT_EQ(j.dump(2), expected.dump(2));
}

TEST(XmlToJson, CouchformsUnicodeFixtureKeepsUtf8) {
  pugi::xml_document doc;
  const std::string xml = read_fixture("couchforms_posts_unicode.xml");
  ASSERT_TRUE(doc.load_buffer(xml.data(), xml.size()));
  const std::string json = xml_to_json(doc.document_element());
  // Raw UTF-8, not \u escapes: receivers compare strings byte for byte.
  EXPECT_EQ(json, "{\"@xmlns\":\"http://org.commcarehq/app/unicode\",\"datum\":\"统一码\"}");
  EXPECT_EQ(json.find("\\u"), std::string::npos);
}

TEST(XmlToJson, NumericCharacterReferencesAreDecoded) {
  const OrderedJson j = convert(read_fixture("casexml_ordering_create_oo.xml"));
  // name="&#2858;&#2846;&#2893;&#2844;&#2880;&#2837;&#2864;&#2851;" (Odia script).
  EXPECT_EQ(j["@name"], "ପଞ୍ଜୀକରଣ");
  EXPECT_EQ(convert("<a>&#x41;&#66;&amp;&lt;</a>").dump(), R"("AB&<")");
}

TEST(XmlToJson, JsonSpecialCharactersAreEscaped) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string("<a>quote \" back \\ tab&#9;nl&#10;</a>"));
  EXPECT_EQ(xml_to_json(doc.document_element()), R"("quote \" back \\ tab\tnl\n")");
}

TEST(RenderFormJson, EnvelopeKeysInOrder) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(kSeedForm));
  const FormJsonFields fields{"afcb3026-c4b3-463f-85ec-0cb9a2737fc5", "demo",
                              "db9f874f0219444ee7848ddd023e292e",
                              "http://openrosa.org/formdesigner/B9C4EB51-A7CC-49B5-B7D5-10E9F10B450B",
                              "2015-04-17T20:14:34.046462Z"};
  const OrderedJson j = OrderedJson::parse(render_form_json(doc.document_element(), fields));
  EXPECT_EQ(keys_of(j), (std::vector<std::string>{"id", "domain", "app_id", "xmlns",
                                                  "received_on", "form"}));
  EXPECT_EQ(j["id"], fields.id);
  EXPECT_EQ(j["domain"], "demo");
  EXPECT_EQ(j["app_id"], fields.app_id);
  EXPECT_EQ(j["xmlns"], fields.xmlns);
  EXPECT_EQ(j["received_on"], "2015-04-17T20:14:34.046462Z");
  EXPECT_EQ(j["form"], convert(kSeedForm));
  EXPECT_EQ(j["form"]["meta"]["instanceID"], fields.id);
}

// The Kobo REST service "JSON Post" sample (seed 002).
constexpr const char* kKoboSample = R"({
  "meta/instanceID": "uuid:19d72997-8316-4e02-8016-4a8ddf6a2aa4",
  "group1/name": "twenty",
  "group1/age": "19",
  "formhub/uuid": "6f5773a110b046cb97e3d71f6c04e7a6",
  "first_q": "hello",
  "final_q": "why not?",
  "_xform_id_string": "groups",
  "_uuid": "19d72997-8316-4e02-8016-4a8ddf6a2aa4",
  "_userform_id": "taylordowns2000_groups",
  "_tags": [],
  "_submitted_by": null,
  "_submission_time": "2016-04-22T06:38:20",
  "_status": "submitted_via_web",
  "_notes": [],
  "_id": 889409,
  "_geolocation": [null, null],
  "_bamboo_dataset_id": "",
  "_attachments": []
})";

TEST(ParseJsonSubmission, KoboSample) {
  const auto r = parse_json_submission(kKoboSample);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->instance_id, "uuid:19d72997-8316-4e02-8016-4a8ddf6a2aa4");
  EXPECT_EQ(r->xmlns, "groups");
}

TEST(ParseJsonSubmission, IdSourcesInOrder) {
  auto r = parse_json_submission(
      R"({"_uuid": "u", "meta": {"instanceID": "nested"}, "meta/instanceID": "flat"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->instance_id, "flat");

  r = parse_json_submission(R"({"_uuid": "u", "meta": {"instanceID": "nested"}})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->instance_id, "nested");
  EXPECT_EQ(r->xmlns, "");

  r = parse_json_submission(R"({"_uuid": "u", "meta": {"deviceID": "d"}})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->instance_id, "u");

  // An empty or non-string value is not an id; the next place is tried.
  r = parse_json_submission(R"({"meta/instanceID": "", "meta": {"instanceID": 7}, "_uuid": "u"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->instance_id, "u");
}

TEST(ParseJsonSubmission, NoIdNamesThePlacesLooked) {
  const auto r = parse_json_submission(R"({"q": 1, "_xform_id_string": "groups"})");
  ASSERT_FALSE(r.ok());
  const std::string& m = r.error().message;
  EXPECT_NE(m.find("meta/instanceID"), std::string::npos) << m;
  EXPECT_NE(m.find("\"instanceID\""), std::string::npos) << m;
  EXPECT_NE(m.find("_uuid"), std::string::npos) << m;
}

TEST(ParseJsonSubmission, NotAnObject) {
  for (const char* body : {"[1, 2]", "\"text\"", "42", "null"}) {
    const auto r = parse_json_submission(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_NE(r.error().message.find("must be an object"), std::string::npos)
        << r.error().message;
  }
}

TEST(ParseJsonSubmission, InvalidJsonGivesLineAndColumn) {
  auto r = parse_json_submission("{\n  \"a\": 1,\n  \"b\": tru\n}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("line 3, column"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find("[json.exception"), std::string::npos) << r.error().message;

  r = parse_json_submission("{\"a\": }");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("line 1, column 7"), std::string::npos) << r.error().message;

  r = parse_json_submission("");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("line 1, column 1"), std::string::npos) << r.error().message;

  // Truncated: the error is at the end of the input.
  r = parse_json_submission("{\"a\": 1,\n\"b\"");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("line 2, column 4"), std::string::npos) << r.error().message;
}

TEST(ApplyTemplate, SeedWrapper) {
  const std::string submission = R"({"_uuid":"19d72997-8316-4e02-8016-4a8ddf6a2aa4"})";
  EXPECT_EQ(apply_template(R"({"form":"my_form", "body": %SUBMISSION%})", submission),
            R"({"form":"my_form", "body": {"_uuid":"19d72997-8316-4e02-8016-4a8ddf6a2aa4"}})");
}

TEST(ApplyTemplate, EveryOccurrenceAndNone) {
  EXPECT_EQ(apply_template("%SUBMISSION%,%SUBMISSION%%SUBMISSION%", "x"), "x,xx");
  EXPECT_EQ(apply_template("no placeholder", "x"), "no placeholder");
  EXPECT_EQ(apply_template("%SUBMISSION", "x"), "%SUBMISSION");
  // The payload is inserted verbatim, never rescanned.
  EXPECT_EQ(apply_template("[%SUBMISSION%]", "%SUBMISSION%"), "[%SUBMISSION%]");
  EXPECT_EQ(apply_template("", "x"), "");
}

TEST(RenderFormStub, SeedGolden) {
  EXPECT_EQ(render_form_stub("2015-04-17T20:14:34.046462Z", "afcb3026-c4b3-463f-85ec-0cb9a2737fc5",
                             {"b0916685-7247-4c44-b712-633d3d64e0c0"}),
            R"({"received_on":"2015-04-17T20:14:34.046462Z",)"
            R"("form_id":"afcb3026-c4b3-463f-85ec-0cb9a2737fc5",)"
            R"("case_ids":["b0916685-7247-4c44-b712-633d3d64e0c0"]})");
}

TEST(RenderFormStub, NoCasesIsAnEmptyArray) {
  EXPECT_EQ(render_form_stub("2015-04-17T20:14:34.046462Z", "f", {}),
            R"({"received_on":"2015-04-17T20:14:34.046462Z","form_id":"f","case_ids":[]})");
}

}  // namespace
}  // namespace repeaterd::payload
