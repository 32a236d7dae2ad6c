// repeaterctl: the operator's command line over repeaterd's admin API (docs/repeaterctl.md).
//
//   repeaterctl status | repeaters [pause|resume NAME] | pause NAME | resume NAME
//   repeaterctl records list [FILTERS] [--limit N] [--after ID] [--all]
//   repeaterctl records show ID | records body ID
//   repeaterctl records resend|cancel|requeue ID... | --FILTERS... [--dry-run]
//
// It speaks only HTTP to the admin API (never the database) and exits 0 when done, 1 when the
// daemon said no or could not be reached, 2 on a usage error.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cli/admin_client.hpp"
#include "cli/ctl_format.hpp"

namespace {

using repeaterd::Result;
using repeaterd::ctl::AdminClient;
using repeaterd::ctl::Json;
using repeaterd::ctl::RecordFilter;
using repeaterd::ctl::Response;

constexpr int kOk = 0;
constexpr int kRefused = 1;  // the daemon said no, or could not be reached
constexpr int kUsage = 2;

int fail(const std::string& message) {
  std::cerr << "repeaterctl: " << message << "\n";
  return kRefused;
}

int usage_error(const std::string& message) {
  std::cerr << "repeaterctl: " << message << "\nRun with --help for more information.\n";
  return kUsage;
}

// Writes to stdout; a closed pipe or a full disk is a failure the exit code has to tell.
int print(const std::string& text) {
  std::cout << text << std::flush;
  return std::cout ? kOk : fail("cannot write to stdout");
}

class Ctl {
 public:
  Ctl(AdminClient client, bool json, std::vector<std::string> args)
      : client_(std::move(client)), json_(json), args_(std::move(args)) {}

  int status() {
    const auto j = fetch(client_.get("/api/v1/status"));
    if (!j) return kRefused;
    return print(json_ ? repeaterd::ctl::pretty_json(*j) : repeaterd::ctl::format_status(*j));
  }

  // POST /api/v1/reload: what changed, or every error in the file (nothing changed then).
  int reload() {
    auto r = client_.post("/api/v1/reload");
    if (!r) return fail(r.error().message);
    if (r->status == 422) {
      if (const auto j = parse(*r); j && json_) {
        print(repeaterd::ctl::pretty_json(*j));
      } else if (j) {
        std::cerr << "repeaterctl: " << repeaterd::ctl::terminal_safe(j->value("error", ""), true) << "\n";
        for (const auto& e : j->value("errors", Json::array())) {
          std::cerr << "  " << repeaterd::ctl::terminal_safe(e.is_string() ? e.get<std::string>() : e.dump(), true)
                    << "\n";
        }
      }
      return kRefused;
    }
    if (!r->ok()) return refused(*r);
    const auto j = parse(*r);
    if (!j) return kRefused;
    if (json_) return print(repeaterd::ctl::pretty_json(*j));
    std::string out = "reloaded";
    const auto changed = j->value("changed", Json::array());
    if (changed.empty()) out += ": nothing changed";
    out += "\n";
    for (const auto& c : changed) out += "  " + repeaterd::ctl::terminal_safe(c.get<std::string>(), true) + "\n";
    for (const auto& c : j->value("restart_needed", Json::array())) {
      out += "  " + repeaterd::ctl::terminal_safe(c.get<std::string>(), true) +
             " changed but needs a restart of repeaterd to take effect\n";
    }
    return print(out);
  }

  int repeaters() {
    const auto j = fetch(client_.get("/api/v1/repeaters"));
    if (!j) return kRefused;
    return print(json_ ? repeaterd::ctl::pretty_json(*j) : repeaterd::ctl::format_repeaters(*j));
  }

  int repeater_action(const std::string& action, const std::string& name) {
    const auto j = fetch(client_.post("/api/v1/repeaters/" + repeaterd::ctl::percent_encode(name) + "/" + action));
    if (!j) return kRefused;
    return print(json_ ? repeaterd::ctl::pretty_json(*j) : repeaterd::ctl::format_repeater_action(action, *j));
  }

