// Tests for payload/form_json: HQ's xml2json, the form API envelope HQ's form repeater sends
// (each test names the upstream HQ test or code it follows), and Kobo-style JSON submissions.
#include "payload/form_json.hpp"
#include "payload/case.hpp"
#include "payload/xform.hpp"

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
using Json = nlohmann::json;

using repeaterd::testing::read_fixture;

// Parses `xml` as repeaterd's ingest should for HQ fidelity (whitespace-only text kept when it
// is an element's only content) and converts its root element.
Json convert(const std::string& xml) {
  pugi::xml_document doc;
  const pugi::xml_parse_result r =
      doc.load_buffer(xml.data(), xml.size(), pugi::parse_default | pugi::parse_ws_pcdata_single);
  EXPECT_TRUE(r) << r.description();
  return Json::parse(xml_to_json(doc.document_element()));
}

FormJsonFields seed_fields() {
  FormJsonFields f;
  f.id = "afcb3026-c4b3-463f-85ec-0cb9a2737fc5";
  f.domain = "demo";
  f.app_id = "db9f874f0219444ee7848ddd023e292e";
  f.received_on = 1429301674046462;        // 2015-04-17T20:14:34.046462Z
  f.server_modified_on = 1429301675000000;  // 2015-04-17T20:14:35.000000Z
  return f;
}

// The whole payload, parsed back.
Json render(const std::string& xml, const FormJsonFields& fields = seed_fields()) {
  pugi::xml_document doc;
  const pugi::xml_parse_result r =
      doc.load_buffer(xml.data(), xml.size(), pugi::parse_default | pugi::parse_ws_pcdata_single);
  EXPECT_TRUE(r) << r.description();
  return Json::parse(render_form_json(doc.document_element(), fields));
}

// The "Forward Form" example from the CommCare data-forwarding docs (seed 001).
using testdata::kSeedForm;

// xml2json (dimagi/xml2json convert_xml_to_json) of the seed form: prefixes gone, @xmlns only
// where the namespace changes, attributes as "@name", leaf text as is.
TEST(XmlToJson, SeedFormMatchesXml2json) {
  const Json expected = Json::parse(R"({
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
  EXPECT_EQ(convert(kSeedForm), expected);
}

// HQ's serializer: json.dumps(sort_keys=True, ensure_ascii=False) with its default ", " / ": ".
TEST(XmlToJson, WrittenAsHqSerializerWritesIt) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string("<a><z>1</z><b>x</b><A>é</A><_>u</_></a>"));
  EXPECT_EQ(xml_to_json(doc), xml_to_json(doc.document_element()));
  // Code-point order: "A" < "_" < "b" < "z".
  EXPECT_EQ(xml_to_json(doc), R"({"A": "é", "_": "u", "b": "x", "z": "1"})");
}

// dimagi/xml2json: a repeated tag becomes a list, later occurrences appended, not necessarily
// adjacent.
TEST(XmlToJson, RepeatedSiblingsBecomeAListInDocumentOrder) {
  const Json j = convert(
      "<f><child><n>1</n></child><other>o</other><child><n>2</n></child>"
      "<child><n>3</n></child><last/></f>");
  ASSERT_TRUE(j["child"].is_array());
  ASSERT_EQ(j["child"].size(), 3U);
  EXPECT_EQ(j["child"][0]["n"], "1");
  EXPECT_EQ(j["child"][1]["n"], "2");
  EXPECT_EQ(j["child"][2]["n"], "3");
  EXPECT_EQ(j["other"], "o");
  EXPECT_EQ(j["last"], "");
}

TEST(XmlToJson, RepeatedTextSiblingsAndDuplicateCaseProperties) {
  const Json j = convert(read_fixture("casexml_bugs_duplicate_case_properties.xml"));
  // <n1:update> repeats <n1:foo /> twice: two empty strings in a list.
  const Json& update = j["case"]["update"];
  ASSERT_TRUE(update["foo"].is_array()) << update.dump();
  EXPECT_EQ(update["foo"], Json::parse(R"(["", ""])"));
}

