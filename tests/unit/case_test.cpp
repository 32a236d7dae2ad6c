// The case model against the seed's example and CommCare HQ's own test forms.
#include "payload/case.hpp"

#include <gtest/gtest.h>

#include "fixtures.hpp"
#include "seed_form.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <set>
#include <sstream>

namespace repeaterd::payload {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// 2015-04-17T20:14:34.139959Z, the seed's Server-Modified-On.
constexpr Micros kSeedNow = 1429301674139959;
constexpr Micros kHour = 3600LL * 1000 * 1000;

using repeaterd::testing::fixtures_dir;
using repeaterd::testing::read_fixture;

Result<std::vector<CaseBlock>> blocks_of(const std::string& xml) {
  pugi::xml_document doc;
  const pugi::xml_parse_result parsed = doc.load_buffer(xml.data(), xml.size());
  if (!parsed) return make_error(std::string("test XML does not parse: ") + parsed.description());
  return find_case_blocks(doc, xml);
}

// The case store as the daemon keeps it: each case's state and its forms, updated only by
// accepted submissions (ingest/case_store.cpp does the same against SQLite).
struct Store : CaseSource {
  std::map<std::string, CaseState> cases;
  std::map<std::string, std::vector<CaseForm>> forms_of;
  std::map<std::string, CaseState> bases;
  std::string domain = "demo";

  std::optional<CaseState> current(const std::string& id) override {
    auto it = cases.find(id);
    return it == cases.end() ? std::nullopt : std::optional<CaseState>(it->second);
  }
  std::optional<CaseState> base(const std::string& id) override {
    auto it = bases.find(id);
    return it == bases.end() ? std::nullopt : std::optional<CaseState>(it->second);
  }
  std::vector<CaseForm> forms(const std::string& id) override {
    auto it = forms_of.find(id);
    return it == forms_of.end() ? std::vector<CaseForm>{} : it->second;
  }

  Result<std::vector<CaseState>> submit_blocks(const std::vector<CaseBlock>& blocks, const std::string& form_id,
                                               Micros now, const std::string& form_user = "", bool edit = false) {
    CaseSubmission sub{domain, form_id, form_user, now, blocks, edit, {}};
    if (edit) {
      for (const auto& [id, list] : forms_of) {
        if (std::any_of(list.begin(), list.end(), [&](const CaseForm& f) { return f.form_id == form_id; })) {
          sub.also_rebuild.push_back(id);
        }
      }
    }
    auto changes = process_case_blocks(sub, *this);
    if (!changes) return changes.error();
    if (edit) {
      for (auto& [id, list] : forms_of) std::erase_if(list, [&](const CaseForm& f) { return f.form_id == form_id; });
    }
    std::vector<CaseState> out;
    for (const CaseChange& c : *changes) {
      if (!c.form.blocks.empty()) forms_of[c.state.case_id].push_back(c.form);
      CaseState state = c.state;
      state.xform_ids.clear();
      for (const auto& f : forms_of[c.state.case_id]) state.xform_ids.push_back(f.form_id);
      cases[state.case_id] = state;
      out.push_back(state);
    }
    return out;
  }

  Result<std::vector<CaseState>> submit(const std::string& xml, const std::string& form_id, Micros now,
                                        const std::string& form_user = "", bool edit = false) {
    auto blocks = blocks_of(xml);
    if (!blocks) return blocks.error();
    return submit_blocks(*blocks, form_id, now, form_user, edit);
  }

  const CaseState& at(const std::string& id) const { return cases.at(id); }
};

// Compares two XML texts as trees: pugixml drops whitespace-only text by default, so a raw
// re-serialisation of each is whitespace-insensitive between elements.
std::string canonical_xml(const std::string& xml) {
  pugi::xml_document doc;
  EXPECT_TRUE(doc.load_string(xml.c_str())) << xml;
  std::ostringstream out;
  doc.save(out, "", pugi::format_raw | pugi::format_no_declaration);
  return out.str();
}

// A case that exists before the submission, as the store would return it.
CaseState existing_case(const std::string& id, const std::string& type, const std::string& name = "") {
  CaseState c;
  c.case_id = id;
  c.domain = "demo";
  c.case_type = type;
  c.case_name = name;
  return c;
}

std::vector<std::string> ids_of(const std::vector<CaseState>& states) {
  std::vector<std::string> ids;
  for (const auto& c : states) ids.push_back(c.case_id);
  return ids;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// The seed: "Forward Form" has the form, "Forward Cases" what is forwarded for its case.

using testdata::kSeedForm;

// The seed's case XML as HQ sends it today: the phone's 16:04:54.950-04 in UTC (the 2015 page
// kept the wall-clock digits), and <update><date_opened> as a date (V2CaseXMLGenerator).
const char* const kSeedCaseXml = R"(
<case case_id="b0916685-7247-4c44-b712-633d3d64e0c0"
    date_modified="2015-04-17T20:04:54.950000Z"
    user_id="d0e472a6b36dfd3ee5059222e12b8c1b"
    xmlns="http://commcarehq.org/case/transaction/v2">
  <create>
    <case_type>mscase</case_type>
    <case_name>Trees</case_name>
    <owner_id>d0e472a6b36dfd3ee5059222e12b8c1b</owner_id>
  </create>
  <update>
    <date_opened>2015-04-17</date_opened>
  </update>
</case>)";

constexpr const char* kSeedFormId = "afcb3026-c4b3-463f-85ec-0cb9a2737fc5";
constexpr const char* kSeedCaseId = "b0916685-7247-4c44-b712-633d3d64e0c0";

CaseState seed_case() {
  Store store;
  auto r = store.submit(kSeedForm, kSeedFormId, kSeedNow);
  EXPECT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->size(), 1u);
  return store.at(kSeedCaseId);
}

TEST(CaseSeed, FormHasOneBlock) {
  auto blocks = blocks_of(kSeedForm);
  ASSERT_TRUE(blocks.ok()) << blocks.error().message;
  ASSERT_EQ(blocks->size(), 1u);
  const CaseBlock& b = blocks->front();
  EXPECT_EQ(b.case_id, kSeedCaseId);
  EXPECT_EQ(b.user_id, "d0e472a6b36dfd3ee5059222e12b8c1b");
  EXPECT_EQ(b.date_modified, "2015-04-17T16:04:54.950-04");
  EXPECT_FALSE(b.v1);
  EXPECT_TRUE(b.has_create);
  EXPECT_EQ(b.create_case_type, "mscase");
  EXPECT_EQ(b.create_case_name, "Trees");
  EXPECT_EQ(b.create_owner_id, "d0e472a6b36dfd3ee5059222e12b8c1b");
  EXPECT_FALSE(b.create_external_id.has_value());
  EXPECT_TRUE(b.update.empty());
  EXPECT_FALSE(b.has_close);
  EXPECT_EQ(b.where, "case block 1 (case_id \"b0916685-7247-4c44-b712-633d3d64e0c0\", line 8)");
}

TEST(CaseSeed, StateAfterTheForm) {
  const CaseState c = seed_case();
  EXPECT_EQ(c.domain, "demo");
  EXPECT_EQ(c.case_type, "mscase");
  EXPECT_EQ(c.case_name, "Trees");
  EXPECT_EQ(c.owner_id, "d0e472a6b36dfd3ee5059222e12b8c1b");
  EXPECT_EQ(c.user_id, "d0e472a6b36dfd3ee5059222e12b8c1b");
  EXPECT_EQ(c.date_modified, "2015-04-17T20:04:54.950000Z");
  EXPECT_EQ(c.date_opened, "2015-04-17T20:04:54.950000Z");
  EXPECT_EQ(c.server_opened_on, kSeedNow);
  EXPECT_EQ(c.server_modified_on, kSeedNow);
  EXPECT_FALSE(c.closed);
  EXPECT_FALSE(c.date_closed.has_value());
  EXPECT_TRUE(c.properties.empty());
  EXPECT_TRUE(c.indices.empty());
  EXPECT_EQ(c.xform_ids, std::vector<std::string>{kSeedFormId});
}

TEST(CaseSeed, GoldenXml) {
  const std::string xml = render_case_xml(seed_case());
  EXPECT_EQ(canonical_xml(xml), canonical_xml(kSeedCaseXml)) << xml;
  EXPECT_FALSE(contains(xml, "<?xml")) << xml;
}

TEST(CaseSeed, GoldenJson) {
  const std::string text = render_case_json(seed_case());
  // The seed's example with this submission's values: its trailing comma removed, date_opened
  // from the block's date_modified, times in UTC, server dates from `now`, the form's id; plus
  // what HQ's CommCareCaseAPISerializer adds today: attachments, and external_id null when unset.
  const json expected = json::parse(R"({ "attachments" : {},
      "case_id" : "b0916685-7247-4c44-b712-633d3d64e0c0",
      "closed" : false,
      "date_closed" : null,
      "date_modified" : "2015-04-17T20:04:54.950000Z",
      "domain" : "demo",
      "indices" : {  },
      "properties" : {
          "case_name" : "Trees",
          "case_type" : "mscase",
          "date_opened" : "2015-04-17T20:04:54.950000Z",
          "external_id" : null,
          "owner_id" : "d0e472a6b36dfd3ee5059222e12b8c1b"
        },
      "server_date_modified" : "2015-04-17T20:14:34.139959Z",
      "server_date_opened" : "2015-04-17T20:14:34.139959Z",
      "user_id" : "d0e472a6b36dfd3ee5059222e12b8c1b",
      "version" : "2.0",
      "xform_ids" : [ "afcb3026-c4b3-463f-85ec-0cb9a2737fc5" ]
    })");
  EXPECT_EQ(json::parse(text), expected) << text;
  EXPECT_EQ(text, expected.dump());  // the seed's key order (alphabetical), compact
}

// ---------------------------------------------------------------------------------------------
// Every fixture: how many case blocks it holds.

TEST(CaseFixtures, EveryFileHasTheExpectedBlocks) {
  const std::map<std::string, std::size_t> expected = {
      {"casexml_bugs_duplicate_case_properties.xml", 1},
      {"casexml_bugs_lots_of_subcases.xml", 11},
      {"casexml_bugs_multiple_case_blocks.xml", 2},
      {"casexml_close.xml", 1},
      {"casexml_create.xml", 1},
      {"casexml_create_update.xml", 1},
      {"casexml_exclusion_nested_device_report.xml", 1},
      {"casexml_multicase_case_in_repeats.xml", 3},
      {"casexml_multicase_mixed_cases.xml", 4},
      {"casexml_multicase_parallel_cases.xml", 4},
      {"casexml_ordering_create_oo.xml", 1},
      {"casexml_ordering_update_oo.xml", 1},
      {"casexml_update.xml", 1},
      {"casexml_v2_basic_close.xml", 1},
      {"casexml_v2_basic_create.xml", 1},
      {"casexml_v2_basic_noop.xml", 1},
      {"casexml_v2_basic_update.xml", 1},
      {"casexml_v2_index_update.xml", 1},
      {"casexml_v2_named_namespace.xml", 1},
      {"couchforms_deprecation_edit.xml", 0},
      {"couchforms_deprecation_original.xml", 0},
      {"couchforms_devicelogs_devicelog.xml", 0},
      {"couchforms_posts_duplicate.xml", 0},
      {"couchforms_posts_namespaces.xml", 0},
      {"couchforms_posts_unicode.xml", 0},
  };
  ASSERT_TRUE(fs::is_directory(fixtures_dir())) << fixtures_dir();
  std::set<std::string> seen;
  for (const auto& entry : fs::directory_iterator(fixtures_dir())) {
    if (entry.path().extension() != ".xml") continue;
    const std::string name = entry.path().filename().string();
    seen.insert(name);
    auto it = expected.find(name);
    ASSERT_NE(it, expected.end()) << "new fixture without an expectation: " << name;
    auto blocks = blocks_of(read_fixture(name, {{"REPLACE_UID", "uid"}, {"REPLACE_CASEID", "cid"}}));
    ASSERT_TRUE(blocks.ok()) << name << ": " << blocks.error().message;
    EXPECT_EQ(blocks->size(), it->second) << name;
  }
  EXPECT_EQ(seen.size(), expected.size());
}

