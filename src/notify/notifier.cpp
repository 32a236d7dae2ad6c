#include "notify/notifier.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <future>
#include <nlohmann/json.hpp>

#include "notify/compose.hpp"
#include "notify/throttle.hpp"

namespace repeaterd::notify {
namespace {

constexpr std::size_t kSendBatch = 20;
// A pass runs at least this often, whatever it expects, to pick up anything it missed.
constexpr Micros kMaxSleep = 30'000'000;
// How soon a pass comes back for outcomes the store could not take.
constexpr Micros kHeldRetry = 1'000'000;

// Runs a store job from this (non-Asio) thread and waits for its committed result.
template <class T>
Result<T> run_job(store::Store& store, std::function<T(store::Db&)> fn) {
  std::promise<Result<T>> done;
  auto result = done.get_future();
  store.run<T>(std::move(fn), [&done](Result<T> r) { done.set_value(std::move(r)); });
  return result.get();
}

}  // namespace

Notifier::Notifier(config::ConfigHolder& config, store::Store& store, EventLog& events, Metrics* metrics,
                   std::function<Micros()> clock)
    : config_(config), store_(store), events_(events), metrics_(metrics), clock_(std::move(clock)) {
  thread_ = std::thread([this] { run(); });
}

Notifier::~Notifier() {
  cancel_.cancel();  // abandons a send in progress
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Notifier::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

void Notifier::run() {
  for (;;) {
    Micros next = clock_() + kMaxSleep;
    try {
      next = pass();
    } catch (const std::exception& e) {
      spdlog::error("notifier: {}", e.what());
    }
    std::unique_lock lock(mu_);
    const auto wait = std::chrono::microseconds(std::max<Micros>(0, next - clock_()));
    cv_.wait_for(lock, wait, [&] { return stopping_ || woken_; });
    if (stopping_) return;
    woken_ = false;
  }
}

Micros Notifier::pass() {
  const Micros now = clock_();
  Micros next = now + kMaxSleep;
  const auto config = config_.get();
  if (!config->smtp) return next;  // no smtp section (yet): notifications wait in the store
  if (config != seen_) {
    requeue_refused(now);  // started, or reloaded
    seen_ = config;
  }
  if (!store_held()) next = std::min(next, now + kHeldRetry);
  compose_due(*config, now, next);
  send_due(*config->smtp, clock_());
  auto due = run_job<std::optional<Micros>>(store_, [](store::Db& db) { return store::Store::next_email_due(db); });
  if (due.ok() && *due) next = std::min(next, **due);
  // A held email is still due in the outbox: come back for it, not at once.
  if (!held_.empty()) next = std::max(next, clock_() + kHeldRetry);
  return next;
}

void Notifier::compose_due(const config::Config& config, Micros now, Micros& next) {
  const config::Smtp& smtp = *config.smtp;
  auto pending = run_job<std::vector<store::UnsentNotifications>>(
      store_, [](store::Db& db) { return store::Store::unsent_notifications(db); });
  if (!pending.ok()) {
    spdlog::error("notifier: cannot read queued notifications: {}", pending.error().message);
    return;
  }
  // A connection removed from the config, or whose notify list was emptied, keeps its
  // notifications until someone is there to tell again.
  std::erase_if(*pending, [&config](const store::UnsentNotifications& p) {
    const config::Connection* c = config.find_connection(p.connection);
    return c == nullptr || c->notify.empty();
  });
  const EmailPlan plan = plan_emails(*pending, to_micros(smtp.throttle), now);
  if (plan.next) next = std::min(next, *plan.next);
  for (const auto& email : plan.compose) {
    const config::Connection* c = config.find_connection(email.connection);
    const std::string name = email.connection;
    auto events = run_job<std::vector<store::Notification>>(store_, [name](store::Db& db) {
      return store::Store::notifications_of(db, name);
    });
    if (!events.ok() || events->empty()) continue;
    if (!email.everything) events->resize(1);
    Message m;
    m.from = smtp.from;
    m.to = c->notify;
    m.connection = c->name;
    m.url = c->url;  // compose() shows it without any userinfo
    m.config_file = config.file;
    m.events = std::move(*events);
    m.now = now;
    const std::string message = compose(m);
    const std::int64_t last_id = m.events.back().id;
    const int count = static_cast<int>(m.events.size());
    auto queued = run_job<std::int64_t>(store_, [name, to = c->notify, message, count, last_id, now](store::Db& db) {
      return store::Store::queue_email(db, name, to, message, count, last_id, now);
    });
    if (!queued.ok()) spdlog::error("notifier: cannot queue an email for {}: {}", name, queued.error().message);
  }
}

void Notifier::requeue_refused(Micros now) {
  auto n = run_job<int>(store_, [now](store::Db& db) { return store::Store::requeue_refused_emails(db, now); });
  if (!n.ok()) {
    spdlog::error("notifier: cannot queue the refused emails again: {}", n.error().message);
  } else if (*n > 0) {
    spdlog::info("notifier: {} email(s) the SMTP server had refused are queued again (after a start or reload)", *n);
  }
}

bool Notifier::store_held() {
  std::erase_if(held_, [this](const Held& h) {
    auto r = run_job<bool>(store_, [h](store::Db& db) {
      if (h.sent) {
        store::Store::email_sent(db, h.id, h.at);
        return false;
      }
      return store::Store::email_failed(db, h.id, h.error, h.refusal, kMaxRefusals, h.at);
    });
    if (r.ok()) spdlog::info("notifier: the outcome of email {} is stored", h.id);
    return r.ok();
  });
  return held_.empty();
}

void Notifier::send_due(const config::Smtp& smtp, Micros now) {
  auto due = run_job<std::vector<store::OutboxEmail>>(
      store_, [now](store::Db& db) { return store::Store::due_emails(db, now, kSendBatch); });
  if (!due.ok()) {
    spdlog::error("notifier: cannot read the outbox: {}", due.error().message);
    return;
  }
  SmtpSettings settings;
  settings.url = smtp.url;
  settings.starttls_required = smtp.starttls_required;
  settings.username = smtp.username;
  settings.password = smtp.password.value;
  settings.ca_file = smtp.ca_file;
  settings.tls_verify = smtp.tls_verify;
  settings.cancel = &cancel_;
  for (const auto& e : *due) {
    if (cancel_.cancelled()) return;  // shutting down: the rest stay in the outbox
    // Its outcome is held for the store: sent already, or tried and not due again yet.
    if (std::any_of(held_.begin(), held_.end(), [&e](const Held& h) { return h.id == e.id; })) continue;
    const Status sent = send_mail(settings, smtp.from, e.recipients, e.message);
    if (metrics_ != nullptr) metrics_->email(sent.ok());
    const Micros at = clock_();
    nlohmann::json fields = {{"connection", e.connection}, {"email_id", e.id}, {"events", e.events},
                             {"recipients", e.recipients}, {"attempt", e.attempts + 1}};
    if (sent.ok()) {
      const std::int64_t id = e.id;
      auto r = run_job<bool>(store_, [id, at](store::Db& db) {
        store::Store::email_sent(db, id, at);
        return true;
      });
      if (!r.ok()) {
        spdlog::error("notifier: email {} was sent but the outbox cannot take that yet ({}); held, and not sent again",
                      id, r.error().message);
        held_.push_back({id, true, at, {}, false});
      }
      events_.emit("notify.sent", std::move(fields));
      continue;
    }
    // Keep trying, spaced out: an email is never dropped, only delayed.
    const double factor = std::pow(smtp.retry_multiplier, e.attempts);
    const Micros delay = std::min<Micros>(to_micros(smtp.retry_max_delay),
                                          static_cast<Micros>(static_cast<double>(to_micros(smtp.retry_initial)) * factor));
    const Micros next_try = at + delay;
    const std::int64_t id = e.id;
    const std::string error = sent.error().message;
    const bool refusal = sent.error().kind == ErrorKind::refused;
    auto r = run_job<bool>(store_, [id, error, refusal, next_try](store::Db& db) {
      return store::Store::email_failed(db, id, error, refusal, kMaxRefusals, next_try);
    });
    if (!r.ok()) {
      spdlog::error("notifier: cannot record the failure of email {} ({}); held, next try {}", id, r.error().message,
                    format_iso8601(next_try));
      held_.push_back({id, false, next_try, error, refusal});
    }
    const bool set_aside = r.ok() && *r;
    fields["error"] = error;
    fields["permanent"] = set_aside;
    if (set_aside) {
      events_.emit("notify.failed", std::move(fields));
      spdlog::error("notifier: email {} to {} refused for good by the SMTP server ({} refusals): {}; it is kept "
                    "(emails table, state 'refused') and tried again after the next reload or restart: fix the cause "
                    "(the smtp settings, the sender, the connection's notify addresses) and reload",
                    id, e.connection, kMaxRefusals, error);
      continue;
    }
    fields["next_try_at"] = format_iso8601(next_try);
    events_.emit("notify.failed", std::move(fields));
    spdlog::warn("notifier: email {} to {} not sent: {}; next try {}", id, e.connection, error,
                 format_iso8601(next_try));
  }
}

}  // namespace repeaterd::notify
