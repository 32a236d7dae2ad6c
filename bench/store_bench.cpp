// store_bench: the queue's behaviour at depth, measured.
//
//   store_bench [RECORDS] [DB_PATH]
//
// Fills a fresh queue with RECORDS due records (default 1,000,000) in batches, then measures,
// in the same process: the group-commit rate of single-submission jobs sent concurrently
// (baseline: the same jobs each waited for before the next is sent), the latency of claiming a
// page of due records, and the process's resident memory before and after filling and claiming.
// Memory must not grow with the queue's depth: claims read a page from the due index. Then it
// walks the admin API's record list page by page and prints the first, 1,000th and last page's
// latency: keyset pages over an index cost the same at any depth.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include "common/ids.hpp"
#include "store/records.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

using namespace repeaterd;
using namespace repeaterd::store;
using Clock = std::chrono::steady_clock;

namespace {

long rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

NewPayload payload(std::size_t i) {
  NewPayload p;
  p.domain = "bench";
  p.payload_type = "form";
  p.payload_id = "form-" + std::to_string(i);
  p.content_type = "text/xml";
  p.body = "<data><meta><instanceID>form-" + std::to_string(i) + "</instanceID></meta></data>";
  p.received_on = now_micros();
  return p;
}

std::vector<NewRecord> one_record() {
  NewRecord r;
  r.id = uuid_v7(now_micros());
  r.repeater = "bench";
  r.content_type = "text/xml";
  return {r};
}

// Submits `n` single-form jobs; with `concurrent`, all at once (group commit), else one by one.
double ingest_rate(Store& s, std::size_t first, std::size_t n, bool concurrent) {
  const auto t = Clock::now();
  std::vector<std::promise<void>> done(n);
  for (std::size_t i = 0; i < n; ++i) {
    s.submit([i, first](Db& db) { Store::ingest(db, payload(first + i), one_record(), now_micros()); },
             [&done, i](Status) { done[i].set_value(); });
    if (!concurrent) done[i].get_future().wait();
  }
  if (concurrent) {
    for (auto& d : done) d.get_future().wait();
  }
  return static_cast<double>(n) / seconds_since(t);
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t records = argc > 1 ? std::stoul(argv[1]) : 1'000'000;
  const std::string path =
      argc > 2 ? argv[2] : (std::filesystem::temp_directory_path() / ("store_bench-" + uuid_v4() + ".db")).string();
  std::printf("store_bench: %zu records in %s\n", records, path.c_str());
  const long rss_start = rss_kib();

  auto opened = Store::open(Options{path});
  if (!opened) {
    std::fprintf(stderr, "%s\n", opened.error().message.c_str());
    return 1;
  }
  auto& s = **opened;

  const std::size_t sample = 2000;
  const double one_by_one = ingest_rate(s, 0, 200, false);
  const double grouped = ingest_rate(s, 200, sample, true);
  const auto batches_before_fill = s.batches_committed();

  // Fill: 5,000 forms per job so a million records take a couple hundred transactions.
  const auto fill = Clock::now();
  std::size_t next = 200 + sample;
  while (next < records) {
    const std::size_t n = std::min<std::size_t>(5000, records - next);
    std::promise<void> done;
    s.submit(
        [next, n](Db& db) {
          for (std::size_t i = 0; i < n; ++i) Store::ingest(db, payload(next + i), one_record(), now_micros());
        },
        [&](Status st) {
          if (!st.ok()) std::fprintf(stderr, "fill failed: %s\n", st.error().message.c_str());
          done.set_value();
        });
    done.get_future().wait();
    next += n;
  }
  const double fill_s = seconds_since(fill);
  const long rss_filled = rss_kib();

  // Claim pages the way a connection worker does.
  double worst_ms = 0, total_ms = 0;
  const int pages = 200;
  for (int i = 0; i < pages; ++i) {
    std::promise<Result<Claim>> p;
    const auto t = Clock::now();
    s.run<Claim>([](Db& db) { return Store::claim(db, {"bench"}, 32, now_micros()); },
                 [&](Result<Claim> r) { p.set_value(std::move(r)); });
    auto c = p.get_future().get();
    const double ms = seconds_since(t) * 1000;
    worst_ms = std::max(worst_ms, ms);
    total_ms += ms;
    if (!c.ok() || c->records.size() != 32) {
      std::fprintf(stderr, "claim returned too few records\n");
      return 1;
    }
  }
  const long rss_claimed = rss_kib();
  (void)batches_before_fill;

  // The writer's work per delivered record, alone: claim a page of 32 due records, then store
  // each one's successful attempt as its own job (as a connection worker sends them), all 32
  // outstanding at once so that they commit as a group.
  const std::size_t cycle_records = std::min<std::size_t>(20000, records / 2) / 32 * 32;
  const auto cycle = Clock::now();
  for (std::size_t done_n = 0; done_n < cycle_records; done_n += 32) {
    std::promise<Result<Claim>> p;
    s.run<Claim>([](Db& db) { return Store::claim(db, {"bench"}, 32, now_micros()); },
                 [&](Result<Claim> r) { p.set_value(std::move(r)); });
    auto c = p.get_future().get();
    if (!c.ok() || c->records.size() != 32) {
      std::fprintf(stderr, "claim returned too few records\n");
      return 1;
    }
    std::vector<std::promise<void>> stored(c->records.size());
    for (std::size_t i = 0; i < c->records.size(); ++i) {
      AttemptOutcome o;
      o.attempt_row = c->records[i].attempt_row;
      o.record_id = c->records[i].id;
      o.version = c->records[i].version;
      o.succeeded = true;
      o.http_status = 200;
      o.response_headers_json = R"({"Content-Length":"2","Content-Type":"application/json","Server":"nginx"})";
      o.response_body = "{}";
      o.duration_ms = 1;
      o.new_state = RecordState::succeeded;
      s.submit([o = std::move(o)](Db& db) { Store::finish(db, o, now_micros()); },
               [&stored, i](Status) { stored[i].set_value(); });
    }
    for (auto& d : stored) d.get_future().wait();
  }
  const double cycle_rate = static_cast<double>(cycle_records) / seconds_since(cycle);

  // The admin API's record list: keyset pages of 100 over records_list, on a read-only
  // connection, walked from the first page to the last. Page n must cost what page 1 does.
  auto reader = s.open_reader();
  RecordFilter all;
  all.states = {"pending", "failed"};  // two ranges merged, as repeaterctl records list --state does
  std::string after;
  std::vector<double> page_ms;
  for (;;) {
    const auto t = Clock::now();
    auto page = list_records(*reader, all, after, 100);
    page_ms.push_back(seconds_since(t) * 1000);
    if (!page.next) break;
    after = *page.next;
  }
  reader.reset();
  double page_sum = 0;
  for (double ms : page_ms) page_sum += ms;
  const std::size_t page_1000 = std::min<std::size_t>(999, page_ms.size() - 1);

  std::printf("\n%-48s %12s\n", "measure", "value");
  std::printf("%-48s %12.0f\n", "ingest, one job at a time (forms/s)  [baseline]", one_by_one);
  std::printf("%-48s %12.0f\n", "ingest, 2000 concurrent jobs (forms/s)", grouped);
  std::printf("%-48s %12.1fx\n", "group commit speed-up", grouped / one_by_one);
  std::printf("%-48s %12.1f\n", "fill to depth (s)", fill_s);
  std::printf("%-48s %12.2f\n", "claim 32 due records, mean (ms)", total_ms / pages);
  std::printf("%-48s %12.2f\n", "claim 32 due records, worst (ms)", worst_ms);
  std::printf("%-48s %12.0f\n", "claim + store outcome, writer alone (records/s)", cycle_rate);
  std::printf("%-48s %12zu\n", "list pages of 100 walked", page_ms.size());
  std::printf("%-48s %12.2f\n", "list page 1 (ms)  [baseline]", page_ms.front());
  std::printf("%-48s %12.2f\n", "list page 1,000 (ms)", page_ms[page_1000]);
  std::printf("%-48s %12.2f\n", "list last page (ms)", page_ms.back());
  std::printf("%-48s %12.2f\n", "list page, mean (ms)", page_sum / static_cast<double>(page_ms.size()));
  std::printf("%-48s %12ld\n", "RSS at start (KiB)", rss_start);
  std::printf("%-48s %12ld\n", "RSS with the queue filled (KiB)", rss_filled);
  std::printf("%-48s %12ld\n", "RSS after 200 claims (KiB)", rss_claimed);
  opened->reset();
  if (argc <= 2) {
    std::filesystem::remove(path);
    std::filesystem::remove(path + "-wal");
    std::filesystem::remove(path + "-shm");
  }
  return 0;
}
