// repeaterctl without a daemon: query strings, formatting, finding the daemon from a config file,
// and the HTTP client against a one-shot server on a Unix socket in a temporary directory.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "cli/admin_client.hpp"
#include "cli/ctl_format.hpp"

namespace repeaterd::ctl {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Query strings

TEST(CtlQuery, PercentEncodesEverythingButUnreserved) {
  EXPECT_EQ(percent_encode("forms-to_openfn.v2~"), "forms-to_openfn.v2~");
  EXPECT_EQ(percent_encode("a b&c=d+e/f?g#h%"), "a%20b%26c%3Dd%2Be%2Ff%3Fg%23h%25");
  EXPECT_EQ(percent_encode("caf\xC3\xA9"), "caf%C3%A9");
  EXPECT_EQ(percent_encode(""), "");
}

TEST(CtlQuery, RepeatsParametersAndKeepsTheApiOrder) {
  RecordFilter f;
  f.repeaters = {"a", "b c"};
  f.states = {"failed", "pending"};
  f.connection = "openfn";
  f.error_contains = "HTTP 503: x&y";
  f.created_after = "2026-12-03T07:00:00Z";
  EXPECT_EQ(record_query(f, 50, "0193abc"),
            "repeater=a&repeater=b%20c&connection=openfn&state=failed&state=pending"
            "&created_after=2026-12-03T07%3A00%3A00Z&error_contains=HTTP%20503%3A%20x%26y&limit=50&after=0193abc");
  EXPECT_EQ(record_query(f, 0, {}, true),
            "repeater=a&repeater=b%20c&connection=openfn&state=failed&state=pending"
            "&created_after=2026-12-03T07%3A00%3A00Z&error_contains=HTTP%20503%3A%20x%26y&dry_run=true");
}

TEST(CtlQuery, EveryFilterCountsAndNoneIsEmpty) {
  RecordFilter f;
  EXPECT_TRUE(f.empty());
  EXPECT_EQ(record_query(f), "");
  EXPECT_EQ(with_query("/api/v1/records", record_query(f)), "/api/v1/records");
  f.case_id = "c1";
  EXPECT_FALSE(f.empty());
  f = {};
  f.payload_id = "p";
  f.domain = "d";
  f.created_before = "2026-01-01T00:00:00Z";
  EXPECT_EQ(with_query("/api/v1/records", record_query(f, 1)),
            "/api/v1/records?domain=d&payload_id=p&created_before=2026-01-01T00%3A00%3A00Z&limit=1");
}

// ---------------------------------------------------------------------------------------------
// Text

TEST(CtlText, TerminalSafeEscapesControlsAndBadBytes) {
  EXPECT_EQ(terminal_safe("ok \xC3\xA9\xE2\x80\xA6", true), "ok \xC3\xA9\xE2\x80\xA6");
  EXPECT_EQ(terminal_safe("\x1B[31mred", true), "\\x1B[31mred");
  EXPECT_EQ(terminal_safe("a\nb\tc\rd", true), "a b c d");
  EXPECT_EQ(terminal_safe("a\nb\tc\rd", false), "a\nb\tc\\rd");
  EXPECT_EQ(terminal_safe("\xC2\x9B" "2J", true), "\\xC2\\x9B2J");  // U+009B, CSI
  EXPECT_EQ(terminal_safe("x\xFFy\xC3", true), "x\\xFFy\\xC3");
  EXPECT_EQ(terminal_safe(std::string("a\0b\x7F", 4), true), "a\\x00b\\x7F");
}

TEST(CtlText, TruncatesOnCodePoints) {
  EXPECT_EQ(truncate("short", 10), "short");
  EXPECT_EQ(truncate("0123456789", 10), "0123456789");
  EXPECT_EQ(truncate("0123456789ab", 10), "012345678\xE2\x80\xA6");
  EXPECT_EQ(truncate("\xC3\xA9\xC3\xA9\xC3\xA9", 2), "\xC3\xA9\xE2\x80\xA6");
  EXPECT_EQ(display_width("\xC3\xA9\xE2\x80\xA6x"), 3u);
}

TEST(CtlText, AgesForPeople) {
  EXPECT_EQ(format_age(0), "0s");
  EXPECT_EQ(format_age(-3), "0s");
  EXPECT_EQ(format_age(0.9), "0s");
  EXPECT_EQ(format_age(42.5), "42s");
  EXPECT_EQ(format_age(307), "5m07s");
  EXPECT_EQ(format_age(3 * 3600 + 4 * 60 + 59), "3h04m");
  EXPECT_EQ(format_age(2 * 86400 + 3 * 3600), "2d03h");
}

TEST(CtlText, TablesAlignAndTrimTrailingSpace) {
  EXPECT_EQ(format_table({"A", "LONGER", "C"}, {{"wide cell", "x", ""}, {"\xC3\xA9", "yy", "z"}}),
            "A          LONGER  C\n"
            "wide cell  x\n"
            "\xC3\xA9          yy      z\n");
}

TEST(CtlText, ShellQuoting) {
  EXPECT_EQ(shell_quote("--state"), "--state");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote(""), "''");
}

