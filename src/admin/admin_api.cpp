#include "admin/admin_api.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/algorithm/string.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/ids.hpp"
#include "common/json_text.hpp"
#include "ingest/case_store.hpp"
#include "payload/case.hpp"
#include "payload/datetime.hpp"
#include "store/async.hpp"
#include "store/records.hpp"
#include "store/sqlite.hpp"

namespace repeaterd::admin {

namespace asio = boost::asio;
using asio::awaitable;
using ingest::IncomingRequest;
using ingest::Reply;
// Answers keep their keys in the order written (docs/admin-api.md's order), not sorted.
using json = nlohmann::ordered_json;

namespace {

constexpr std::size_t kDefaultLimit = 100;
constexpr std::size_t kMaxLimit = 1000;
constexpr std::size_t kBulkPage = 500;
constexpr std::size_t kBodyExcerpt = 4096;
constexpr auto kReadyProbeTimeout = std::chrono::seconds(2);

std::string dump(const json& j) { return json_text::dump(j) + "\n"; }

Reply json_reply(int status, const json& body) {
  Reply r;
  r.status = status;
  r.body = dump(body);
  return r;
}

Reply error(int status, const std::string& message, const std::string& parameter = {}) {
  json body = {{"error", message}};
  if (!parameter.empty()) body["parameter"] = parameter;
  Reply r = json_reply(status, body);
  if (status == 503) r.headers.emplace_back("Retry-After", "5");
  return r;
}

// An Error from the store, answered by its kind.
Reply error_for(const Error& e) {
  switch (e.kind) {
    case ErrorKind::not_found: return error(404, e.message);
    case ErrorKind::conflict: return error(409, e.message);
    case ErrorKind::invalid: return error(400, e.message);
    default: return error(503, "the queue database could not do it now: " + e.message + "; retry shortly");
  }
}

// Thrown while reading a request's parameters; answered as 400 naming the parameter.
struct BadParameter {
  std::string parameter;
  std::string message;
};

json time_or_null(const std::optional<Micros>& t) { return t ? json(format_iso8601(*t)) : json(nullptr); }

bool is_action(const std::string& s) { return s == "resend" || s == "cancel" || s == "requeue"; }

store::Action action_of(const std::string& s) {
  if (s == "resend") return store::Action::resend;
  if (s == "cancel") return store::Action::cancel;
  return store::Action::requeue;
}

// The event each action's change is logged as.
const char* event_of(store::Action a) {
  switch (a) {
    case store::Action::resend: return "record.resent";
    case store::Action::cancel: return "record.cancelled";
    case store::Action::requeue: return "record.requeued";
  }
  return "?";
}

const std::set<std::string> kFilterKeys{"repeater",      "connection",     "state",         "domain",
                                        "payload_id",    "case_id",        "created_after", "created_before",
                                        "error_contains"};
const std::set<std::string> kStates{"pending", "failed", "succeeded", "cancelled"};

// Query parameters, decoded; a parameter given twice is a list only where lists are allowed.
struct Params {
  std::multimap<std::string, std::string> values;