// ---------------------------------------------------------------------------------------------
// create.xml -> update.xml -> close.xml, one case id, a new form id each time.

struct Placeholders {
  std::string case_id = "4c2b1e0d8a9f4f4e9a3b2c1d0e9f8a7b";
  std::map<std::string, std::string> for_form(const std::string& uid) const {
    return {{"REPLACE_UID", uid}, {"REPLACE_CASEID", case_id}};
  }
};

TEST(CaseFixtures, CreateUpdateClose) {
  Placeholders p;
  Store store;
  auto created = store.submit(read_fixture("casexml_create.xml", p.for_form("form-1")), "form-1", kSeedNow);
  ASSERT_TRUE(created.ok()) << created.error().message;
  ASSERT_EQ(ids_of(*created), std::vector<std::string>{p.case_id});
  {
    const CaseState& c = store.at(p.case_id);
    EXPECT_EQ(c.domain, "demo");
    EXPECT_EQ(c.case_type, "test_case_type");
    EXPECT_EQ(c.case_name, "test case name");
    EXPECT_EQ(c.external_id, "someexternal");
    EXPECT_EQ(c.owner_id, "someuser");  // HQ: owner_id defaults to the user_id
    EXPECT_EQ(c.user_id, "someuser");
    EXPECT_EQ(c.date_modified, "2010-06-29T13:42:50.000000Z");
    EXPECT_EQ(c.date_opened, "2010-06-29T13:42:50.000000Z");
    EXPECT_EQ(c.server_opened_on, kSeedNow);
    EXPECT_FALSE(c.closed);
    EXPECT_TRUE(c.properties.empty());
    EXPECT_EQ(c.xform_ids, std::vector<std::string>{"form-1"});
  }

  auto updated =
      store.submit(read_fixture("casexml_update.xml", p.for_form("form-2")), "form-2", kSeedNow + kHour);
  ASSERT_TRUE(updated.ok()) << updated.error().message;
  {
    const CaseState& c = store.at(p.case_id);
    EXPECT_EQ(c.case_type, "a_new_type");
    EXPECT_EQ(c.case_name, "a new name");
    EXPECT_EQ(c.date_opened, "2010-05-12T13:42:50.000000Z");
    EXPECT_EQ(c.date_modified, "2010-06-30T13:42:50.000000Z");
    EXPECT_EQ(c.external_id, "someexternal");
    EXPECT_EQ(c.properties, (std::map<std::string, std::string>{{"someprop", "abcd"}, {"somenewprop", "efgh"}}));
    EXPECT_EQ(c.server_opened_on, kSeedNow);
    EXPECT_EQ(c.server_modified_on, kSeedNow + kHour);
    EXPECT_EQ(c.xform_ids, (std::vector<std::string>{"form-1", "form-2"}));
    EXPECT_FALSE(c.closed);
    // V2CaseXMLGenerator writes date_opened as a date.
    const std::string xml = render_case_xml(c);
    EXPECT_TRUE(contains(xml, "<date_opened>2010-05-12</date_opened>")) << xml;
    EXPECT_TRUE(contains(xml, "<external_id>someexternal</external_id>")) << xml;
  }

  auto closed =
      store.submit(read_fixture("casexml_close.xml", p.for_form("form-3")), "form-3", kSeedNow + 2 * kHour);
  ASSERT_TRUE(closed.ok()) << closed.error().message;
  const CaseState& c = store.at(p.case_id);
  EXPECT_TRUE(c.closed);
  EXPECT_EQ(c.date_closed, "2010-07-01T13:42:50.000000Z");
  EXPECT_EQ(c.date_modified, "2010-07-01T13:42:50.000000Z");
  EXPECT_EQ(c.properties, (std::map<std::string, std::string>{
                              {"someprop", "abcde"}, {"somenewprop", "efgh"}, {"someclosedprop", "case closed"}}));
  EXPECT_EQ(c.xform_ids, (std::vector<std::string>{"form-1", "form-2", "form-3"}));
  // HQ's to_xml(V2, include_case_on_closed=True): the full state, then <close/>.
  EXPECT_EQ(canonical_xml(render_case_xml(c)),
            canonical_xml("<case case_id=\"" + p.case_id +
                          "\" date_modified=\"2010-07-01T13:42:50.000000Z\" user_id=\"someuser\" "
                          "xmlns=\"http://commcarehq.org/case/transaction/v2\"><create><case_type>a_new_type</case_type>"
                          "<case_name>a new name</case_name><owner_id>someuser</owner_id></create><update>"
                          "<external_id>someexternal</external_id><date_opened>2010-05-12</date_opened>"
                          "<someclosedprop>case closed</someclosedprop><somenewprop>efgh</somenewprop>"
                          "<someprop>abcde</someprop></update><close/></case>"));
  const json j = json::parse(render_case_json(c));
  EXPECT_EQ(j["closed"], true);
  EXPECT_EQ(j["date_closed"], "2010-07-01T13:42:50.000000Z");
  EXPECT_EQ(j["properties"]["someclosedprop"], "case closed");
  EXPECT_EQ(j["properties"]["external_id"], "someexternal");
  EXPECT_EQ(j["server_date_opened"], "2015-04-17T20:14:34.139959Z");
  EXPECT_EQ(j["server_date_modified"], "2015-04-17T22:14:34.139959Z");
}