// ---------------------------------------------------------------------------------------------
// Output

const char* const kStatus = R"({"version": "0.1.0", "started_at": "2026-12-03T07:00:00.000000Z", "uptime_seconds": 12,
 "config": {"path": "/etc/repeaterd/repeaterd.yaml", "sha256": "ab"},
 "repeaters": [{"name": "forms-to-openfn", "connection": "openfn", "configured": true,
                "paused": false, "paused_in_config": false, "paused_by_operator": false,
                "counts": {"pending": 0, "failed": 2, "succeeded": 120, "cancelled": 0},
                "oldest_due_age_seconds": 0.0, "in_flight": 1,
                "last_success": null,
                "last_error": {"at": "2026-12-03T07:00:05.000000Z", "record_id": "0193a",
                               "error": "HTTP 503 Service Unavailable:\n\u001b[2Jbusy"}},
               {"name": "old", "connection": "legacy", "configured": false,
                "paused": true, "paused_in_config": false, "paused_by_operator": true,
                "counts": {"pending": 7, "failed": 0, "succeeded": 0, "cancelled": 1},
                "oldest_due_age_seconds": 3725.2, "in_flight": 0, "last_success": null, "last_error": null}],
 "connections": [{"name": "openfn", "circuit": {"state": "closed", "opened_at": null, "next_probe_at": null}},
                 {"name": "legacy", "circuit": {"state": "open", "opened_at": "2026-12-03T06:59:00.000000Z",
                                                "next_probe_at": "2026-12-03T07:00:20.000000Z"}}]})";

TEST(CtlFormat, Status) {
  EXPECT_EQ(format_status(Json::parse(kStatus)),
            "repeaterd 0.1.0, up 12s (since 2026-12-03T07:00:00.000000Z), config /etc/repeaterd/repeaterd.yaml\n"
            "\n"
            "REPEATER             CONNECTION  PENDING  FAILED  SUCCEEDED  CANCELLED  OLDEST DUE  IN FLIGHT  PAUSED\n"
            "forms-to-openfn      openfn      0        2       120        0          0s          1          no\n"
            "old (not in config)  legacy      7        0       0          1          1h02m       0          operator\n"
            "\n"
            "last errors since start:\n"
            "  forms-to-openfn at 2026-12-03T07:00:05.000000Z (record 0193a): HTTP 503 Service Unavailable: "
            "\\x1B[2Jbusy\n"
            "\n"
            "circuit open: legacy since 2026-12-03T06:59:00.000000Z, next probe at 2026-12-03T07:00:20.000000Z\n");
  EXPECT_EQ(format_status(Json::parse(R"({"version": "0.1.0", "repeaters": []})")),
            "repeaterd 0.1.0\n\nno repeaters\n");
}

TEST(CtlFormat, Repeaters) {
  const auto j = Json::parse(R"({"repeaters": [
    {"name": "a", "type": "form", "connection": "c", "domain": null, "format": "json", "configured": true,
     "paused": true, "paused_in_config": true, "paused_by_operator": true, "paused_at": "2026-12-03T07:00:00Z"}]})");
  EXPECT_EQ(format_repeaters(j),
            "NAME  TYPE  CONNECTION  DOMAIN  FORMAT  PAUSED            PAUSED AT\n"
            "a     form  c           -       json    config, operator  2026-12-03T07:00:00Z\n");
  EXPECT_EQ(format_repeaters(Json::parse(R"({"repeaters": []})")), "no repeaters\n");
}