  void check_known(const std::set<std::string>& a, const std::set<std::string>& b = {}) const {
    for (const auto& [k, v] : values) {
      if (!a.contains(k) && !b.contains(k)) {
        std::string allowed;
        for (const auto* set : {&a, &b}) {
          for (const auto& x : *set) allowed += (allowed.empty() ? "" : ", ") + x;
        }
        throw BadParameter{k, "unknown parameter \"" + k + "\"" +
                                  (allowed.empty() ? " (this endpoint takes none)" : " (allowed: " + allowed + ")")};
      }
    }
  }
  std::optional<std::string> one(const std::string& key) const {
    const auto n = values.count(key);
    if (n == 0) return std::nullopt;
    if (n > 1) throw BadParameter{key, "\"" + key + "\" is given more than once"};
    const std::string v = values.find(key)->second;
    if (v.empty()) throw BadParameter{key, "\"" + key + "\" is empty"};
    return v;
  }
  // Repeated and comma-separated values.
  std::vector<std::string> many(const std::string& key) const {
    std::vector<std::string> out;
    auto [b, e] = values.equal_range(key);
    for (auto it = b; it != e; ++it) {
      std::vector<std::string> parts;
      boost::split(parts, it->second, boost::is_any_of(","));
      for (auto& p : parts) {
        boost::trim(p);
        if (p.empty()) throw BadParameter{key, "\"" + key + "\" has an empty value"};
        out.push_back(p);
      }
    }
    return out;
  }
};

std::optional<Micros> read_time(const Params& p, const std::string& key) {
  auto v = p.one(key);
  if (!v) return std::nullopt;
  auto t = payload::parse_phone_time(*v);
  if (!t) {
    throw BadParameter{key, "\"" + key + "\" must be an ISO 8601 date or time, like 2026-12-03 or "
                                         "2026-12-03T07:00:00Z, got \"" + *v + "\""};
  }
  return t->utc;
}

// Seconds the oldest due record has waited (0: none due).
double age_seconds(Micros now, const std::optional<Micros>& oldest_due) {
  return oldest_due ? static_cast<double>(now - *oldest_due) / 1e6 : 0.0;
}

}  // namespace

struct AdminApi::Impl {
  explicit Impl(Context c) : ctx(std::move(c)), started_at(now_micros()) {}

  Context ctx;
  Micros started_at;
  std::unique_ptr<store::Db> reader;
  // The config of the request being handled. route() keeps its own snapshot alive for the
  // whole request, so what a request points into stays valid even if a request that starts
  // while it waits (on a store job) moves this to a newer one.
  std::shared_ptr<const config::Config> current;
  const config::Config& cfg() const { return *current; }

  // The read-only connection, opened on first use; after an error the next read reopens it.
  store::Db& db() {
    if (!reader) reader = ctx.store.open_reader();
    return *reader;
  }

  const config::Repeater* repeater_cfg(const std::string& name) const { return cfg().find_repeater(name); }

  json record_json(const store::RecordView& r) const {
    const auto* cfg = repeater_cfg(r.repeater);
    return {{"id", r.id},
            {"repeater", r.repeater},
            {"connection", cfg != nullptr ? json(cfg->connection) : json(nullptr)},
            {"state", r.state},
            {"attempts", r.attempts},
            {"in_flight", r.in_flight},
            {"created_at", format_iso8601(r.created_at)},
            {"updated_at", format_iso8601(r.updated_at)},
            {"next_attempt_at", time_or_null(r.next_attempt_at)},
            {"reason", r.reason},
            {"domain", r.domain},
            {"payload_type", r.payload_type},
            {"payload_id", r.payload_id},
            {"case_id", r.case_id ? json(*r.case_id) : json(nullptr)}};
  }

  // The event fields of a record changed by an operator (payload_type/payload_id name the case
  // for case records, as attempt events do).
  nlohmann::json event_fields(const store::RecordView& r) const {
    const auto* cfg = repeater_cfg(r.repeater);
    using nlohmann::json;
    return {{"record_id", r.id},
            {"repeater", r.repeater},
            {"connection", cfg != nullptr ? json(cfg->connection) : json(nullptr)},
            {"domain", r.domain},
            {"payload_type", r.case_id ? std::string("case") : r.payload_type},
            {"payload_id", r.case_id ? *r.case_id : r.payload_id},
            {"state", r.state},
            {"attempt", r.attempts},
            {"by", "operator"}};
  }

