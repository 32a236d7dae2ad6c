#include "common/event_log.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "common/ids.hpp"
#include "common/json_text.hpp"

namespace repeaterd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using event_log_detail::format_line;

class EventLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("repeaterd-event-log-" + uuid_v4());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::vector<json> read_lines(const fs::path& path) {
    std::ifstream in(path);
    std::vector<json> out;
    for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
    return out;
  }
  static std::string read_text(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  fs::path dir_;
};

TEST(EventLogFormat, TimestampAndEventFirstThenFields) {
  EXPECT_EQ(format_line("2026-01-02T03:04:05.000006Z", "record.created",
                        json{{"record_id", "r1"}, {"attempt", 2}, {"ok", true}, {"gone", nullptr}}),
            "{\"ts\":\"2026-01-02T03:04:05.000006Z\",\"event\":\"record.created\",\"attempt\":2,\"gone\":null,"
            "\"ok\":true,\"record_id\":\"r1\"}\n");
}

TEST(EventLogFormat, EscapesLikeNlohmann) {
  const std::string nasty = std::string("quote \" backslash \\ newline \n tab \t bell \x07 del \x7f utf8 \xc3\xa9");
  const json fields = {{"error", nasty}, {"we\"ird", "k"}, {"neg", -5}, {"big", std::uint64_t{18446744073709551615u}}};
  const std::string line = format_line("t", "e", fields);
  ASSERT_EQ(line.back(), '\n');
  const json parsed = json::parse(line);
  EXPECT_EQ(parsed["error"], nasty);
  EXPECT_EQ(parsed["we\"ird"], "k");
  EXPECT_EQ(parsed["neg"], -5);
  EXPECT_EQ(parsed["big"], std::uint64_t{18446744073709551615u});
  // Value for value, the same text nlohmann writes.
  json expected = fields;
  expected["ts"] = "t";
  expected["event"] = "e";
  EXPECT_EQ(parsed, json::parse(expected.dump()));
  EXPECT_NE(line.find(json(nasty).dump()), std::string::npos);
}

TEST(EventLogFormat, InvalidUtf8IsReplacedNotThrown) {
  const std::string line = format_line("t", "attempt.failed", json{{"response", std::string("bad \xff\xfe bytes")}});
  const json parsed = json::parse(line);
  EXPECT_EQ(parsed["response"], "bad \xef\xbf\xbd\xef\xbf\xbd bytes");
}

TEST(EventLogFormat, NestedValuesAndFloatsAsNlohmannWritesThem) {
  const json reps = json::array({json{{"repeater", "a"}, {"pending", 3}}});
  const std::string line = format_line("t", "queue.summary", json{{"repeaters", reps}, {"ratio", 0.25}});
  EXPECT_NE(line.find("\"repeaters\":" + reps.dump()), std::string::npos) << line;
  EXPECT_NE(line.find("\"ratio\":0.25"), std::string::npos) << line;
}

// Response headers, as every attempt stores them: the bytes nlohmann wrote for the same map.
TEST(JsonText, HeadersObjectIsWhatNlohmannWrites) {
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"Server", "nginx"}, {"Set-Cookie", "a=1"}, {"Content-Type", "application/json"}, {"Set-Cookie", "b=2"},
      {"X-Caf\xc3\xa9", "quote \" and \\"}, {"X-Bad", "\xff\xfe"}, {"set-cookie", "lower"}, {"Set-Cookie", "c"}};
  nlohmann::json h = nlohmann::json::object();
  for (const auto& [k, v] : headers) {
    auto& slot = h[k];
    slot = slot.is_null() ? v : slot.get<std::string>() + ", " + v;
  }
  EXPECT_EQ(json_text::headers_object(headers), h.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  EXPECT_EQ(json_text::headers_object({}), "{}");
  EXPECT_NE(json_text::headers_object(headers).find(R"("Set-Cookie":"a=1, b=2, c")"), std::string::npos);
}

TEST(EventLogFormat, FieldsNamedTsOrEventWin) {
  const json parsed = json::parse(format_line("t", "e", json{{"ts", "mine"}, {"event", "other"}}));
  EXPECT_EQ(parsed, (json{{"ts", "mine"}, {"event", "other"}}));
}