TEST(CtlFormat, RecordRowsCutTheReason) {
  const auto r = Json::parse(R"({"id": "0193", "repeater": "r", "connection": "c", "state": "failed",
    "attempts": 3, "in_flight": false, "created_at": "2026-12-03T07:00:00.000000Z", "updated_at": "x",
    "next_attempt_at": null, "reason": ")" + std::string(70, 'x') + R"("})");
  const auto row = record_row(r);
  ASSERT_EQ(row.size(), record_headers().size());
  EXPECT_EQ(row[0], "0193");
  EXPECT_EQ(row[3], "3");
  EXPECT_EQ(row[5], "-");
  EXPECT_EQ(display_width(row[6]), kReasonWidth);
  EXPECT_EQ(format_records({}), "no records match\n");
  EXPECT_EQ(format_records({row}).substr(0, 3), "ID ");
}

TEST(CtlFormat, NextPageHintReplacesAfter) {
  EXPECT_EQ(next_page_hint({"records", "list", "--state", "failed", "--after", "old", "--error-contains", "a b"},
                           "0193next"),
            "next page: repeaterctl records list --state failed --error-contains 'a b' --after 0193next"
            "   (--all prints every page)\n");
  EXPECT_EQ(next_page_hint({"--json=false", "records", "list", "--after=old"}, "n"),
            "next page: repeaterctl --json=false records list --after n   (--all prints every page)\n");
}

TEST(CtlFormat, MergedPagesPrintAsOneAnswer) {
  const auto a = Json::parse(R"({"id": "1", "reason": null, "nested": {"k": [1, 2]}})");
  const auto b = Json::parse(R"({"id": "2", "state": "pending"})");
  for (const auto& records : {std::vector<Json>{}, std::vector<Json>{a}, std::vector<Json>{a, b}}) {
    MergedRecordsJson merged;
    std::string streamed = merged.begin();
    for (const auto& r : records) streamed += merged.add(r);
    streamed += merged.end();
    Json whole = Json::object();
    whole["records"] = Json::array();
    for (const auto& r : records) whole["records"].push_back(r);
    whole["next"] = nullptr;
    EXPECT_EQ(streamed, pretty_json(whole));
  }
}

TEST(CtlFormat, PrettyJsonKeepsTheApiOrder) {
  EXPECT_EQ(pretty_json(Json::parse(R"({"records": [], "next": null})")),
            "{\n  \"records\": [],\n  \"next\": null\n}\n");
}

TEST(CtlFormat, RecordDetail) {
  const auto j = Json::parse(R"({
    "record": {"id": "0193", "repeater": "r", "connection": "c", "state": "failed", "attempts": 1,
               "in_flight": false, "created_at": "T0", "updated_at": "T1", "next_attempt_at": "T2",
               "reason": "HTTP 503", "domain": "demo", "payload_type": "form", "payload_id": "p1", "case_id": null},
    "payload": {"domain": "demo", "payload_type": "form", "payload_id": "p1", "xmlns": "http://x", "app_id": "a1",
                "content_type": "application/xml", "size": 120, "sha256": "ff", "received_on": "T0"},
    "request": {"method": "POST", "url": "https://h/i", "content_type": "application/json", "query": "",
                "headers": {"Idempotency-Key": "0193"}, "size": 300},
    "attempts": [{"number": 1, "started_at": "T1", "duration_ms": 812, "outcome": "failed", "http_status": 503,
                  "response_headers": {"Content-Type": "text/plain", "Set-Cookie": "<redacted>"},
                  "response_body": "busy\n\u001b]0;x\u0007now\n", "response_size": 9000, "error": "HTTP 503",
                  "request_id": null}]})");
  EXPECT_EQ(format_record_detail(j),
            "record    0193\n"
            "repeater  r (connection c)\n"
            "state     failed, 1 attempt(s)\n"
            "next      T2\n"
            "created   T0\n"
            "updated   T1\n"
            "reason    HTTP 503\n"
            "payload   form p1 in domain demo\n"
            "          xmlns http://x, app a1, case -\n"
            "          application/xml, 120 bytes, sha256 ff\n"
            "          received T0\n"
            "request   POST https://h/i\n"
            "          application/json, 300 bytes\n"
            "          Idempotency-Key: 0193\n"
            "\n"
            "attempt 1  T1  812 ms  failed  HTTP 503\n"
            "  error       HTTP 503\n"
            "  headers     Content-Type: text/plain\n"
            "              Set-Cookie: <redacted>\n"
            "  body (cut)  | busy\n"
            "              | \\x1B]0;x\\x07now\n"
            "  body size   9000 bytes\n");
  EXPECT_NE(format_record_detail(Json::parse(R"({"record": {"id": "x"}, "attempts": []})")).find("no attempts yet"),
            std::string::npos);
}