TEST(CaseFixtures, CreateAndUpdateInOneBlock) {
  Placeholders p;
  Store store;
  auto r = store.submit(read_fixture("casexml_create_update.xml", p.for_form("f")), "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const CaseState& c = store.at(p.case_id);
  EXPECT_EQ(c.case_type, "test_case_type");
  EXPECT_EQ(c.external_id, "someexternal");
  EXPECT_EQ(c.properties, (std::map<std::string, std::string>{{"someprop", "abc"}, {"someotherprop", "123"}}));
}

// HQ's get_case_from_case_update: a block for a case that does not exist creates it, whatever
// its actions (casexml update.xml on its own: its <update> sets the type and name).
TEST(CaseFixtures, UpdateOfUnknownCaseCreatesIt) {
  Placeholders p;
  Store store;
  auto r = store.submit(read_fixture("casexml_update.xml", p.for_form("f")), "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const CaseState& c = store.at(p.case_id);
  EXPECT_EQ(c.case_type, "a_new_type");
  EXPECT_EQ(c.case_name, "a new name");
  EXPECT_EQ(c.date_opened, "2010-05-12T13:42:50.000000Z");  // the update's own date_opened
  EXPECT_EQ(c.user_id, "someuser");
  EXPECT_EQ(c.owner_id, "someuser");
  EXPECT_EQ(c.server_opened_on, kSeedNow);
  EXPECT_EQ(c.xform_ids, std::vector<std::string>{"f"});
}

// ---------------------------------------------------------------------------------------------
// v2/basic_*: create -> update -> close -> noop.

TEST(CaseFixtures, V2BasicSequence) {
  Store store;
  ASSERT_TRUE(store.submit(read_fixture("casexml_v2_basic_create.xml"), "f1", kSeedNow).ok());
  {
    const CaseState& c = store.at("foo-case-id");
    EXPECT_EQ(c.case_type, "v2_case_type");
    EXPECT_EQ(c.case_name, "test case name");
    EXPECT_EQ(c.user_id, "bar-user-id");
    EXPECT_EQ(c.date_modified, "2011-12-06T13:42:50.000000Z");
    EXPECT_EQ(c.date_opened, "2011-12-06T13:42:50.000000Z");
  }
  ASSERT_TRUE(store.submit(read_fixture("casexml_v2_basic_update.xml"), "f2", kSeedNow + 1).ok());
  {
    const CaseState& c = store.at("foo-case-id");
    EXPECT_EQ(c.case_type, "updated_v2_case_type");
    EXPECT_EQ(c.case_name, "updated case name");
    EXPECT_EQ(c.properties, (std::map<std::string, std::string>{{"dynamic", "something dynamic"}}));
    EXPECT_EQ(c.date_modified, "2011-12-07T13:42:50.000000Z");
    EXPECT_EQ(c.date_opened, "2011-12-06T13:42:50.000000Z");
  }
  ASSERT_TRUE(store.submit(read_fixture("casexml_v2_basic_close.xml"), "f3", kSeedNow + 2).ok());
  {
    const CaseState& c = store.at("foo-case-id");
    EXPECT_TRUE(c.closed);
    EXPECT_EQ(c.date_closed, "2011-12-06T13:42:50.000000Z");
    EXPECT_EQ(c.case_type, "updated_v2_case_type");
  }
  auto noop = store.submit(read_fixture("casexml_v2_basic_noop.xml"), "f4", kSeedNow + 3);
  ASSERT_TRUE(noop.ok()) << noop.error().message;
  const CaseState& c = store.at("foo-case-id");
  EXPECT_TRUE(c.closed);
  EXPECT_EQ(c.date_modified, "2011-12-07T13:44:50.000000Z");
  EXPECT_EQ(c.server_modified_on, kSeedNow + 3);
  EXPECT_EQ(c.server_opened_on, kSeedNow);
  EXPECT_EQ(c.xform_ids, (std::vector<std::string>{"f1", "f2", "f3", "f4"}));
  EXPECT_EQ(c.properties.size(), 1u);
}

TEST(CaseFixtures, NoopOfUnknownCaseCreatesIt) {
  Store store;
  auto r = store.submit(read_fixture("casexml_v2_basic_noop.xml"), "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const CaseState& c = store.at("foo-case-id");
  EXPECT_EQ(c.case_type, "");  // HQ does not require a type
  EXPECT_EQ(c.user_id, "bar-user-id");
  EXPECT_EQ(c.date_opened, "2011-12-07T13:44:50.000000Z");  // opened_on: the block's date_modified
  EXPECT_FALSE(c.closed);
}

TEST(CaseFixtures, IndexUpdate) {
  Store store;
  ASSERT_TRUE(store.submit(read_fixture("casexml_v2_basic_create.xml"), "f1", kSeedNow).ok());
  // The referenced cases exist first, as upstream's test has them.
  for (const auto& [id, type] : {std::pair{"some_referenced_id", "bar"}, {"some_other_referenced_id", "bop"}}) {
    const std::string xml = std::string("<f><case xmlns='http://commcarehq.org/case/transaction/v2' case_id='") +
                            id + "' user_id='u' date_modified='2011-12-01'><create><case_type>" + type +
                            "</case_type></create></case></f>";
    ASSERT_TRUE(store.submit(xml, std::string("ref-") + id, kSeedNow).ok());
  }
  auto r = store.submit(read_fixture("casexml_v2_index_update.xml"), "f2", kSeedNow + 1);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(ids_of(*r), std::vector<std::string>{"foo-case-id"});
  const CaseState& c = store.at("foo-case-id");
  ASSERT_EQ(c.indices.size(), 2u);
  EXPECT_EQ(c.indices.at("foo_ref").case_type, "bar");
  EXPECT_EQ(c.indices.at("foo_ref").case_id, "some_referenced_id");
  EXPECT_EQ(c.indices.at("foo_ref").relationship, "child");
  EXPECT_EQ(c.indices.at("baz_ref").case_type, "bop");
  EXPECT_EQ(c.indices.at("baz_ref").case_id, "some_other_referenced_id");

  // HQ test_v2_parsing.testParseWithIndices: get_case_xml(case, [create, update], V2). owner_id
  // defaults to the user, date_opened is a date, indices are sorted and a child index carries
  // no relationship attribute.
  EXPECT_EQ(canonical_xml(render_case_xml(c)), canonical_xml(R"(
<case case_id="foo-case-id" date_modified="2011-12-07T13:42:50.000000Z" user_id="bar-user-id" xmlns="http://commcarehq.org/case/transaction/v2">
        <create>
            <case_type>v2_case_type</case_type>
            <case_name>test case name</case_name>
            <owner_id>bar-user-id</owner_id>
        </create>
        <update>
            <date_opened>2011-12-06</date_opened>
        </update>
        <index>
            <baz_ref case_type="bop">some_other_referenced_id</baz_ref>
            <foo_ref case_type="bar">some_referenced_id</foo_ref>
        </index>
    </case>)"));
  const json j = json::parse(render_case_json(c));
  EXPECT_EQ(j["indices"]["baz_ref"],
            (json{{"case_type", "bop"}, {"case_id", "some_other_referenced_id"}, {"relationship", "child"}}));
}

TEST(CaseFixtures, NamedNamespacePrefix) {
  Store store;
  auto r = store.submit(read_fixture("casexml_v2_named_namespace.xml"), "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const CaseState& c = store.at("14cc2770-2d1c-49c2-b252-22d6ecce385a");
  EXPECT_EQ(c.case_type, "cc_bihar_pregnancy");
  EXPECT_EQ(c.owner_id, "347b31fab217f6f28e0c8d6ff4f0651b");
  EXPECT_EQ(c.case_name, "TEST");
  EXPECT_EQ(c.user_id, "d5ce3a980b5b69e793445ec0e3b2138e");
  EXPECT_EQ(c.date_modified, "2011-12-27T00:00:00.000000Z");
  EXPECT_EQ(c.properties, (std::map<std::string, std::string>{{"village", "JGN.GM"},
                                                              {"edd", "2012-02-27"},
                                                              {"partner_name", "JD.MH"},
                                                              {"next_form", "bp"},
                                                              {"next_due", "2012-01-10"}}));
}

// ---------------------------------------------------------------------------------------------
// multicase: v1 blocks, side by side, at every depth, in repeats.

void expect_shine_cases(const Store& store, const std::vector<CaseState>& touched) {
  const std::vector<std::string> ids = {"0bd56681dce2b7a5160f75266d1e436e", "0bd56681dce2b7a5140f75266d1d93a6",
                                        "0bd56681dce2b7a5140f75266d1d9312", "0bd56681dce2b7a5140f75266d2064c0"};
  EXPECT_EQ(ids_of(touched), ids);
  const std::vector<std::string> names = {"Test Patient", "Client, Fake", "Unreal, Person", "Patient, Imaginary"};
  const std::vector<std::string> external = {"9a2a9582d11a11df8f35005056977568", "9b606de3d11a11df8f35005056977568",
                                             "9b606de4d11a11df8f35005056977568", "980247a4d11a11df8f35005056977568"};
  const std::vector<std::string> modified = {"2010-10-06T07:23:23.000000Z", "2010-10-06T07:23:25.000000Z",
                                             "2010-10-06T07:23:25.000000Z", "2010-10-06T07:23:19.000000Z"};
  const std::vector<std::string> pactid = {"1000", "1001", "2000", "2020"};
  for (std::size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE(ids[i]);
    const CaseState& c = store.at(ids[i]);
    EXPECT_EQ(c.case_type, "cc_shine_client");
    EXPECT_EQ(c.case_name, names[i]);
    EXPECT_EQ(c.external_id, external[i]);
    EXPECT_EQ(c.user_id, "873a1b8c-3a02-11e0-a513-005056aa7fb5");
    EXPECT_EQ(c.date_modified, modified[i]);
    EXPECT_EQ(c.date_opened, modified[i]);
    EXPECT_EQ(c.properties.size(), 11u);
    EXPECT_EQ(c.properties.at("pactid"), pactid[i]);
    EXPECT_EQ(c.properties.at("type"), "HP");
    EXPECT_FALSE(c.closed);
  }
  // Property values are kept as written, even a date that is not one.
  EXPECT_EQ(store.at(ids[1]).properties.at("dob"), "1947-14-09");
  EXPECT_EQ(store.at(ids[1]).properties.at("last_dot"), "2010-12-07");
  EXPECT_EQ(store.at(ids[0]).properties.at("last_dot"), "");
  EXPECT_EQ(store.at(ids[0]).properties.at("Phone1"), "555-555-5555");
}

TEST(CaseFixtures, MulticaseParallel) {
  auto blocks = blocks_of(read_fixture("casexml_multicase_parallel_cases.xml"));
  ASSERT_TRUE(blocks.ok()) << blocks.error().message;
  for (const CaseBlock& b : *blocks) EXPECT_TRUE(b.v1) << b.where;
  Store store;
  auto r = store.submit_blocks(*blocks, "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_shine_cases(store, *r);
}

TEST(CaseFixtures, MulticaseMixedDepths) {
  Store store;
  auto r = store.submit(read_fixture("casexml_multicase_mixed_cases.xml"), "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_shine_cases(store, *r);
}

TEST(CaseFixtures, MulticaseInRepeats) {
  Store store;
  auto r = store.submit(read_fixture("casexml_multicase_case_in_repeats.xml"), "JLP8BS71HFU3VGMIWW610W80T", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(ids_of(*r), (std::vector<std::string>{"32337c03-2b73-497f-ab18-2b587f8c21df",
                                                  "581b0506-7c94-4af5-ac67-f934566d5418",
                                                  "CMYOSI95QCED3ZWIP9ZK1QNQ6"}));
  for (const char* id : {"32337c03-2b73-497f-ab18-2b587f8c21df", "581b0506-7c94-4af5-ac67-f934566d5418"}) {
    const CaseState& c = store.at(id);
    EXPECT_EQ(c.case_type, "newborn_hiv_child");
    EXPECT_EQ(c.case_name, "ADG");
    EXPECT_EQ(c.external_id, id);
    EXPECT_EQ(c.user_id, "2XC1EINEJV1NZ7QXHVUMHUQQV");
    EXPECT_EQ(c.date_modified, "2011-09-19T22:29:48.096000Z");
    EXPECT_EQ(c.properties.size(), 9u);
    EXPECT_FALSE(c.closed);
  }
  EXPECT_EQ(store.at("32337c03-2b73-497f-ab18-2b587f8c21df").properties.at("sex"), "1");
  EXPECT_EQ(store.at("581b0506-7c94-4af5-ac67-f934566d5418").properties.at("sex"), "2");
  const CaseState& mother = store.at("CMYOSI95QCED3ZWIP9ZK1QNQ6");
  EXPECT_EQ(mother.case_type, "mother");
  EXPECT_EQ(mother.case_name, "mom");
  EXPECT_TRUE(mother.closed);
  EXPECT_EQ(mother.date_closed, "2011-09-19T22:31:48.902000Z");
  EXPECT_EQ(mother.properties.at("delivery_date"), "2011-09-19");
  EXPECT_EQ(mother.properties.size(), 6u);
}

// ---------------------------------------------------------------------------------------------
// bugs/

TEST(CaseFixtures, LotsOfSubcases) {
  Store store;
  auto r = store.submit(read_fixture("casexml_bugs_lots_of_subcases.xml"), "e9d6bb33", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 11u);
  const std::string mother = "f8b34e0c744f8f45dfa12e28617e5716";
  const std::string newborn = "7554c7f4-fc96-4b1d-aec8-8890e96ffc54";
  EXPECT_EQ((*r)[0].case_id, mother);
  EXPECT_EQ((*r)[1].case_id, newborn);

  const CaseState& m = store.at(mother);
  EXPECT_EQ(m.case_type, "cc_bihar_pregnancy");
  EXPECT_EQ(m.case_name, "Ashish");
  EXPECT_EQ(m.owner_id, "3c5a80e4db53049dfc110c368a0d282b");
  EXPECT_EQ(m.date_opened, "2012-04-19T00:00:00.000000Z");
  EXPECT_TRUE(m.indices.empty());
  EXPECT_EQ(m.properties.size(), 20u);
  EXPECT_EQ(m.properties.at("edd"), "");
  EXPECT_EQ(m.properties.at("husband_name"), "MOHAN");

  const CaseState& n = store.at(newborn);
  EXPECT_EQ(n.case_type, "cc_bihar_newborn");
  ASSERT_EQ(n.indices.size(), 1u);
  EXPECT_EQ(n.indices.at("mother_id").case_id, mother);
  EXPECT_EQ(n.indices.at("mother_id").case_type, "cc_bihar_pregnancy");
  EXPECT_EQ(n.indices.at("mother_id").relationship, "child");

  const std::vector<std::string> task_names = {"DPT 1", "BCG", "OPV 0", "HEP B 0", "Measles", "VIT A 1", "JE", "TT 1",
                                               "ANC 1"};
  for (int i = 1; i <= 9; ++i) {
    const std::string id = "763ca815-df9c-4037-9f0e-6edd2af8ba6c" + std::to_string(i);
    SCOPED_TRACE(id);
    const CaseState& t = store.at(id);
    EXPECT_EQ((*r)[static_cast<std::size_t>(i + 1)].case_id, id);
    EXPECT_EQ(t.case_type, "task");
    EXPECT_EQ(t.case_name, task_names[static_cast<std::size_t>(i - 1)]);
    EXPECT_EQ(t.date_modified, "2012-05-28T00:00:00.000000Z");
    ASSERT_EQ(t.indices.size(), 1u);
    const CaseIndex& person = t.indices.at("person_id");
    EXPECT_EQ(person.case_id, i <= 7 ? newborn : mother);
    EXPECT_EQ(person.case_type, i <= 7 ? "cc_bihar_newborn" : "cc_bihar_pregnancy");
    EXPECT_EQ(t.properties.size(), 3u);
    EXPECT_EQ(t.xform_ids, std::vector<std::string>{"e9d6bb33"});
  }
}

// HQ test_bugs.testMultipleCaseBlocks: two blocks for one case, neither a create, in a store
// that has never seen the case: it is created, and the form is in xform_ids once.
TEST(CaseFixtures, MultipleBlocksForOneCase) {
  const std::string xml = read_fixture("casexml_bugs_multiple_case_blocks.xml");
  const std::string id = "MCLPZ69ON942EKNIBR5WF1G2L";
  Store store;
  auto r = store.submit(xml, "50cd023e", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 1u);
  const CaseState& c = store.at(id);
  EXPECT_EQ(c.properties, (std::map<std::string, std::string>{{"community_code", "1630005"},
                                                              {"district_name", "SantaMariaCahabon"},
                                                              {"community_name", "TAMERLO"}}));
  EXPECT_EQ(c.xform_ids, (std::vector<std::string>{"50cd023e"}));
  EXPECT_EQ(c.date_modified, "2012-05-31T07:06:31.379000Z");
  EXPECT_EQ(c.user_id, "de7abbf6d898ae2d7dcd2bdc79f2785c");
}

TEST(CaseFixtures, DuplicatePropertiesLastWins) {
  const std::string id = "061ecbae-d9be-4bb5-bdd4-e62abd5eaf7b";
  std::string xml = read_fixture("casexml_bugs_duplicate_case_properties.xml");
  auto blocks = blocks_of(xml);
  ASSERT_TRUE(blocks.ok());
  ASSERT_EQ(blocks->size(), 1u);
  EXPECT_EQ((*blocks)[0].update.size(), 3u);

  Store store;
  store.cases[id] = existing_case(id, "pregnancy");
  ASSERT_TRUE(store.submit_blocks(*blocks, "f", kSeedNow).ok());
  EXPECT_EQ(store.at(id).properties,
            (std::map<std::string, std::string>{{"foo", ""}, {"date_next_eb", "2012-05-27"}}));

  // The same form with two different values: the later element wins.
  const std::string first = "<n1:foo />";
  auto pos = xml.find(first);
  ASSERT_NE(pos, std::string::npos);
  xml.replace(pos, first.size(), "<n1:foo>first</n1:foo>");
  pos = xml.find(first);
  ASSERT_NE(pos, std::string::npos);
  xml.replace(pos, first.size(), "<n1:foo>second</n1:foo>");
  ASSERT_TRUE(store.submit(xml, "g", kSeedNow).ok());
  EXPECT_EQ(store.at(id).properties.at("foo"), "second");
}

// ---------------------------------------------------------------------------------------------
// exclusion/ and the forms without cases

TEST(CaseFixtures, NestedDeviceReportIsIgnored) {
  Store store;
  auto r = store.submit(read_fixture("casexml_exclusion_nested_device_report.xml"), "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(ids_of(*r), std::vector<std::string>{"case_in_form"});
  EXPECT_EQ(store.cases.size(), 1u);
  EXPECT_EQ(store.at("case_in_form").case_type, "form_case_type");
  EXPECT_EQ(store.at("case_in_form").case_name, "form case");
  EXPECT_EQ(store.at("case_in_form").user_id, "device_user");
}

TEST(CaseFixtures, FormsWithoutCases) {
  for (const char* name : {"couchforms_devicelogs_devicelog.xml", "couchforms_posts_duplicate.xml",
                           "couchforms_posts_namespaces.xml", "couchforms_posts_unicode.xml",
                           "couchforms_deprecation_original.xml", "couchforms_deprecation_edit.xml"}) {
    SCOPED_TRACE(name);
    Store store;
    auto r = store.submit(read_fixture(name), "f", kSeedNow);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_TRUE(r->empty());
    EXPECT_TRUE(store.cases.empty());
  }
}

// ---------------------------------------------------------------------------------------------
// ordering/

TEST(CaseFixtures, OrderingCreateThenUpdate) {
  const std::string id = "30bc51f6-3247-4966-b4ae-994f572e85fe";
  Store store;
  ASSERT_TRUE(store.submit(read_fixture("casexml_ordering_create_oo.xml"), "c9265a8f", kSeedNow).ok());
  EXPECT_EQ(store.at(id).properties.at("pboth"), "this should get overridden");
  auto r = store.submit(read_fixture("casexml_ordering_update_oo.xml"), "0effe64d", kSeedNow + 1);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const CaseState& c = store.at(id);
  EXPECT_EQ(c.case_name, "out of order case");
  EXPECT_EQ(c.case_type, "mother");
  EXPECT_EQ(c.properties, (std::map<std::string, std::string>{{"pcreate", "from the create form"},
                                                              {"pupdate", "from the update form"},
                                                              {"pboth", "overridden by the update form"}}));
  EXPECT_EQ(c.date_modified, "2013-10-07T11:10:11.163000Z");
  EXPECT_EQ(c.date_opened, "2013-10-07T10:52:20.387000Z");
}

// HQ test_out_of_order_processing.testOutOfOrderSubmission: update_oo (client time 11:10) is
// submitted before create_oo (10:52); the case ends as if the create had come first.
TEST(CaseFixtures, OutOfOrderFormsApplyInClientTimeOrder) {
  const std::string id = "30bc51f6-3247-4966-b4ae-994f572e85fe";
  Store store;
  auto first = store.submit(read_fixture("casexml_ordering_update_oo.xml"), "0effe64d", kSeedNow);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = store.submit(read_fixture("casexml_ordering_create_oo.xml"), "c9265a8f", kSeedNow + kHour);
  ASSERT_TRUE(second.ok()) << second.error().message;
  const CaseState& c = store.at(id);
  EXPECT_EQ(c.properties.at("pupdate"), "from the update form");
  EXPECT_EQ(c.properties.at("pcreate"), "from the create form");
  EXPECT_EQ(c.properties.at("pboth"), "overridden by the update form");
  EXPECT_EQ(c.case_type, "mother");
  EXPECT_EQ(c.case_name, "out of order case");
  EXPECT_EQ(c.date_modified, "2013-10-07T11:10:11.163000Z");  // never moves back
  EXPECT_EQ(c.date_opened, "2013-10-07T10:52:20.387000Z");    // the create's time
  EXPECT_EQ(c.xform_ids, (std::vector<std::string>{"0effe64d", "c9265a8f"}));  // arrival order
  EXPECT_EQ(c.server_opened_on, kSeedNow);
  EXPECT_EQ(c.server_modified_on, kSeedNow + kHour);

  // The same forms in client order give the same case.
  Store in_order;
  ASSERT_TRUE(in_order.submit(read_fixture("casexml_ordering_create_oo.xml"), "c9265a8f", kSeedNow).ok());
  ASSERT_TRUE(in_order.submit(read_fixture("casexml_ordering_update_oo.xml"), "0effe64d", kSeedNow + kHour).ok());
  EXPECT_EQ(in_order.at(id).properties, c.properties);
  EXPECT_EQ(in_order.at(id).date_modified, c.date_modified);
}

// HQ adjusts every date and time of a form before processing its cases (adjust_datetimes), so a
// property holding one reaches the case in UTC; test_bugs._testCornerCaseDatatypeBugs: a date
// alone in case_name, case_type or a property stays as written.
TEST(ApplyCaseBlocks, DateTimesInCaseFieldsAreUtc) {
  Store store;
  auto r = store.submit("<f><case xmlns='" + std::string(kCaseV2Namespace) +
                            "' case_id='c' user_id='u'><create><case_type>2011-11-16</case_type><case_name>"
                            "2011-11-16T10:08:46.085-05</case_name></create><update><visit>2015-04-17T16:04:54.950-04"
                            "</visit><dob>2011-11-16</dob><n>4.06</n></update></case></f>",
                        "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const CaseState& c = store.at("c");
  EXPECT_EQ(c.case_type, "2011-11-16");
  EXPECT_EQ(c.case_name, "2011-11-16T15:08:46.085000Z");
  EXPECT_EQ(c.properties.at("visit"), "2015-04-17T20:04:54.950000Z");
  EXPECT_EQ(c.properties.at("dob"), "2011-11-16");
  EXPECT_EQ(c.properties.at("n"), "4.06");
}

// HQ test_bugs.test_case_block_ordering: updates written before the creates of the same cases
// in one form are applied after them.
TEST(ApplyCaseBlocks, CreatesFirstWithinAForm) {
  const std::string xml = "<f xmlns='urn:f'>"
                          "<case xmlns='" + std::string(kCaseV2Namespace) + "' case_id='c1'><update><p>2</p></update></case>"
                          "<case xmlns='" + std::string(kCaseV2Namespace) + "' case_id='c2'><update><p>2</p></update></case>"
                          "<case xmlns='" + std::string(kCaseV2Namespace) + "' case_id='c1'><create><case_type>t</case_type>"
                          "</create><update><p>1</p></update></case>"
                          "<case xmlns='" + std::string(kCaseV2Namespace) + "' case_id='c2'><create><case_type>t</case_type>"
                          "</create><update><p>1</p></update></case></f>";
  Store store;
  auto r = store.submit(xml, "f", kSeedNow, "form-user");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(store.at("c1").properties.at("p"), "2");
  EXPECT_EQ(store.at("c2").properties.at("p"), "2");
  // No user_id on the blocks: the form's meta/userID (HQ's _apply_case_update), and the owner.
  EXPECT_EQ(store.at("c1").user_id, "form-user");
  EXPECT_EQ(store.at("c1").owner_id, "form-user");
  EXPECT_EQ(store.at("c1").xform_ids, std::vector<std::string>{"f"});
}

// HQ test_edits / test_bugs.test_missing_transactions: a form resubmitted with the same id and
// other content replaces the earlier one; every case either version touched is rebuilt from the
// forms that stand, and a case only the new version names is created.
TEST(ApplyCaseBlocks, AnEditRebuildsFromTheFormsThatStand) {
  const std::string v2 = std::string(kCaseV2Namespace);
  auto block = [&](const std::string& id, const std::string& when, const std::string& body) {
    return "<case xmlns='" + v2 + "' case_id='" + id + "' user_id='u' date_modified='" + when + "'>" + body + "</case>";
  };
  Store store;
  ASSERT_TRUE(store.submit("<f>" + block("a", "2020-01-01T10:00:00Z",
                                         "<create><case_type>t</case_type></create><update><x>1</x><y>1</y></update>") +
                               "</f>",
                           "form-1", kSeedNow)
                  .ok());
  ASSERT_TRUE(store.submit("<f>" + block("a", "2020-01-01T11:00:00Z", "<update><x>2</x></update>") + "</f>", "form-2",
                           kSeedNow + 1)
                  .ok());
  EXPECT_EQ(store.at("a").properties.at("x"), "2");
  // form-2 edited: it no longer sets x but sets z, and creates case b.
  auto r = store.submit("<f>" + block("a", "2020-01-01T11:00:00Z", "<update><z>3</z></update>") +
                            block("b", "2020-01-01T11:00:00Z", "<create><case_type>t1</case_type></create>") + "</f>",
                        "form-2", kSeedNow + 2, "", /*edit=*/true);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const CaseState& a = store.at("a");
  EXPECT_EQ(a.properties, (std::map<std::string, std::string>{{"x", "1"}, {"y", "1"}, {"z", "3"}}));
  EXPECT_EQ(a.xform_ids, (std::vector<std::string>{"form-1", "form-2"}));
  EXPECT_EQ(store.at("b").case_type, "t1");
  EXPECT_EQ(store.at("b").xform_ids, std::vector<std::string>{"form-2"});

  // Edited again, touching only b: a is rebuilt from form-1 alone.
  auto again = store.submit("<f>" + block("b", "2020-01-01T11:00:00Z", "<update><w>4</w></update>") + "</f>", "form-2",
                            kSeedNow + 3, "", /*edit=*/true);
  ASSERT_TRUE(again.ok()) << again.error().message;
  ASSERT_EQ(again->size(), 2u);  // b, then a (rebuilt)
  EXPECT_EQ(store.at("a").properties, (std::map<std::string, std::string>{{"x", "1"}, {"y", "1"}}));
  EXPECT_EQ(store.at("a").xform_ids, std::vector<std::string>{"form-1"});
  EXPECT_EQ(store.at("a").date_modified, "2020-01-01T10:00:00.000000Z");
}

// ---------------------------------------------------------------------------------------------
// Finding blocks

const std::string kV2 = "http://commcarehq.org/case/transaction/v2";

TEST(FindCaseBlocks, PrefixDeclaredOnAnAncestorAndRedefined) {
  const std::string xml = "<f xmlns:c='" + kV2 +
                          "' xmlns:o='urn:other'>\n"
                          "<g><c:case case_id='a'/></g>\n"
                          "<o:case case_id='not-a-block'/>\n"
                          "<h xmlns:c='urn:other'><c:case case_id='also-not'/></h>\n"
                          "<case xmlns='" + kV2 + "' case_id='b'/>\n"
                          "</f>";
  auto blocks = blocks_of(xml);
  ASSERT_TRUE(blocks.ok()) << blocks.error().message;
  ASSERT_EQ(blocks->size(), 2u);
  EXPECT_EQ((*blocks)[0].case_id, "a");
  EXPECT_EQ((*blocks)[0].where, "case block 1 (case_id \"a\", line 2)");
  EXPECT_EQ((*blocks)[1].case_id, "b");
  EXPECT_EQ((*blocks)[1].where, "case block 2 (case_id \"b\", line 5)");
}

TEST(FindCaseBlocks, StartingFromAnElementKeepsAncestorDeclarations) {
  const std::string xml = "<f xmlns:c='" + kV2 + "'><g><c:case case_id='a'/></g></f>";
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(xml.c_str()));
  auto blocks = find_case_blocks(doc.child("f").child("g"));
  ASSERT_TRUE(blocks.ok());
  ASSERT_EQ(blocks->size(), 1u);
  // Without the source text the line is counted in pugixml's buffer.
  EXPECT_EQ((*blocks)[0].where, "case block 1 (case_id \"a\", line 1)");
}

// HQ's extract_case_blocks keeps only blocks with a case_id (has_case_id); an empty one is
// IllegalCaseId("case_id must not be empty").
TEST(FindCaseBlocks, V2BlockWithoutCaseIdIsSkippedAndAnEmptyOneRefused) {
  const std::string xml = "<f>\n<case xmlns='" + kV2 + "' case_id='a'/>\n\n<case xmlns='" + kV2 +
                          "' user_id='u'><create/></case>\n</f>";
  auto blocks = blocks_of(xml);
  ASSERT_TRUE(blocks.ok()) << blocks.error().message;
  ASSERT_EQ(blocks->size(), 1u);
  EXPECT_EQ((*blocks)[0].case_id, "a");

  auto empty = blocks_of("<f><case xmlns='" + kV2 + "' case_id='  '/></f>");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().message, "case block 1 (line 1): case_id must not be empty");
}

// Found by fuzzing (tests/fuzz/regressions/case_blocks): pugixml reads <:1:foo/> as an element,
// and its local name "1:foo" became a property that render_case_xml wrote as XML no one parses.
TEST(FindCaseBlocks, ElementNameThatIsNotAnXmlNameIsAnError) {
  const std::string v2 = R"(<data><case xmlns="http://commcarehq.org/case/transaction/v2" case_id="c1">
  <update><:1:foo/><ok>1</ok></update></case></data>)";
  auto r = blocks_of(v2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "case block 1 (case_id \"c1\", line 1): property name \"1:foo\" (line 2) is not a valid XML name");
  r = blocks_of(R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="c1"><index><p:1 case_type="t">h</p:1></index></case>)");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("index name \"1\""), std::string::npos) << r.error().message;
  r = blocks_of(R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="c1"><attachment><a:b:c src="x" from="local"/></attachment></case>)");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("attachment name \"b:c\""), std::string::npos) << r.error().message;
}

TEST(FindCaseBlocks, V1BlockWithEmptyCaseIdIsAnError) {
  auto blocks = blocks_of("<f xmlns='urn:form'>\n<case><case_id/><update><a>1</a></update></case></f>");
  ASSERT_FALSE(blocks.ok());
  EXPECT_EQ(blocks.error().message, "case block 1 (line 2): case_id must not be empty");
}

TEST(FindCaseBlocks, CaseWithoutCaseIdOutsideV2IsFormData) {
  auto blocks = blocks_of("<f xmlns='urn:form'><case><case_type>malaria</case_type></case></f>");
  ASSERT_TRUE(blocks.ok());
  EXPECT_TRUE(blocks->empty());
}

TEST(FindCaseBlocks, ReadsEveryAction) {
  const std::string xml = "<f><case xmlns='" + kV2 +
                          "' case_id=' c1 ' user_id='u' date_modified='2020-01-02'>"
                          "<attachment><photo src='p.jpg' from='local' name='Photo'/><gone/></attachment>"
                          "<index><parent case_type='p' relationship='extension'>p1</parent><old/></index>"
                          "<close/>"
                          "<update><x>1</x><x>2</x><y>a &amp; b</y></update>"
                          "<create><case_type>t</case_type><case_name> n </case_name><owner_id>o</owner_id>"
                          "<external_id>e</external_id></create>"
                          "</case></f>";
  auto blocks = blocks_of(xml);
  ASSERT_TRUE(blocks.ok()) << blocks.error().message;
  ASSERT_EQ(blocks->size(), 1u);
  const CaseBlock& b = (*blocks)[0];
  EXPECT_EQ(b.case_id, "c1");
  EXPECT_EQ(b.date_modified, "2020-01-02");
  EXPECT_TRUE(b.has_create);
  EXPECT_EQ(b.create_case_name, " n ");
  EXPECT_EQ(b.create_external_id, "e");
  EXPECT_EQ(b.update, (std::vector<std::pair<std::string, std::string>>{{"x", "1"}, {"x", "2"}, {"y", "a & b"}}));
  EXPECT_TRUE(b.has_close);
  ASSERT_EQ(b.index.size(), 2u);
  EXPECT_EQ(b.index[0].first, "parent");
  EXPECT_EQ(b.index[0].second.relationship, "extension");
  EXPECT_EQ(b.index[0].second.case_id, "p1");
  EXPECT_EQ(b.index[1].first, "old");
  EXPECT_EQ(b.index[1].second.case_id, "");
  ASSERT_EQ(b.attachment.size(), 2u);
  EXPECT_EQ(b.attachment[0].second.src, "p.jpg");
  EXPECT_EQ(b.attachment[0].second.from, "local");
  EXPECT_EQ(b.attachment[0].second.name, "Photo");
}

TEST(FindCaseBlocks, DeviceReportRootHasNoBlocks) {
  auto blocks = blocks_of("<device_report xmlns='http://code.javarosa.org/devicereport'><case xmlns='" + kV2 +
                          "' case_id='x'/></device_report>");
  ASSERT_TRUE(blocks.ok());
  EXPECT_TRUE(blocks->empty());
}

TEST(FindCaseBlocks, DeepNestingDoesNotExhaustTheStack) {
  std::string xml;
  constexpr int kDepth = 200000;
  for (int i = 0; i < kDepth; ++i) xml += "<a>";
  xml += "<case xmlns='" + kV2 + "' case_id='deep'/>";
  for (int i = 0; i < kDepth; ++i) xml += "</a>";
  auto blocks = blocks_of(xml);
  ASSERT_TRUE(blocks.ok());
  ASSERT_EQ(blocks->size(), 1u);
  EXPECT_EQ((*blocks)[0].case_id, "deep");
}

// ---------------------------------------------------------------------------------------------
// Applying: order, rejections, atomicity

std::string v2_block(const std::string& case_id, const std::string& body, const std::string& modified = "2020-01-01") {
  return "<case xmlns='" + kV2 + "' case_id='" + case_id + "' user_id='u' date_modified='" + modified + "'>" + body +
         "</case>";
}

TEST(ApplyCaseBlocks, ActionsApplyInCommCareOrderWhateverTheDocumentOrder) {
  Store store;
  auto r = store.submit("<f>" +
                            v2_block("c", "<index><p case_type='t'>other</p></index><close/>"
                                          "<update><case_type>t2</case_type><case_name>later</case_name></update>"
                                          "<create><case_type>t1</case_type><case_name>first</case_name></create>") +
                            "</f>",
                        "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const CaseState& c = store.at("c");
  EXPECT_EQ(c.case_type, "t2");  // update after create
  EXPECT_EQ(c.case_name, "later");
  EXPECT_TRUE(c.closed);
  EXPECT_EQ(c.indices.at("p").case_id, "other");
}

TEST(ApplyCaseBlocks, CreatedEarlierInTheSameSubmission) {
  Store store;
  auto r = store.submit("<f>" + v2_block("c", "<create><case_type>t</case_type></create>") +
                            v2_block("d", "<create><case_type>t</case_type></create>") +
                            v2_block("c", "<update><a>1</a></update><close/>", "2020-01-02") + "</f>",
                        "f", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(ids_of(*r), (std::vector<std::string>{"c", "d"}));
  const CaseState& c = store.at("c");
  EXPECT_EQ(c.xform_ids, std::vector<std::string>{"f"});
  EXPECT_EQ(c.properties.at("a"), "1");
  EXPECT_TRUE(c.closed);
  EXPECT_EQ(c.date_opened, "2020-01-01T00:00:00.000000Z");
  EXPECT_EQ(c.date_closed, "2020-01-02T00:00:00.000000Z");
}

// HQ's case_from_case_update: any block for an unknown case creates it (the case then has no
// type until a form gives it one).
TEST(ApplyCaseBlocks, EveryActionOnAnUnknownCaseCreatesIt) {
  for (const std::string body : {"<update><a>1</a></update>", "<close/>", "<index><p case_type='t'>x</p></index>",
                                 "<attachment><a src='a.jpg' from='local'/></attachment>", ""}) {
    SCOPED_TRACE(body);
    Store store;
    auto r = store.submit("<f>" + v2_block("ok", "<create><case_type>t</case_type></create>") + "\n" +
                              v2_block("new", body) + "</f>",
                          "f", kSeedNow);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->size(), 2u);
    EXPECT_EQ(store.at("new").case_type, "");
    EXPECT_EQ(store.at("new").server_opened_on, kSeedNow);
  }
}

TEST(ApplyCaseBlocks, RejectsBadIndices) {
  Store store;
  store.cases["c"] = existing_case("c", "t");
  auto no_type = store.submit("<f>" + v2_block("c", "<index><parent>p</parent></index>") + "</f>", "f", kSeedNow);
  ASSERT_FALSE(no_type.ok());
  EXPECT_EQ(no_type.error().message, "case block 1 (case_id \"c\", line 1): index \"parent\" has no case_type");

  auto bad_rel = store.submit(
      "<f>" + v2_block("c", "<index><parent case_type='t' relationship='sibling'>p</parent></index>") + "</f>", "f",
      kSeedNow);
  ASSERT_FALSE(bad_rel.ok());
  EXPECT_TRUE(contains(bad_rel.error().message, "relationship \"sibling\"")) << bad_rel.error().message;

  // An index without case_id (a JSON object can omit it; XML cannot) is refused by parse_case_json;
  // a block built without one reaches apply as a removal.
  CaseBlock b;
  b.case_id = "c";
  b.where = "case block 1 (case_id \"c\")";
  b.index.push_back({"", CaseIndex{"t", "p", "child"}});
  auto no_identifier = store.submit_blocks({b}, "f", kSeedNow);
  ASSERT_FALSE(no_identifier.ok());
  EXPECT_TRUE(contains(no_identifier.error().message, "an index has no identifier"));
  EXPECT_TRUE(store.at("c").xform_ids.empty());
}

TEST(ApplyCaseBlocks, EmptyIndexTextRemovesTheIndex) {
  Store store;
  ASSERT_TRUE(store
                  .submit("<f>" +
                              v2_block("c", "<create><case_type>t</case_type></create>"
                                            "<index><parent case_type='p'>p1</parent><host case_type='h' "
                                            "relationship='extension'>h1</host></index>") +
                              "</f>",
                          "f1", kSeedNow)
                  .ok());
  EXPECT_EQ(store.at("c").indices.size(), 2u);
  EXPECT_EQ(store.at("c").indices.at("host").relationship, "extension");
  ASSERT_TRUE(store.submit("<f>" + v2_block("c", "<index><parent/></index>") + "</f>", "f2", kSeedNow).ok());
  ASSERT_EQ(store.at("c").indices.size(), 1u);
  EXPECT_EQ(store.at("c").indices.count("host"), 1u);
}

TEST(ApplyCaseBlocks, MissingCaseIdIsRejected) {
  CaseBlock b;
  b.where = "case object 1";
  b.has_create = true;
  b.create_case_type = "t";
  Store store;
  auto r = store.submit_blocks({b}, "f", kSeedNow);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "case object 1: the case block has no case_id");
}

TEST(ApplyCaseBlocks, CreateWithoutCaseType) {
  Store store;
  // Accepted, as HQ accepts it: the type stays empty.
  auto r = store.submit("<f>" + v2_block("c", "<create><case_name>n</case_name></create>") + "</f>", "f0", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(store.at("c").case_type, "");
  EXPECT_EQ(store.at("c").case_name, "n");

  // The same block's update may name the type.
  ASSERT_TRUE(store
                  .submit("<f>" + v2_block("c", "<create><case_name>n</case_name></create>"
                                                "<update><case_type>t</case_type></update>") +
                              "</f>",
                          "f", kSeedNow)
                  .ok());
  EXPECT_EQ(store.at("c").case_type, "t");

  // On an existing case a create without a type refreshes the other fields and keeps the type.
  ASSERT_TRUE(
      store.submit("<f>" + v2_block("c", "<create><case_name>m</case_name><owner_id>o</owner_id></create>") + "</f>",
                   "g", kSeedNow + 1)
          .ok());
  const CaseState& c = store.at("c");
  EXPECT_EQ(c.case_type, "t");
  EXPECT_EQ(c.case_name, "m");
  EXPECT_EQ(c.owner_id, "o");
  EXPECT_EQ(c.server_opened_on, kSeedNow);  // a second create does not reopen it
}

TEST(ApplyCaseBlocks, AttachmentsAndEmptyCaseTypeInUpdate) {
  Store store;
  ASSERT_TRUE(store
                  .submit("<f>" +
                              v2_block("c", "<create><case_type>t</case_type></create>"
                                            "<update><case_type/><owner_id>o2</owner_id><date_opened/></update>"
                                            "<attachment><photo src='p.jpg' from='local'/><doc src='d.pdf' "
                                            "from='remote' name='Doc'/></attachment>") +
                              "</f>",
                          "f", kSeedNow)
                  .ok());
  const CaseState& c = store.at("c");
  EXPECT_EQ(c.case_type, "t");
  EXPECT_EQ(c.owner_id, "o2");
  EXPECT_EQ(c.date_opened, "2020-01-01T00:00:00.000000Z");
  ASSERT_EQ(c.attachments.size(), 2u);
  EXPECT_EQ(c.attachments.at("doc").name, "Doc");
  EXPECT_TRUE(c.properties.empty());

  const std::string xml = render_case_xml(c);
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(xml.c_str())) << xml;
  const pugi::xml_node photo = doc.child("case").child("attachment").child("photo");
  EXPECT_STREQ(photo.attribute("src").value(), "p.jpg");
  EXPECT_STREQ(photo.attribute("from").value(), "local");
  EXPECT_FALSE(photo.attribute("name"));
  EXPECT_STREQ(doc.child("case").child("attachment").child("doc").attribute("name").value(), "Doc");

  ASSERT_TRUE(store.submit("<f>" + v2_block("c", "<attachment><photo/></attachment>") + "</f>", "g", kSeedNow).ok());
  EXPECT_EQ(store.at("c").attachments.count("photo"), 0u);
}

// ---------------------------------------------------------------------------------------------
// Rendering

TEST(RenderCase, EscapesTextAndAttributes) {
  CaseState c;
  c.case_id = "a\"b<c>&d";
  c.user_id = "u'v";
  c.date_modified = "2020-01-01T00:00:00.000000Z";
  c.date_opened = c.date_modified;
  c.case_type = "t";
  c.case_name = "Tom & Jerry <friends>";
  c.properties["note"] = "]]> & <![CDATA[";
  c.indices["parent"] = CaseIndex{"p&q", "x<y", "child"};
  const std::string xml = render_case_xml(c);
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(xml.c_str())) << xml;
  const pugi::xml_node root = doc.child("case");
  EXPECT_STREQ(root.attribute("case_id").value(), "a\"b<c>&d");
  EXPECT_STREQ(root.attribute("user_id").value(), "u'v");
  EXPECT_STREQ(root.attribute("xmlns").value(), kV2.c_str());
  EXPECT_STREQ(root.child("create").child("case_name").text().get(), "Tom & Jerry <friends>");
  EXPECT_STREQ(root.child("update").child("note").text().get(), "]]> & <![CDATA[");
  EXPECT_TRUE(root.child("update").child("date_opened"));  // HQ writes it always
  EXPECT_STREQ(root.child("index").child("parent").attribute("case_type").value(), "p&q");
  EXPECT_STREQ(root.child("index").child("parent").text().get(), "x<y");
  EXPECT_EQ(json::parse(render_case_json(c))["properties"]["case_name"], "Tom & Jerry <friends>");
}

TEST(RenderCase, UpdateElementOrderAndJsonProperties) {
  CaseState c;
  c.case_id = "c";
  c.domain = "d";
  c.case_type = "t";
  c.case_name = "n";
  c.owner_id = "o";
  c.user_id = "u";
  c.external_id = "e";
  c.date_opened = "2020-01-01T00:00:00.000000Z";
  c.date_modified = "2020-02-01T00:00:00.000000Z";
  c.properties = {{"b", "2"}, {"a", "1"}};
  EXPECT_EQ(canonical_xml(render_case_xml(c)),
            canonical_xml("<case case_id='c' date_modified='2020-02-01T00:00:00.000000Z' user_id='u' xmlns='" + kV2 +
                          "'><create><case_type>t</case_type><case_name>n</case_name><owner_id>o</owner_id></create>"
                          "<update><external_id>e</external_id><date_opened>2020-01-01</date_opened>"
                          "<a>1</a><b>2</b></update></case>"));
  const json j = json::parse(render_case_json(c));
  EXPECT_EQ(j["properties"], (json{{"a", "1"},
                                   {"b", "2"},
                                   {"case_name", "n"},
                                   {"case_type", "t"},
                                   {"date_opened", "2020-01-01T00:00:00.000000Z"},
                                   {"owner_id", "o"},
                                   {"external_id", "e"}}));
  EXPECT_EQ(j["server_date_opened"], "1970-01-01T00:00:00.000000Z");
}

// ---------------------------------------------------------------------------------------------
// Storage

TEST(CaseStorage, RoundTripsEveryField) {
  CaseState c;
  c.case_id = "id";
  c.domain = "demo";
  c.case_type = "t";
  c.case_name = "näme \"quoted\"";
  c.owner_id = "o";
  c.user_id = "u";
  c.external_id = "e";
  c.properties = {{"a", "1"}, {"b", ""}, {"統一碼", "x\ny"}};
  c.indices = {{"parent", CaseIndex{"pt", "p1", "child"}}, {"host", CaseIndex{"ht", "h1", "extension"}}};
  c.attachments = {{"photo", CaseAttachment{"p.jpg", "local", "Photo"}}, {"doc", CaseAttachment{"d", "remote", ""}}};
  c.closed = true;
  c.date_closed = "2020-03-01T00:00:00.000000Z";
  c.date_opened = "2020-01-01T00:00:00.000000Z";
  c.date_modified = "2020-03-01T00:00:00.000000Z";
  c.server_opened_on = kSeedNow;
  c.server_modified_on = kSeedNow + kHour;
  c.xform_ids = {"f1", "f2"};

  auto back = case_from_storage_json(case_to_storage_json(c));
  ASSERT_TRUE(back.ok()) << back.error().message;
  const CaseState& d = *back;
  EXPECT_EQ(d.case_id, c.case_id);
  EXPECT_EQ(d.domain, c.domain);
  EXPECT_EQ(d.case_type, c.case_type);
  EXPECT_EQ(d.case_name, c.case_name);
  EXPECT_EQ(d.owner_id, c.owner_id);
  EXPECT_EQ(d.user_id, c.user_id);
  EXPECT_EQ(d.external_id, c.external_id);
  EXPECT_EQ(d.properties, c.properties);
  ASSERT_EQ(d.indices.size(), 2u);
  EXPECT_EQ(d.indices.at("host").case_type, "ht");
  EXPECT_EQ(d.indices.at("host").case_id, "h1");
  EXPECT_EQ(d.indices.at("host").relationship, "extension");
  ASSERT_EQ(d.attachments.size(), 2u);
  EXPECT_EQ(d.attachments.at("photo").src, "p.jpg");
  EXPECT_EQ(d.attachments.at("photo").from, "local");
  EXPECT_EQ(d.attachments.at("photo").name, "Photo");
  EXPECT_EQ(d.closed, c.closed);
  EXPECT_EQ(d.date_closed, c.date_closed);
  EXPECT_EQ(d.date_opened, c.date_opened);
  EXPECT_EQ(d.date_modified, c.date_modified);
  EXPECT_EQ(d.server_opened_on, c.server_opened_on);
  EXPECT_EQ(d.server_modified_on, c.server_modified_on);
  // The store keeps the case's forms apart (case_forms), so the state does not carry them.
  EXPECT_TRUE(d.xform_ids.empty());
  EXPECT_FALSE(contains(case_to_storage_json(c), "\"f1\""));
  EXPECT_EQ(case_to_storage_json(d), case_to_storage_json(c));

  // An open case: date_closed stays absent.
  auto seed = case_from_storage_json(case_to_storage_json(seed_case()));
  ASSERT_TRUE(seed.ok());
  EXPECT_FALSE(seed->date_closed.has_value());
  seed->xform_ids = seed_case().xform_ids;
  EXPECT_EQ(render_case_json(*seed), render_case_json(seed_case()));
  EXPECT_EQ(render_case_xml(*seed), render_case_xml(seed_case()));
}

// case_to_storage_json() writes its text directly; these are the bytes nlohmann writes for the
// same object, defaults left out (`full`: with them, as rows stored before schema 8 hold).
std::string nlohmann_storage_json(const CaseState& c, bool full = false) {
  nlohmann::json indices = nlohmann::json::object();
  for (const auto& [identifier, i] : c.indices) {
    indices[identifier] = {{"case_type", i.case_type}, {"case_id", i.case_id}, {"relationship", i.relationship}};
  }
  nlohmann::json attachments = nlohmann::json::object();
  for (const auto& [name, a] : c.attachments) attachments[name] = {{"src", a.src}, {"from", a.from}, {"name", a.name}};
  nlohmann::json j = {
      {"case_id", c.case_id}, {"domain", c.domain}, {"case_type", c.case_type}, {"case_name", c.case_name},
      {"owner_id", c.owner_id}, {"user_id", c.user_id}, {"external_id", c.external_id},
      {"properties", c.properties}, {"indices", std::move(indices)}, {"attachments", std::move(attachments)},
      {"closed", c.closed}, {"date_closed", c.date_closed ? nlohmann::json(*c.date_closed) : nlohmann::json(nullptr)},
      {"date_opened", c.date_opened}, {"date_modified", c.date_modified},
      {"server_opened_on", c.server_opened_on}, {"server_modified_on", c.server_modified_on},
  };
  if (!full) {
    for (const char* key : {"properties", "indices", "attachments"}) {
      if (j[key].empty()) j.erase(key);
    }
    if (!c.closed) j.erase("closed");
    if (!c.date_closed) j.erase("date_closed");
    if (c.external_id.empty()) j.erase("external_id");
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

TEST(CaseStorage, SameBytesAsNlohmann) {
  CaseState c = seed_case();
  EXPECT_EQ(case_to_storage_json(c), nlohmann_storage_json(c));
  c.properties["quote \" and \\ backslash"] = "line\nbreak\ttab \x01 caf\xc3\xa9";
  c.properties["bad utf-8"] = "\xff\xfe";
  c.properties["empty"] = "";
  c.properties["a"] = "first";
  c.indices["parent"] = {"mother", "m1", "child"};
  c.indices["host \"x\""] = {"ht", "h1", "extension"};
  c.attachments["photo"] = {"p.jpg", "local", "Photo \u00e9"};
  c.attachments["empty"] = {"", "remote", ""};
  c.closed = true;
  c.date_closed = "2020-03-01T00:00:00.000000Z";
  c.server_opened_on = -5;
  c.server_modified_on = std::numeric_limits<Micros>::max();
  EXPECT_EQ(case_to_storage_json(c), nlohmann_storage_json(c));
  EXPECT_EQ(case_to_storage_json(CaseState{}), nlohmann_storage_json(CaseState{}));
}

// Rows written before defaults were left out read back as the same case.
TEST(CaseStorage, RowsWithEveryMemberReadBackTheSame) {
  CaseState open = seed_case();
  CaseState closed = seed_case();
  closed.closed = true;
  closed.date_closed = "2020-03-01T00:00:00.000000Z";
  closed.external_id = "ext";
  closed.indices["parent"] = {"mother", "m1", "child"};
  for (const CaseState& c : {open, closed}) {
    const std::string full = nlohmann_storage_json(c, true);
    ASSERT_NE(full, case_to_storage_json(c));
    auto back = case_from_storage_json(full);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(case_to_storage_json(*back), case_to_storage_json(c));
  }
  EXPECT_LT(case_to_storage_json(open).size() + 90, nlohmann_storage_json(open, true).size());
}

// blocks_to_storage_json() writes its text directly; these are the bytes nlohmann wrote before.
std::string nlohmann_blocks_json(const std::vector<CaseBlock>& blocks) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& b : blocks) {
    nlohmann::json e = {{"case_id", b.case_id}};
    if (!b.user_id.empty()) e["user_id"] = b.user_id;
    if (!b.date_modified.empty()) e["date_modified"] = b.date_modified;
    if (b.v1) e["v1"] = true;
    if (b.has_create) e["create"] = true;
    if (b.create_case_type) e["case_type"] = *b.create_case_type;
    if (b.create_case_name) e["case_name"] = *b.create_case_name;
    if (b.create_owner_id) e["owner_id"] = *b.create_owner_id;
    if (b.create_external_id) e["external_id"] = *b.create_external_id;
    if (!b.update.empty()) e["update"] = b.update;
    if (b.has_close) e["close"] = true;
    for (const auto& [identifier, i] : b.index) e["index"].push_back({identifier, i.case_type, i.case_id, i.relationship});
    for (const auto& [name, a] : b.attachment) e["attachment"].push_back({name, a.src, a.from, a.name});
    out.push_back(std::move(e));
  }
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

TEST(CaseStorage, BlocksSameBytesAsNlohmann) {
  const CaseBlock full{.case_id = "c \"1\"",
                       .user_id = "u\xc3\xa9",
                       .date_modified = "2020-01-01T00:00:00Z",
                       .v1 = true,
                       .has_create = true,
                       .create_case_type = "t",
                       .create_case_name = "",
                       .create_owner_id = "o",
                       .create_external_id = "x\ny",
                       .update = {{"a", "1"}, {"a", "2"}, {"bad", "\xff"}},
                       .has_close = true,
                       .index = {{"parent", {"mother", "m1", "child"}}, {"host", {"ht", "", "extension"}}},
                       .attachment = {{"photo", {"p.jpg", "local", "Photo"}}, {"gone", {"", "", ""}}},
                       .where = ""};
  CaseBlock bare;
  bare.case_id = "c2";
  for (const auto& blocks : std::vector<std::vector<CaseBlock>>{{}, {bare}, {full}, {full, bare, full}}) {
    EXPECT_EQ(blocks_to_storage_json(blocks), nlohmann_blocks_json(blocks));
  }
  auto seed = blocks_of(kSeedForm);
  ASSERT_TRUE(seed.ok());
  EXPECT_EQ(blocks_to_storage_json(*seed), nlohmann_blocks_json(*seed));
}

TEST(CaseStorage, CorruptRowsAreErrors) {
  EXPECT_FALSE(case_from_storage_json("").ok());
  EXPECT_FALSE(case_from_storage_json("[]").ok());
  EXPECT_FALSE(case_from_storage_json("{}").ok());
  EXPECT_FALSE(case_from_storage_json(R"({"case_id": 5})").ok());
  EXPECT_FALSE(case_from_storage_json(R"({"case_id": "a", "properties": {"x": 1}})").ok());
  EXPECT_FALSE(case_from_storage_json(R"({"case_id": "a", "indices": {"p": {"case_id": "x"}}})").ok());
  auto r = case_from_storage_json(R"({"case_id": "a", "server_opened_on": "soon"})");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.error().message, "stored case is corrupt")) << r.error().message;
}

// ---------------------------------------------------------------------------------------------
// Case JSON

TEST(ParseCaseJson, OneObjectCreatesACase) {
  auto blocks = parse_case_json(R"({"case_id": "c1", "case_type": "patient", "case_name": "Ann", "owner_id": "o",
      "user_id": "u", "external_id": "e", "date_modified": "2020-01-02T03:04:05.6+02:00",
      "properties": {"age": 42, "ok": true, "none": null, "s": "x"},
      "indices": {"parent": {"case_type": "household", "case_id": "h1"}}})");
  ASSERT_TRUE(blocks.ok()) << blocks.error().message;
  ASSERT_EQ(blocks->size(), 1u);
  const CaseBlock& b = (*blocks)[0];
  EXPECT_EQ(b.where, "case object 1 (case_id \"c1\")");
  EXPECT_TRUE(b.has_create);
  EXPECT_EQ(b.create_case_type, "patient");
  EXPECT_EQ(b.create_external_id, "e");
  EXPECT_EQ(b.user_id, "u");
  ASSERT_EQ(b.index.size(), 1u);
  EXPECT_EQ(b.index[0].second.relationship, "child");

  Store store;
  ASSERT_TRUE(store.submit_blocks(*blocks, "api", kSeedNow).ok());
  const CaseState& c = store.at("c1");
  EXPECT_EQ(c.case_type, "patient");
  EXPECT_EQ(c.case_name, "Ann");
  EXPECT_EQ(c.owner_id, "o");
  EXPECT_EQ(c.external_id, "e");
  EXPECT_EQ(c.date_modified, "2020-01-02T01:04:05.600000Z");  // +02:00 in UTC
  EXPECT_EQ(c.properties,
            (std::map<std::string, std::string>{{"age", "42"}, {"ok", "true"}, {"none", ""}, {"s", "x"}}));
  EXPECT_EQ(c.indices.at("parent").case_id, "h1");
  EXPECT_EQ(c.xform_ids, std::vector<std::string>{"api"});
}

