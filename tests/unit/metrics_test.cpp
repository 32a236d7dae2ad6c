// Metrics: what the counters and histograms count, the scrape-time gauges, label escaping, and
// that Prometheus's own checker (promtool, where installed) accepts the exposition.
#include "common/metrics.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "common/ids.hpp"

namespace repeaterd {
namespace {

// The value of the sample line that starts with `series` exactly (name and labels as rendered).
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

bool has_line_starting(const std::string& text, const std::string& prefix) {
  return text.find("\n" + prefix) != std::string::npos || text.rfind(prefix, 0) == 0;
}

Metrics::Gauges some_gauges() {
  Metrics::Gauges g;
  g.records = {{"forms", "pending", 3}, {"forms", "failed", 2}, {"cases", "succeeded", 120}};
  g.oldest_due_age_seconds = {{"forms", 12.5}, {"cases", 0}};
  g.in_flight = {{"openfn", 2}};
  g.paused = {{"forms", false}, {"cases", true}};
  g.emails_queued = 4;
  return g;
}

TEST(Metrics, CountersAndHistogramsReflectCalls) {
  Metrics m("1.2.3");
  m.ingest_request("receiver", 201, 0.002);
  m.ingest_request("receiver", 201, 0.003);
  m.ingest_request("receiver", 413, 0.0001);
  m.ingest_request("cases", 201, 20);
  m.attempt("openfn", "success", 0.3);
  m.attempt("openfn", "retryable", 2);
  m.attempt("openfn", "retryable", 200);
  m.store_batch(3, 0.004);
  m.store_batch(600, 0.5);
  m.email(true);
  m.email(false);
  m.email(false);
  const std::string text = m.render({});

  EXPECT_EQ(sample(text, R"(repeaterd_ingest_requests_total{endpoint="receiver",status="201"})"), 2);
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_requests_total{endpoint="receiver",status="413"})"), 1);
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_requests_total{endpoint="cases",status="201"})"), 1);
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_request_duration_seconds_count{endpoint="receiver"})"), 3);
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_request_duration_seconds_bucket{endpoint="receiver",le="0.0005"})"), 1);
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_request_duration_seconds_bucket{endpoint="receiver",le="0.0025"})"), 2);
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_request_duration_seconds_bucket{endpoint="cases",le="10"})"), 0);
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_request_duration_seconds_bucket{endpoint="cases",le="+Inf"})"), 1);
  EXPECT_NEAR(*sample(text, R"(repeaterd_ingest_request_duration_seconds_sum{endpoint="receiver"})"), 0.0051, 1e-9);

  EXPECT_EQ(sample(text, R"(repeaterd_attempts_total{connection="openfn",outcome="success"})"), 1);
  EXPECT_EQ(sample(text, R"(repeaterd_attempts_total{connection="openfn",outcome="retryable"})"), 2);
  EXPECT_EQ(sample(text, R"(repeaterd_attempt_duration_seconds_bucket{connection="openfn",le="120"})"), 2);
  EXPECT_EQ(sample(text, R"(repeaterd_attempt_duration_seconds_count{connection="openfn"})"), 3);

  EXPECT_EQ(sample(text, R"(repeaterd_store_batch_jobs_bucket{le="4"})"), 1);
  EXPECT_EQ(sample(text, R"(repeaterd_store_batch_jobs_bucket{le="512"})"), 1);
  EXPECT_EQ(sample(text, "repeaterd_store_batch_jobs_count"), 2);
  EXPECT_EQ(sample(text, "repeaterd_store_batch_jobs_sum"), 603);
  EXPECT_EQ(sample(text, "repeaterd_store_commit_duration_seconds_count"), 2);

  EXPECT_EQ(sample(text, R"(repeaterd_emails_total{result="sent"})"), 1);
  EXPECT_EQ(sample(text, R"(repeaterd_emails_total{result="failed"})"), 2);

  EXPECT_EQ(sample(text, R"(repeaterd_build_info{version="1.2.3"})"), 1);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(*sample(text, "repeaterd_start_time_seconds"), now, 60);
  // Every family says what it is.
  EXPECT_TRUE(has_line_starting(text, "# HELP repeaterd_ingest_requests_total "));
  EXPECT_TRUE(has_line_starting(text, "# TYPE repeaterd_ingest_request_duration_seconds histogram"));
}

TEST(Metrics, EmailResultsStartAtZero) {
  Metrics m("0.1.0");
  const std::string text = m.render({});
  EXPECT_EQ(sample(text, R"(repeaterd_emails_total{result="sent"})"), 0);
  EXPECT_EQ(sample(text, R"(repeaterd_emails_total{result="failed"})"), 0);
}

