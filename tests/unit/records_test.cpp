// The queue as an operator sees it: keyset pages over records_list, filters, the state rules of
// resend/cancel/requeue, bulk pages, durable pauses, and a cancel winning over an attempt in flight.
#include "store/records.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <set>

#include "common/ids.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::store {
namespace {

class RecordsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("repeaterd-records-" + uuid_v4());
    std::filesystem::create_directories(dir_);
    auto s = Store::open(Options{(dir_ / "q.db").string()});
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  template <class T>
  Result<T> run(std::function<T(Db&)> fn) {
    std::promise<Result<T>> p;
    store_->run<T>(std::move(fn), [&](Result<T> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  // A form with one record per repeater; returns the record ids.
  std::vector<std::string> add(const std::string& form_id, std::vector<std::string> repeaters,
                               const std::string& domain = "demo", const std::string& case_id = "") {
    NewPayload p;
    p.domain = domain;
    p.payload_type = "form";
    p.payload_id = form_id;
    p.content_type = "text/xml";
    p.body = "<f>" + form_id + "</f>";
    p.received_on = now_micros();
    std::vector<NewRecord> recs;
    for (const auto& r : repeaters) {
      NewRecord n;
      n.id = uuid_v7(now_micros());
      n.repeater = r;
      n.content_type = "text/xml";
      n.case_id = case_id;
      recs.push_back(n);
    }
    auto r = run<IngestResult>([&](Db& db) { return Store::ingest(db, p, recs, now_micros()); });
    EXPECT_TRUE(r.ok());
    return r->record_ids;
  }

  // Claims and finishes every due record of `repeater` with `state`.
  void settle(const std::string& repeater, RecordState state, const std::string& reason = "") {
    auto r = run<int>([&](Db& db) {
      auto claim = Store::claim(db, {repeater}, 10000, now_micros() + 1, false);
      for (const auto& c : claim.records) {
        AttemptOutcome o;
        o.attempt_row = c.attempt_row;
        o.record_id = c.id;
        o.version = c.version;
        o.succeeded = state == RecordState::succeeded;
        o.new_state = state;
        o.reason = reason;
        o.error = reason;
        if (state == RecordState::failed) o.next_attempt_at = now_micros() + 60'000'000;
        Store::finish(db, o, now_micros());
      }
      return static_cast<int>(claim.records.size());
    });
    ASSERT_TRUE(r.ok());
  }

  Db& reader() {
    if (!reader_) reader_ = store_->open_reader();
    return *reader_;
  }

  std::vector<std::string> walk(const RecordFilter& f, std::size_t page_size) {
    std::vector<std::string> ids;
    std::string after;
    for (int guard = 0; guard < 10000; ++guard) {
      auto page = list_records(reader(), f, after, page_size);
      EXPECT_LE(page.records.size(), page_size);
      for (const auto& r : page.records) ids.push_back(r.id);
      if (!page.next) break;
      after = *page.next;
    }
    return ids;
  }

  // Not through Db::prepare, whose cache is keyed by the SQL text's address.
  std::string plan(const char* sql) {
    Stmt q(reader().handle(), std::string("EXPLAIN QUERY PLAN ") + sql);
    std::string out;
    while (q.step()) out += q.text(3) + "\n";
    return out;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Db> reader_;
};

TEST_F(RecordsTest, PagesWalkEveryMatchOnceInIdOrder) {
  std::vector<std::string> all, of_a;
  for (int i = 0; i < 130; ++i) {
    auto ids = add("f" + std::to_string(i), {"a", "b"});
    of_a.push_back(ids[0]);
    all.insert(all.end(), ids.begin(), ids.end());
  }
  // Ids made in the same millisecond are not in creation order: the list's order is the ids'.
  std::sort(all.begin(), all.end());
  std::sort(of_a.begin(), of_a.end());
  EXPECT_EQ(walk({}, 7), all);
  RecordFilter only_a;
  only_a.repeaters = std::vector<std::string>{"a"};
  EXPECT_EQ(walk(only_a, 50), of_a);
  EXPECT_EQ(count_records(reader(), only_a), 130);
  RecordFilter none;
  none.repeaters = std::vector<std::string>{};
  EXPECT_TRUE(list_records(reader(), none, "", 10).records.empty());
  // The last page says there is no next one.
  auto last = list_records(reader(), only_a, of_a[119], 10);
  EXPECT_EQ(last.records.size(), 10u);
  EXPECT_FALSE(last.next);
}

TEST_F(RecordsTest, FiltersNarrowByStateDomainPayloadCaseTimeAndError) {
  add("f1", {"a"}, "demo");
  const auto other = add("f2", {"a"}, "other");
  const auto cased = add("f3", {"c"}, "demo", "case-1");
  settle("a", RecordState::failed, "HTTP 503 Service Unavailable");
  const Micros middle = now_micros();
  const auto late = add("f4", {"a", "b"});

  RecordFilter f;
  f.states = {"failed"};
  EXPECT_EQ(walk(f, 10).size(), 2u);
  f.domain = "other";
  EXPECT_EQ(walk(f, 10), other);
  // One ingest's records share a millisecond, and UUIDv7 orders only by the millisecond.
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  RecordFilter by_payload;
  by_payload.payload_id = "f4";
  EXPECT_EQ(walk(by_payload, 1), sorted(late));
  by_payload.repeaters = std::vector<std::string>{"b"};
  EXPECT_EQ(walk(by_payload, 10), std::vector<std::string>{late[1]});
  RecordFilter by_case;
  by_case.case_id = "case-1";
  EXPECT_EQ(walk(by_case, 10), cased);
  RecordFilter after;
  after.created_after = middle;
  EXPECT_EQ(walk(after, 10), sorted(late));
  RecordFilter before;
  before.created_before = middle;
  EXPECT_EQ(walk(before, 10).size(), 3u);
  RecordFilter err;
  err.error_contains = "503";
  EXPECT_EQ(count_records(reader(), err), 2);
  err.error_contains = "404";
  EXPECT_EQ(count_records(reader(), err), 0);
}

TEST_F(RecordsTest, ListsUseIndexRangesNotScansOrSorts) {
  // Failed and cancelled records: a range of the partial index, nothing sorted.
  const std::string trouble = plan(sql::kTroublePage);
  EXPECT_NE(trouble.find("USING INDEX records_trouble (repeater=? AND state=? AND id>?)"), std::string::npos)
      << trouble;
  EXPECT_EQ(trouble.find("TEMP B-TREE"), std::string::npos) << trouble;
  EXPECT_NE(trouble.find("USING INTEGER PRIMARY KEY"), std::string::npos) << trouble;  // each row's payload
  EXPECT_NE(trouble.find("USING INDEX attempts_by_record (record=?)"), std::string::npos) << trouble;  // in flight?
  // Pending and succeeded records: the primary key from the cursor, in its order.
  const std::string dense = plan(sql::kDensePage);
  EXPECT_NE(dense.find("USING INDEX sqlite_autoindex_records_1 (id>?)"), std::string::npos) << dense;
  EXPECT_EQ(dense.find("TEMP B-TREE"), std::string::npos) << dense;
  const std::string by_payload = plan(sql::kByPayload);
  EXPECT_NE(by_payload.find("USING COVERING INDEX payloads_by_id (payload_id=?)"), std::string::npos) << by_payload;
  EXPECT_NE(by_payload.find("records_by_payload"), std::string::npos) << by_payload;
  const std::string by_case = plan(sql::kByCase);
  EXPECT_NE(by_case.find("USING INDEX records_by_case (case_id=?)"), std::string::npos) << by_case;
}

TEST_F(RecordsTest, OnlyFailedAndCancelledRecordsAreInTheOperatorsIndex) {
  add("f1", {"a", "b", "c"});
  settle("a", RecordState::succeeded);
  settle("b", RecordState::failed, "HTTP 500");
  settle("c", RecordState::cancelled, "HTTP 413");
  Stmt q(reader().handle(), "SELECT COUNT(*) FROM records INDEXED BY records_trouble WHERE state IN ('failed', 'cancelled')");
  ASSERT_TRUE(q.step());
  EXPECT_EQ(q.int64(0), 2);
}

TEST_F(RecordsTest, ActionsFollowTheStateRules) {
  const auto ids = add("f1", {"ok", "dead", "wait"});
  settle("ok", RecordState::succeeded);
  settle("dead", RecordState::cancelled, "HTTP 413");
  auto act_on = [&](Action a, const std::string& id) {
    return run<Result<RecordView>>([&](Db& db) { return act(db, a, id, now_micros()); }).value();
  };
  // cancel: pending and failed only.
  auto r = act_on(Action::cancel, ids[0]);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::conflict);
  EXPECT_NE(r.error().message.find("is succeeded: only pending or failed records can be cancelled"), std::string::npos);
  r = act_on(Action::cancel, ids[2]);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->state, "cancelled");
  EXPECT_EQ(r->reason, "cancelled by operator");
  EXPECT_FALSE(r->next_attempt_at);
  r = act_on(Action::cancel, ids[2]);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("already cancelled"), std::string::npos);
  // requeue: cancelled only; pending and due now, budget fresh.
  r = act_on(Action::requeue, ids[0]);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::conflict);
  r = act_on(Action::requeue, ids[1]);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->state, "pending");
  EXPECT_TRUE(r->next_attempt_at);
  // resend: any state; a succeeded record goes again with its history kept.
  r = act_on(Action::resend, ids[0]);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->state, "pending");
  EXPECT_EQ(r->attempts, 1);
  // Unknown ids.
  r = act_on(Action::resend, "nope");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::not_found);
  // The next claim of the resent record counts attempt 2 in history, 1 in the new budget.
  auto claim = run<Claim>([&](Db& db) { return Store::claim(db, {"ok"}, 10, now_micros() + 1, false); });
  ASSERT_EQ(claim->records.size(), 1u);
  EXPECT_EQ(claim->records[0].attempt, 2);
  EXPECT_EQ(claim->records[0].round_attempt, 1);
  // In flight now: resend waits for the attempt to end.
  r = act_on(Action::resend, ids[0]);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("has an attempt in flight"), std::string::npos);
}