// dimagi/xml2json convert_xml_to_json's text rules: leaf text untrimmed, empty element "",
// "#text" only beside attributes/children and only when text.strip() is not empty.
TEST(XmlToJson, ElementShapes) {
  EXPECT_EQ(convert(R"(<a x="1" y="2">t</a>)"), Json::parse(R"({"@x":"1","@y":"2","#text":"t"})"));
  EXPECT_EQ(convert(R"(<a x="1"> t </a>)"), Json::parse(R"({"@x":"1","#text":" t "})"));
  EXPECT_EQ(convert("<a x=\"1\">\n  </a>"), Json::parse(R"({"@x":"1"})"));
  EXPECT_EQ(convert("<a/>"), Json(""));
  EXPECT_EQ(convert("<a></a>"), Json(""));
  // Whitespace alone is kept as it is: HQ does not strip a leaf.
  EXPECT_EQ(convert("<a>\n\t </a>"), Json("\n\t "));
  EXPECT_EQ(convert("<a>  two  words </a>"), Json("  two  words "));
  EXPECT_EQ(convert("<a><![CDATA[<b>not an element</b>]]></a>"), Json("<b>not an element</b>"));
  // Comments are removed by HQ's parser.
  EXPECT_EQ(convert("<a><!-- c -->v</a>"), Json("v"));
}

// lxml's .text is the text before the first child; tail text is ignored.
TEST(XmlToJson, MixedContentKeepsOnlyTheUntrimmedTextBeforeTheFirstChild) {
  const Json j = convert("<a k=\"v\">\n  lead \n  <b>1</b>\n  hello\n  <c>2</c> world \n</a>");
  EXPECT_EQ(j["#text"], "\n  lead \n  ");
  EXPECT_EQ(j["b"], "1");
  EXPECT_EQ(j["c"], "2");
  EXPECT_EQ(j.size(), 4U) << j.dump();
  // Whitespace before the first child never yields "#text", whatever follows.
  EXPECT_FALSE(convert("<a>\n  <b>1</b>\n  text after\n</a>").contains("#text"));
}

// get_tag_and_xmlns: local names only; "@xmlns" where the URI differs from the parent's (an
// element without a namespace gets none); a namespaced attribute is lxml's "@{uri}local".
TEST(XmlToJson, PrefixesAndNamespaces) {
  const Json j = convert(
      R"(<p:root xmlns:p="urn:p" xmlns:q="urn:q" q:attr="a" plain="b">)"
      R"(<p:child>c</p:child><q:other xmlns:r="urn:r">d</q:other>)"
      R"(<r:own xmlns:r="urn:p">e</r:own><bare xmlns=""><p:in>f</p:in></bare></p:root>)");
  EXPECT_EQ(j, Json::parse(R"({
    "@xmlns": "urn:p", "@{urn:q}attr": "a", "@plain": "b",
    "child": "c",
    "other": {"@xmlns": "urn:q", "#text": "d"},
    "own": "e",
    "bare": {"in": {"@xmlns": "urn:p", "#text": "f"}}
  })"));
}

// couchforms test_post.py test_namespaces: the "form" of namespaces-sql.json (commit 4a68ff69),
// for posts/namespaces.xml. HQ's API form adds nothing here (no meta, no case).
TEST(FormJson, CouchformsPostNamespacesSqlJson) {
  const Json expected = Json::parse(R"({
        "#type": "form",
        "@uiVersion": "1",
        "@version": "1",
        "@xmlns": "http://commcarehq.org/test/ns",
        "empty": "no namespace here",
        "flat": {
            "#text": "flat namespace",
            "@xmlns": "http://commcarehq.org/test/flatns"
        },
        "lastempty": "nothing here either",
        "parent": {
            "@xmlns": "http://commcarehq.org/test/parent",
            "childwith": {
                "#text": "cw",
                "@xmlns": "http://commcarehq.org/test/child1"
            },
            "childwithelement": {
                "@xmlns": "http://commcarehq.org/test/child2",
                "grandchild": "gc"
            },
            "childwithout": "cwo",
            "lastchildwithout": "lcwo"
        }
    })");
  const Json j = render(read_fixture("couchforms_posts_namespaces.xml"));
  EXPECT_EQ(j["form"], expected);
  EXPECT_EQ(j["type"], "form");
  EXPECT_EQ(j["version"], "1");
  EXPECT_EQ(j["uiversion"], "1");
  EXPECT_TRUE(j["metadata"].is_null());
}

// couchforms test_post.py test_unicode: the "form" of unicode-sql.json at commit 160b2d62 (the
// version whose namespace matches the stored unicode.xml), written as raw UTF-8
// (ensure_ascii=False).
TEST(FormJson, CouchformsPostUnicodeSqlJson) {
  const Json expected = Json::parse(R"({
        "#type": "unicode",
        "@xmlns": "http://org.commcarehq/app/unicode",
        "datum": "\u7edf\u4e00\u7801"
    })");
  pugi::xml_document doc;
  const std::string xml = read_fixture("couchforms_posts_unicode.xml");
  ASSERT_TRUE(doc.load_buffer(xml.data(), xml.size()));
  const std::string out = render_form_json(doc.document_element(), seed_fields());
  EXPECT_EQ(Json::parse(out)["form"], expected);
  EXPECT_NE(out.find(R"("datum": "统一码")"), std::string::npos) << out;
  EXPECT_EQ(out.find("\\u"), std::string::npos);
}

// couchforms test_post.py test_duplicate: the "form" of duplicate-sql.json (160b2d62, whose
// namespace matches the stored duplicate.xml). The old <Meta> block is renamed as HQ's
// scrub_form_meta does (uid -> instanceID, TimeStart -> timeStart, ...), its times go through
// adjust_datetimes, dates and empty elements stay. The API's form then carries the keys HQ's
// Elasticsearch transform adds to meta (null here: no appVersion, no location).
TEST(FormJson, CouchformsPostDuplicateSqlJsonWithLegacyMeta) {
  Json expected = Json::parse(R"({
        "#type": "general",
        "@xmlns": "http://org.commcarehq/app/general",
        "meta": {
            "timeEnd": "2010-07-23T13:55:11.648000Z",
            "timeStart": "2010-07-22T13:54:27.971000Z",
            "clinic_id": "5020280",
            "instanceID": "7H46J37FGH3",
            "user_id": "f7f0c79e-8b79-11df-b7de-005056c00008",
            "username": "admin"
        },
        "assessment": {"categories": "other"},
        "case": {
            "case_type": "malaria",
            "followup_date": "",
            "followup_type": "referral",
            "outcome": "",
            "patient_id": "6713c1c211b3af6832c8ad781e310d98"
        },
        "chw_referral_id": "",
        "danger_signs": "convuls",
        "diagnosis": "malaria",
        "drugs": {"dispensed": "", "prescribed": ""},
        "encounter_date": "2010-07-22",
        "encounter_type": "new_case",
        "general_exam": "none",
        "hiv_result": "r",
        "investigations": {"categories": ""},
        "medical_history": "daibetes",
        "on_haart": "",
        "phys_exam_detail": "none",
        "resolution": "referral",
        "vitals": {"bp": "", "heart_rate": "", "height": "", "resp_rate": "", "temp": "", "weight": ""}
    })");
  expected["meta"]["commcare_version"] = nullptr;
  expected["meta"]["app_build_version"] = nullptr;
  expected["meta"]["geo_point"] = nullptr;
  const Json j = render(read_fixture("couchforms_posts_duplicate.xml"));
  EXPECT_EQ(j["form"], expected);
  // clean_metadata of that meta.
  EXPECT_EQ(j["metadata"], Json::parse(R"({
    "appVersion": null, "location": null, "commcare_version": null, "app_build_version": null,
    "geo_point": null, "clinic_id": "5020280", "instanceID": "7H46J37FGH3",
    "timeEnd": "2010-07-23T13:55:11.648000Z", "timeStart": "2010-07-22T13:54:27.971000Z",
    "user_id": "f7f0c79e-8b79-11df-b7de-005056c00008", "username": "admin"
  })"));
}

// scrub_form_meta: a legacy name gives way when today's name is already there; several meta
// blocks: the first wins.
TEST(FormJson, ScrubFormMetaKeepsCurrentNamesAndPicksTheFirstBlock) {
  const Json j = render(
      "<f><meta><uid>old</uid><instanceID>new</instanceID><chw_id>u1</chw_id><DeviceID>d</DeviceID></meta>"
      "<meta><instanceID>second</instanceID></meta></f>");
  EXPECT_EQ(j["form"]["meta"]["instanceID"], "new");
  EXPECT_EQ(j["form"]["meta"]["uid"], "old");
  EXPECT_EQ(j["form"]["meta"]["userID"], "u1");
  EXPECT_EQ(j["form"]["meta"]["deviceID"], "d");
  EXPECT_FALSE(j["form"]["meta"].contains("chw_id"));
  EXPECT_EQ(j["metadata"]["instanceID"], "new");
}

// corehq/ex-submodules/couchforms/tests/test_adjust_datetimes.py, with timezone processing on
// (spec §4: offsets are converted to UTC). Each vector is a form answer.
TEST(FormJson, AdjustDatetimesTestVectors) {
  const Json j = render(
      "<f><date>2015-04-03</date><datetime>2013-03-09T06:30:09.007</datetime>"
      "<tz>2013-03-09T06:30:09.007+03</tz><fake_datetime>2015-07-14 2015-06-07 </fake_datetime>"
      "<nested><x a=\"2013-03-09T06:30:09.007+03\">2013-03-09T06:30:09.007Z</x>"
      "<l>2013-03-09T06:30:09.007</l><l>2015-04-03</l></nested></f>");
  const Json& form = j["form"];
  EXPECT_EQ(form["date"], "2015-04-03");                             // test_date_no_change
  EXPECT_EQ(form["datetime"], "2013-03-09T06:30:09.007000Z");        // test_no_tz
  EXPECT_EQ(form["tz"], "2013-03-09T03:30:09.007000Z");              // test_strip_tz (tz on)
  EXPECT_EQ(form["fake_datetime"], "2015-07-14 2015-06-07 ");        // test_match_no_parse
  // adjust_datetimes recurses through dicts (attributes too) and lists.
  EXPECT_EQ(form["nested"]["x"]["@a"], "2013-03-09T03:30:09.007000Z");
  EXPECT_EQ(form["nested"]["x"]["#text"], "2013-03-09T06:30:09.007000Z");
  EXPECT_EQ(form["nested"]["l"], Json::parse(R"(["2013-03-09T06:30:09.007000Z", "2015-04-03"])"));
}

// corehq/apps/receiverwrapper/util.py doctests and TransformXformForESTest.
TEST(FormJson, AppVersionTextParsing) {
  auto info = parse_app_version_text("version \"2.27.2\"(414569). App v56. 2.27. Build 414569");
  EXPECT_EQ(info.commcare_version, "2.27.2");
  EXPECT_EQ(info.build_version, 56);
  info = parse_app_version_text("not an app version");
  EXPECT_EQ(info.commcare_version, std::nullopt);
  EXPECT_EQ(info.build_version, std::nullopt);
  info = parse_app_version_text(
      "CommCare ODK, version \"2.11.0\"(29272). App v65. CommCare Version 2.11. Build 29272, "
      "built on: February-14-2014");
  EXPECT_EQ(info.commcare_version, "2.11.0");
  EXPECT_EQ(info.build_version, 65);
  info = parse_app_version_text(
      "CommCare ODK, version \"2.4.1\"(10083). App v19.CommCare Version 2.4. Build 10083, built "
      "on: March-12-2013");
  EXPECT_EQ(info.commcare_version, "2.4.1");
  EXPECT_EQ(info.build_version, 19);
  EXPECT_EQ(parse_app_version_text("foofoo #102 barbar").build_version, 102);
  EXPECT_EQ(parse_app_version_text("foofoo b[99] barbar").build_version, 99);
  EXPECT_EQ(parse_app_version_text("संस्करण \"2.27.8\" (414593)").commcare_version, "2.27.8");
  // The research notes' get_app_version_info pads to three parts (not confirmed by an HQ test).
  EXPECT_EQ(parse_app_version_text("CommCare Android, \" 2.44\"(1). App v3.").commcare_version, "2.44.0");
}

// HQ's Elasticsearch transform + clean_metadata on the seed form's meta (api/form-data.html
// sample shape): appVersion becomes its text in form.meta and metadata, the versions come from
// it, times are UTC, "@xmlns" leaves metadata.
TEST(FormJson, SeedFormMetaAndMetadata) {
  const Json j = render(kSeedForm);
  const std::string app_version =
      "CommCare ODK, version \"2.19.8\"(350848). App v10. CommCare Version 2.19. Build 1000, built on: January-22-2015";
  const Json& meta = j["form"]["meta"];
  EXPECT_EQ(meta["@xmlns"], "http://openrosa.org/jr/xforms");
  EXPECT_EQ(meta["appVersion"], app_version);
  EXPECT_EQ(meta["commcare_version"], "2.19.8");
  EXPECT_EQ(meta["app_build_version"], 10);
  EXPECT_TRUE(meta["geo_point"].is_null());
  EXPECT_EQ(meta["timeStart"], "2015-04-17T20:04:42.383000Z");
  EXPECT_EQ(meta["timeEnd"], "2015-04-17T20:04:54.950000Z");
  EXPECT_EQ(j["form"]["case"]["@date_modified"], "2015-04-17T20:04:54.950000Z");
  EXPECT_EQ(j["metadata"], Json::parse(R"({
    "appVersion": )" + Json(app_version).dump() + R"(,
    "app_build_version": 10,
    "commcare_version": "2.19.8",
    "deviceID": "990005013558458",
    "geo_point": null,
    "instanceID": "afcb3026-c4b3-463f-85ec-0cb9a2737fc5",
    "location": null,
    "timeEnd": "2015-04-17T20:04:54.950000Z",
    "timeStart": "2015-04-17T20:04:42.383000Z",
    "userID": "d0e472a6b36dfd3ee5059222e12b8c1b",
    "username": "danny"
  })"));
}

// TransformXformForESTest: location '42.7 -21 0 0' gives geo_point {'lat': 42.7, 'lon': -21};
// a missing or 'not valid' location gives None. clean_metadata flattens the dict to "k:v, k:v".
TEST(FormJson, GeoPointFromLocation) {
  Json j = render("<f><meta><location>42.7 -21 0 0</location></meta></f>");
  EXPECT_EQ(j["form"]["meta"]["geo_point"], Json::parse(R"({"lat": 42.7, "lon": -21.0})"));
  EXPECT_EQ(j["metadata"]["geo_point"], "lat:42.7, lon:-21.0");
  EXPECT_EQ(j["metadata"]["location"], "42.7 -21 0 0");
  j = render("<f><meta><location>not valid</location></meta></f>");
  EXPECT_TRUE(j["form"]["meta"]["geo_point"].is_null());
  EXPECT_TRUE(j["metadata"]["geo_point"].is_null());
  j = render("<f><meta><location>91 0 0 0</location></meta></f>");  // latitude out of range
  EXPECT_TRUE(j["form"]["meta"]["geo_point"].is_null());
}

// clean_metadata (corehq/form_processor/utils/metadata.py): a date alone is midnight UTC, an
// empty or unparseable time is dropped (the ES transform set it None in form.meta), "@" keys go,
// appVersion/location reduce to text (None for attributes alone), other dicts are flattened.
TEST(FormJson, CleanMetadataRules) {
  const Json j = render(
      "<f><meta x=\"1\"><timeStart>2015-04-17</timeStart><timeEnd>not a time</timeEnd>"
      "<appVersion xmlns=\"urn:v\" a=\"b\"/><location xmlns=\"urn:l\">1 2 3 4</location>"
      "<drift y=\"1\">5</drift></meta></f>");
  const Json& meta = j["form"]["meta"];
  EXPECT_EQ(meta["timeStart"], "2015-04-17");
  EXPECT_TRUE(meta["timeEnd"].is_null());
  EXPECT_TRUE(meta["appVersion"].is_null());  // format_form_meta_for_es: .get('#text')
  EXPECT_TRUE(meta["geo_point"].is_null());   // location is a dict here
  const Json& m = j["metadata"];
  EXPECT_FALSE(m.contains("@x"));
  EXPECT_EQ(m["timeStart"], "2015-04-17T00:00:00.000000Z");
  EXPECT_FALSE(m.contains("timeEnd"));
  EXPECT_TRUE(m["appVersion"].is_null());
  EXPECT_EQ(m["location"], "1 2 3 4");
  EXPECT_EQ(m["drift"], "@y:1, #text:5");  // Python dict order: attributes, then #text

  const Json empty = render("<f><meta><timeStart/></meta></f>");
  EXPECT_FALSE(empty["metadata"].contains("timeStart"));
  EXPECT_TRUE(empty["form"]["meta"]["timeStart"].is_null());
}

// The Elasticsearch transform's case-block clean-up (corehq/pillows/xform.py,
// ElasticForm._from_dict): an empty date_modified is None, an invalid one removed; create,
// update, index, attachment that are not objects are None. Not inside device reports.
TEST(FormJson, CaseBlockCleanup) {
  const Json j = render(
      "<f><case case_id=\"c1\" date_modified=\"\"><create/><update><p>1</p></update></case>"
      "<g><case><case_id>c2</case_id><date_modified>junk</date_modified><index/></case></g>"
      "<case><no_id/><create/></case></f>");
  const Json& form = j["form"];
  ASSERT_TRUE(form["case"].is_array());
  EXPECT_TRUE(form["case"][0]["@date_modified"].is_null());
  EXPECT_TRUE(form["case"][0]["create"].is_null());
  EXPECT_EQ(form["case"][0]["update"]["p"], "1");
  EXPECT_FALSE(form["g"]["case"].contains("date_modified"));
  EXPECT_TRUE(form["g"]["case"]["index"].is_null());
  EXPECT_EQ(form["case"][1]["create"], "");  // no case id: not a case block
}

// XFormInstanceResource's fields (corehq/apps/api/resources/v0_4.py), keys sorted as tastypie's
// serializer writes them.
TEST(FormJson, EnvelopeOfTheSeedForm) {
  FormJsonFields fields = seed_fields();
  fields.attachments = {{"photo 1.jpg", "image/jpeg", 1234}, {"a/b", "text/plain", 0}};
  fields.attachment_url_base = "https://r.example.org/a/demo/receiver/attachments/" + fields.id;
  const Json j = render(kSeedForm, fields);
  std::vector<std::string> keys;
  for (const auto& item : j.items()) keys.push_back(item.key());
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "app_id", "archived", "attachments", "build_id", "domain", "edited_by_user_id",
                      "edited_on", "form", "id", "indexed_on", "initial_processing_complete",
                      "is_phone_submission", "metadata", "problem", "received_on", "resource_uri",
                      "server_modified_on", "submit_ip", "type", "uiversion", "version"}));
  EXPECT_EQ(j["app_id"], fields.app_id);
  EXPECT_EQ(j["archived"], false);
  EXPECT_EQ(j["attachments"], Json::parse(R"({
    "a/b": {"content_type": "text/plain", "length": 0,
            "url": "https://r.example.org/a/demo/receiver/attachments/afcb3026-c4b3-463f-85ec-0cb9a2737fc5/a%2Fb"},
    "photo 1.jpg": {"content_type": "image/jpeg", "length": 1234,
            "url": "https://r.example.org/a/demo/receiver/attachments/afcb3026-c4b3-463f-85ec-0cb9a2737fc5/photo%201.jpg"}
  })"));
  EXPECT_TRUE(j["build_id"].is_null());
  EXPECT_EQ(j["domain"], "demo");
  EXPECT_TRUE(j["edited_by_user_id"].is_null());
  EXPECT_TRUE(j["edited_on"].is_null());
  EXPECT_EQ(j["form"]["#type"], "data");
  EXPECT_EQ(j["form"]["question1"], "Trees");
  EXPECT_EQ(j["id"], fields.id);
  EXPECT_EQ(j["indexed_on"], "2015-04-17T20:14:34.046462Z");
  EXPECT_EQ(j["initial_processing_complete"], true);
  EXPECT_EQ(j["is_phone_submission"], false);
  EXPECT_TRUE(j["problem"].is_null());
  EXPECT_EQ(j["received_on"], "2015-04-17T20:14:34.046462Z");
  EXPECT_EQ(j["resource_uri"], "");
  EXPECT_EQ(j["server_modified_on"], "2015-04-17T20:14:35.000000Z");
  EXPECT_TRUE(j["submit_ip"].is_null());
  EXPECT_EQ(j["type"], "data");
  EXPECT_EQ(j["uiversion"], "1");
  EXPECT_EQ(j["version"], "10");
}

