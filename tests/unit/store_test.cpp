// The durable queue: group commit, idempotent ingest, paging claims, crash recovery.
#include "store/store.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <future>
#include <latch>
#include <map>

#include "common/ids.hpp"
#include "store/body_codec.hpp"
#include "store/records.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"

namespace repeaterd::store {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("repeaterd-store-" + uuid_v4());
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "q.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Store> open() {
    auto s = Store::open(Options{path_});
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    return std::move(s).value();
  }

  // Runs fn on the writer and waits for its committed result.
  template <class T>
  static Result<T> run(Store& s, std::function<T(Db&)> fn) {
    std::promise<Result<T>> p;
    s.run<T>(std::move(fn), [&](Result<T> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  static NewPayload form(const std::string& id, const std::string& body = "<f/>") {
    NewPayload p;
    p.domain = "demo";
    p.payload_type = "form";
    p.payload_id = id;
    p.content_type = "text/xml";
    p.body = body;
    p.received_on = 1;
    return p;
  }

  static std::vector<NewRecord> records(std::initializer_list<const char*> repeaters) {
    std::vector<NewRecord> out;
    for (const char* r : repeaters) {
      NewRecord rec;
      rec.id = uuid_v7(now_micros());
      rec.repeater = r;
      rec.content_type = "text/xml";
      out.push_back(rec);
    }
    return out;
  }

  std::int64_t count(const char* sql) {
    Db db(path_, Db::Mode::read_only);
    auto& s = db.prepare(sql);
    s.step();
    return s.int64(0);
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(StoreTest, OneStoreAtATimeOwnsTheDatabase) {
  auto first = open();
  auto second = Store::open(Options{path_});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().message,
            "the queue database " + path_ + " is in use by another repeaterd process (pid " +
                std::to_string(::getpid()) + "), which holds " + path_ +
                ".lock. Two daemons on one queue would send every record twice: stop the other one first, or give "
                "this configuration its own storage.path");
  first.reset();  // closing releases it
  EXPECT_TRUE(Store::open(Options{path_}).ok());
}

TEST_F(StoreTest, IngestStoresPayloadAndRecords) {
  auto s = open();
  auto r = run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("f1"), records({"a", "b"}), 10); });
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->duplicate);
  EXPECT_EQ(r->record_ids.size(), 2u);
  s.reset();
  EXPECT_EQ(count("SELECT COUNT(*) FROM payloads"), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM records WHERE state = 'pending' AND next_attempt_at = 10"), 2);
}

TEST_F(StoreTest, DuplicateSameBytesCreatesNothingDifferentBytesDoes) {
  auto s = open();
  ASSERT_TRUE((run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("f1"), records({"a"}), 1); })).ok());
  auto dup = run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("f1"), records({"a"}), 2); });
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup->duplicate);
  EXPECT_TRUE(dup->record_ids.empty());
  auto edit = run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("f1", "<g/>"), records({"a"}), 3); });
  EXPECT_FALSE(edit->duplicate);
  s.reset();
  EXPECT_EQ(count("SELECT COUNT(*) FROM payloads"), 2);
  EXPECT_EQ(count("SELECT COUNT(*) FROM records"), 2);
}

TEST_F(StoreTest, GroupCommitBatchesConcurrentJobs) {
  auto s = open();
  // Hold the writer inside a first job while 99 more queue up behind it.
  std::latch entered(1), release(1);
  std::promise<void> first_done;
  s->submit([&](Db&) { entered.count_down(); release.wait(); }, [&](Status) { first_done.set_value(); });
  entered.wait();
  const auto batches_before = s->batches_committed();
  std::atomic<int> ok{0};
  std::vector<std::promise<void>> done(99);
  for (int i = 0; i < 99; ++i) {
    s->submit([i](Db& db) { Store::ingest(db, form("f" + std::to_string(i)), records({"a"}), 1); },
              [&, i](Status st) {
                if (st.ok()) ++ok;
                done[static_cast<std::size_t>(i)].set_value();
              });
  }
  release.count_down();
  first_done.get_future().wait();
  for (auto& d : done) d.get_future().wait();
  EXPECT_EQ(ok.load(), 99);
  // The first job's batch, then at most one more for all 99 (max_batch is 512).
  EXPECT_LE(s->batches_committed() - batches_before, 2u);
  EXPECT_EQ(s->jobs_committed(), 100u);
}