TEST(Metrics, GaugesAppearWithTheirLabels) {
  Metrics m("0.1.0");
  const std::string text = m.render(some_gauges());
  EXPECT_EQ(sample(text, R"(repeaterd_records{repeater="forms",state="pending"})"), 3);
  EXPECT_EQ(sample(text, R"(repeaterd_records{repeater="forms",state="failed"})"), 2);
  EXPECT_EQ(sample(text, R"(repeaterd_records{repeater="cases",state="succeeded"})"), 120);
  EXPECT_EQ(sample(text, R"(repeaterd_oldest_due_age_seconds{repeater="forms"})"), 12.5);
  EXPECT_EQ(sample(text, R"(repeaterd_oldest_due_age_seconds{repeater="cases"})"), 0);
  EXPECT_EQ(sample(text, R"(repeaterd_in_flight{connection="openfn"})"), 2);
  EXPECT_EQ(sample(text, R"(repeaterd_repeater_paused{repeater="forms"})"), 0);
  EXPECT_EQ(sample(text, R"(repeaterd_repeater_paused{repeater="cases"})"), 1);
  EXPECT_EQ(sample(text, "repeaterd_emails_queued"), 4);
  EXPECT_TRUE(has_line_starting(text, "# TYPE repeaterd_records gauge"));
}

TEST(Metrics, GaugesOfAVanishedRepeaterDisappear) {
  Metrics m("0.1.0");
  ASSERT_TRUE(sample(m.render(some_gauges()), R"(repeaterd_records{repeater="cases",state="succeeded"})"));
  Metrics::Gauges later = some_gauges();
  later.records.pop_back();
  later.oldest_due_age_seconds.pop_back();
  later.paused.pop_back();
  const std::string text = m.render(later);
  EXPECT_EQ(text.find(R"(repeater="cases")"), std::string::npos) << text;
  EXPECT_TRUE(sample(text, R"(repeaterd_records{repeater="forms",state="pending"})"));
}

TEST(Metrics, LabelValuesAreEscaped) {
  Metrics m("0.1.0\"beta\"");
  m.attempt("we\"ird\\name\nx", "success", 0.1);
  Metrics::Gauges g;
  g.paused = {{"a\"b", true}};
  const std::string text = m.render(g);
  EXPECT_EQ(sample(text, R"(repeaterd_attempts_total{connection="we\"ird\\name\nx",outcome="success"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(repeaterd_repeater_paused{repeater="a\"b"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(repeaterd_build_info{version="0.1.0\"beta\""})"), 1) << text;
}

// Runs `promtool check metrics` on the text; returns its exit status and everything it printed.
std::pair<int, std::string> promtool_check(const std::string& text) {
  const auto file = std::filesystem::temp_directory_path() / ("repeaterd-metrics-" + uuid_v4() + ".prom");
  std::ofstream(file, std::ios::binary) << text;
  FILE* p = ::popen(("promtool check metrics < '" + file.string() + "' 2>&1").c_str(), "r");
  std::string out;
  if (p != nullptr) {
    char buf[512];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  }
  const int status = p != nullptr ? ::pclose(p) : -1;
  std::filesystem::remove(file);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Metrics, PromtoolAcceptsTheExposition) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is not on PATH (Debian package prometheus; scripts/deps.sh --test installs it)";
  }
  Metrics m("0.1.0");
  // Before anything happened: families without samples must pass too.
  auto [empty_status, empty_out] = promtool_check(m.render({}));
  EXPECT_EQ(empty_status, 0) << empty_out;
  EXPECT_EQ(empty_out, "");

  m.ingest_request("receiver", 201, 0.01);
  m.ingest_request("other", 404, 0.0002);
  m.attempt("openfn", "success", 0.3);
  m.attempt("odd \"name\"\\\n", "client_error", 1);
  m.store_batch(7, 0.003);
  m.email(true);
  Metrics::Gauges g = some_gauges();
  g.records.push_back({"odd \"name\"\\\n", "pending", 1});
  auto [status, out] = promtool_check(m.render(g));
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out, "");
}

TEST(Metrics, CountsFromManyThreadsAddUp) {
  Metrics m("0.1.0");
  constexpr int kThreads = 4;
  constexpr int kEach = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m, t] {
      const std::string connection = t % 2 == 0 ? "even" : "odd";
      for (int i = 0; i < kEach; ++i) {
        m.ingest_request("receiver", 201, 0.001);
        m.attempt(connection, "success", 0.01);
        m.store_batch(1, 0.001);
        m.email(i % 2 == 0);
      }
    });
  }
  // A scrape while they count must not disturb them.
  threads.emplace_back([&m] {
    for (int i = 0; i < 50; ++i) (void)m.render({});
  });
  for (auto& t : threads) t.join();
  const std::string text = m.render({});
  const double total = kThreads * kEach;
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_requests_total{endpoint="receiver",status="201"})"), total);
  EXPECT_EQ(sample(text, R"(repeaterd_ingest_request_duration_seconds_count{endpoint="receiver"})"), total);
  EXPECT_EQ(sample(text, R"(repeaterd_attempts_total{connection="even",outcome="success"})"), total / 2);
  EXPECT_EQ(sample(text, R"(repeaterd_attempts_total{connection="odd",outcome="success"})"), total / 2);
  EXPECT_EQ(sample(text, "repeaterd_store_batch_jobs_count"), total);
  EXPECT_EQ(sample(text, R"(repeaterd_emails_total{result="sent"})"), total / 2);
  EXPECT_EQ(sample(text, R"(repeaterd_emails_total{result="failed"})"), total / 2);
}

}  // namespace
}  // namespace repeaterd