// dehydrate_edited_by_user_id: the editor only for an edited form; blank ids are null; no URL
// base, no "url".
TEST(FormJson, EditedFormAndOptionalFields) {
  FormJsonFields fields = seed_fields();
  fields.edited_by_user_id = "editor";
  fields.build_id = "b1";
  fields.submit_ip = "10.0.0.1";
  fields.is_phone_submission = true;
  fields.attachments = {{"x.png", "image/png", 7}};
  Json j = render("<data><q>1</q></data>", fields);
  EXPECT_TRUE(j["edited_by_user_id"].is_null());  // not an edit
  EXPECT_EQ(j["build_id"], "b1");
  EXPECT_EQ(j["submit_ip"], "10.0.0.1");
  EXPECT_EQ(j["is_phone_submission"], true);
  EXPECT_EQ(j["attachments"], Json::parse(R"({"x.png": {"content_type": "image/png", "length": 7}})"));
  EXPECT_EQ(j["version"], "");
  EXPECT_EQ(j["uiversion"], "");
  fields.edited_on = 1429301700000000;
  fields.app_id.clear();
  j = render("<data><q>1</q></data>", fields);
  EXPECT_EQ(j["edited_by_user_id"], "editor");
  EXPECT_EQ(j["edited_on"], "2015-04-17T20:15:00.000000Z");
  EXPECT_TRUE(j["app_id"].is_null());
}