TEST_F(StoreTest, FailingJobIsUndoneAloneOthersCommit) {
  auto s = open();
  std::latch entered(1), release(1);
  std::promise<Status> bad, good;
  s->submit([&](Db&) { entered.count_down(); release.wait(); }, [](Status) {});
  entered.wait();
  s->submit(
      [](Db& db) {
        Store::ingest(db, form("bad"), records({"a"}), 1);
        db.exec("INSERT INTO nonexistent VALUES (1)");
      },
      [&](Status st) { bad.set_value(st); });
  s->submit([](Db& db) { Store::ingest(db, form("good"), records({"a"}), 1); },
            [&](Status st) { good.set_value(st); });
  release.count_down();
  EXPECT_FALSE(bad.get_future().get().ok());
  EXPECT_TRUE(good.get_future().get().ok());
  s.reset();
  EXPECT_EQ(count("SELECT COUNT(*) FROM payloads WHERE payload_id = 'bad'"), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM payloads WHERE payload_id = 'good'"), 1);
}

TEST_F(StoreTest, ClaimTakesOldestDueUpToLimitAndReportsNextDue) {
  auto s = open();
  for (int i = 0; i < 10; ++i) {
    const Micros at = 100 + i;
    ASSERT_TRUE((run<IngestResult>(*s, [i, at](Db& db) {
                  return Store::ingest(db, form("f" + std::to_string(i)), records({"a"}), at);
                })).ok());
  }
  auto c = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 3, 105); });
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->records.size(), 3u);
  EXPECT_EQ(c->records[0].payload_id, "f0");
  EXPECT_EQ(c->records[2].payload_id, "f2");
  EXPECT_EQ(c->records[0].attempt, 1);
  EXPECT_EQ(c->records[0].body, "<f/>");
  EXPECT_EQ(c->records[0].domain, "demo");
  EXPECT_EQ(c->records[0].request_id.size(), 36u);
  ASSERT_TRUE(c->next_due);
  EXPECT_EQ(*c->next_due, 103);
  // Claimed records are not claimed again; only due ones are taken.
  auto c2 = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 100, 105); });
  EXPECT_EQ(c2->records.size(), 3u);
  EXPECT_EQ(*c2->next_due, 106);
  auto other = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"b"}, 100, 1000); });
  EXPECT_TRUE(other->records.empty());
  EXPECT_FALSE(other->next_due);
}

TEST_F(StoreTest, CompressibleBodiesAreStoredDeflatedAndReadBackAsReceived) {
  auto s = open();
  std::string xml = "<data>";
  for (int i = 0; i < 40; ++i) xml += "<question_" + std::to_string(i) + ">answer</question_" + std::to_string(i) + ">";
  xml += "</data>";
  std::string noise;  // does not shrink: kept as received
  std::uint64_t x = 88172645463325252ull;
  for (int i = 0; i < 600; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    noise += static_cast<char>(x & 0xff);
  }
  for (auto [id, body] : {std::pair{"xml", xml}, std::pair{"noise", noise}, std::pair{"small", std::string("<f/>")}}) {
    ASSERT_TRUE((run<IngestResult>(*s, [id, body](Db& db) {
                  NewPayload p = form(id, body);
                  prepare_payload(p);
                  return Store::ingest(db, p, records({"a"}), 10);
                })).ok());
  }
  EXPECT_EQ(count("SELECT COUNT(*) FROM payloads WHERE encoding = 'deflate' AND payload_id = 'xml'"), 1);
  EXPECT_LT(count("SELECT length(body) FROM payloads WHERE payload_id = 'xml'"), static_cast<std::int64_t>(xml.size()) / 2);
  EXPECT_EQ(count("SELECT size FROM payloads WHERE payload_id = 'xml'"), static_cast<std::int64_t>(xml.size()));
  EXPECT_EQ(count("SELECT COUNT(*) FROM payloads WHERE encoding = '' AND payload_id IN ('noise', 'small')"), 2);
  // The digest is of the bytes received, so the same bytes again are still a duplicate.
  auto again = run<IngestResult>(*s, [&](Db& db) {
    NewPayload p = form("xml", xml);
    prepare_payload(p);
    return Store::ingest(db, p, records({"a"}), 11);
  });
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);

  auto c = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 10, 100); });
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->records.size(), 3u);
  std::map<std::string, std::string> sent;
  for (auto& r : c->records) {
    // The claim hands the bytes over as stored; the sender inflates them.
    EXPECT_EQ(r.body_encoding, r.payload_id == "xml" ? "deflate" : "");
    auto body = claimed_body(r);
    ASSERT_TRUE(body.ok()) << body.error().message;
    sent[r.payload_id] = *body;
  }
  EXPECT_EQ(sent["xml"], xml);
  EXPECT_EQ(sent["noise"], noise);
  EXPECT_EQ(sent["small"], "<f/>");
  {
    Db db(path_, Db::Mode::read_only);
    auto body = record_body(db, c->records[0].id);
    ASSERT_TRUE(body);
    EXPECT_EQ(body->bytes, sent[c->records[0].payload_id]);
    auto detail = load_record(db, c->records[0].id, 10);
    ASSERT_TRUE(detail);
    EXPECT_EQ(detail->payload.size, static_cast<std::int64_t>(sent[c->records[0].payload_id].size()));
  }
}