TEST(CtlFormat, ActionsInOneLine) {
  EXPECT_EQ(format_record_action("requeue", Json::parse(R"({"record": {"id": "1", "state": "pending",
            "next_attempt_at": "T"}})")),
            "requeued 1: now pending, next attempt T\n");
  EXPECT_EQ(format_record_action("cancel", Json::parse(R"({"record": {"id": "1", "state": "cancelled",
            "next_attempt_at": null, "reason": "cancelled by operator"}})")),
            "cancelled 1: now cancelled (cancelled by operator)\n");
  EXPECT_EQ(format_bulk_action(Json::parse(R"({"action": "requeue", "dry_run": true, "matched": 200})")),
            "would requeue 200 record(s) (dry run: nothing changed)\n");
  EXPECT_EQ(format_bulk_action(Json::parse(R"({"action": "resend", "dry_run": false, "changed": 3})")),
            "resent 3 record(s)\n");
  EXPECT_EQ(format_repeater_action("resume", Json::parse(R"({"repeater": {"name": "r"}})")),
            "resumed r: its due records are sent again from now\n");
}

TEST(CtlFormat, ApiErrors) {
  EXPECT_EQ(api_error_message(400, R"({"error": "state: expected pending, failed…", "parameter": "state"})"),
            "state: expected pending, failed… (parameter state)");
  EXPECT_EQ(api_error_message(409, R"({"error": "already paused"})"), "already paused");
  EXPECT_EQ(api_error_message(502, "<html>bad gateway\n<body>"), "HTTP 502 Bad Gateway: <html>bad gateway");
  EXPECT_EQ(api_error_message(418, ""), "HTTP 418");
}

// ---------------------------------------------------------------------------------------------
// Finding the daemon

class TempDir {
 public:
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "repeaterctl-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& content) const {
    const auto p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

GetEnv env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

Result<Target> locate_with(const TempDir& dir, const std::string& yaml, LocateOptions o = {},
                           std::map<std::string, std::string> env = {}) {
  o.config = dir.write("repeaterd.yaml", yaml);
  return locate_daemon(o, env_of(std::move(env)));
}

TEST(CtlLocate, ListenUnixSocket) {
  TempDir dir;
  auto t = locate_with(dir, "admin:\n  listen: unix:/run/r/admin.sock\nstorage:\n  path: /x/q.db\n");
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->endpoint.unix_path, "/run/r/admin.sock");
  EXPECT_EQ(t->endpoint.describe(), "unix:/run/r/admin.sock");
  EXPECT_EQ(t->endpoint.hint, "the socket is set by admin.listen in " + dir.file("repeaterd.yaml") +
                                  "; use --socket or --config");
  EXPECT_TRUE(t->credentials.token.empty());
}

TEST(CtlLocate, ListenTcpAddresses) {
  TempDir dir;
  const std::pair<const char*, const char*> cases[] = {
      {"listen: 127.0.0.1:8081", "http://127.0.0.1:8081"},
      {"listen: \"[::1]:8081\"", "http://[::1]:8081"},
      {"listen: 0.0.0.0:9000", "http://127.0.0.1:9000"},
      {"listen: \"[::]:9000\"", "http://[::1]:9000"},
      {"address: ::1\n  port: 8081", "http://[::1]:8081"},
      {"address: 10.0.0.5\n  port: 8081", "http://10.0.0.5:8081"},
  };
  for (const auto& [yaml, url] : cases) {
    auto t = locate_with(dir, std::string("admin:\n  ") + yaml + "\n");
    ASSERT_TRUE(t.ok()) << yaml << ": " << t.error().message;
    EXPECT_EQ(t->endpoint.url, url) << yaml;
    EXPECT_TRUE(t->endpoint.unix_path.empty());
  }
  for (const char* bad : {"listen: 127.0.0.1", "listen: 127.0.0.1:0", "listen: 127.0.0.1:99999", "listen: \"unix:\"",
                          "port: 8081"}) {
    auto t = locate_with(dir, std::string("admin:\n  ") + bad + "\n");
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_NE(t.error().message.find(dir.file("repeaterd.yaml") + ": admin"), std::string::npos)
        << t.error().message;
  }
}

