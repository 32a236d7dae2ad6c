// Metrics: what repeaterd counts and measures, rendered in the Prometheus text format (0.0.4)
// for the admin API's GET /metrics.
//
// Counters and histograms live as long as the daemon and are fed by the component that sees
// the event (ingest answers, attempt outcomes, store commits, emails). Gauges that describe the
// queue (records per state, the oldest due record, attempts in flight, paused repeaters, the
// email outbox) are not kept here: the caller reads them from the store and scheduler when it
// is scraped and passes them to render(), so a repeater that is gone from the config leaves no
// stale series behind. Label values are escaped by the serializer; callers keep them to small
// fixed sets (endpoint and outcome names, configured repeaters and connections).
//
// prometheus-cpp's core library does the bookkeeping and the serialization; this header keeps it
// out of the components that count.
//
// Thread-safety: every method may be called from any thread at the same time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace repeaterd {

class Metrics {
 public:
  // `version` becomes repeaterd_build_info{version="..."}; the start time is taken now.
  explicit Metrics(std::string version);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // An ingest request answered: endpoint is a small fixed set of names (see
  // ingest::Receiver::endpoint_name); seconds from the request read in full to the reply written.
  void ingest_request(std::string_view endpoint, int status, double seconds);
  // An attempt ended: outcome is the class the scheduler reports ("success", "client_error",
  // "retryable", "cancelled_at_once"), taken as a label value.
  void attempt(std::string_view connection, std::string_view outcome, double seconds);
  // A store batch committed: how many jobs it held and how long the commit (incl. fsync) took.
  void store_batch(std::size_t jobs, double commit_seconds);
  // An email was sent (true) or a send failed (false).
  void email(bool sent);

  // Gauges are read from the store and scheduler at scrape time and passed in; one entry per
  // label set (a repeated one keeps its last value).
  struct Gauges {
    struct Count {
      std::string repeater;
      std::string state;
      std::int64_t count = 0;
    };
    std::vector<Count> records;                                          // repeaterd_records{repeater,state}
    std::vector<std::pair<std::string, double>> oldest_due_age_seconds;  // per repeater
    std::vector<std::pair<std::string, std::int64_t>> in_flight;         // per connection
    std::vector<std::pair<std::string, bool>> circuit_open;              // per connection (open or probing)
    std::vector<std::pair<std::string, std::int64_t>> concurrency_limit; // per connection
    std::vector<std::pair<std::string, bool>> paused;                    // per repeater
    std::int64_t emails_queued = 0;
  };
  // The whole exposition (Prometheus text format 0.0.4): counters, histograms, these gauges,
  // repeaterd_build_info{version="..."} 1 and repeaterd_start_time_seconds.
  std::string render(const Gauges& gauges) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace repeaterd