TEST_F(RecordsTest, ACancelWinsOverTheAttemptInFlight) {
  const auto ids = add("f1", {"a"});
  auto claim = run<Claim>([&](Db& db) { return Store::claim(db, {"a"}, 10, now_micros() + 1, false); });
  ASSERT_EQ(claim->records.size(), 1u);
  const ClaimedRecord c = claim->records[0];
  auto cancelled = run<Result<RecordView>>([&](Db& db) { return act(db, Action::cancel, ids[0], now_micros()); });
  ASSERT_TRUE(cancelled->ok()) << cancelled->error().message;
  EXPECT_TRUE(cancelled->value().in_flight);
  AttemptOutcome o;
  o.attempt_row = c.attempt_row;
  o.record_id = c.id;
  o.version = c.version;
  o.succeeded = true;
  o.http_status = 200;
  o.new_state = RecordState::succeeded;
  auto fin = run<Store::Finished>([&](Db& db) { return Store::finish(db, o, now_micros()); });
  EXPECT_FALSE(fin->applied);
  auto d = load_record(reader(), ids[0], 100);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->record.state, "cancelled");
  EXPECT_FALSE(d->record.in_flight);
  ASSERT_EQ(d->attempts.size(), 1u);
  EXPECT_EQ(d->attempts[0].outcome, "succeeded");  // the history says what happened
}