TEST(CtlLocate, DefaultSocketBesideTheDatabase) {
  TempDir dir;
  auto t = locate_with(dir, "storage:\n  path: /srv/repeaterd/q.db\n");
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->endpoint.unix_path, "/srv/repeaterd/repeaterd.sock");
  EXPECT_NE(t->endpoint.hint.find("beside storage.path"), std::string::npos);
  // Relative paths stay relative to the working directory, as the daemon takes them.
  t = locate_with(dir, "storage:\n  path: data/q.db\n");
  EXPECT_EQ(t->endpoint.unix_path, "data/repeaterd.sock");
  t = locate_with(dir, "storage:\n  path: q.db\n");
  EXPECT_EQ(t->endpoint.unix_path, "./repeaterd.sock");
  t = locate_with(dir, "# nothing but defaults\n");
  EXPECT_EQ(t->endpoint.unix_path, "/var/lib/repeaterd/repeaterd.sock");
  // The rest of the config is not ours to judge.
  t = locate_with(dir, "listen: {port: nonsense}\nrepeaters: 7\nadmin:\n  listen: unix:/a.sock\n");
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->endpoint.unix_path, "/a.sock");
}

TEST(CtlLocate, ConfigErrorsNameTheFile) {
  TempDir dir;
  auto t = locate_with(dir, "admin:\n  listen: [unix:/a]\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message.substr(0, t.error().message.find(';')),
            dir.file("repeaterd.yaml") + ": admin.listen: expected a single value, got a list");
  t = locate_with(dir, "admin: [1\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message.rfind(dir.file("repeaterd.yaml") + ":2:", 0), 0u) << t.error().message;
  LocateOptions o;
  o.config = dir.file("missing.yaml");
  t = locate_daemon(o, env_of({}));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message, "cannot read " + o.config +
                                   ": No such file or directory; give --config FILE, or --socket PATH (or --url) "
                                   "and --token-file");
}

TEST(CtlLocate, ConfigFromTheEnvironmentAndTheDefault) {
  TempDir dir;
  const auto path = dir.write("c.yaml", "admin:\n  listen: unix:/from/env.sock\n");
  auto t = locate_daemon({}, env_of({{"REPEATERD_CONFIG", path}}));
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->endpoint.unix_path, "/from/env.sock");
  // Named by the environment, so it must exist.
  EXPECT_FALSE(locate_daemon({}, env_of({{"REPEATERD_CONFIG", dir.file("nope.yaml")}})).ok());

  if (fs::exists(kDefaultConfigPath)) GTEST_SKIP() << kDefaultConfigPath << " exists on this machine";
  t = locate_daemon({}, env_of({}));
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->endpoint.unix_path, "/var/lib/repeaterd/repeaterd.sock");
  EXPECT_EQ(t->endpoint.hint,
            "there is no /etc/repeaterd/repeaterd.yaml, so this is the default socket; use --config or --socket");
}

TEST(CtlLocate, SocketAndUrlFromTheCommandLine) {
  TempDir dir;
  LocateOptions o;
  o.socket = "/tmp/x.sock";
  o.config = dir.file("missing.yaml");
  o.token_file = dir.write("tok", "t0k\n");
  auto t = locate_daemon(o, env_of({}));  // a named config is not read when nothing is needed from it
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->endpoint.unix_path, "/tmp/x.sock");
  EXPECT_EQ(t->credentials.token, "t0k");

  o = {};
  o.url = "http://127.0.0.1:8081/";
  t = locate_with(dir, "admin:\n  listen: unix:/ignored\n", o);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->endpoint.url, "http://127.0.0.1:8081");
  for (const char* bad : {"https://h:1", "127.0.0.1:8081", "http://", "http://u:p@h:1", "http://h:1/?x"}) {
    o.url = bad;
    t = locate_with(dir, "", o);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.error().kind, ErrorKind::invalid) << bad;
  }
  o.url = "http://h:1";
  o.socket = "/s";
  EXPECT_EQ(locate_with(dir, "", o).error().kind, ErrorKind::invalid);
}