  store::RecordFilter read_filter(const Params& p) const {
    store::RecordFilter f;
    if (p.values.count("repeater") > 0) f.repeaters = p.many("repeater");
    if (auto c = p.one("connection")) {
      if (cfg().find_connection(*c) == nullptr) {
        throw BadParameter{"connection", "no connection named \"" + *c + "\" in the configuration"};
      }
      std::vector<std::string> of;
      for (const auto& r : cfg().repeaters) {
        if (r.connection == *c && (!f.repeaters || std::find(f.repeaters->begin(), f.repeaters->end(), r.name) !=
                                                       f.repeaters->end())) {
          of.push_back(r.name);
        }
      }
      f.repeaters = std::move(of);
    }
    for (const auto& s : p.many("state")) {
      if (!kStates.contains(s)) {
        throw BadParameter{"state", "\"state\" must be pending, failed, succeeded or cancelled, got \"" + s + "\""};
      }
      f.states.push_back(s);
    }
    f.domain = p.one("domain");
    f.payload_id = p.one("payload_id");
    f.case_id = p.one("case_id");
    f.error_contains = p.one("error_contains");
    f.created_after = read_time(p, "created_after");
    f.created_before = read_time(p, "created_before");
    return f;
  }

  // -- probes and metrics -----------------------------------------------------------------