TEST_F(EventLogTest, BuffersThenWritesWithinTheInterval) {
  EventLog log(EventLog::Options{std::chrono::milliseconds(30), 1 << 20});
  ASSERT_TRUE(log.open((dir_ / "events.log").string()));
  log.emit("a", {{"n", 1}});
  // Seen by a reader (tail -f) soon, without a flush() or close().
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (read_lines(dir_ / "events.log").empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const auto lines = read_lines(dir_ / "events.log");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["event"], "a");
  EXPECT_EQ(lines[0]["n"], 1);
}

TEST_F(EventLogTest, ManyWritersLinesWholeAndInEachWritersOrder) {
  constexpr int kThreads = 4, kEach = 5000;
  {
    // A small buffer, so that emitters also write when the flusher is behind.
    EventLog log(EventLog::Options{std::chrono::milliseconds(5), 4096});
    ASSERT_TRUE(log.open((dir_ / "events.log").string()));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&log, t] {
        for (int i = 0; i < kEach; ++i) log.emit("tick", {{"thread", t}, {"i", i}, {"pad", std::string(40, 'x')}});
      });
    }
    for (auto& t : threads) t.join();
  }  // the destructor writes what is left
  const auto lines = read_lines(dir_ / "events.log");  // json::parse throws on a torn line
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kEach));
  std::vector<int> next(kThreads, 0);
  for (const auto& l : lines) {
    const int t = l["thread"];
    ASSERT_EQ(l["i"], next[static_cast<std::size_t>(t)]) << "thread " << t << " out of order";
    ++next[static_cast<std::size_t>(t)];
  }
}

TEST_F(EventLogTest, CloseAndFlushWriteEverythingBuffered) {
  // An interval far longer than the test: only flush() and close() can write these.
  EventLog log(EventLog::Options{std::chrono::hours(1), 1 << 20});
  ASSERT_TRUE(log.open((dir_ / "events.log").string()));
  log.emit("first", {});
  log.flush();
  EXPECT_EQ(read_lines(dir_ / "events.log").size(), 1u);
  for (int i = 0; i < 100; ++i) log.emit("more", {{"i", i}});
  log.close();
  EXPECT_EQ(read_lines(dir_ / "events.log").size(), 101u);
  log.emit("after close", {});  // dropped, not written or crashed on
  log.flush();
  EXPECT_EQ(read_lines(dir_ / "events.log").size(), 101u);
}

TEST_F(EventLogTest, ReopenWritesEarlierLinesToTheMovedFile) {
  EventLog log(EventLog::Options{std::chrono::hours(1), 1 << 20});
  ASSERT_TRUE(log.open((dir_ / "events.log").string()));
  log.emit("before", {{"i", 1}});
  log.emit("before", {{"i", 2}});
  fs::rename(dir_ / "events.log", dir_ / "events.log.1");  // logrotate
  ASSERT_TRUE(log.reopen());
  log.emit("after", {{"i", 3}});
  log.close();
  const auto old_lines = read_lines(dir_ / "events.log.1");
  const auto new_lines = read_lines(dir_ / "events.log");
  ASSERT_EQ(old_lines.size(), 2u);
  EXPECT_EQ(old_lines[1]["i"], 2);
  ASSERT_EQ(new_lines.size(), 1u);
  EXPECT_EQ(new_lines[0]["event"], "after");
}

TEST_F(EventLogTest, ReopenFailureKeepsTheOldFile) {
  EventLog log(EventLog::Options{std::chrono::hours(1), 1 << 20});
  ASSERT_TRUE(log.open((dir_ / "sub" / "events.log").string()));
  fs::rename(dir_ / "sub", dir_ / "moved");
  // Where the file was is now a file, so the directory cannot be made again.
  std::ofstream(dir_ / "sub") << "x";
  EXPECT_FALSE(log.reopen());
  log.emit("still", {});
  log.close();
  EXPECT_EQ(read_lines(dir_ / "moved" / "events.log").size(), 1u);
}

TEST_F(EventLogTest, OpenFailsWithAnActionableMessage) {
  std::ofstream(dir_ / "file") << "x";
  EventLog log;
  const auto st = log.open((dir_ / "file" / "events.log").string());
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("log.events_file"), std::string::npos);
}

TEST_F(EventLogTest, AppendsToAnExistingFile) {
  std::ofstream(dir_ / "events.log") << "{\"old\":1}\n";
  {
    EventLog log;
    ASSERT_TRUE(log.open((dir_ / "events.log").string()));
    log.emit("new", {});
  }
  const auto text = read_text(dir_ / "events.log");
  EXPECT_EQ(text.rfind("{\"old\":1}\n{\"ts\":", 0), 0u) << text;
}

}  // namespace
}  // namespace repeaterd