TEST(CtlLocate, TokenSourcesInOrder) {
  TempDir dir;
  const auto cli_file = dir.write("cli-token", "from-cli\r\n\n");
  const auto cfg_file = dir.write("cfg-token", "from-config-file\n");
  const std::map<std::string, std::string> env{{"MY_TOKEN", "from-my-env"}, {"REPEATERD_ADMIN_TOKEN", "from-env"}};
  LocateOptions o;
  o.token_file = cli_file;
  auto t = locate_with(dir, "admin:\n  token_file: " + cfg_file + "\n", o, env);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->credentials.token, "from-cli");

  t = locate_with(dir, "admin:\n  token_file: " + cfg_file + "\n", {}, env);
  EXPECT_EQ(t->credentials.token, "from-config-file");
  EXPECT_EQ(t->credentials.origin, "file " + cfg_file + " (admin.token_file in " + dir.file("repeaterd.yaml") + ")");

  t = locate_with(dir, "admin:\n  token_env: MY_TOKEN\n", {}, env);
  EXPECT_EQ(t->credentials.token, "from-my-env");

  t = locate_with(dir, "admin:\n  token: inline-one\n", {}, env);
  EXPECT_EQ(t->credentials.token, "inline-one");

  // A variable this shell does not have: REPEATERD_ADMIN_TOKEN, and the 401 advice says so.
  t = locate_with(dir, "admin:\n  token_env: NOT_HERE\n", {}, env);
  EXPECT_EQ(t->credentials.token, "from-env");
  t = locate_with(dir, "admin:\n  token_env: NOT_HERE\n", {}, {});
  EXPECT_TRUE(t->credentials.token.empty());
  EXPECT_NE(t->credentials.hint.find("--token-file"), std::string::npos);
  EXPECT_NE(t->credentials.hint.find("NOT_HERE"), std::string::npos);

  // Never a token that would break the header, and never the token in a message.
  t = locate_with(dir, "admin:\n  token_file: " + dir.write("bad", "se cret\n") + "\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message.find("se cret"), std::string::npos);
  t = locate_with(dir, "admin:\n  token_file: " + dir.file("absent") + "\n");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message.find("No such file or directory"), std::string::npos) << t.error().message;
}

// ---------------------------------------------------------------------------------------------
// The client, against a server that answers one request on a Unix socket

class OneShotServer {
 public:
  // Answers the first request with `response`, or, when it is empty, never (until the client
  // goes away or 5 s pass).
  OneShotServer(std::string path, std::string response) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path_.copy(addr.sun_path, sizeof addr.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 4) != 0) {
      throw std::runtime_error("cannot listen on " + path_);
    }
    thread_ = std::thread([this, response = std::move(response)] { serve(response); });
  }
  ~OneShotServer() {
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  // What the client sent (waits for the server to finish).
  std::string request() {
    if (thread_.joinable()) thread_.join();
    return request_;
  }

 private:
  static bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 5000) == 1;
  }

  void serve(const std::string& response) {
    if (!readable(fd_)) return;
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    char buf[4096];
    while (request_.find("\r\n\r\n") == std::string::npos && readable(c)) {
      const ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) break;
      request_.append(buf, static_cast<std::size_t>(n));
    }
    if (!response.empty()) {
      (void)!::write(c, response.data(), response.size());
    } else {
      while (readable(c) && ::read(c, buf, sizeof buf) > 0) {
      }
    }
    ::close(c);
  }

  std::string path_;
  int fd_ = -1;
  std::string request_;
  std::thread thread_;
};

