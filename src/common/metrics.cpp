#include "common/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <iterator>

namespace repeaterd {
namespace {

using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Registry;

// Bucket bounds, in base units. An ingest answer includes the store commit (fsync): well
// under a millisecond when idle, seconds when the disk is slow.
const Histogram::BucketBoundaries kIngestSeconds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
// An attempt is a whole HTTP exchange with a receiver, up to a connection's timeout (60s by default).
const Histogram::BucketBoundaries kAttemptSeconds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                     1,     2.5,  5,     10,   30,  60,   120};
// Group commit merges queued jobs; powers of two up to the batch sizes seen under load.
const Histogram::BucketBoundaries kBatchJobs = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
// A commit is mostly its fsync: tenths of a millisecond on SSDs, tens on disks, more when busy.
const Histogram::BucketBoundaries kCommitSeconds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};

template <class T>
prometheus::Family<T>& family(prometheus::detail::Builder<T> builder, Registry& registry, const std::string& name,
                              const std::string& help) {
  return builder.Name(name).Help(help).Register(registry);
}

prometheus::Family<Counter>& counter(Registry& r, const std::string& name, const std::string& help) {
  return family(prometheus::BuildCounter(), r, name, help);
}
prometheus::Family<Gauge>& gauge(Registry& r, const std::string& name, const std::string& help) {
  return family(prometheus::BuildGauge(), r, name, help);
}
prometheus::Family<Histogram>& histogram(Registry& r, const std::string& name, const std::string& help) {
  return family(prometheus::BuildHistogram(), r, name, help);
}

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct Metrics::Impl {
  explicit Impl(const std::string& version)
      : ingest_requests(counter(registry, "repeaterd_ingest_requests_total",
                                "Ingest requests answered, by endpoint and HTTP status.")),
        ingest_duration(histogram(registry, "repeaterd_ingest_request_duration_seconds",
                                  "Time from an ingest request read in full to its answer written (store commit "
                                  "included), by endpoint.")),
        attempts(counter(registry, "repeaterd_attempts_total",
                         "Delivery attempts ended, by connection and outcome.")),
        attempt_duration(histogram(registry, "repeaterd_attempt_duration_seconds",
                                   "Duration of delivery attempts, by connection.")),
        batch_jobs(histogram(registry, "repeaterd_store_batch_jobs",
                             "Jobs per committed store batch (group commit).")
                       .Add({}, kBatchJobs)),
        commit_duration(histogram(registry, "repeaterd_store_commit_duration_seconds",
                                  "Time to commit a store batch, fsync included.")
                            .Add({}, kCommitSeconds)),
        emails(counter(registry, "repeaterd_emails_total", "Notification emails sent or failed to send, by result.")),
        // Both results from the start, so that a rate over them is defined before the first failure.
        emails_sent(emails.Add({{"result", "sent"}})),
        emails_failed(emails.Add({{"result", "failed"}})) {
    gauge(registry, "repeaterd_build_info", "The running repeaterd's version; always 1.")
        .Add({{"version", version}})
        .Set(1);
    gauge(registry, "repeaterd_start_time_seconds", "When repeaterd started, in seconds since the Unix epoch.")
        .Add({})
        .Set(unix_seconds_now());
  }

  Registry registry;
  prometheus::Family<Counter>& ingest_requests;
  prometheus::Family<Histogram>& ingest_duration;
  prometheus::Family<Counter>& attempts;
  prometheus::Family<Histogram>& attempt_duration;
  Histogram& batch_jobs;
  Histogram& commit_duration;
  prometheus::Family<Counter>& emails;
  Counter& emails_sent;
  Counter& emails_failed;
};

Metrics::Metrics(std::string version) : impl_(std::make_unique<Impl>(version)) {}

Metrics::~Metrics() = default;

void Metrics::ingest_request(std::string_view endpoint, int status, double seconds) {
  const std::string e(endpoint);
  impl_->ingest_requests.Add({{"endpoint", e}, {"status", std::to_string(status)}}).Increment();
  impl_->ingest_duration.Add({{"endpoint", e}}, kIngestSeconds).Observe(seconds);
}

void Metrics::attempt(std::string_view connection, std::string_view outcome, double seconds) {
  const std::string c(connection);
  impl_->attempts.Add({{"connection", c}, {"outcome", std::string(outcome)}}).Increment();
  impl_->attempt_duration.Add({{"connection", c}}, kAttemptSeconds).Observe(seconds);
}

void Metrics::store_batch(std::size_t jobs, double commit_seconds) {
  impl_->batch_jobs.Observe(static_cast<double>(jobs));
  impl_->commit_duration.Observe(commit_seconds);
}

void Metrics::email(bool sent) { (sent ? impl_->emails_sent : impl_->emails_failed).Increment(); }

std::string Metrics::render(const Gauges& gauges) const {
  // The queue's gauges come from a registry of their own, built afresh for this scrape.
  Registry now;
  auto& records = gauge(now, "repeaterd_records", "Records in the store, by repeater and state.");
  for (const auto& c : gauges.records) {
    records.Add({{"repeater", c.repeater}, {"state", c.state}}).Set(static_cast<double>(c.count));
  }
  auto& oldest = gauge(now, "repeaterd_oldest_due_age_seconds",
                       "Seconds since the earliest due time of a record still waiting for its attempt (0 when "
                       "none is due), by repeater.");
  for (const auto& [repeater, age] : gauges.oldest_due_age_seconds) oldest.Add({{"repeater", repeater}}).Set(age);
  auto& in_flight = gauge(now, "repeaterd_in_flight", "Attempts in progress, by connection.");
  for (const auto& [connection, n] : gauges.in_flight) {
    in_flight.Add({{"connection", connection}}).Set(static_cast<double>(n));
  }
  auto& circuit = gauge(now, "repeaterd_circuit_open",
                        "1 while a connection's circuit is open (nothing but one probe at a time is sent).");
  for (const auto& [connection, open] : gauges.circuit_open) circuit.Add({{"connection", connection}}).Set(open ? 1 : 0);
  auto& limit = gauge(now, "repeaterd_concurrency_limit",
                      "How many attempts a connection may have in flight now (adapts up to max_in_flight).");
  for (const auto& [connection, n] : gauges.concurrency_limit) {
    limit.Add({{"connection", connection}}).Set(static_cast<double>(n));
  }
  auto& paused = gauge(now, "repeaterd_repeater_paused", "1 when a repeater is paused (by its config or an operator).");
  for (const auto& [repeater, p] : gauges.paused) paused.Add({{"repeater", repeater}}).Set(p ? 1 : 0);
  gauge(now, "repeaterd_emails_queued", "Notification emails waiting in the outbox to be sent.")
      .Add({})
      .Set(static_cast<double>(gauges.emails_queued));

  auto families = impl_->registry.Collect();
  auto current = now.Collect();
  families.insert(families.end(), std::make_move_iterator(current.begin()), std::make_move_iterator(current.end()));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace repeaterd
