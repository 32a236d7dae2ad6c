// The case store over SQLite: case blocks applied in store jobs, a busy case's parsed state
// reused, a case's form ids in arrival order.
#include "ingest/case_store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "common/ids.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::ingest {
namespace {

using payload::CaseBlock;
using payload::CaseState;

TEST(ParsedCases, OnlyTheExactTextRemembered) {
  ParsedCases parsed;
  CaseState s;
  s.case_id = "c";
  s.case_name = "first";
  s.xform_ids = {"f1"};
  EXPECT_FALSE(parsed.find("demo", "c", "{json}"));
  parsed.remember("demo", "c", "{json}", s);
  auto found = parsed.find("demo", "c", "{json}");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->case_name, "first");
  EXPECT_TRUE(found->xform_ids.empty()) << "the stored state has no xform_ids";
  EXPECT_FALSE(parsed.find("demo", "c", "{other json}"));  // changed in the database, rolled back...
  EXPECT_FALSE(parsed.find("other", "c", "{json}"));
  s.case_name = "second";
  parsed.remember("demo", "c", "{json 2}", s);
  EXPECT_FALSE(parsed.find("demo", "c", "{json}"));
  EXPECT_EQ(parsed.find("demo", "c", "{json 2}")->case_name, "second");
}

TEST(ParsedCases, HoldsAtMostItsCapacity) {
  ParsedCases parsed(2);
  CaseState s;
  for (int i = 0; i < 10; ++i) parsed.remember("demo", "c" + std::to_string(i), "j", s);
  int held = 0;
  for (int i = 0; i < 10; ++i) held += parsed.find("demo", "c" + std::to_string(i), "j") ? 1 : 0;
  EXPECT_EQ(held, 2);
}

class CaseStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("repeaterd-case-store-" + uuid_v4());
    std::filesystem::create_directories(dir_);
    auto s = store::Store::open(store::Options{(dir_ / "q.db").string()});
    ASSERT_TRUE(s.ok());
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  template <class T>
  Result<T> run(std::function<T(store::Db&)> fn) {
    std::promise<Result<T>> p;
    store_->run<T>(std::move(fn), [&](Result<T> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  static Submission form(const std::string& id, Micros now, const std::string& property_value) {
    Submission s;
    s.payload.domain = "demo";
    s.payload.payload_type = "form";
    s.payload.payload_id = id;
    s.payload.received_on = now;
    s.user_id = "u";
    CaseBlock b;
    b.case_id = "hot";
    b.date_modified = "2020-01-01T00:00:00Z";
    b.has_create = true;
    b.create_case_type = "t";
    b.update = {{"visit", property_value}};
    s.case_blocks = {b};
    return s;
  }

  // Applies `forms` one job each; returns the stored state JSON and the case's forms after each.
  std::vector<std::string> apply(const std::vector<Submission>& forms, ParsedCases* parsed) {
    std::vector<std::string> states;
    for (const auto& f : forms) {
      auto state = run<std::string>([&](store::Db& db) {
        auto changes = apply_and_save_cases(db, f, nullptr, /*with_xform_ids=*/true, parsed);
        if (!changes) return "rejected: " + changes.error().message;
        std::string ids;
        for (const auto& id : changes->at(0).state.xform_ids) ids += id + ",";
        return store::Store::load_case(db, "demo", "hot")->state_json + " " + ids;
      });
      EXPECT_TRUE(state.ok());
      states.push_back(state.ok() ? *state : state.error().message);
    }
    return states;
  }

  std::filesystem::path dir_;
  std::unique_ptr<store::Store> store_;
};

TEST_F(CaseStoreTest, AParsedStateGivesWhatParsingGives) {
  std::vector<Submission> forms;
  for (int i = 0; i < 5; ++i) forms.push_back(form("f" + std::to_string(i), 1000 + i, "v" + std::to_string(i)));
  const auto without = apply(forms, nullptr);
  // The same forms against a fresh database, this time with parsed states kept.
  TearDown();
  SetUp();
  ParsedCases parsed;
  const auto with = apply(forms, &parsed);
  EXPECT_EQ(with, without);
  ASSERT_EQ(with.size(), 5u);
  EXPECT_NE(with.back().find("\"visit\":\"v4\""), std::string::npos) << with.back();
  EXPECT_NE(with.back().find(" f0,f1,f2,f3,f4,"), std::string::npos) << with.back();
}

// The first form sits in the case's own row; later ones in case_forms. A later form received with
// an earlier server time (clock step) still comes out in (server_date, form_id) order.
TEST_F(CaseStoreTest, FormIdsMergeTheFirstFormInOrder) {
  auto ids = run<std::vector<std::string>>([](store::Db& db) {
    store::Store::save_case(db, "demo", {"c", "t", false, 1, "{}", std::nullopt});
    store::Store::add_case_form(db, "demo", "c", {"b-first", "u", 50, "[]"});
    store::Store::add_case_form(db, "demo", "c", {"a", "u", 10, "[]"});
    store::Store::add_case_form(db, "demo", "c", {"a-same-time", "u", 50, "[]"});
    store::Store::add_case_form(db, "demo", "c", {"c", "u", 50, "[]"});
    store::Store::add_case_form(db, "demo", "c", {"z", "u", 90, "[]"});
    return store::Store::case_form_ids(db, "demo", "c");
  });
  ASSERT_TRUE(ids.ok()) << ids.error().message;
  EXPECT_EQ(*ids, (std::vector<std::string>{"a", "a-same-time", "b-first", "c", "z"}));
  auto forms = run<std::vector<std::string>>([](store::Db& db) {
    std::vector<std::string> out;
    for (const auto& f : store::Store::case_forms(db, "demo", "c")) out.push_back(f.form_id);
    return out;
  });
  ASSERT_TRUE(forms.ok());
  EXPECT_EQ(*forms, *ids);
}

}  // namespace
}  // namespace repeaterd::ingest