  int list(const RecordFilter& filter, int limit, std::string after, bool all) {
    repeaterd::ctl::MergedRecordsJson merged;
    std::vector<std::vector<std::string>> rows;
    for (bool first = true;; first = false) {
      const auto page =
          fetch(client_.get(repeaterd::ctl::with_query("/api/v1/records",
                                                       repeaterd::ctl::record_query(filter, limit, after))));
      if (!page) return kRefused;
      // Opened once the first page is in, so a refused request prints no half a document.
      if (all && json_ && first && print(merged.begin()) != kOk) return kRefused;
      if (!all) {
        if (json_) return print(repeaterd::ctl::pretty_json(*page));
        for (const auto& r : records_of(*page)) rows.push_back(repeaterd::ctl::record_row(r));
        std::string out = repeaterd::ctl::format_records(rows);
        if (const auto next = next_of(*page)) out += repeaterd::ctl::next_page_hint(args_, *next);
        return print(out);
      }
      for (const auto& r : records_of(*page)) {
        if (json_) {
          if (print(merged.add(r)) != kOk) return kRefused;
        } else {
          rows.push_back(repeaterd::ctl::record_row(r));
        }
      }
      const auto next = next_of(*page);
      if (!next) break;
      // Keyset pages always move forward; the same `next` twice would loop for ever.
      if (*next == after) return fail("repeaterd returned the same page twice (next " + *next + "); stopped");
      after = *next;
    }
    return print(json_ ? merged.end() : repeaterd::ctl::format_records(rows));
  }

  int show(const std::string& id) {
    const auto j = fetch(client_.get("/api/v1/records/" + repeaterd::ctl::percent_encode(id)));
    if (!j) return kRefused;
    return print(json_ ? repeaterd::ctl::pretty_json(*j) : repeaterd::ctl::format_record_detail(*j));
  }

  // A case is JSON by nature: printed as the API's JSON (pretty) with or without --json.
  int case_show(const std::string& domain, const std::string& case_id) {
    const auto j = fetch(client_.get("/api/v1/cases/" + repeaterd::ctl::percent_encode(domain) + "/" +
                                     repeaterd::ctl::percent_encode(case_id)));
    if (!j) return kRefused;
    return print(repeaterd::ctl::pretty_json(*j));
  }

  // The exact bytes, and nothing else, on stdout: streamed, so a large payload is never held.
  int body(const std::string& id) {
    auto r = client_.get_to("/api/v1/records/" + repeaterd::ctl::percent_encode(id) + "/body", stdout);
    if (!r) return fail(r.error().message);
    if (!r->ok()) return refused(*r);
    return kOk;
  }

  // Each id in turn, each result reported; any failure makes the exit code 1.
  int record_action(const std::string& action, const std::vector<std::string>& ids) {
    int failures = 0;
    for (const auto& id : ids) {
      auto r = client_.post("/api/v1/records/" + repeaterd::ctl::percent_encode(id) + "/" + action);
      if (!r) return fail(r.error().message);  // the rest would not get through either
      if (!r->ok()) {
        refused(*r, "cannot " + action + " " + repeaterd::ctl::terminal_safe(id, true) + ": ");
        ++failures;
        continue;
      }
      const auto j = parse(*r);
      if (!j) {
        ++failures;
        continue;
      }
      if (print(json_ ? repeaterd::ctl::pretty_json(*j) : repeaterd::ctl::format_record_action(action, *j)) != kOk) {
        return kRefused;
      }
    }
    if (failures > 0 && ids.size() > 1) {
      std::cerr << "repeaterctl: " << action << " failed for " << failures << " of " << ids.size()
                << " record(s)\n";
    }
    return failures == 0 ? kOk : kRefused;
  }

  int bulk_action(const std::string& action, const RecordFilter& filter, bool dry_run) {
    const auto j = fetch(client_.post(repeaterd::ctl::with_query(
        "/api/v1/records/" + action, repeaterd::ctl::record_query(filter, 0, {}, dry_run))));
    if (!j) return kRefused;
    return print(json_ ? repeaterd::ctl::pretty_json(*j) : repeaterd::ctl::format_bulk_action(*j));
  }

 private:
  // A 2xx answer's JSON; else says why not on stderr and returns nullopt.
  std::optional<Json> fetch(Result<Response> r) {
    if (!r) {
      fail(r.error().message);
      return std::nullopt;
    }
    if (!r->ok()) {
      refused(*r);
      return std::nullopt;
    }
    return parse(*r);
  }

  std::optional<Json> parse(const Response& r) {
    Json j = Json::parse(r.body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      fail(client_.target().endpoint.describe() + " answered HTTP " + std::to_string(r.status) +
           " with something other than a JSON object (Content-Type " +
           (r.content_type.empty() ? "none" : repeaterd::ctl::terminal_safe(r.content_type, true)) +
           "): is that repeaterd's admin API?");
      return std::nullopt;
    }
    return j;
  }