std::string http_response(const std::string& status, const std::string& type, const std::string& body) {
  return "HTTP/1.1 " + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

Target socket_target(const std::string& path, const std::string& token = {}) {
  Target t;
  t.endpoint.unix_path = path;
  t.endpoint.hint = "the socket is the one given to --socket";
  t.credentials.token = token;
  return t;
}

TEST(CtlClient, GetSendsTheTokenAndReturnsTheAnswer) {
  TempDir dir;
  const auto sock = dir.file("a.sock");
  OneShotServer server(sock, http_response("200 OK", "application/json", R"({"repeaters": []})"));
  AdminClient client(socket_target(sock, "s3cret"));
  auto r = client.get("/api/v1/repeaters?state=a%20b");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->content_type, "application/json");
  EXPECT_EQ(r->body, R"({"repeaters": []})");
  const std::string req = server.request();
  EXPECT_EQ(req.rfind("GET /api/v1/repeaters?state=a%20b HTTP/1.1\r\n", 0), 0u) << req;
  EXPECT_NE(req.find("\r\nAuthorization: Bearer s3cret\r\n"), std::string::npos) << req;
}

TEST(CtlClient, PostIsEmptyAndAnErrorStatusIsAnAnswer) {
  TempDir dir;
  const auto sock = dir.file("a.sock");
  OneShotServer server(sock, http_response("409 Conflict", "application/json", R"({"error": "in flight"})"));
  AdminClient client(socket_target(sock));
  auto r = client.post("/api/v1/records/0193/resend");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 409);
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(api_error_message(r->status, r->body), "in flight");
  const std::string req = server.request();
  EXPECT_EQ(req.rfind("POST /api/v1/records/0193/resend HTTP/1.1\r\n", 0), 0u) << req;
  EXPECT_NE(req.find("\r\nContent-Length: 0\r\n"), std::string::npos) << req;
  EXPECT_EQ(req.find("Content-Type"), std::string::npos) << req;
  EXPECT_EQ(req.find("Authorization"), std::string::npos) << req;
}

TEST(CtlClient, GetToStreamsOnlyASuccessfulBody) {
  TempDir dir;
  const auto sock = dir.file("a.sock");
  const std::string bytes("<x>\0\xFF</x>", 9);
  {
    OneShotServer server(sock, http_response("200 OK", "application/xml", bytes));
    std::FILE* out = std::tmpfile();
    ASSERT_NE(out, nullptr);
    AdminClient client(socket_target(sock));
    auto r = client.get_to("/api/v1/records/1/body", out);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(r->body.empty());
    std::rewind(out);
    char buf[64];
    const std::size_t n = std::fread(buf, 1, sizeof buf, out);
    EXPECT_EQ(std::string(buf, n), bytes);
    std::fclose(out);
  }
  fs::remove(sock);
  OneShotServer server(sock, http_response("404 Not Found", "application/json", R"({"error": "no record 1"})"));
  std::FILE* out = std::tmpfile();
  AdminClient client(socket_target(sock));
  auto r = client.get_to("/api/v1/records/1/body", out);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, R"({"error": "no record 1"})");
  EXPECT_EQ(std::ftell(out), 0);
  std::fclose(out);
}

TEST(CtlClient, ABodyOverTheCapIsRefused) {
  TempDir dir;
  const auto sock = dir.file("a.sock");
  OneShotServer server(sock, http_response("200 OK", "application/json", std::string(100, 'x')));
  ClientOptions options;
  options.max_body = 10;
  AdminClient client(socket_target(sock), options);
  auto r = client.get("/api/v1/status");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("larger than"), std::string::npos) << r.error().message;
}

TEST(CtlClient, NoDaemonSaysWhatToDo) {
  TempDir dir;
  Target t = socket_target(dir.file("none.sock"));
  t.endpoint.hint = "the socket is set by admin.listen in /etc/repeaterd/repeaterd.yaml; use --socket or --config";
  AdminClient client(t);
  auto r = client.get("/api/v1/status");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "cannot reach repeaterd at unix:" + dir.file("none.sock") +
                                   ": No such file or directory \xE2\x80\x94 is repeaterd running? (the socket is "
                                   "set by admin.listen in /etc/repeaterd/repeaterd.yaml; use --socket or --config)");
}

TEST(CtlClient, ASilentDaemonTimesOut) {
  TempDir dir;
  const auto sock = dir.file("a.sock");
  OneShotServer server(sock, "");
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(300);
  AdminClient client(socket_target(sock), options);
  auto r = client.get("/api/v1/status");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("did not answer within 0.3 s"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace repeaterd::ctl