TEST_F(StoreTest, ADamagedDeflatedBodyIsAnErrorNamingTheRecord) {
  auto s = open();
  std::string xml(2000, 'a');
  auto ingested = run<IngestResult>(*s, [&](Db& db) {
    NewPayload p = form("xml", xml);
    prepare_payload(p);
    return Store::ingest(db, p, records({"a"}), 10);
  });
  ASSERT_TRUE(ingested.ok());
  ASSERT_TRUE((run<bool>(*s, [](Db& db) {
                db.exec("UPDATE payloads SET body = zeroblob(length(body))");
                return true;
              })).ok());
  auto c = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 10, 100); });
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->records.size(), 1u);
  auto body = claimed_body(c->records[0]);
  ASSERT_FALSE(body.ok());
  EXPECT_NE(body.error().message.find("the payload of record " + ingested->record_ids[0]), std::string::npos)
      << body.error().message;
  EXPECT_NE(body.error().message.find("does not inflate"), std::string::npos) << body.error().message;
  Db db(path_, Db::Mode::read_only);
  EXPECT_THROW(record_body(db, ingested->record_ids[0]), SqliteError);
}

TEST_F(StoreTest, ClaimUsesTheDueIndexNotATableScan) {
  auto s = open();
  s.reset();
  Db db(path_, Db::Mode::read_only);
  Stmt plan(db.handle(), std::string("EXPLAIN QUERY PLAN ") + Store::kDueRecordsSql);
  std::string details;
  while (plan.step()) details += plan.text(3) + "\n";
  EXPECT_NE(details.find("records_due"), std::string::npos) << details;
  EXPECT_EQ(details.find("TEMP B-TREE"), std::string::npos) << details;
}

TEST_F(StoreTest, FinishRecordsOutcomeAndSchedulesRetry) {
  auto s = open();
  ASSERT_TRUE((run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("f"), records({"a"}), 1); })).ok());
  auto c = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 1, 10); });
  ASSERT_EQ(c->records.size(), 1u);
  AttemptOutcome o;
  o.attempt_row = c->records[0].attempt_row;
  o.record_id = c->records[0].id;
  o.http_status = 500;
  o.response_body = "oops";
  o.error = "HTTP 500";
  o.new_state = RecordState::failed;
  o.next_attempt_at = 500;
  ASSERT_TRUE((run<bool>(*s, [o](Db& db) { Store::finish(db, o, 20); return true; })).ok());
  auto again = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 1, 499); });
  EXPECT_TRUE(again->records.empty());
  EXPECT_EQ(*again->next_due, 500);
  again = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 1, 500); });
  ASSERT_EQ(again->records.size(), 1u);
  EXPECT_EQ(again->records[0].attempt, 2);
  s.reset();
  EXPECT_EQ(count("SELECT COUNT(*) FROM attempts WHERE outcome = 'failed' AND http_status = 500 AND "
                  "response_body = CAST('oops' AS BLOB)"), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM records WHERE state = 'failed'"), 1);
}

TEST_F(StoreTest, ReopenMarksInFlightAttemptsInterruptedAndRequeues) {
  {
    auto s = open();
    ASSERT_TRUE((run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("f"), records({"a"}), 1); })).ok());
    auto c = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 1, 10); });
    ASSERT_EQ(c->records.size(), 1u);
    // The process "dies" here: the attempt is in flight and never finished.
  }
  EXPECT_EQ(count("SELECT COUNT(*) FROM records WHERE next_attempt_at IS NULL"), 1);
  auto s = open();
  auto c = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 1, now_micros() + 1); });
  ASSERT_EQ(c->records.size(), 1u);
  EXPECT_EQ(c->records[0].attempt, 2);
  s.reset();
  EXPECT_EQ(count("SELECT COUNT(*) FROM attempts WHERE outcome = 'interrupted'"), 1);
}

TEST_F(StoreTest, SummaryCountsStatesAndOldestDue) {
  auto s = open();
  ASSERT_TRUE((run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("f1"), records({"a", "b"}), 5); })).ok());
  ASSERT_TRUE((run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("f2"), records({"a"}), 7); })).ok());
  auto sum = run<std::vector<RepeaterSummary>>(*s, [](Db& db) { return Store::summarize(db, 10); });
  ASSERT_EQ(sum->size(), 2u);
  EXPECT_EQ((*sum)[0].repeater, "a");
  EXPECT_EQ((*sum)[0].pending, 2);
  EXPECT_EQ(*(*sum)[0].oldest_due, 5);
  EXPECT_EQ((*sum)[1].pending, 1);
}