// tastypie's Serializer.to_json: sort_keys=True at every level, ", " and ": " separators.
TEST(FormJson, WrittenWithSortedKeysAndPythonSeparators) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(kSeedForm));
  const std::string out = render_form_json(doc.document_element(), seed_fields());
  EXPECT_TRUE(out.starts_with(R"({"app_id": "db9f874f0219444ee7848ddd023e292e", "archived": false, )")) << out;
  EXPECT_NE(out.find(R"("form": {"#type": "data", "@name": "Untitled Form", "@uiVersion": "1", "@version": "10", )"),
            std::string::npos)
      << out;
  EXPECT_TRUE(out.ends_with(R"("type": "data", "uiversion": "1", "version": "10"})")) << out;
}

TEST(XmlToJson, NumericCharacterReferencesAreDecoded) {
  const Json j = convert(read_fixture("casexml_ordering_create_oo.xml"));
  // name="&#2858;&#2846;&#2893;&#2844;&#2880;&#2837;&#2864;&#2851;" (Odia script).
  EXPECT_EQ(j["@name"], "ପଞ୍ଜୀକରଣ");
  EXPECT_EQ(convert("<a>&#x41;&#66;&amp;&lt;</a>"), Json("AB&<"));
}

TEST(XmlToJson, JsonSpecialCharactersAreEscaped) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string("<a>quote \" back \\ tab&#9;nl&#10;</a>"));
  EXPECT_EQ(xml_to_json(doc.document_element()), R"("quote \" back \\ tab\tnl\n")");
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