  awaitable<Reply> readyz() {
    if (std::string problem = ctx.listeners_problem ? ctx.listeners_problem() : ""; !problem.empty()) {
      co_return json_reply(503, {{"ready", false}, {"error", problem}});
    }
    // A job with nothing in it still takes the write lock and commits: the store is writable.
    struct Probe {
      std::atomic<bool> done{false};
      std::string error;  // written before done is set
    };
    auto probe = std::make_shared<Probe>();
    ctx.store.submit([](store::Db&) {}, [probe](Status st) {
      if (!st.ok()) probe->error = st.error().message;
      probe->done = true;
    });
    asio::steady_timer t(co_await asio::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + kReadyProbeTimeout;
    while (!probe->done && std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (!probe->done) {
      co_return json_reply(503, {{"ready", false},
                                 {"error", "the queue database did not commit a write within 2 s (is the disk "
                                           "stalled or another process holding the lock?)"}});
    }
    if (!probe->error.empty()) {
      co_return json_reply(503, {{"ready", false}, {"error", "the queue database cannot write: " + probe->error}});
    }
    co_return json_reply(200, {{"ready", true}});
  }

  Reply metrics() {
    const Micros now = now_micros();
    Metrics::Gauges g;
    for (const auto& s : store::Store::summarize(db(), now)) {
      for (const auto& [state, n] : {std::pair{"pending", s.pending}, std::pair{"failed", s.failed},
                                     std::pair{"succeeded", s.succeeded}, std::pair{"cancelled", s.cancelled}}) {
        g.records.push_back({s.repeater, state, n});
      }
      g.oldest_due_age_seconds.emplace_back(s.repeater, age_seconds(now, s.oldest_due));
    }
    const auto snap = ctx.scheduler.snapshot();
    for (const auto& [name, a] : snap.connections) {
      g.in_flight.emplace_back(name, static_cast<std::int64_t>(a.in_flight));
      g.circuit_open.emplace_back(name, a.circuit != "closed");
      g.concurrency_limit.emplace_back(name, static_cast<std::int64_t>(a.concurrency_limit));
    }
    const auto paused = store::paused_repeaters(db());
    for (const auto& r : cfg().repeaters) g.paused.emplace_back(r.name, r.paused || paused.contains(r.name));
    g.emails_queued = store::emails_queued(db());
    Reply r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = ctx.metrics.render(g);
    return r;
  }

  // -- status and repeaters -----------------------------------------------------------------

  json repeater_json(const std::string& name, const std::map<std::string, Micros>& paused) const {
    const auto* cfg = repeater_cfg(name);
    const auto op = paused.find(name);
    const bool by_operator = op != paused.end();
    const bool in_config = cfg != nullptr && cfg->paused;
    json j = {{"name", name},
              {"configured", cfg != nullptr},
              {"paused", in_config || by_operator},
              {"paused_in_config", in_config},
              {"paused_by_operator", by_operator},
              {"paused_at", by_operator ? json(format_iso8601(op->second)) : json(nullptr)}};
    if (cfg != nullptr) {
      j["type"] = config::to_string(cfg->type);
      j["connection"] = cfg->connection;
      j["domain"] = cfg->domain ? json(*cfg->domain) : json(nullptr);
      j["format"] = config::to_string(cfg->format);
    } else {
      j["type"] = j["connection"] = j["domain"] = j["format"] = nullptr;
    }
    return j;
  }

  // Configured repeaters first (in config order), then those only the store knows (from the
  // counts the caller read anyway: one scan of the records).
  std::vector<std::string> all_repeaters(const std::vector<store::RepeaterSummary>& counts) {
    std::vector<std::string> names;
    for (const auto& r : cfg().repeaters) names.push_back(r.name);
    for (const auto& c : counts) {
      if (repeater_cfg(c.repeater) == nullptr) names.push_back(c.repeater);
    }
    return names;
  }

  Reply repeaters() {
    const auto paused = store::paused_repeaters(db());
    json list = json::array();
    for (const auto& n : all_repeaters(store::Store::summarize(db(), now_micros()))) {
      list.push_back(repeater_json(n, paused));
    }
    return json_reply(200, {{"repeaters", std::move(list)}});
  }

  static json activity_json(const scheduler::Activity& a) {
    json j = {{"in_flight", a.in_flight}, {"last_success", time_or_null(a.last_success)}, {"last_error", nullptr}};
    if (a.last_error) {
      j["last_error"] = {{"at", format_iso8601(a.last_error->at)},
                         {"record_id", a.last_error->record_id},
                         {"error", a.last_error->error}};
    }
    return j;
  }

  Reply status() {
    const Micros now = now_micros();
    const auto summaries = store::Store::summarize(db(), now);
    std::map<std::string, store::RepeaterSummary> counts;
    for (const auto& s : summaries) counts[s.repeater] = s;
    const auto paused = store::paused_repeaters(db());
    const auto snap = ctx.scheduler.snapshot();
    auto counts_json = [](const store::RepeaterSummary& s) {
      return json{{"pending", s.pending}, {"failed", s.failed}, {"succeeded", s.succeeded}, {"cancelled", s.cancelled}};
    };

    json reps = json::array();
    std::map<std::string, store::RepeaterSummary> by_connection;
    for (const auto& name : all_repeaters(summaries)) {
      const store::RepeaterSummary s = counts.contains(name) ? counts[name] : store::RepeaterSummary{name, 0, 0, 0, 0, std::nullopt};
      json j = repeater_json(name, paused);
      j["counts"] = counts_json(s);
      j["oldest_due_age_seconds"] = age_seconds(now, s.oldest_due);
      const auto a = snap.repeaters.find(name);
      j.update(activity_json(a != snap.repeaters.end() ? a->second : scheduler::Activity{}));
      reps.push_back(std::move(j));
      if (const auto* cfg = repeater_cfg(name)) {
        auto& c = by_connection[cfg->connection];
        c.pending += s.pending;
        c.failed += s.failed;
        c.succeeded += s.succeeded;
        c.cancelled += s.cancelled;
        if (s.oldest_due && (!c.oldest_due || *s.oldest_due < *c.oldest_due)) c.oldest_due = s.oldest_due;
      }
    }
    json conns = json::array();
    for (const auto& c : cfg().connections) {
      const auto& s = by_connection[c.name];
      json j = {{"name", c.name},
                {"url", c.url},
                {"max_in_flight", c.max_in_flight},
                {"counts", counts_json(s)},
                {"oldest_due_age_seconds", age_seconds(now, s.oldest_due)}};
      const auto a = snap.connections.find(c.name);
      const scheduler::Activity act = a != snap.connections.end() ? a->second : scheduler::Activity{};
      j.update(activity_json(act));
      j["concurrency_limit"] = act.concurrency_limit;
      j["circuit"] = {{"state", act.circuit},
                      {"opened_at", time_or_null(act.circuit_opened_at)},
                      {"next_probe_at", time_or_null(act.next_probe_at)}};
      conns.push_back(std::move(j));
    }
    return json_reply(200, {{"version", REPEATERD_VERSION},
                            {"started_at", format_iso8601(started_at)},
                            {"uptime_seconds", (now - started_at) / 1'000'000},
                            {"config", {{"path", cfg().file}, {"sha256", cfg().sha256}}},
                            {"repeaters", std::move(reps)},
                            {"connections", std::move(conns)}});
  }

  awaitable<Reply> pause(const std::string& name, bool paused) {
    const auto* cfg = repeater_cfg(name);
    if (cfg == nullptr) co_return error(404, "no repeater named \"" + name + "\" in the configuration");
    if (cfg->paused) {
      co_return error(409, "repeater " + name + " is paused in the configuration file (paused: true); " +
                               (paused ? "it is already paused" : "set paused: false there and restart repeaterd"));
    }
    const Micros now = now_micros();
    std::function<bool(store::Db&)> job = [name, paused, now](store::Db& db) {
      return store::set_paused(db, name, paused, now);
    };
    auto changed = co_await store::async_run<bool>(ctx.store, std::move(job));
    if (!changed.ok()) co_return error_for(changed.error());
    if (!*changed) {
      co_return error(409, "repeater " + name + (paused ? " is already paused" : " is not paused"));
    }
    ctx.scheduler.set_paused(name, paused);
    ctx.events.emit(paused ? "repeater.paused" : "repeater.resumed",
                    nlohmann::json{{"repeater", name}, {"connection", cfg->connection}, {"by", "operator"}});
    spdlog::info("admin: repeater {} {} by an operator", name, paused ? "paused" : "resumed");
    co_return json_reply(200, {{"repeater", repeater_json(name, store::paused_repeaters(db()))}});
  }

  Reply reload() {
    if (!ctx.reload) return error(503, "this daemon cannot reload");
    const config::ReloadOutcome r = ctx.reload();
    json body = {{"reloaded", r.ok}, {"changed", r.changed}, {"restart_needed", r.restart_needed}};
    if (!r.ok) {
      body["error"] = "the configuration file has errors; nothing was changed and the daemon keeps running on "
                      "the configuration it had";
      body["errors"] = r.errors;
      return json_reply(422, body);
    }
    return json_reply(200, body);
  }

  // -- records --------------------------------------------------------------------------------

  Reply list(const Params& p) {
    p.check_known(kFilterKeys, {"limit", "after"});
    const auto f = read_filter(p);
    std::size_t limit = kDefaultLimit;
    if (auto l = p.one("limit")) {
      const bool digits = l->size() <= 4 && std::all_of(l->begin(), l->end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || std::stoul(*l) < 1 || std::stoul(*l) > kMaxLimit) {
        throw BadParameter{"limit", "\"limit\" must be a whole number from 1 to " + std::to_string(kMaxLimit) +
                                        ", got \"" + *l + "\""};
      }
      limit = std::stoul(*l);
    }
    const std::string after = p.one("after").value_or("");
    // A cursor is a record id (the `next` of a page): 36 characters of hex digits and dashes.
    if (!after.empty() && (after.size() != 36 || !std::all_of(after.begin(), after.end(), [](char c) {
                             return c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                           }))) {
      throw BadParameter{"after", "\"after\" must be the \"next\" of a previous page (a record id), got \"" + after + "\""};
    }
    auto page = store::list_records(db(), f, after, limit);
    json records = json::array();
    for (const auto& r : page.records) records.push_back(record_json(r));
    return json_reply(200, {{"records", std::move(records)}, {"next", page.next ? json(*page.next) : json(nullptr)}});
  }

  json response_headers(const std::string& text) const {
    auto h = json::parse(text, nullptr, false);
    if (!h.is_object()) return json::object();
    std::set<std::string> secret{"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"};
    for (const auto& c : cfg().connections) {
      if (!c.auth.header.empty()) secret.insert(boost::to_lower_copy(c.auth.header));
    }
    for (auto& [k, v] : h.items()) {
      if (secret.contains(boost::to_lower_copy(k))) v = "<redacted>";
    }
    return h;
  }

  Reply show(const std::string& id) {
    auto d = store::load_record(db(), id, kBodyExcerpt);
    if (!d) return error(404, "no record has the id " + id);
    const auto* rep = repeater_cfg(d->record.repeater);
    const auto* conn = rep != nullptr ? cfg().find_connection(rep->connection) : nullptr;
    json attempts = json::array();
    for (const auto& a : d->attempts) {
      attempts.push_back({{"number", a.number},
                          {"started_at", format_iso8601(a.started_at)},
                          {"duration_ms", a.duration_ms ? json(*a.duration_ms) : json(nullptr)},
                          {"outcome", a.outcome},
                          {"http_status", a.http_status ? json(*a.http_status) : json(nullptr)},
                          {"response_headers", response_headers(a.response_headers_json)},
                          {"response_body", a.response_body},
                          {"response_size", a.response_size},
                          {"error", a.error},
                          {"request_id", a.request_id}});
    }
    // Connection URLs carry no credentials: the config refuses user:password@ in them.
    const auto& m = d->payload;
    auto headers = json::parse(d->headers_json, nullptr, false);
    if (!headers.is_object()) headers = json::object();
    // What every attempt adds (X-Request-Id differs per attempt: see each attempt's request_id).
    headers["Content-Type"] = d->content_type;
    headers["Idempotency-Key"] = d->record.id;
    std::string url = conn != nullptr ? conn->url : std::string();
    if (!url.empty() && !d->query.empty()) url += (url.find('?') == std::string::npos ? "?" : "&") + d->query;
    return json_reply(
        200, {{"record", record_json(d->record)},
              {"payload",
               {{"domain", m.domain},
                {"payload_type", m.payload_type},
                {"payload_id", m.payload_id},
                {"xmlns", m.xmlns},
                {"app_id", m.app_id},
                {"content_type", m.content_type},
                {"size", m.size},
                {"sha256", m.sha256},
                {"received_on", format_iso8601(m.received_on)}}},
              {"request",
               {{"method", rep != nullptr ? json(rep->method) : json(nullptr)},
                {"url", conn != nullptr ? json(url) : json(nullptr)},
                {"content_type", d->content_type},
                {"query", d->query},
                {"headers", headers},
                {"size", d->body_size}}},
              {"attempts", std::move(attempts)}});
  }

  Reply show_case(const std::string& domain, const std::string& case_id) {
    auto c = ingest::read_case(db(), domain, case_id);
    if (!c) return error(404, "no case " + case_id + " in domain " + domain);
    auto state = json::parse(payload::case_to_storage_json(*c), nullptr, false);
    if (!state.is_object()) return error(500, "case " + case_id + " does not render as JSON");
    state["xform_ids"] = c->xform_ids;
    return json_reply(200, {{"case", std::move(state)}});
  }

  Reply body(const std::string& id) {
    auto b = store::record_body(db(), id);
    if (!b) return error(404, "no record has the id " + id);
    Reply r;
    r.content_type = b->content_type;
    r.body = std::move(b->bytes);
    return r;
  }

  awaitable<Reply> act_one(const std::string& id, store::Action action) {
    const Micros now = now_micros();
    std::function<Result<store::RecordView>(store::Db&)> job = [id, action, now](store::Db& db) {
      return store::act(db, action, id, now);
    };
    auto done = co_await store::async_run<Result<store::RecordView>>(ctx.store, std::move(job));
    if (!done.ok()) co_return error_for(done.error());
    if (!done->ok()) co_return error_for(done->error());
    const auto& r = done->value();
    ctx.events.emit(event_of(action), event_fields(r));
    if (action != store::Action::cancel) ctx.scheduler.notify(r.repeater);
    co_return json_reply(200, {{"record", record_json(r)}});
  }

  awaitable<Reply> act_bulk(const Params& p, store::Action action) {
    p.check_known(kFilterKeys, {"dry_run"});
    const auto f = read_filter(p);
    bool dry_run = false;
    if (auto d = p.one("dry_run")) {
      if (*d == "true" || *d == "1") dry_run = true;
      else if (*d != "false" && *d != "0") throw BadParameter{"dry_run", "\"dry_run\" must be true or false, got \"" + *d + "\""};
    }
    bool any = false;
    for (const auto& k : kFilterKeys) any = any || p.values.contains(k);
    if (!any) {
      throw BadParameter{"", std::string("a bulk ") + store::to_string(action) +
                                 " needs at least one filter (repeater, connection, state, domain, payload_id, "
                                 "case_id, created_after, created_before, error_contains)"};
    }
    if (dry_run) {
      const auto n = store::count_records(db(), store::applicable(action, f));
      co_return json_reply(200, {{"action", store::to_string(action)}, {"dry_run", true}, {"matched", n}});
    }
    std::int64_t changed = 0;
    std::set<std::string> woken;
    std::string after;
    for (;;) {
      const Micros now = now_micros();
      std::function<store::BulkStep(store::Db&)> job = [action, f, after, now](store::Db& db) {
        return store::act_page(db, action, f, after, kBulkPage, now);
      };
      auto step = co_await store::async_run<store::BulkStep>(ctx.store, std::move(job));
      if (!step.ok()) {
        auto r = error_for(step.error());
        // Say how far it got: running it again finishes the rest.
        r.body = dump({{"error", step.error().message + "; " + std::to_string(changed) +
                                     " record(s) were changed before this; run the same action again to finish"},
                       {"changed", changed}});
        co_return r;
      }
      for (const auto& r : step->changed) {
        ctx.events.emit(event_of(action), event_fields(r));
        if (action != store::Action::cancel && woken.insert(r.repeater).second) ctx.scheduler.notify(r.repeater);
      }
      changed += static_cast<std::int64_t>(step->changed.size());
      if (!step->next) break;
      after = *step->next;
    }
    spdlog::info("admin: bulk {} changed {} record(s)", store::to_string(action), changed);
    co_return json_reply(200, {{"action", store::to_string(action)}, {"dry_run", false}, {"changed", changed}});
  }

  // -- routing --------------------------------------------------------------------------------

  bool authorized(const IncomingRequest& req) const {
    if (!cfg().admin.token) return true;
    const std::string prefix = "Bearer ";
    if (!boost::istarts_with(req.authorization, prefix)) return false;
    return equal_secret(boost::trim_copy(req.authorization.substr(prefix.size())), cfg().admin.token->value);
  }

  awaitable<Reply> route(IncomingRequest& req) {
    const std::shared_ptr<const config::Config> snapshot = ctx.config.get();
    current = snapshot;
    auto url = boost::urls::parse_origin_form(req.target);
    if (!url) co_return error(400, "the request target \"" + req.target + "\" is not a valid path");
    std::vector<std::string> seg;
    for (auto s : url->segments()) seg.push_back(s);
    Params params;
    for (auto qp : url->params()) params.values.emplace(qp.key, qp.has_value ? qp.value : std::string());

    auto method_is = [&](const char* m) { return req.method == m; };
    auto wrong_method = [&](const char* allowed) {
      Reply r = error(405, std::string("use ") + allowed + " on " + std::string(url->path()));
      r.headers.emplace_back("Allow", allowed);
      return r;
    };
    const bool open = seg.size() == 1 && (seg[0] == "healthz" || seg[0] == "readyz");
    if (!open && !authorized(req)) {
      Reply r = error(401, req.authorization.empty()
                               ? "the admin API needs a token: send Authorization: Bearer TOKEN (repeaterctl: "
                                 "--token-file FILE)"
                               : "the admin token is not right");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"repeaterd-admin\"");
      co_return r;
    }

    if (seg.size() == 1 && seg[0] == "healthz") {
      if (!method_is("GET")) co_return wrong_method("GET");
      co_return json_reply(200, {{"status", "ok"}});
    }
    if (seg.size() == 1 && seg[0] == "readyz") {
      if (!method_is("GET")) co_return wrong_method("GET");
      co_return co_await readyz();
    }
    if (seg.size() == 1 && seg[0] == "metrics") {
      if (!method_is("GET")) co_return wrong_method("GET");
      params.check_known({});
      co_return metrics();
    }
    if (seg.size() < 3 || seg[0] != "api" || seg[1] != "v1") {
      co_return error(404, "no such path: " + std::string(url->path()) + " (see docs/admin-api.md)");
    }
    const std::string& what = seg[2];
    if (what == "status" && seg.size() == 3) {
      if (!method_is("GET")) co_return wrong_method("GET");
      params.check_known({});
      co_return status();
    }
    if (what == "repeaters" && seg.size() == 3) {
      if (!method_is("GET")) co_return wrong_method("GET");
      params.check_known({});
      co_return repeaters();
    }
    if (what == "repeaters" && seg.size() == 5 && (seg[4] == "pause" || seg[4] == "resume")) {
      if (!method_is("POST")) co_return wrong_method("POST");
      params.check_known({});
      co_return co_await pause(seg[3], seg[4] == "pause");
    }
    if (what == "reload" && seg.size() == 3) {
      if (!method_is("POST")) co_return wrong_method("POST");
      params.check_known({});
      co_return reload();
    }
    if (what == "records" && seg.size() == 3) {
      if (!method_is("GET")) co_return wrong_method("GET");
      co_return list(params);
    }
    if (what == "records" && seg.size() == 4 && is_action(seg[3])) {
      if (!method_is("POST")) co_return wrong_method("POST");
      co_return co_await act_bulk(params, action_of(seg[3]));
    }
    if (what == "records" && seg.size() == 4) {
      if (!method_is("GET")) co_return wrong_method("GET");
      params.check_known({});
      co_return show(seg[3]);
    }
    if (what == "cases" && seg.size() == 5) {
      if (!method_is("GET")) co_return wrong_method("GET");
      params.check_known({});
      co_return show_case(seg[3], seg[4]);
    }
    if (what == "records" && seg.size() == 5 && seg[4] == "body") {
      if (!method_is("GET")) co_return wrong_method("GET");
      params.check_known({});
      co_return body(seg[3]);
    }
    if (what == "records" && seg.size() == 5 && is_action(seg[4])) {
      if (!method_is("POST")) co_return wrong_method("POST");
      params.check_known({});
      co_return co_await act_one(seg[3], action_of(seg[4]));
    }
    co_return error(404, "no such path: " + std::string(url->path()) + " (see docs/admin-api.md)");
  }
};

AdminApi::AdminApi(Context context) : impl_(std::make_unique<Impl>(std::move(context))) {}
AdminApi::~AdminApi() = default;

awaitable<Reply> AdminApi::handle(IncomingRequest request) {
  try {
    co_return co_await impl_->route(request);
  } catch (const BadParameter& e) {
    co_return error(400, e.message, e.parameter);
  } catch (const store::SqliteError& e) {
    impl_->reader.reset();  // reopened by the next request
    spdlog::error("admin: reading the queue database failed: {}", e.what());
    co_return error(503, std::string("the queue database could not be read: ") + e.what() + "; retry shortly");
  }
}

Reply AdminApi::error_reply(int status, const std::string& message, const std::string& /*target*/) {
  return error(status, message);
}

}  // namespace repeaterd::admin