TEST_F(StoreTest, PurgeRemovesOnlyOldFinishedRecordsAndUnusedPayloads) {
  auto s = open();
  ASSERT_TRUE((run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("old"), records({"a"}), 1); })).ok());
  ASSERT_TRUE((run<IngestResult>(*s, [](Db& db) { return Store::ingest(db, form("live"), records({"a"}), 2); })).ok());
  auto c = run<Claim>(*s, [](Db& db) { return Store::claim(db, {"a"}, 1, 10); });
  AttemptOutcome o;
  o.attempt_row = c->records[0].attempt_row;
  o.record_id = c->records[0].id;
  o.succeeded = true;
  o.new_state = RecordState::succeeded;
  ASSERT_TRUE((run<bool>(*s, [o](Db& db) { Store::finish(db, o, 20); return true; })).ok());
  auto purged = run<std::int64_t>(*s, [](Db& db) { return Store::purge(db, now_micros() + 1'000'000, 100); });
  EXPECT_EQ(*purged, 1);
  s.reset();
  EXPECT_EQ(count("SELECT COUNT(*) FROM records"), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM attempts"), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM payloads WHERE payload_id = 'live'"), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM payloads WHERE payload_id = 'old'"), 0);
}

// Schema 4 moved a case's forms out of its state into case_forms. A case stored before keeps its
// state as the base of rebuilds, and its forms become rows (in their order) with no blocks.
TEST_F(StoreTest, Schema4KeepsTheCasesStoredBefore) {
  {
    Db db(path_, Db::Mode::read_write);
    migrate(db, 3);
    db.exec(R"(INSERT INTO cases (domain, case_id, case_type, closed, server_modified_on, state) VALUES
      ('demo', 'c1', 't', 0, 50, '{"case_id":"c1","server_opened_on":10,"xform_ids":["f-b","f-a","f-c"],"properties":{"p":"1"}}'))");
  }
  auto s = open();
  auto got = run<std::pair<std::vector<std::string>, std::optional<StoredCase>>>(*s, [](Db& db) {
    return std::pair{Store::case_form_ids(db, "demo", "c1"), Store::load_case(db, "demo", "c1")};
  });
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->first, (std::vector<std::string>{"f-b", "f-a", "f-c"}));
  ASSERT_TRUE(got->second.has_value());
  ASSERT_TRUE(got->second->base_json.has_value());
  EXPECT_EQ(got->second->base_json->find("xform_ids"), std::string::npos) << *got->second->base_json;
  EXPECT_NE(got->second->base_json->find("\"p\":\"1\""), std::string::npos) << *got->second->base_json;
  EXPECT_EQ(got->second->state_json.find("xform_ids"), std::string::npos);
}

// Schema 8 stores new bodies deflated and first forms with their blocks as JSON: what was stored before
// reads back unchanged.
TEST_F(StoreTest, Schema8KeepsPayloadsAndCasesStoredBefore) {
  const std::string body(1000, 'x');
  {
    Db db(path_, Db::Mode::read_write);
    migrate(db, 7);
    db.exec("INSERT INTO payloads (id, domain, payload_type, payload_id, content_type, body, sha256, received_on) "
            "VALUES (1, 'demo', 'form', 'old', 'text/xml', CAST(printf('%.1000c', 'x') AS BLOB), 'd', 1)");
    db.exec("INSERT INTO records (id, payload, repeater, state, created_at, updated_at, next_attempt_at, "
            "content_type) VALUES ('r1', 1, 'a', 'pending', 1, 1, 1, 'text/xml')");
    db.exec(R"(INSERT INTO cases (domain, case_id, case_type, closed, server_modified_on, state, first_form) VALUES
      ('demo', 'c1', 't', 0, 50, '{"case_id":"c1"}', '{"form_id":"old","user_id":"u","server_date":5,"blocks":"[]"}'))");
  }
  auto s = open();
  auto got = run<std::pair<Claim, std::vector<std::string>>>(*s, [](Db& db) {
    return std::pair{Store::claim(db, {"a"}, 10, 100), Store::case_form_ids(db, "demo", "c1")};
  });
  // A first form stored with its blocks as a string reads back as one written now, as JSON.
  auto forms = run<std::vector<StoredCaseForm>>(*s, [](Db& db) {
    Store::save_case(db, "demo", StoredCase{"c2", "t", false, 60, R"({"case_id":"c2"})", std::nullopt});
    Store::add_case_form(db, "demo", "c2", {"new", "u", 6, R"([{"case_id":"c2","update":[["p","\"v\""]]}])"});
    auto out = Store::case_forms(db, "demo", "c1");
    for (auto& f : Store::case_forms(db, "demo", "c2")) out.push_back(f);
    return out;
  });
  ASSERT_TRUE(forms.ok()) << forms.error().message;
  ASSERT_EQ(forms->size(), 2u);
  EXPECT_EQ((*forms)[0].form_id, "old");
  EXPECT_EQ((*forms)[0].user_id, "u");
  EXPECT_EQ((*forms)[0].server_date, 5);
  EXPECT_EQ((*forms)[0].blocks_json, "[]");
  EXPECT_EQ((*forms)[1].blocks_json, R"([{"case_id":"c2","update":[["p","\"v\""]]}])");
  EXPECT_EQ(count("SELECT COUNT(*) FROM cases WHERE case_id = 'c2' AND json_type(first_form, '$.blocks') = 'array'"), 1);
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->first.records.size(), 1u);
  EXPECT_EQ(got->first.records[0].body, body);
  EXPECT_EQ(got->second, (std::vector<std::string>{"old"}));
}