  // The daemon's "no", with what to do about a missing or wrong token.
  int refused(const Response& r, const std::string& prefix = {}) {
    std::string message = prefix + repeaterd::ctl::api_error_message(r.status, r.body);
    if (r.status == 401) {
      message += " \xE2\x80\x94 " + client_.target().credentials.hint;
    } else if (!r.content_type.starts_with("application/json")) {
      // Every error of the admin API is JSON: this answer came from something else.
      message += " (from " + client_.target().endpoint.describe() + ", which did not answer as repeaterd's admin API)";
    }
    return fail(message);
  }

  static const Json& records_of(const Json& page) {
    static const Json kEmpty = Json::array();
    const auto it = page.find("records");
    return it != page.end() && it->is_array() ? *it : kEmpty;
  }

  static std::optional<std::string> next_of(const Json& page) {
    const auto it = page.find("next");
    if (it == page.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) return std::nullopt;
    return it->get<std::string>();
  }

  AdminClient client_;
  bool json_;
  std::vector<std::string> args_;
};

// The filters of docs/admin-api.md, on each subcommand that takes them.
void add_filters(CLI::App* sub, RecordFilter& f) {
  // Several values: the flag repeated, or commas. One value per occurrence, so that a record id
  // after `--state failed` is not taken for a second state.
  const auto many = [sub](const char* flag, std::vector<std::string>& out, const char* type, const char* help) {
    sub->add_option(flag, out, help)->type_name(type)->delimiter(',')->allow_extra_args(false)->group("Filters");
  };
  const auto one = [sub](const char* flag, std::string& out, const char* type, const char* help) {
    sub->add_option(flag, out, help)->type_name(type)->group("Filters");
  };
  many("--repeater", f.repeaters, "NAME", "a repeater (repeat, or commas, for several)");
  one("--connection", f.connection, "NAME", "the repeaters that use this connection");
  many("--state", f.states, "STATE", "pending, failed, succeeded or cancelled (repeat, or commas)");
  one("--domain", f.domain, "DOMAIN", "project space");
  one("--payload-id", f.payload_id, "ID", "the form id (or app id) of the payload");
  one("--case-id", f.case_id, "ID", "case records carrying this case");
  one("--created-after", f.created_after, "TIME", "ISO 8601 UTC, e.g. 2026-12-03T07:00:00Z");
  one("--created-before", f.created_before, "TIME", "ISO 8601 UTC");
  one("--error-contains", f.error_contains, "TEXT", "text in the last error or cancellation reason");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"repeaterctl: look into repeaterd's queue and act on it, through its admin API"};
  app.set_version_flag("--version", "repeaterctl 0.1.0");
  // Global options may also follow the subcommand: `repeaterctl records list --json`.
  app.fallthrough();
  app.require_subcommand(1);