// payload/untrusted.hpp: JSON nested past 256 levels or not UTF-8 is refused before it is parsed;
// form XML nested to the limit converts to JSON (the conversion recurses) without trouble.
TEST(FormJson, NestingAndEncodingLimits) {
  const auto deep = [](int depth) {
    return R"({"meta": {"instanceID": "d"}, "q": )" + std::string(static_cast<std::size_t>(depth - 1), '[') +
           std::string(static_cast<std::size_t>(depth - 1), ']') + "}";
  };
  EXPECT_TRUE(parse_json_submission(deep(256)).ok());
  auto r = parse_json_submission(deep(257));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the JSON nests deeper than 256 levels at line 1, column 291; no form or case needs that many");
  // Brackets inside strings (escaped quotes too) are text, not nesting.
  EXPECT_TRUE(parse_json_submission(R"({"meta": {"instanceID": "d"}, "q": "[[[\"[[[[{{{{"})").ok());
  r = parse_json_submission("{\"meta\": {\"instanceID\": \"d\xFF\"}}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the JSON is not valid UTF-8 at line 1, column 27 (JSON is UTF-8: RFC 8259 section 8.1)");
  EXPECT_FALSE(parse_case_json(std::string(300, '[') + std::string(300, ']')).ok());

  std::string xml = "<data xmlns=\"http://x\">";
  for (int i = 1; i < 256; ++i) xml += "<a>";
  xml += "v";
  for (int i = 1; i < 256; ++i) xml += "</a>";
  xml += "</data>";
  auto form = parse_xform(xml);
  ASSERT_TRUE(form.ok()) << form.error().message;
  const std::string out = render_form_json(form->document->document_element(), seed_fields());
  EXPECT_NE(out.find(R"({"a": "v"})"), std::string::npos);
}

// Found by fuzzing (tests/fuzz/regressions/json_submission, case_json): nlohmann throws a number
// past a double's range as out_of_range, which escaped both parsers (a 500 for a bad request).
TEST(FormJson, NumberPastDoubleRangeIsAnErrorNotAnException) {
  auto r = parse_json_submission("{\"meta\": {\"instanceID\": \"d\"},\n \"q\": 1e308308}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the JSON has a number too large for a double (about 1.8e308 at most) at line 2, column 7");
  auto c = parse_case_json(R"([{"case_id": "c1", "properties": {"n": -)" + std::string(400, '9') + "}}]");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message, "the JSON has a number too large for a double (about 1.8e308 at most) at line 1, column 40");
  // The largest double, a long integer that is still one, and numbers in strings are fine.
  EXPECT_TRUE(parse_json_submission(R"({"_uuid": "u", "a": 1.7976931348623157e308, "b": 123456789012345678901234567890})").ok());
  EXPECT_TRUE(parse_json_submission(R"({"_uuid": "u", "a": "1e999", "b": 1e-999})").ok());
}

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