// Schema 9: records' and attempts' CHECKs still refuse what they refused, stored rows still pass
// them, and writing a row of either no longer builds a temporary B-tree (what `IN (list)` in a
// CHECK costs SQLite on every write), on the migrating connection and on a new one.
TEST_F(StoreTest, Schema9ChecksCostNoTemporaryBTree) {
  {
    Db db(path_, Db::Mode::read_write);
    migrate(db, 8);
    db.exec("INSERT INTO payloads (id, domain, payload_type, payload_id, content_type, body, sha256, received_on) "
            "VALUES (1, 'demo', 'form', 'old', 'text/xml', x'00', 'd', 1)");
    db.exec("INSERT INTO records (id, payload, repeater, state, created_at, updated_at, content_type) "
            "VALUES ('r1', 1, 'a', 'cancelled', 1, 1, 'text/xml')");
    db.exec("INSERT INTO attempts (record, number, started_at, outcome, request_id) VALUES ('r1', 1, 1, 'interrupted', 'q')");
    migrate(db, schema_version());
    const auto temp_btrees = [&db](const char* sql) {
      Stmt q(db.handle(), std::string("EXPLAIN ") + sql);
      int n = 0;
      while (q.step()) n += q.text(1) == "OpenEphemeral" ? 1 : 0;
      return n;
    };
    EXPECT_EQ(temp_btrees("UPDATE records SET state = ?2 WHERE id = ?1"), 0);
    EXPECT_EQ(temp_btrees("INSERT INTO attempts (record, number, started_at, outcome, request_id) "
                          "VALUES (?1, ?2, ?3, ?4, ?5)"), 0);
    EXPECT_THROW(db.exec("UPDATE records SET state = 'lost' WHERE id = 'r1'"), SqliteError);
    EXPECT_THROW(db.exec("UPDATE attempts SET outcome = 'maybe'"), SqliteError);
  }
  Db db(path_, Db::Mode::read_write);
  db.exec("UPDATE records SET state = 'failed' WHERE id = 'r1'");
  EXPECT_THROW(db.exec("INSERT INTO records (id, payload, repeater, state, created_at, updated_at, content_type) "
                       "VALUES ('r2', 1, 'a', 'done', 1, 1, 'text/xml')"), SqliteError);
  EXPECT_EQ(count("SELECT COUNT(*) FROM records WHERE state = 'failed'"), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM attempts WHERE outcome = 'interrupted'"), 1);
  {
    Stmt plan(db.handle(), "EXPLAIN UPDATE attempts SET outcome = ?1 WHERE id = ?2");
    int temp = 0;
    while (plan.step()) temp += plan.text(1) == "OpenEphemeral" ? 1 : 0;
    EXPECT_EQ(temp, 0);
  }
  Stmt check(db.handle(), "PRAGMA integrity_check");
  ASSERT_TRUE(check.step());
  EXPECT_EQ(check.text(0), "ok");
}

// Schema 10: an email refused for good three times is set aside ('refused'), stops holding back
// the connection's later emails, and is queued again (for three more tries) on request.
TEST_F(StoreTest, Schema10SetsARefusedEmailAsideAndQueuesItAgain) {
  {
    Db db(path_, Db::Mode::read_write);
    migrate(db, 9);
    db.exec("INSERT INTO emails (id, connection, created_at, recipients, message, events, state, next_try_at) "
            "VALUES (1, 'crm', 1, '[\"a@x\"]', x'6d31', 1, 'pending', 1), "
            "(2, 'crm', 2, '[\"a@x\"]', x'6d32', 1, 'pending', 1), (3, 'erp', 3, '[\"b@x\"]', x'6d33', 1, 'sent', 1)");
    migrate(db, schema_version());
    EXPECT_THROW(db.exec("UPDATE emails SET state = 'lost' WHERE id = 1"), SqliteError);
  }
  auto s = open();
  const auto due_ids = [&](Micros now) {
    auto due = run<std::vector<std::int64_t>>(*s, [now](Db& db) {
      std::vector<std::int64_t> ids;
      for (const auto& e : Store::due_emails(db, now, 10)) ids.push_back(e.id);
      return ids;
    });
    return due.ok() ? *due : std::vector<std::int64_t>{-1};
  };
  // Email 2 waits for email 1 of the same connection, even when only 2 is due.
  EXPECT_EQ(due_ids(10), (std::vector<std::int64_t>{1}));
  const auto fail = [&](bool refusal, Micros next) {
    auto r = run<bool>(*s, [refusal, next](Db& db) { return Store::email_failed(db, 1, "554 no", refusal, 3, next); });
    return r.ok() && *r;
  };
  EXPECT_FALSE(fail(false, 100));  // a temporary failure never sets it aside
  EXPECT_EQ(due_ids(10), (std::vector<std::int64_t>{}));  // 1 is not due, and 2 waits behind it
  EXPECT_FALSE(fail(true, 100));
  EXPECT_FALSE(fail(true, 100));
  EXPECT_TRUE(fail(true, 100));  // the third refusal
  EXPECT_EQ(count("SELECT COUNT(*) FROM emails WHERE id = 1 AND state = 'refused' AND refusals = 3 AND attempts = 4"),
            1);
  EXPECT_EQ(due_ids(10), (std::vector<std::int64_t>{2}));
  auto requeued = run<int>(*s, [](Db& db) { return Store::requeue_refused_emails(db, 50); });
  ASSERT_TRUE(requeued.ok());
  EXPECT_EQ(*requeued, 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM emails WHERE id = 1 AND state = 'pending' AND refusals = 0 AND "
                  "next_try_at = 50"),
            1);
  EXPECT_EQ(due_ids(60), (std::vector<std::int64_t>{1}));
}

