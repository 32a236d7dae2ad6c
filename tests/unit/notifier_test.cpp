// The Notifier decides by the clock it is given: a circuit change inside a throttle window is
// composed at once, and the window it starts begins at the clock's "now", not the wall clock's.
#include "notify/notifier.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "store/sqlite.hpp"
#include "temp_dir.hpp"

namespace repeaterd::notify {
namespace {

constexpr Micros kSecond = 1'000'000;
constexpr Micros kNow = 1'795'448'518 * kSecond;  // far from the wall clock on purpose

class NotifierClock : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::open(store::Options{path_});
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(s).value();
  }

  static std::shared_ptr<const config::Config> config() {
    auto c = std::make_shared<config::Config>();
    c->file = "/etc/repeaterd/repeaterd.yaml";
    config::Smtp smtp;
    smtp.url = "smtp://127.0.0.1:9";  // nothing listens: sends fail at once and stay queued
    smtp.from = "repeaterd@example.org";
    smtp.throttle = std::chrono::minutes(15);
    c->smtp = smtp;
    config::Connection crm;
    crm.name = "crm";
    crm.url = "https://crm.example.org/api";
    crm.notify = {"ops@example.org"};
    c->connections.push_back(crm);
    return c;
  }

  void run(std::function<void(store::Db&)> job) {
    std::promise<Status> done;
    store_->submit(std::move(job), [&done](Status st) { done.set_value(std::move(st)); });
    const Status st = done.get_future().get();
    ASSERT_TRUE(st.ok()) << st.error().message;
  }

  std::int64_t count(const char* sql) const {
    store::Db db(path_, store::Db::Mode::read_only);
    auto& s = db.prepare(sql);
    s.step();
    return s.is_null(0) ? -1 : s.int64(0);
  }

  testing::TempDir dir_{"notifier_test"};
  std::string path_ = (dir_.path() / "q.db").string();
  std::unique_ptr<store::Store> store_;  // closed before dir_ is removed
};

TEST_F(NotifierClock, ACircuitChangeInsideAThrottleWindowIsComposedAtOnceAndRestartsTheWindowAtTheClocksNow) {
  run([](store::Db& db) {
    // An email a minute ago: the connection's window is open for another 14 minutes.
    store::Store::queue_email(db, "crm", {"ops@example.org"}, "earlier", 0, 0, kNow - 60 * kSecond);
    store::Notification opened;
    opened.kind = store::Notification::Kind::circuit_opened;
    opened.attempt = 5;
    opened.error = "HTTP 503 Service Unavailable";
    opened.next_attempt_at = kNow + 5 * kSecond;
    opened.backlog = 40;
    store::Store::queue_circuit_notification(db, "crm", opened, kNow - kSecond);
  });
  config::ConfigHolder holder(config());
  EventLog events;
  Notifier notifier(holder, *store_, events, nullptr, [] { return kNow; });
  // The notifier's first pass runs as it starts; the circuit email must not wait for the window.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (count("SELECT COUNT(*) FROM notifications WHERE email IS NULL") != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(count("SELECT COUNT(*) FROM notifications WHERE email IS NULL"), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM emails"), 2);
  EXPECT_EQ(count("SELECT MAX(created_at) FROM emails"), kNow);
  EXPECT_EQ(count("SELECT window_start FROM notify_state WHERE connection = 'crm'"), kNow);
  EXPECT_EQ(count("SELECT COUNT(*) FROM emails WHERE CAST(message AS TEXT) LIKE '%Failures:       5 in a row%'"), 1);
}

}  // namespace
}  // namespace repeaterd::notify