TEST(ParseCaseJson, ArrayUpdateAndClose) {
  Store store;
  store.cases["c1"] = existing_case("c1", "t", "old");
  auto blocks = parse_case_json(R"([{"case_id": "c1", "properties": {"a": "1"}},
                                   {"case_id": "c1", "closed": true, "date_modified": "2020-05-05"}])");
  ASSERT_TRUE(blocks.ok()) << blocks.error().message;
  ASSERT_EQ(blocks->size(), 2u);
  EXPECT_FALSE((*blocks)[0].has_create);
  EXPECT_TRUE((*blocks)[1].has_close);
  ASSERT_TRUE(store.submit_blocks(*blocks, "api", kSeedNow).ok());
  const CaseState& c = store.at("c1");
  EXPECT_EQ(c.case_name, "old");
  EXPECT_EQ(c.properties.at("a"), "1");
  EXPECT_TRUE(c.closed);
  EXPECT_EQ(c.date_closed, "2020-05-05T00:00:00.000000Z");
}

TEST(ParseCaseJson, RenderedCaseJsonCanBePostedBack) {
  auto blocks = parse_case_json(render_case_json(seed_case()));
  ASSERT_TRUE(blocks.ok()) << blocks.error().message;
  Store store;
  ASSERT_TRUE(store.submit_blocks(*blocks, kSeedFormId, kSeedNow).ok());
  EXPECT_EQ(render_case_json(store.at(kSeedCaseId)), render_case_json(seed_case()));
}