  repeaterd::ctl::LocateOptions locate;
  bool json = false;
  double timeout_seconds = 30;
  app.add_option("-c,--config", locate.config,
                 "repeaterd's config file, read for admin.* and storage.path only "
                 "[default: $REPEATERD_CONFIG, else /etc/repeaterd/repeaterd.yaml]")
      ->type_name("FILE");
  app.add_option("--socket", locate.socket, "the admin API's Unix socket (instead of the config's)")
      ->type_name("PATH");
  app.add_option("--url", locate.url, "the admin API's TCP address (instead of the config's)")
      ->type_name("http://HOST:PORT");
  app.add_option("--token-file", locate.token_file, "a file holding the admin token")->type_name("FILE");
  app.add_flag("--json", json, "print the API's JSON (pretty) instead of tables");
  app.add_option("--timeout", timeout_seconds, "seconds a request may take [default: 30]")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.001, 86400.0).description(""));

  auto* status = app.add_subcommand("status", "the daemon and each repeater: counts by state, oldest due, paused");
  auto* reload = app.add_subcommand("reload", "reload the daemon's config file (an invalid file changes nothing)");

  std::string name;
  auto* repeaters = app.add_subcommand("repeaters", "list the repeaters (or: repeaters pause|resume NAME)");
  repeaters->require_subcommand(0, 1);
  std::vector<std::pair<std::string, CLI::App*>> pausers;
  for (auto* parent : {&app, repeaters}) {
    for (const char* action : {"pause", "resume"}) {
      auto* sub = parent->add_subcommand(action, std::string(action) == "pause"
                                                     ? "pause a repeater: no new attempts (survives a restart)"
                                                     : "resume a repeater an operator paused");
      sub->add_option("name", name, "the repeater's name")->required()->type_name("NAME");
      pausers.emplace_back(action, sub);
    }
  }

  auto* records = app.add_subcommand("records", "list, show and act on records");
  records->require_subcommand(1);
  RecordFilter filter;
  int limit = 0;
  std::string after;
  bool all = false;
  auto* list = records->add_subcommand("list", "list records, a page at a time, in id (creation) order");
  add_filters(list, filter);
  list->add_option("--limit", limit, "page size, 1-1000 [default: the API's, 100]")
      ->type_name("N")
      ->check(CLI::Range(1, 1000).description(""));
  list->add_option("--after", after, "start after this id (the `next` of the previous page)")->type_name("ID");
  list->add_flag("--all", all, "follow `next` to the end and print every page");

  std::string id;
  auto* show = records->add_subcommand("show", "a record, its payload, its request and every attempt");
  show->add_option("id", id, "record id")->required()->type_name("ID");
  auto* body = records->add_subcommand("body", "write the exact bytes that are sent to stdout");
  body->add_option("id", id, "record id")->required()->type_name("ID");

  auto* cases = app.add_subcommand("cases", "show a case as the case store holds it");
  cases->require_subcommand(1);
  std::string case_domain, case_id;
  auto* case_show = cases->add_subcommand("show", "a case's state now, with its forms (xform_ids)");
  case_show->add_option("domain", case_domain, "the project space")->required()->type_name("DOMAIN");
  case_show->add_option("case_id", case_id, "the case id")->required()->type_name("CASE_ID");

  std::vector<std::string> ids;
  bool dry_run = false;
  std::vector<std::pair<std::string, CLI::App*>> actions;
  for (const char* action : {"resend", "cancel", "requeue"}) {
    auto* sub =
        records->add_subcommand(action, std::string(action) + " records: by id, or every record a filter matches");
    sub->add_option("ids", ids, "record ids, each acted on in turn")->type_name("ID");
    add_filters(sub, filter);
    sub->add_flag("--dry-run", dry_run, "with filters: count the records it applies to, change nothing");
    actions.emplace_back(action, sub);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, the version, or the error
    return code == 0 ? kOk : kUsage;
  }

  // Usage checks that CLI11 cannot express.
  std::optional<std::pair<std::string, CLI::App*>> action;
  for (const auto& a : actions) {
    if (a.second->parsed()) action = a;
  }
  if (action) {
    if (!ids.empty() && !filter.empty()) return usage_error("give record ids or filters, not both");
    if (ids.empty() && filter.empty()) {
      return usage_error("records " + action->first +
                         " needs record ids, or at least one filter (--repeater, --state, …) for a bulk " +
                         action->first);
    }
    if (!ids.empty() && dry_run) return usage_error("--dry-run goes with filters, not with record ids");
  }
  for (const auto& one : ids) {
    if (one.empty()) return usage_error("a record id is empty");
  }
  if ((show->parsed() || body->parsed()) && id.empty()) return usage_error("the record id is empty");
  if (case_show->parsed() && (case_domain.empty() || case_id.empty())) {
    return usage_error("the domain and the case id must not be empty");
  }
  if (!locate.url.empty() && !locate.socket.empty()) return usage_error("give --socket or --url, not both");

  auto target = repeaterd::ctl::locate_daemon(locate);
  if (!target) {
    // Only the command line's own mistakes (a malformed --url) are usage errors.
    if (target.error().kind == repeaterd::ErrorKind::invalid) return usage_error(target.error().message);
    return fail(target.error().message);
  }
  repeaterd::ctl::ClientOptions options;
  options.timeout = std::chrono::milliseconds(std::max<long long>(1, std::llround(timeout_seconds * 1000)));
  Ctl ctl(AdminClient(std::move(target.value()), options), json, std::vector<std::string>(argv + 1, argv + argc));

  if (status->parsed()) return ctl.status();
  if (reload->parsed()) return ctl.reload();
  for (const auto& [verb, sub] : pausers) {
    if (sub->parsed()) return ctl.repeater_action(verb, name);
  }
  if (repeaters->parsed()) return ctl.repeaters();
  if (list->parsed()) return ctl.list(filter, limit, after, all);
  if (show->parsed()) return ctl.show(id);
  if (body->parsed()) return ctl.body(id);
  if (case_show->parsed()) return ctl.case_show(case_domain, case_id);
  if (action) {
    return ids.empty() ? ctl.bulk_action(action->first, filter, dry_run)
                       : ctl.record_action(action->first, ids);
  }
  return usage_error("no command given");
}