TEST_F(RecordsTest, ARestartDoesNotReviveARecordCancelledInFlight) {
  const auto ids = add("f1", {"a"});
  ASSERT_TRUE((run<Claim>([&](Db& db) { return Store::claim(db, {"a"}, 10, now_micros() + 1, false); })).ok());
  ASSERT_TRUE((run<Result<RecordView>>([&](Db& db) { return act(db, Action::cancel, ids[0], now_micros()); }))->ok());
  reader_.reset();
  store_.reset();
  auto s = Store::open(Options{(dir_ / "q.db").string()});
  ASSERT_TRUE(s.ok());
  store_ = std::move(s).value();
  auto d = load_record(reader(), ids[0], 100);
  EXPECT_EQ(d->record.state, "cancelled");
  EXPECT_FALSE(d->record.next_attempt_at);
  EXPECT_EQ(d->attempts[0].outcome, "interrupted");
}

TEST_F(RecordsTest, BulkPagesChangeOnlyWhatAppliesAndRepeatSafely) {
  for (int i = 0; i < 25; ++i) add("f" + std::to_string(i), {"a", "b"});
  settle("a", RecordState::cancelled, "gave up");
  RecordFilter f;
  f.repeaters = std::vector<std::string>{"a", "b"};
  EXPECT_EQ(count_records(reader(), applicable(Action::requeue, f)), 25);
  auto requeue_all = [&] {
    std::size_t changed = 0;
    std::string after;
    for (int guard = 0; guard < 100; ++guard) {
      auto step = run<BulkStep>([&](Db& db) { return act_page(db, Action::requeue, f, after, 4, now_micros()); });
      changed += step->changed.size();
      if (!step->next) break;
      after = *step->next;
    }
    return changed;
  };
  EXPECT_EQ(requeue_all(), 25u);
  EXPECT_EQ(requeue_all(), 0u);
  RecordFilter cancelled;
  cancelled.states = {"cancelled"};
  EXPECT_EQ(count_records(reader(), cancelled), 0);
  // An action asked for states it does not apply to matches nothing.
  RecordFilter succeeded;
  succeeded.states = {"succeeded"};
  EXPECT_EQ(count_records(reader(), applicable(Action::cancel, succeeded)), 0);
}

TEST_F(RecordsTest, PausesAreStoredAndReportedOnce) {
  EXPECT_TRUE(*run<bool>([](Db& db) { return set_paused(db, "a", true, 42); }));
  EXPECT_FALSE(*run<bool>([](Db& db) { return set_paused(db, "a", true, 43); }));
  auto paused = paused_repeaters(reader());
  ASSERT_EQ(paused.size(), 1u);
  EXPECT_EQ(paused["a"], 42);
  EXPECT_TRUE(*run<bool>([](Db& db) { return set_paused(db, "a", false, 44); }));
  EXPECT_FALSE(*run<bool>([](Db& db) { return set_paused(db, "a", false, 45); }));
  EXPECT_TRUE(paused_repeaters(reader()).empty());
}

TEST_F(RecordsTest, TroubleListsFindEveryRepeaterConfiguredOrNot) {
  // Without a repeater filter, the repeaters with failed or cancelled records are found in the
  // store (a loose scan of records_trouble), whatever the config says.
  const auto z = add("f1", {"zeta", "alpha"});
  const auto a = add("f2", {"alpha"});
  settle("zeta", RecordState::cancelled, "gone");
  settle("alpha", RecordState::cancelled, "gone");
  RecordFilter f;
  f.states = {"cancelled"};
  std::vector<std::string> all{z[0], z[1], a[0]};
  std::sort(all.begin(), all.end());
  EXPECT_EQ(walk(f, 2), all);
}

}  // namespace
}  // namespace repeaterd::store