// Adding a form to a case writes one row, found again in arrival order; an edit finds the cases
// of the form's latest version on its payload row.
TEST_F(StoreTest, CaseFormsAndTheCasesOfAForm) {
  auto s = open();
  auto got = run<std::vector<std::string>>(*s, [](Db& db) {
    for (int i = 0; i < 3; ++i) {
      Store::add_case_form(db, "demo", "c", {"f" + std::to_string(i), "u", Micros{100 - i}, "[]"});
    }
    NewPayload p = form("f9");
    p.case_ids = {"c", "d"};
    Store::insert(db, p, "x", {}, 1);
    auto latest = Store::latest_version(db, p);
    return latest ? latest->case_ids : std::vector<std::string>{"no version"};
  });
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(*got, (std::vector<std::string>{"c", "d"}));
  auto ids = run<std::vector<std::string>>(*s, [](Db& db) {
    Store::remove_case_forms(db, "demo", "f1", {"c"});
    return Store::case_form_ids(db, "demo", "c");
  });
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<std::string>{"f2", "f0"}));  // by server_date
}

// The outbox holds circuit changes beside record notifications; the notifier reads both back
// with every field, and its throttle sees which kinds wait.
TEST_F(StoreTest, CircuitNotificationsAreQueuedAndReadBackBesideRecordNotifications) {
  auto s = open();
  // A record's first failure, notified as the scheduler has finish() do it.
  auto record_id = run<std::string>(*s, [](Db& db) {
    Store::ingest(db, form("f"), records({"a"}), 1);
    const ClaimedRecord r = Store::claim(db, {"a"}, 1, 10).records.at(0);
    AttemptOutcome failure;
    failure.attempt_row = r.attempt_row;
    failure.record_id = r.id;
    failure.new_state = RecordState::failed;
    failure.connection = "crm";
    failure.notify = Notification{};
    failure.notify->record_id = r.id;
    return Store::finish(db, failure, 20).notified ? r.id : std::string("not notified");
  });
  ASSERT_TRUE(record_id.ok());

  Notification opened;
  opened.kind = Notification::Kind::circuit_opened;
  opened.attempt = 5;
  opened.http_status = 503;
  opened.error = "HTTP 503 Service Unavailable";
  opened.next_attempt_at = 700;
  opened.backlog = 12;
  Notification closed;
  closed.kind = Notification::Kind::circuit_closed;
  closed.outage_ms = 60'000;
  closed.backlog = 11;
  ASSERT_TRUE((run<bool>(*s, [opened, closed](Db& db) {
                Store::queue_circuit_notification(db, "crm", opened, 30);
                Store::queue_circuit_notification(db, "crm", closed, 40);
                return true;
              })).ok());

  auto events = run<std::vector<Notification>>(*s, [](Db& db) { return Store::notifications_of(db, "crm"); });
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 3u);
  const Notification& failed = (*events)[0];
  EXPECT_EQ(failed.kind, Notification::Kind::failed);
  EXPECT_EQ(failed.record_id, *record_id);
  EXPECT_EQ(failed.at, 20);
  EXPECT_FALSE(failed.backlog);
  const Notification& o2 = (*events)[1];
  EXPECT_EQ(o2.kind, Notification::Kind::circuit_opened);
  EXPECT_EQ(o2.at, 30);
  EXPECT_EQ(o2.record_id, "");
  EXPECT_EQ(o2.domain, "");
  EXPECT_EQ(o2.attempt, 5);
  EXPECT_EQ(o2.http_status, 503);
  EXPECT_EQ(o2.error, "HTTP 503 Service Unavailable");
  EXPECT_EQ(o2.next_attempt_at, 700);
  EXPECT_EQ(o2.backlog, 12);
  EXPECT_FALSE(o2.outage_ms);
  const Notification& c2 = (*events)[2];
  EXPECT_EQ(c2.kind, Notification::Kind::circuit_closed);
  EXPECT_EQ(c2.at, 40);
  EXPECT_EQ(c2.attempt, 0);
  EXPECT_FALSE(c2.http_status);
  EXPECT_FALSE(c2.next_attempt_at);
  EXPECT_EQ(c2.backlog, 11);
  EXPECT_EQ(c2.outage_ms, 60'000);

  auto unsent = run<std::vector<UnsentNotifications>>(*s, [](Db& db) { return Store::unsent_notifications(db); });
  ASSERT_TRUE(unsent.ok());
  ASSERT_EQ(unsent->size(), 1u);
  const UnsentNotifications& u = unsent->front();
  EXPECT_EQ(u.connection, "crm");
  EXPECT_EQ(u.window_start, 0);
  EXPECT_EQ(u.oldest_at, 20);
  EXPECT_EQ(u.count, 3);
  std::vector<Notification::Kind> kinds = u.kinds;
  std::sort(kinds.begin(), kinds.end());
  EXPECT_EQ(kinds, (std::vector<Notification::Kind>{Notification::Kind::failed, Notification::Kind::circuit_opened,
                                                    Notification::Kind::circuit_closed}));

  // An email carrying them starts the window; a later circuit change waits in the outbox again.
  const std::int64_t last_id = events->back().id;
  ASSERT_TRUE((run<std::int64_t>(*s, [last_id](Db& db) {
                return Store::queue_email(db, "crm", {"ops@example.org"}, "msg", 3, last_id, 50);
              })).ok());
  ASSERT_TRUE((run<bool>(*s, [opened](Db& db) {
                Store::queue_circuit_notification(db, "crm", opened, 60);
                return true;
              })).ok());
  unsent = run<std::vector<UnsentNotifications>>(*s, [](Db& db) { return Store::unsent_notifications(db); });
  ASSERT_EQ(unsent->size(), 1u);
  EXPECT_EQ(unsent->front().window_start, 50);
  EXPECT_EQ(unsent->front().count, 1);
  EXPECT_EQ(unsent->front().kinds, (std::vector<Notification::Kind>{Notification::Kind::circuit_opened}));
}


