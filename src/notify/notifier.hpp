// notify::Notifier: turns queued notifications into emails and gets them delivered (spec §6).
//
// The scheduler queues a notification in the same transaction as the attempt outcome or
// circuit change that calls for it. The notifier, on a thread of its own so that SMTP never
// slows forwarding:
// - builds one email per connection and throttle window: when a connection has unsent
//   notifications and its window has ended (or it never had one), everything pending goes into
//   one email (one event: a detailed email; several: a summary) and a new window starts. A
//   circuit change does not wait for the window (notify/throttle.hpp);
// - sends due emails from the outbox, a connection's in the order they were queued, retrying
//   with backoff while the server is unreachable or refuses for now (4xx), and records each
//   outcome in the event log (notify.sent, notify.failed). An email the server refuses for good
//   (5xx) kMaxRefusals times is set aside ('refused', notify.failed with permanent: true) and
//   kept for the operator; a restart or reload queues it again, since what fixes a permanent
//   refusal (credentials, the sender, an address) is a config change.
// Everything it decides is in the database first, so a restart loses and repeats nothing. An
// email's outcome the database cannot take (a full disk) is held in memory and stored at each
// pass until it is: an email that was sent is never sent again for want of its mark (a kill
// before the mark is stored sends it once more: at least once).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/event_log.hpp"
#include "common/metrics.hpp"
#include "notify/smtp.hpp"
#include "repeaterd/config.hpp"
#include "store/store.hpp"

namespace repeaterd::notify {

class Notifier {
 public:
  static constexpr int kMaxRefusals = 3;

  // Starts the thread. Each pass reads the config in force (a reload may add, change or remove
  // the smtp section; without one the notifier waits). `metrics` (optional, not owned, must
  // outlive the notifier) counts each send and failed send. `clock` gives every "now" the
  // notifier decides by (throttle windows, email retries, when to look again).
  Notifier(config::ConfigHolder& config, store::Store& store, EventLog& events, Metrics* metrics = nullptr,
           std::function<Micros()> clock = now_micros);
  ~Notifier();  // abandons a send in progress (the email stays queued) and stops the thread
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // A notification was queued: look now rather than at the next planned time. Any thread.
  void wake();

 private:
  void run();
  // One pass; returns when to look again.
  Micros pass();
  void compose_due(const config::Config& config, Micros now, Micros& next);
  void send_due(const config::Smtp& smtp, Micros now);
  void requeue_refused(Micros now);
  // Stores the held outcomes it can; true when none is left.
  bool store_held();

  // An email's outcome (sent, or a failed try) waiting for the store to take it.
  struct Held {
    std::int64_t id = 0;
    bool sent = false;
    Micros at = 0;  // sent: when; failed: the next try
    std::string error;
    bool refusal = false;
  };

  config::ConfigHolder& config_;
  store::Store& store_;
  EventLog& events_;
  Metrics* metrics_;  // may be null
  const std::function<Micros()> clock_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const config::Config> seen_;  // the config of the last pass (notifier thread)
  std::vector<Held> held_;                       // notifier thread
  bool woken_ = false;     // GUARDED_BY(mu_)
  bool stopping_ = false;  // GUARDED_BY(mu_)
  SmtpCancel cancel_;  // abandons a send in progress at shutdown
  std::thread thread_;
};

}  // namespace repeaterd::notify