TEST(ParseCaseJson, UnknownCaseWithoutTypeIsCreatedOnApply) {
  auto blocks = parse_case_json(R"({"case_id": "c1", "user_id": "u", "properties": {"a": "1"}})");
  ASSERT_TRUE(blocks.ok());
  Store store;
  auto r = store.submit_blocks(*blocks, "api", kSeedNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(store.at("c1").properties.at("a"), "1");
  EXPECT_EQ(store.at("c1").owner_id, "u");
}

// A case's blocks of one form, as the store keeps them for rebuilds: every field survives.
TEST(CaseStorage, BlocksRoundTrip) {
  auto blocks = blocks_of(read_fixture("casexml_bugs_lots_of_subcases.xml"));
  ASSERT_TRUE(blocks.ok());
  CaseBlock extra;
  extra.case_id = "x";
  extra.v1 = true;
  extra.has_close = true;
  extra.create_external_id = "";
  extra.attachment.push_back({"photo", CaseAttachment{"p.jpg", "local", "Photo"}});
  extra.index.push_back({"host", CaseIndex{"h", "h1", "extension"}});
  blocks->push_back(extra);
  auto back = blocks_from_storage_json(blocks_to_storage_json(*blocks));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(blocks_to_storage_json(*back), blocks_to_storage_json(*blocks));
  ASSERT_EQ(back->size(), blocks->size());
  const CaseBlock& x = back->back();
  EXPECT_TRUE(x.v1);
  EXPECT_TRUE(x.has_close);
  EXPECT_EQ(x.create_external_id, "");
  EXPECT_FALSE(x.create_case_type.has_value());
  EXPECT_EQ(x.index[0].second.relationship, "extension");
  EXPECT_EQ(x.attachment[0].second.name, "Photo");
  EXPECT_EQ((*back)[1].update, (*blocks)[1].update);
  EXPECT_FALSE(blocks_from_storage_json("{}").ok());
  EXPECT_FALSE(blocks_from_storage_json(R"([{"case_id": 1}])").ok());
}

TEST(ParseCaseJson, Errors) {
  auto invalid = parse_case_json("{\n  \"case_id\": ,\n}");
  ASSERT_FALSE(invalid.ok());
  EXPECT_EQ(invalid.error().message, "invalid JSON at line 2, column 14");
  EXPECT_FALSE(parse_case_json("").ok());

  auto not_object = parse_case_json(R"([{"case_id": "a"}, 3])");
  ASSERT_FALSE(not_object.ok());
  EXPECT_EQ(not_object.error().message, "case object 2: not a JSON object");

  auto no_id = parse_case_json(R"({"case_type": "t"})");
  ASSERT_FALSE(no_id.ok());
  EXPECT_EQ(no_id.error().message, "case object 1: case_id is missing");
  EXPECT_FALSE(parse_case_json(R"({"case_id": ""})").ok());
  EXPECT_FALSE(parse_case_json(R"({"case_id": 7})").ok());
  EXPECT_FALSE(parse_case_json("[]").ok());

  auto index_without_id = parse_case_json(R"({"case_id": "a", "indices": {"parent": {"case_type": "t"}}})");
  ASSERT_FALSE(index_without_id.ok());
  EXPECT_TRUE(contains(index_without_id.error().message, "index \"parent\" has no case_id"))
      << index_without_id.error().message;

  EXPECT_FALSE(parse_case_json(R"({"case_id": "a", "properties": {"x": [1]}})").ok());
  EXPECT_FALSE(parse_case_json(R"({"case_id": "a", "properties": {"bad name": "1"}})").ok());
  EXPECT_FALSE(parse_case_json(R"({"case_id": "a", "properties": []})").ok());
  EXPECT_FALSE(parse_case_json(R"({"case_id": "a", "closed": "yes"})").ok());
  EXPECT_FALSE(parse_case_json(R"({"case_id": "a", "case_type": 3})").ok());
  EXPECT_FALSE(parse_case_json(R"({"case_id": "a", "indices": {"p": "x"}})").ok());

  // An index with an empty case_id removes it; without case_type it is still a removal.
  auto removal = parse_case_json(R"({"case_id": "a", "indices": {"parent": {"case_id": ""}}})");
  ASSERT_TRUE(removal.ok());
  EXPECT_EQ((*removal)[0].index[0].second.case_id, "");
}

// ---------------------------------------------------------------------------------------------
// Dates

TEST(NormalizeDatetime, SeedAndCommCareForms) {
  EXPECT_EQ(normalize_datetime("2015-04-17T16:04:54.950-04"), "2015-04-17T20:04:54.950000Z");
  EXPECT_EQ(normalize_datetime("2010-06-29"), "2010-06-29T00:00:00.000000Z");
  EXPECT_EQ(normalize_datetime("2010-06-29T13:42:50"), "2010-06-29T13:42:50.000000Z");
  EXPECT_EQ(normalize_datetime("2012-05-31T07:06:31.379Z"), "2012-05-31T07:06:31.379000Z");
  EXPECT_EQ(normalize_datetime("2012-04-25T14:05:45.250+05:30"), "2012-04-25T08:35:45.250000Z");
  EXPECT_EQ(normalize_datetime("2011-12-27T21:07:34.445-0500"), "2011-12-28T02:07:34.445000Z");
  EXPECT_EQ(normalize_datetime("2015-04-17T20:14:34.046462Z"), "2015-04-17T20:14:34.046462Z");
  EXPECT_EQ(normalize_datetime("2015-04-17T20:14:34.0464629876Z"), "2015-04-17T20:14:34.046462Z");
  EXPECT_EQ(normalize_datetime("2015-04-17T20:14:34.1"), "2015-04-17T20:14:34.100000Z");
  EXPECT_EQ(normalize_datetime("2015-04-17T20:14"), "2015-04-17T20:14:00.000000Z");
  EXPECT_EQ(normalize_datetime("2016-02-29"), "2016-02-29T00:00:00.000000Z");
  // An offset that moves the instant into another day, month and year.
  EXPECT_EQ(normalize_datetime("2015-12-31T22:30:00-03:00"), "2016-01-01T01:30:00.000000Z");
  EXPECT_EQ(normalize_datetime("2016-03-01T01:00:00+02"), "2016-02-29T23:00:00.000000Z");
  EXPECT_EQ(normalize_datetime("2015-04-17 16:04:54Z"), "2015-04-17T16:04:54.000000Z");
}

// HQ's adjust_datetimes rewrites a date *and time* only; a date alone stays as written.
TEST(AdjustDatetime, OnlyDateTimes) {
  EXPECT_EQ(adjust_datetime("2015-04-17T16:04:54.950-04"), "2015-04-17T20:04:54.950000Z");
  EXPECT_EQ(adjust_datetime("2013-10-07T10:52:20.387Z"), "2013-10-07T10:52:20.387000Z");
  EXPECT_EQ(adjust_datetime("2012-02-27"), std::nullopt);
  EXPECT_EQ(adjust_datetime("10:52:20"), std::nullopt);
  EXPECT_EQ(adjust_datetime("2015-06-30T23:59:60Z"), std::nullopt);  // Python refuses a leap second
  EXPECT_EQ(adjust_datetime("JGN.GM"), std::nullopt);
  // re_loose_datetime takes 3 to 6 fraction digits, or none.
  EXPECT_EQ(adjust_datetime("2013-03-09T06:30:09.5"), std::nullopt);
  EXPECT_EQ(adjust_datetime("2013-03-09T06:30:09.1234567"), std::nullopt);
  EXPECT_EQ(adjust_datetime("2013-03-09T06:30:09.123456"), "2013-03-09T06:30:09.123456Z");
  EXPECT_EQ(adjust_datetime("2013-03-09T06:30"), "2013-03-09T06:30:00.000000Z");
}

TEST(NormalizeDatetime, NonDatesUnchanged) {
  for (const char* s : {"", "soon", "1947-14-09", "2015-02-29", "2015-04-17T25:00:00", "2015-04-17T20:14:34.",
                        "2015-04-17T20:14:34Zjunk", "2015-04-17T20:14:34+5", "2015-4-17", "2015-04-17X",
                        "20150417", "2015-04-17T20:14:34+05:3"}) {
    EXPECT_EQ(normalize_datetime(s), s);
  }
}

// ---------------------------------------------------------------------------------------------
// A case one form opened is stored without its state (ingest/case_store.cpp): rebuild_case from
// that form's blocks, as stored and read back, must give the state the form gave it.

TEST(CaseFixtures, ACaseOneFormOpenedIsItsFormRebuilt) {
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(fixtures_dir())) {
    if (entry.path().extension() != ".xml") continue;
    const std::string name = entry.path().filename().string();
    const std::string xml = read_fixture(name, {{"REPLACE_UID", "uid"}, {"REPLACE_CASEID", "cid"}});
    Store store;
    auto states = store.submit(xml, "form-1", kSeedNow + 7, "form-user");
    ASSERT_TRUE(states.ok()) << name << ": " << states.error().message;
    for (const CaseState& applied : *states) {
      const auto& forms = store.forms_of[applied.case_id];
      ASSERT_EQ(forms.size(), 1u) << name << " " << applied.case_id;
      std::vector<CaseForm> stored;
      for (const auto& f : forms) {
        auto blocks = blocks_from_storage_json(blocks_to_storage_json(f.blocks));
        ASSERT_TRUE(blocks.ok()) << name << ": " << blocks.error().message;
        stored.push_back({f.form_id, f.form_user_id, f.server_date, std::move(*blocks)});
      }
      auto rebuilt = rebuild_case(applied.case_id, store.domain, std::nullopt, stored);
      ASSERT_TRUE(rebuilt.has_value()) << name << " " << applied.case_id;
      rebuilt->server_modified_on = applied.server_modified_on;
      EXPECT_EQ(case_to_storage_json(*rebuilt), case_to_storage_json(applied)) << name << " " << applied.case_id;
      EXPECT_EQ(rebuilt->xform_ids, applied.xform_ids) << name;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 37);  // the cases the fixtures open between them
}

}  // namespace
}  // namespace repeaterd::payload