// Ordered repeaters: a record waits while an earlier one of its case is open.
class OrderedStoreTest : public StoreTest {
 protected:
  // One form touching `case_id`, with a record for the ordered case repeater "c" and one for
  // the unordered form repeater "f".
  std::string submit(Store& s, const std::string& form_id, const std::string& case_id, Micros now) {
    NewRecord ordered;
    ordered.id = uuid_v7(now_micros());
    ordered.repeater = "c";
    ordered.content_type = "text/xml";
    ordered.case_id = case_id;
    ordered.ordered = true;
    NewRecord plain = ordered;
    plain.id = uuid_v7(now_micros());
    plain.repeater = "f";
    plain.case_id.clear();
    plain.ordered = false;
    auto r = run<IngestResult>(s, [&](Db& db) { return Store::ingest(db, form(form_id, "<" + form_id + "/>"), {ordered, plain}, now); });
    EXPECT_TRUE(r.ok());
    return ordered.id;
  }

  static std::vector<std::string> claim_ids(Store& s, const std::string& repeater, Micros now) {
    auto c = run<Claim>(s, [&](Db& db) { return Store::claim(db, {repeater}, 100, now); });
    std::vector<std::string> ids;
    for (const auto& r : c->records) ids.push_back(r.id);
    return ids;
  }

  static void finish(Store& s, const std::string& id, RecordState state, Micros now) {
    auto rows = run<std::int64_t>(s, [id](Db& db) {
      auto& q = db.prepare("SELECT id FROM attempts WHERE record = ?1 AND outcome = 'in_flight'");
      q.bind(1, id);
      const std::int64_t row = q.step() ? q.int64(0) : 0;
      q.reset();
      return row;
    });
    AttemptOutcome o;
    o.attempt_row = *rows;
    o.record_id = id;
    o.succeeded = state == RecordState::succeeded;
    o.new_state = state;
    if (state == RecordState::failed) o.next_attempt_at = now + 100;
    ASSERT_TRUE((run<bool>(s, [o, now](Db& db) { return Store::finish(db, o, now).applied; })).ok());
  }
};

TEST_F(OrderedStoreTest, ARecordWaitsForTheEarlierRecordsOfItsCase) {
  auto s = open();
  const std::string a1 = submit(*s, "form-1", "case-a", 10);
  const std::string a2 = submit(*s, "form-2", "case-a", 11);
  const std::string b1 = submit(*s, "form-3", "case-b", 12);
  const std::string a3 = submit(*s, "form-4", "case-a", 13);
  // The first of each case goes; other cases flow on; the unordered repeater is not held.
  EXPECT_EQ(claim_ids(*s, "c", 20), (std::vector<std::string>{a1, b1}));
  EXPECT_EQ(claim_ids(*s, "f", 20).size(), 4u);
  // A failed record still holds its case back.
  finish(*s, a1, RecordState::failed, 30);
  EXPECT_TRUE(claim_ids(*s, "c", 40).empty());
  // Its retry succeeds: the next of the case is released, and only that one.
  ASSERT_EQ(claim_ids(*s, "c", 130), (std::vector<std::string>{a1}));
  finish(*s, a1, RecordState::succeeded, 140);
  EXPECT_EQ(claim_ids(*s, "c", 150), (std::vector<std::string>{a2}));
  // A cancelled record releases the next too.
  finish(*s, a2, RecordState::cancelled, 160);
  EXPECT_EQ(claim_ids(*s, "c", 170), (std::vector<std::string>{a3}));
}

TEST_F(OrderedStoreTest, AnOperatorCancelReleasesTheNext) {
  auto s = open();
  const std::string a1 = submit(*s, "form-1", "case-a", 10);
  const std::string a2 = submit(*s, "form-2", "case-a", 11);
  ASSERT_TRUE((run<bool>(*s, [a1](Db& db) { return act(db, Action::cancel, a1, 20).ok(); })).ok());
  EXPECT_EQ(claim_ids(*s, "c", 30), (std::vector<std::string>{a2}));
}

TEST_F(OrderedStoreTest, FormRepeatersAreOrderedByFormId) {
  auto s = open();
  NewRecord r;
  r.repeater = "f";
  r.content_type = "text/xml";
  r.ordered = true;
  r.id = uuid_v7(now_micros());
  const std::string first = r.id;
  ASSERT_TRUE((run<IngestResult>(*s, [&](Db& db) { return Store::ingest(db, form("form-1", "<v1/>"), {r}, 10); })).ok());
  r.id = uuid_v7(now_micros());
  const std::string edit = r.id;  // an edit of the same form: other bytes, same id
  ASSERT_TRUE((run<IngestResult>(*s, [&](Db& db) { return Store::ingest(db, form("form-1", "<v2/>"), {r}, 11); })).ok());
  EXPECT_EQ(claim_ids(*s, "f", 20), (std::vector<std::string>{first}));
  finish(*s, first, RecordState::succeeded, 30);
  EXPECT_EQ(claim_ids(*s, "f", 40), (std::vector<std::string>{edit}));
}

// The claim stays a range scan of the due index (waiting records are not in it), and the two
// ordering lookups are range scans of records_order: the plans, as SQLite reports them.
TEST_F(OrderedStoreTest, OrderingLookupsAreIndexRangeScans) {
  auto s = open();
  s.reset();
  Db db(path_, Db::Mode::read_only);
  auto plan_of = [&db](const char* sql) {
    auto& plan = db.prepare(sql);
    std::string details;
    while (plan.step()) details += plan.text(3) + "\n";
    plan.reset();
    return details;
  };
  const std::string earlier = plan_of(
      "EXPLAIN QUERY PLAN SELECT 1 FROM records INDEXED BY records_order WHERE repeater = ?1 AND order_key = ?2 "
      "AND state IN ('pending', 'failed') LIMIT 1");
  EXPECT_NE(earlier.find("SEARCH records USING INDEX records_order (repeater=? AND order_key=?)"),
            std::string::npos) << earlier;
  const std::string next = plan_of(
      "EXPLAIN QUERY PLAN UPDATE records SET waiting = 0, next_attempt_at = ?3 WHERE id = (SELECT id FROM records "
      "INDEXED BY records_order WHERE repeater = ?1 AND order_key = ?2 AND state IN ('pending', 'failed') ORDER BY "
      "id LIMIT 1) AND waiting = 1");
  EXPECT_NE(next.find("SEARCH records USING INDEX records_order (repeater=? AND order_key=?)"), std::string::npos) << next;
  EXPECT_NE(next.find("SEARCH records USING INDEX sqlite_autoindex_records_1 (id=?)"), std::string::npos) << next;
  EXPECT_EQ(next.find("TEMP B-TREE"), std::string::npos) << next;
  EXPECT_EQ(next.find("SCAN"), std::string::npos) << next;
}

}  // namespace
}  // namespace repeaterd::store
