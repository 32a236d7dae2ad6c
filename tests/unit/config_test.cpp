#include "repeaterd/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace repeaterd::config {
namespace {

namespace fs = std::filesystem;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

const std::map<std::string, std::string> kEnv{{"REPEATERD_TOKEN_DEMO", "demo-token-1234"}};

LoadResult load(const std::string& text, const std::map<std::string, std::string>& env = kEnv) {
  return load_config_text(text, "repeaterd.yaml", &env);
}

std::string dump(const LoadResult& r) {
  std::string out = "errors:\n";
  for (const auto& d : r.errors) out += "  " + d.to_string() + "\n";
  out += "warnings:\n";
  for (const auto& d : r.warnings) out += "  " + d.to_string() + "\n";
  return out;
}

// Passes when `list` holds a diagnostic at line:column whose message contains `part`.
testing::AssertionResult has_at(const std::vector<Diagnostic>& list, const LoadResult& r, int line,
                                int column, std::string_view part) {
  for (const auto& d : list) {
    if (d.line == line && d.column == column && d.message.find(part) != std::string::npos) {
      return testing::AssertionSuccess();
    }
  }
  return testing::AssertionFailure()
         << "no diagnostic at " << line << ":" << column << " containing \"" << part << "\"\n"
         << dump(r);
}

testing::AssertionResult has_error(const LoadResult& r, int line, int column,
                                   std::string_view part) {
  return has_at(r.errors, r, line, column, part);
}

testing::AssertionResult has_warning(const LoadResult& r, int line, int column,
                                     std::string_view part) {
  return has_at(r.warnings, r, line, column, part);
}

// Passes when `r` has exactly one error, at line:column, containing `part`.
testing::AssertionResult only_error(const LoadResult& r, int line, int column,
                                    std::string_view part) {
  if (r.errors.size() != 1) {
    return testing::AssertionFailure() << "expected exactly one error\n" << dump(r);
  }
  if (r.config) return testing::AssertionFailure() << "a config came back despite an error";
  return has_error(r, line, column, part);
}

// Three lines, so that the sections tests add start at line 4.
const std::string kTokens =
    "ingest_tokens:\n"
    "  - domain: demo\n"
    "    token_env: REPEATERD_TOKEN_DEMO\n";

// Nine lines: a complete, valid config.
const std::string kValid = kTokens +
                           "connections:\n"
                           "  - name: openfn\n"
                           "    url: https://app.openfn.org/i/abc123\n"
                           "repeaters:\n"
                           "  - name: forms\n"
                           "    connection: openfn\n";

// A scratch directory for secret and CA files, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("repeaterd_config_test_" + std::to_string(::getpid()) +
                                         "_" + std::to_string(++counter));
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }

  std::string write(const std::string& name, const std::string& content) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string source_dir() {
  if (const char* dir = std::getenv("REPEATERD_SOURCE_DIR"); dir != nullptr && *dir != '\0') {
    return dir;
  }
  // tests/unit/config_test.cpp -> the repository root. __FILE__ is relative when the
  // compiler was given a relative path; it then resolves from the directory it ran in.
  return (fs::path(__FILE__).parent_path() / ".." / "..").lexically_normal().string();
}

// ---------------------------------------------------------------------------------------
// Whole files

TEST(ConfigExample, LoadsWithoutErrors) {
  const std::string path = source_dir() + "/config/example.yaml";
  const LoadResult r = load_config(path, &kEnv);
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_TRUE(r.errors.empty()) << dump(r);
  EXPECT_EQ(r.config->file, path);
  ASSERT_EQ(r.config->ingest_tokens.size(), 1u);
  EXPECT_EQ(r.config->ingest_tokens[0].token.value, "demo-token-1234");
  EXPECT_EQ(r.config->ingest_tokens[0].token.origin, "env REPEATERD_TOKEN_DEMO");
  ASSERT_EQ(r.config->repeaters.size(), 1u);
  EXPECT_NE(r.config->find_connection(r.config->repeaters[0].connection), nullptr);
}

TEST(ConfigExample, NeedsItsTokenVariable) {
  const std::map<std::string, std::string> no_env;
  const LoadResult r = load_config(source_dir() + "/config/example.yaml", &no_env);
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_NE(r.errors[0].message.find("REPEATERD_TOKEN_DEMO is not set"), std::string::npos);
}

TEST(ConfigDefaults, AppliedWhenKeysAreOmitted) {
  const LoadResult r = load(kValid);
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_TRUE(r.warnings.empty()) << dump(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.file, "repeaterd.yaml");
  EXPECT_EQ(c.listen.address, "127.0.0.1");
  EXPECT_EQ(c.listen.port, 8080);
  EXPECT_EQ(c.listen.max_body, 10u * 1024 * 1024);
  EXPECT_EQ(c.listen.max_header, 16u * 1024);
  EXPECT_EQ(c.listen.read_timeout, seconds(30));
  EXPECT_EQ(c.listen.idle_timeout, seconds(60));
  EXPECT_EQ(c.listen.max_connections, 1024u);
  EXPECT_EQ(c.listen.max_body_memory, 256u << 20);
  EXPECT_EQ(c.storage.path, "/var/lib/repeaterd/repeaterd.db");
  EXPECT_EQ(c.storage.retention, hours(30 * 24));
  EXPECT_EQ(c.log.events_file, "/var/log/repeaterd/events.log");
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.queue_summary_every, seconds(60));
  ASSERT_EQ(c.connections.size(), 1u);
  const Connection& conn = c.connections[0];
  EXPECT_EQ(conn.name, "openfn");
  EXPECT_EQ(conn.url, "https://app.openfn.org/i/abc123");
  EXPECT_TRUE(conn.headers.empty());
  EXPECT_TRUE(conn.tls.verify);
  EXPECT_EQ(conn.tls.ca_file, "");
  EXPECT_EQ(conn.connect_timeout, seconds(10));
  EXPECT_EQ(conn.timeout, seconds(60));
  EXPECT_EQ(conn.max_in_flight, 64u);
  EXPECT_EQ(conn.circuit.failures, 5u);
  EXPECT_EQ(conn.circuit.cooldown, seconds(5));
  EXPECT_EQ(conn.circuit.max_cooldown, std::chrono::minutes(5));
  ASSERT_EQ(c.repeaters.size(), 1u);
  const Repeater& rep = c.repeaters[0];
  EXPECT_EQ(rep.name, "forms");
  EXPECT_EQ(rep.domain, std::nullopt);
  EXPECT_EQ(rep.type, RepeaterType::form);
  EXPECT_EQ(rep.format, PayloadFormat::xml);
  EXPECT_EQ(rep.connection, "openfn");
  EXPECT_EQ(rep.method, "POST");
  EXPECT_TRUE(rep.include_app_id_param);
  EXPECT_FALSE(rep.paused);
  EXPECT_EQ(rep.retry.initial, minutes(1));
  EXPECT_DOUBLE_EQ(rep.retry.multiplier, 3.0);
  EXPECT_EQ(rep.retry.max_delay, hours(24));
  EXPECT_EQ(rep.retry.max_attempts, 8u);
  EXPECT_EQ(rep.retry.max_attempts_client_error, 3u);
  EXPECT_DOUBLE_EQ(rep.retry.jitter, 0.2);
}

TEST(ConfigDefaults, EmptySectionsMeanDefaults) {
  const LoadResult r = load(kValid + "listen:\nstorage:\nlog:\n");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->listen.port, 8080);
  EXPECT_EQ(r.config->log.level, "info");
}

TEST(ConfigParse, ReadsEveryKey) {
  TempDir dir;
  const std::string ca =
      dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  const LoadResult r = load(R"(listen:
  address: "::1"
  port: 9000
  max_body: 1MiB
  max_header: 8KB
  read_timeout: 5s
  idle_timeout: 2m
  max_connections: 50
ingest_tokens:
  - domain: demo
    token_env: REPEATERD_TOKEN_DEMO
storage:
  path: var/q.db
  retention: 7d
log:
  events_file: var/events.log
  level: debug
  queue_summary_every: 1m30s
connections:
  - name: openfn
    url: https://app.openfn.org/i/abc123?x=1
    headers: {X-Source: repeaterd, X-Team: data}
    connect_timeout: 3s
    timeout: 45s
    max_in_flight: 16
    tls: {verify: true, ca_file: )" +
                            ca + R"(}
  - name: dhis2
    url: http://10.0.0.5:8080/api
repeaters:
  - name: forms
    domain: demo
    type: form
    connection: openfn
    format: xml
    method: PUT
    include_app_id_param: false
    paused: false
    retry: {initial: 30s, multiplier: 2.5, max_delay: 1h, max_attempts: 5, max_attempts_client_error: 1, jitter: 0}
  - name: all-forms
    connection: dhis2
    method: PATCH
)");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_TRUE(r.warnings.empty()) << dump(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.listen.address, "::1");
  EXPECT_EQ(c.listen.port, 9000);
  EXPECT_EQ(c.listen.max_body, 1u << 20);
  EXPECT_EQ(c.listen.max_header, 8000u);
  EXPECT_EQ(c.listen.read_timeout, seconds(5));
  EXPECT_EQ(c.listen.idle_timeout, minutes(2));
  EXPECT_EQ(c.listen.max_connections, 50u);
  EXPECT_EQ(c.storage.path, "var/q.db");
  EXPECT_EQ(c.storage.retention, hours(7 * 24));
  EXPECT_EQ(c.log.events_file, "var/events.log");
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.queue_summary_every, seconds(90));
  ASSERT_EQ(c.connections.size(), 2u);
  const Connection& openfn = c.connections[0];
  EXPECT_EQ(openfn.url, "https://app.openfn.org/i/abc123?x=1");
  const std::vector<std::pair<std::string, std::string>> headers{{"X-Source", "repeaterd"},
                                                                 {"X-Team", "data"}};
  EXPECT_EQ(openfn.headers, headers);
  EXPECT_EQ(openfn.connect_timeout, seconds(3));
  EXPECT_EQ(openfn.timeout, seconds(45));
  EXPECT_EQ(openfn.max_in_flight, 16u);
  EXPECT_TRUE(openfn.tls.verify);
  EXPECT_EQ(openfn.tls.ca_file, ca);
  ASSERT_EQ(c.repeaters.size(), 2u);
  const Repeater& forms = c.repeaters[0];
  EXPECT_EQ(forms.domain, "demo");
  EXPECT_EQ(forms.method, "PUT");
  EXPECT_FALSE(forms.include_app_id_param);
  EXPECT_EQ(forms.retry.initial, seconds(30));
  EXPECT_DOUBLE_EQ(forms.retry.multiplier, 2.5);
  EXPECT_EQ(forms.retry.max_delay, hours(1));
  EXPECT_EQ(forms.retry.max_attempts, 5u);
  EXPECT_EQ(forms.retry.max_attempts_client_error, 1u);
  EXPECT_DOUBLE_EQ(forms.retry.jitter, 0.0);
  EXPECT_EQ(c.repeaters[1].method, "PATCH");
  EXPECT_EQ(c.repeaters[1].domain, std::nullopt);

  EXPECT_EQ(c.find_connection("dhis2"), &c.connections[1]);
  EXPECT_EQ(c.find_connection("nope"), nullptr);
  EXPECT_EQ(c.find_repeater("all-forms"), &c.repeaters[1]);
  EXPECT_EQ(c.find_repeater("openfn"), nullptr);
}

TEST(ConfigParse, EnumNames) {
  EXPECT_STREQ(to_string(RepeaterType::form), "form");
  EXPECT_STREQ(to_string(RepeaterType::case_), "case");
  EXPECT_STREQ(to_string(RepeaterType::form_stub), "form_stub");
  EXPECT_STREQ(to_string(RepeaterType::app_structure), "app_structure");
  EXPECT_STREQ(to_string(PayloadFormat::xml), "xml");
  EXPECT_STREQ(to_string(PayloadFormat::json), "json");
}

// ---------------------------------------------------------------------------------------
// Reporting

TEST(ConfigReport, AllErrorsAtOnceSortedByPosition) {
  // The repeater's missing connection is found after everything else is read; it must
  // still come out in file order.
  const LoadResult r = load(R"(repeaters:
  - name: r
    connection: missing
    method: GET
listen:
  port: 0
connections: []
)");
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 3u) << dump(r);
  EXPECT_EQ(r.errors[0].to_string(),
            "repeaterd.yaml:3:17: repeaters[0].connection: no connection named \"missing\" "
            "(no connections are defined)");
  EXPECT_EQ(r.errors[1].to_string(),
            "repeaterd.yaml:4:13: repeaters[0].method: expected POST, PUT or PATCH, got \"GET\"");
  EXPECT_EQ(r.errors[2].to_string(),
            "repeaterd.yaml:6:9: listen.port: expected a port number from 1 to 65535, got 0");
}

TEST(ConfigReport, DiagnosticToString) {
  const Diagnostic d{"c.yaml", 3, 7, "bad"};
  EXPECT_EQ(d.to_string(), "c.yaml:3:7: bad");
  const Diagnostic whole{"c.yaml", 0, 0, "cannot read"};
  EXPECT_EQ(whole.to_string(), "c.yaml: cannot read");
}

TEST(ConfigReport, UnreadableFile) {
  TempDir dir;
  const std::string missing = dir.path("missing.yaml");
  const LoadResult r = load_config(missing, &kEnv);
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].to_string(),
            missing + ": cannot read the config file: No such file or directory");
  const LoadResult as_dir = load_config(dir.path(""), &kEnv);
  ASSERT_EQ(as_dir.errors.size(), 1u);
  EXPECT_EQ(as_dir.errors[0].line, 0);
  EXPECT_NE(as_dir.errors[0].message.find("directory"), std::string::npos);
}

TEST(ConfigReport, LoadConfigReadsTheFile) {
  TempDir dir;
  const std::string path = dir.write("c.yaml", kValid + "listen:\n  port: 70000\n");
  const LoadResult r = load_config(path, &kEnv);
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].to_string(),
            path + ":11:9: listen.port: expected a port number from 1 to 65535, got 70000");
}

TEST(ConfigReport, SyntaxErrorAtParserPosition) {
  const LoadResult r = load("listen:\n  port: [8080\nstorage: {}\n");
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].line, 3);
  EXPECT_NE(r.errors[0].message.find("YAML syntax error"), std::string::npos);
}

TEST(ConfigReport, TabIndentationGetsAHint) {
  const LoadResult r = load("listen:\n\tport: 8080\n");
  EXPECT_TRUE(only_error(r, 2, 6, "tab is used for indentation"));
}

TEST(ConfigReport, EmptyFile) {
  const LoadResult r = load("# nothing yet\n");
  EXPECT_TRUE(only_error(r, 0, 0, "the file holds no configuration"));
}

TEST(ConfigReport, TopLevelMustBeAMapping) {
  const LoadResult r = load("- listen\n- storage\n");
  EXPECT_TRUE(only_error(r, 1, 1, "expected a mapping with keys listen, ingest_tokens"));
  EXPECT_TRUE(has_error(r, 1, 1, "got a list"));
}

TEST(ConfigReport, OnlyOneDocument) {
  const LoadResult r = load(kValid + "---\nlisten: {}\n");
  EXPECT_TRUE(only_error(r, 11, 1, "only one YAML document"));
}

// Found by fuzz_config: yaml-cpp 0.7's LoadAll never returned on a stray ','.
TEST(ConfigReport, StrayCommaIsASyntaxErrorNotAHang) {
  EXPECT_TRUE(only_error(load(","), 1, 1, "no value can start with ',' outside [...] or {...}"));
  EXPECT_TRUE(only_error(load("listen: {}\n---\n  ,\n"), 3, 3, "no value can start with ','"));
  EXPECT_TRUE(only_error(load("listen:\n  port: 8080\n,\n"), 3, 1, "end of map not found"));
}

TEST(ConfigReport, WarningsDoNotPreventLoading) {
  const LoadResult r = load(kTokens +
                            "connections:\n  - name: c\n    url: https://x.org/\n"
                            "    tls: {verify: false}\n");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.warnings.size(), 1u) << dump(r);
}

// ---------------------------------------------------------------------------------------
// Keys

TEST(ConfigKeys, UnknownTopLevelKeyListsAllowedKeys) {
  const LoadResult r = load(kValid + "colour: blue\n");
  EXPECT_TRUE(only_error(r, 10, 1,
                         "unknown key \"colour\" (allowed keys: listen, ingest_tokens, admin, "
                         "storage, log, smtp, connections, repeaters)"));
}

TEST(ConfigAdmin, DefaultsToASocketBesideTheDatabase) {
  const LoadResult r = load(kValid + "storage:\n  path: /srv/q/repeaterd.db\n");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->admin.unix_path, "/srv/q/repeaterd.sock");
  EXPECT_EQ(r.config->admin.describe(), "unix:/srv/q/repeaterd.sock");
  EXPECT_FALSE(r.config->admin.token);
  const LoadResult bare = load(kValid + "storage:\n  path: repeaterd.db\n");
  ASSERT_TRUE(bare.config) << dump(bare);
  EXPECT_EQ(bare.config->admin.unix_path, "./repeaterd.sock");
}

TEST(ConfigAdmin, ListenTakesUnixPathsAndAddresses) {
  const LoadResult u = load(kValid + "admin:\n  listen: unix:/run/repeaterd/admin.sock\n");
  ASSERT_TRUE(u.config) << dump(u);
  EXPECT_EQ(u.config->admin.unix_path, "/run/repeaterd/admin.sock");
  const LoadResult v4 = load(kValid + "admin:\n  listen: 127.0.0.1:8081\n");
  ASSERT_TRUE(v4.config) << dump(v4);
  EXPECT_TRUE(v4.config->admin.unix_path.empty());
  EXPECT_EQ(v4.config->admin.address, "127.0.0.1");
  EXPECT_EQ(v4.config->admin.port, 8081);
  const LoadResult v6 = load(kValid + "admin:\n  listen: \"[::1]:9000\"\n");
  ASSERT_TRUE(v6.config) << dump(v6);
  EXPECT_EQ(v6.config->admin.address, "::1");
  EXPECT_EQ(v6.config->admin.describe(), "[::1]:9000");
  // Spec §2's form.
  const LoadResult ap = load(kValid + "admin:\n  address: 127.0.0.1\n  port: 8081\n");
  ASSERT_TRUE(ap.config) << dump(ap);
  EXPECT_EQ(ap.config->admin.describe(), "127.0.0.1:8081");
}

TEST(ConfigAdmin, MalformedListenSaysWhatItExpects) {
  EXPECT_TRUE(only_error(load(kValid + "admin:\n  listen: localhost:80\n"), 11, 11,
                         "admin.listen: expected unix:PATH or ADDRESS:PORT"));
  EXPECT_TRUE(only_error(load(kValid + "admin:\n  listen: 127.0.0.1:99999\n"), 11, 11,
                         "admin.listen: expected unix:PATH or ADDRESS:PORT"));
  EXPECT_TRUE(only_error(load(kValid + "admin:\n  listen: \"unix:\"\n"), 11, 11, "needs a socket path"));
  EXPECT_TRUE(only_error(load(kValid + "admin:\n  listen: 127.0.0.1:1\n  port: 2\n"), 11, 11,
                         "give either listen or address and port, not both"));
  EXPECT_TRUE(only_error(load(kValid + "admin:\n  port: 2\n"), 11, 3, "give both address and port"));
}

TEST(ConfigAdmin, OffLoopbackNeedsAToken) {
  const LoadResult open = load(kValid + "admin:\n  listen: 0.0.0.0:8081\n");
  EXPECT_TRUE(only_error(open, 11, 3, "admin: the admin API listens on 0.0.0.0:8081, which is not loopback"));
  auto env = kEnv;
  env["ADMIN_TOKEN"] = "s3cret-admin";
  const LoadResult with = load(kValid + "admin:\n  listen: 0.0.0.0:8081\n  token_env: ADMIN_TOKEN\n", env);
  ASSERT_TRUE(with.config) << dump(with);
  ASSERT_TRUE(with.config->admin.token);
  EXPECT_EQ(with.config->admin.token->value, "s3cret-admin");
  // Loopback: optional.
  EXPECT_TRUE(load(kValid + "admin:\n  listen: 127.0.0.2:8081\n").config);
  EXPECT_TRUE(load(kValid + "admin:\n  listen: \"[::1]:8081\"\n").config);
  env["ADMIN_TOKEN"] = "has space";
  EXPECT_TRUE(only_error(load(kValid + "admin:\n  listen: 0.0.0.0:8081\n  token_env: ADMIN_TOKEN\n", env), 12, 14,
                         "contains a space or control character"));
}

TEST(ConfigKeys, UnknownKeysInEveryMapping) {
  const LoadResult r = load(R"(listen:
  tls: {cert_file: a}
ingest_tokens:
  - domain: demo
    token_env: REPEATERD_TOKEN_DEMO
    scope: all
storage: {path: a.db, wal: true}
log: {level: info, format: json}
connections:
  - name: openfn
    url: https://app.openfn.org/
    proxy: {url: x}
    mailto: [a@example.org]
    retries: 3
    signature: X
    tls: {client_cert: c.pem}
repeaters:
  - name: forms
    connection: openfn
    priority: 1
    labels: {}
    fifo: true
    retry: {backoff: 2}
)");
  EXPECT_FALSE(r.config);
  EXPECT_TRUE(has_error(r, 2, 3, "listen: unknown key \"tls\": not supported by this version"));
  EXPECT_TRUE(has_error(r, 6, 5,
                        "ingest_tokens[0]: unknown key \"scope\" (allowed keys: domain, "
                        "token, token_env, token_file)"));
  EXPECT_TRUE(has_error(r, 7, 23, "storage: unknown key \"wal\" (allowed keys: path, retention)"));
  EXPECT_TRUE(has_error(r, 8, 20, "log: unknown key \"format\""));
  EXPECT_TRUE(has_error(r, 12, 5, "connections[0]: unknown key \"proxy\""));
  EXPECT_TRUE(has_error(r, 13, 5, "connections[0]: unknown key \"mailto\""));
  EXPECT_TRUE(has_error(r, 14, 5, "connections[0]: unknown key \"retries\""));
  EXPECT_TRUE(has_error(r, 15, 5, "connections[0]: unknown key \"signature\""));
  EXPECT_TRUE(has_error(r, 16, 11, "connections[0].tls: unknown key \"client_cert\""));
  EXPECT_TRUE(has_error(r, 20, 5, "repeaters[0]: unknown key \"priority\""));
  EXPECT_TRUE(has_error(r, 21, 5, "repeaters[0]: unknown key \"labels\""));
  EXPECT_TRUE(has_error(r, 22, 5, "repeaters[0]: unknown key \"fifo\""));
  EXPECT_TRUE(has_error(r, 23, 13,
                        "repeaters[0].retry: unknown key \"backoff\" (allowed keys: "
                        "initial, multiplier, max_delay, max_attempts, "
                        "max_attempts_client_error, jitter)"));
  EXPECT_EQ(r.errors.size(), 13u) << dump(r);
}

TEST(ConfigKeys, TypoSuggestsTheKey) {
  const LoadResult r = load(kValid + "conections: []\n");
  EXPECT_TRUE(only_error(r, 10, 1, "unknown key \"conections\" (did you mean \"connections\"?"));
}

TEST(ConfigKeys, DuplicateKey) {
  const LoadResult r = load(kValid + "log:\n  level: info\n  level: debug\n");
  EXPECT_TRUE(only_error(r, 12, 3, "log: duplicate key \"level\" (first given at line 11)"));
}

TEST(ConfigKeys, MissingRequiredKeysAtTheParentMapping) {
  const LoadResult r = load(R"(ingest_tokens:
  - token_env: REPEATERD_TOKEN_DEMO
connections:
  - url: https://a.org/
  - name: b
repeaters:
  - connection: b
  - name: r
)");
  EXPECT_TRUE(has_error(r, 2, 5, "ingest_tokens[0]: missing required key \"domain\""));
  EXPECT_TRUE(has_error(r, 4, 5, "connections[0]: missing required key \"name\""));
  EXPECT_TRUE(has_error(r, 5, 5, "connections[1]: missing required key \"url\""));
  EXPECT_TRUE(has_error(r, 7, 5, "repeaters[0]: missing required key \"name\""));
  EXPECT_TRUE(has_error(r, 8, 5, "repeaters[1]: missing required key \"connection\""));
  EXPECT_EQ(r.errors.size(), 5u) << dump(r);
}

TEST(ConfigKeys, MissingTokenAtTheParentMapping) {
  const LoadResult r = load("ingest_tokens:\n  - domain: demo\n");
  EXPECT_TRUE(only_error(r, 2, 5, "ingest_tokens[0]: missing the token: give token_env"));
}

TEST(ConfigKeys, EmptyListItem) {
  const LoadResult r = load(kTokens + "connections:\n  -\n  - name: a\n    url: http://a.org/\n");
  EXPECT_TRUE(only_error(r, 5, 3, "connections[0]: expected an entry, got nothing"));
}

// ---------------------------------------------------------------------------------------
// Types

TEST(ConfigTypes, ListWhereAMappingBelongs) {
  const LoadResult r = load(kValid + "listen: [a, b]\n");
  EXPECT_TRUE(only_error(r, 10, 9, "listen: expected a mapping with keys address, port"));
  EXPECT_TRUE(has_error(r, 10, 9, "got a list"));
}

TEST(ConfigTypes, MappingWhereAListBelongs) {
  const LoadResult r = load("ingest_tokens: {domain: demo}\n");
  EXPECT_TRUE(only_error(r, 1, 16, "ingest_tokens: expected a list, got a mapping"));
}

TEST(ConfigTypes, ScalarWhereAListItemMappingBelongs) {
  const LoadResult r = load(kTokens + "connections:\n  - openfn\n");
  EXPECT_TRUE(only_error(r, 5, 5, "connections[0]: expected a mapping with keys name, url"));
  EXPECT_TRUE(has_error(r, 5, 5, "got \"openfn\""));
}

TEST(ConfigTypes, QuotedNumberIsAString) {
  const LoadResult r = load(kValid + "listen:\n  port: \"8080\"\n");
  EXPECT_TRUE(only_error(r, 11, 9,
                         "listen.port: expected a port number from 1 to 65535, got the "
                         "string \"8080\" (write it without quotes)"));
}

TEST(ConfigTypes, WordForANumber) {
  const LoadResult r = load(kValid + "listen:\n  max_connections: many\n");
  EXPECT_TRUE(only_error(r, 11, 20,
                         "listen.max_connections: expected a whole number of at least "
                         "1, got \"many\""));
}

TEST(ConfigTypes, ListForAScalar) {
  const LoadResult r = load(kValid + "storage:\n  path: [a, b]\n");
  EXPECT_TRUE(only_error(r, 11, 9, "storage.path: expected a file path, got a list"));
}

TEST(ConfigTypes, EmptyValueReportedAtItsKey) {
  const LoadResult r = load(kValid + "storage:\n  path:\n  retention: 1d\n");
  EXPECT_TRUE(only_error(r, 11, 3, "storage.path: expected a file path, got nothing"));
}

TEST(ConfigTypes, BooleansAreTrueOrFalseOnly) {
  const LoadResult r = load(kTokens + R"(connections:
  - name: c
    url: https://c.org/
    tls: {verify: yes}
repeaters:
  - name: r
    connection: c
    paused: "false"
    include_app_id_param: 1
)");
  ASSERT_EQ(r.errors.size(), 3u) << dump(r);
  EXPECT_TRUE(
      has_error(r, 7, 19, "connections[0].tls.verify: expected true or false, got \"yes\""));
  EXPECT_TRUE(has_error(r, 11, 13,
                        "repeaters[0].paused: expected true or false, got the string "
                        "\"false\""));
  EXPECT_TRUE(has_error(r, 12, 27,
                        "repeaters[0].include_app_id_param: expected true or false, "
                        "got 1"));
}

TEST(ConfigTypes, YamlCoreBooleanSpellings) {
  const LoadResult r = load(kTokens + R"(connections:
  - name: c
    url: https://c.org/
repeaters:
  - name: r
    connection: c
    include_app_id_param: False
  - name: s
    connection: c
    include_app_id_param: TRUE
)");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_FALSE(r.config->repeaters[0].include_app_id_param);
  EXPECT_TRUE(r.config->repeaters[1].include_app_id_param);
}

// ---------------------------------------------------------------------------------------
// Values

TEST(ConfigValues, Port) {
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  port: 0\n"), 11, 9,
                         "expected a port number from 1 to 65535, got 0"));
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  port: 65536\n"), 11, 9, "got 65536"));
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  port: -1\n"), 11, 9, "got -1"));
  const LoadResult ok = load(kValid + "listen:\n  port: 65535\n");
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->listen.port, 65535);
}

TEST(ConfigValues, ListenAddressMustBeAnIpAddress) {
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  address: localhost\n"), 11, 12,
                         "listen.address: expected an IP address like 127.0.0.1, 0.0.0.0 or ::1, "
                         "got \"localhost\""));
  ASSERT_TRUE(load(kValid + "listen:\n  address: 0.0.0.0\n").config);
}

TEST(ConfigValues, MaxInFlight) {
  const std::string base = kTokens + "connections:\n  - name: c\n    url: https://c.org/\n";
  EXPECT_TRUE(only_error(load(base + "    max_in_flight: 0\n"), 7, 20,
                         "connections[0].max_in_flight: expected a whole number from 1 to 1024, "
                         "got 0"));
  EXPECT_TRUE(only_error(load(base + "    max_in_flight: 1025\n"), 7, 20, "got 1025"));
  const LoadResult ok = load(base + "    max_in_flight: 1024\n");
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->connections[0].max_in_flight, 1024u);
}

TEST(ConfigValues, Durations) {
  const std::string base = kTokens + "connections:\n  - name: c\n    url: https://c.org/\n";
  EXPECT_TRUE(only_error(load(base + "    timeout: 10 seconds\n"), 7, 14,
                         "connections[0].timeout: expected a duration like 500ms, 30s, 5m, 24h or "
                         "7d, got \"10 seconds\""));
  EXPECT_TRUE(
      only_error(load(base + "    timeout: 30\n"), 7, 14, "got 30 (add a unit: ms, s, m, h or d)"));
  EXPECT_TRUE(only_error(load(base + "    connect_timeout: 0s\n"), 7, 22,
                         "connections[0].connect_timeout: expected a duration longer than zero, "
                         "got \"0s\""));
  EXPECT_TRUE(
      only_error(load(base + "    connect_timeout: -5s\n"), 7, 22, "expected a duration like"));
  EXPECT_TRUE(only_error(load(kValid + "storage: {retention: 0d}\n"), 10, 22,
                         "storage.retention: expected a duration longer than zero"));
  EXPECT_TRUE(only_error(load(kValid + "log: {queue_summary_every: 1 minute}\n"), 10, 28,
                         "log.queue_summary_every: expected a duration"));
  EXPECT_TRUE(only_error(load(kValid + "listen: {read_timeout: 5x, idle_timeout: 10s}\n"), 10, 24,
                         "listen.read_timeout: expected a duration"));
}

// listen.max_body_memory holds at least one body of the largest size allowed: its default grows
// with max_body, and a value set below it is refused where it is written.
TEST(ConfigValues, MaxBodyMemoryHoldsAtLeastOneLargestBody) {
  auto r = load(kValid + "listen:\n  max_body: 512MiB\n");
  ASSERT_TRUE(r.config) << r.errors.size();
  EXPECT_EQ(r.config->listen.max_body_memory, 512u << 20);
  r = load(kValid + "listen:\n  max_body: 1MiB\n  max_body_memory: 8MiB\n");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->listen.max_body_memory, 8u << 20);
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  max_body: 2MiB\n  max_body_memory: 1MiB\n"), 12, 20,
                         "listen.max_body_memory: must be at least listen.max_body (2097152 bytes), or no "
                         "submission of the largest size allowed could ever be received"));
}

TEST(ConfigValues, Sizes) {
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  max_body: 0\n"), 11, 13,
                         "listen.max_body: expected a size greater than zero, got 0"));
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  max_body: -1MiB\n"), 11, 13,
                         "listen.max_body: expected a size like 512, 64KiB, 10MiB or 1GiB, got "
                         "\"-1MiB\""));
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  max_header: 10 megabytes\n"), 11, 15,
                         "listen.max_header: expected a size like"));
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  max_body: 99999999999999999999\n"), 11, 13,
                         "expected a size like"));
}

TEST(ConfigValues, LogLevel) {
  EXPECT_TRUE(only_error(load(kValid + "log:\n  level: verbose\n"), 11, 10,
                         "log.level: expected one of trace, debug, info, warn or error, got "
                         "\"verbose\""));
  for (const char* level : {"trace", "debug", "info", "warn", "error"}) {
    const LoadResult r = load(kValid + "log:\n  level: " + level + "\n");
    ASSERT_TRUE(r.config) << dump(r);
    EXPECT_EQ(r.config->log.level, level);
  }
}

// A valid config whose one repeater has `extra` appended; the repeater's entry starts at
// line 8, so the first extra line is line 10.
std::string with_repeater(const std::string& extra) {
  return kTokens +
         "connections:\n  - name: c\n    url: https://c.org/\n"
         "repeaters:\n  - name: r\n    connection: c\n" +
         extra;
}

TEST(ConfigValues, Method) {
  EXPECT_TRUE(only_error(load(with_repeater("    method: GET\n")), 10, 13,
                         "repeaters[0].method: expected POST, PUT or PATCH, got \"GET\""));
  EXPECT_TRUE(only_error(load(with_repeater("    method: post\n")), 10, 13, "got \"post\""));
}

TEST(ConfigValues, TypeAndFormat) {
  auto ok = load(with_repeater("    type: case\n    format: json\n"));
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->repeaters[0].type, RepeaterType::case_);
  EXPECT_EQ(ok.config->repeaters[0].format, PayloadFormat::json);
  ok = load(with_repeater("    type: form_stub\n"));
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->repeaters[0].format, PayloadFormat::json);
  ok = load(with_repeater("    type: app_structure\n"));
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->repeaters[0].format, PayloadFormat::text);
  EXPECT_TRUE(only_error(load(with_repeater("    type: forms\n")), 10, 11,
                         "type \"forms\" is unknown; supported: form, case, form_stub or app_structure"));
  EXPECT_TRUE(only_error(load(with_repeater("    format: csv\n")), 10, 13,
                         "repeaters[0].format: format \"csv\" is unknown for type form; supported: xml or json"));
  EXPECT_TRUE(only_error(load(with_repeater("    type: form_stub\n    format: xml\n")), 11, 13,
                         "type form_stub has a fixed format (json); remove format"));
}

TEST(ConfigValues, Template) {
  auto ok = load(with_repeater("    format: json\n    template: '{\"form\": \"intake\", \"body\": %SUBMISSION%}'\n"));
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(*ok.config->repeaters[0].body_template, "{\"form\": \"intake\", \"body\": %SUBMISSION%}");
  EXPECT_TRUE(only_error(load(with_repeater("    template: '{\"b\": %SUBMISSION%}'\n")), 10, 15,
                         "a template applies to JSON bodies only"));
  EXPECT_TRUE(only_error(load(with_repeater("    format: json\n    template: '{\"b\": 1}'\n")), 11, 15,
                         "no %SUBMISSION% placeholder"));
  EXPECT_TRUE(only_error(load(with_repeater("    format: json\n    template: '{\"b\": %SUBMISSION%'\n")), 11, 15,
                         "not valid JSON once %SUBMISSION% is replaced"));
}

TEST(ConfigValues, Filters) {
  auto ok = load(with_repeater("    filters: {form_xmlns: [a, b], exclude_users: [u1]}\n"));
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->repeaters[0].filters.form_xmlns, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ok.config->repeaters[0].filters.exclude_users, (std::vector<std::string>{"u1"}));
  ok = load(with_repeater("    type: case\n    filters: {case_types: [mother]}\n"));
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->repeaters[0].filters.case_types, (std::vector<std::string>{"mother"}));
  EXPECT_TRUE(only_error(load(with_repeater("    filters: {case_types: [x]}\n")), 10, 27,
                         "case_types filters case repeaters only"));
  EXPECT_TRUE(only_error(load(with_repeater("    type: case\n    filters: {form_xmlns: [x]}\n")), 11, 27,
                         "form_xmlns filters form and form_stub repeaters only"));
  EXPECT_TRUE(only_error(load(with_repeater("    filters: {users: [x]}\n")), 10, 15,
                         "repeaters[0].filters: unknown key \"users\""));
}

TEST(ConfigValues, Retry) {
  EXPECT_TRUE(
      only_error(load(with_repeater("    retry:\n      multiplier: 0.5\n")), 11, 19,
                 "repeaters[0].retry.multiplier: expected a number of at least 1, got 0.5"));
  EXPECT_TRUE(only_error(load(with_repeater("    retry:\n      jitter: 1\n")), 11, 15,
                         "repeaters[0].retry.jitter: expected a number from 0 up to but not "
                         "including 1, got 1"));
  EXPECT_TRUE(
      only_error(load(with_repeater("    retry:\n      jitter: -0.1\n")), 11, 15, "got -0.1"));
  EXPECT_TRUE(
      only_error(load(with_repeater("    retry:\n      jitter: .nan\n")), 11, 15, "got \".nan\""));
  EXPECT_TRUE(only_error(load(with_repeater("    retry:\n      max_attempts: 0\n")), 11, 21,
                         "repeaters[0].retry.max_attempts: expected a whole number of at least 1, "
                         "got 0"));
  EXPECT_TRUE(only_error(load(with_repeater("    retry:\n      max_attempts_client_error: 0\n")),
                         11, 34, "retry.max_attempts_client_error: expected a whole number"));
  EXPECT_TRUE(only_error(load(with_repeater("    retry:\n      initial: 0s\n")), 11, 16,
                         "retry.initial: expected a duration longer than zero"));
  const LoadResult ok = load(with_repeater("    retry: {multiplier: 1, jitter: 0.99}\n"));
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_DOUBLE_EQ(ok.config->repeaters[0].retry.multiplier, 1.0);
  EXPECT_DOUBLE_EQ(ok.config->repeaters[0].retry.jitter, 0.99);
}

TEST(ConfigValues, Circuit) {
  const std::string base = kTokens + "connections:\n  - name: c\n    url: https://c.org/\n";
  const LoadResult ok = load(base + "    circuit: {failures: 0, cooldown: 1s, max_cooldown: 1s}\n");
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->connections[0].circuit.failures, 0u);
  EXPECT_EQ(ok.config->connections[0].circuit.cooldown, std::chrono::seconds(1));
  EXPECT_TRUE(only_error(load(base + "    circuit: {cooldown: 10m}\n"), 7, 25,
                         "connections[0].circuit.cooldown: max_cooldown (5m, the default) is shorter than "
                         "cooldown (10m)"));
  EXPECT_TRUE(only_error(load(base + "    circuit: {max_cooldown: 1s}\n"), 7, 29,
                         "max_cooldown (1s) is shorter than cooldown (5s, the default)"));
  EXPECT_TRUE(only_error(load(base + "    circuit: {failures: -1}\n"), 7, 25, "circuit.failures: expected a whole number"));
  EXPECT_TRUE(only_error(load(base + "    circuit: {probes: 1}\n"), 7, 15, "circuit: unknown key \"probes\""));
}

TEST(ConfigValues, OrderedDefaultsToTrueForCaseRepeaters) {
  const LoadResult r = load(kTokens + R"(connections:
  - name: c
    url: https://c.org/
repeaters:
  - {name: cases, connection: c, type: case}
  - {name: forms, connection: c, type: form}
  - {name: unordered-cases, connection: c, type: case, ordered: false}
  - {name: ordered-forms, connection: c, type: form, ordered: true}
)");
  ASSERT_TRUE(r.config) << dump(r);
  std::vector<bool> ordered;
  for (const auto& rep : r.config->repeaters) ordered.push_back(rep.ordered);
  EXPECT_EQ(ordered, (std::vector<bool>{true, false, false, true}));
}

TEST(ConfigValues, MaxDelayShorterThanInitial) {
  EXPECT_TRUE(only_error(load(with_repeater("    retry: {initial: 1h, max_delay: 30m}\n")), 10, 37,
                         "repeaters[0].retry.max_delay: max_delay (30m) is shorter than "
                         "initial (1h)"));
  // Against a default, the key the operator wrote is the one reported.
  EXPECT_TRUE(only_error(load(with_repeater("    retry: {max_delay: 30s}\n")), 10, 24,
                         "max_delay (30s) is shorter than initial (1m, the default)"));
  EXPECT_TRUE(only_error(load(with_repeater("    retry: {initial: 2d}\n")), 10, 22,
                         "repeaters[0].retry.initial: max_delay (1d, the default) is shorter "
                         "than initial (2d)"));
  ASSERT_TRUE(load(with_repeater("    retry: {initial: 1h, max_delay: 1h}\n")).config);
}

TEST(ConfigValues, Names) {
  const LoadResult r = load(kTokens + "connections:\n  - name: my conn\n    url: https://c.org/\n");
  EXPECT_TRUE(only_error(r, 5, 11,
                         "connections[0].name: expected a name of letters, digits, '.', "
                         "'_' or '-' (at most 64), got \"my conn\""));
}

// ---------------------------------------------------------------------------------------
// Connections

std::string with_url(const std::string& url) {
  return kTokens + "connections:\n  - name: c\n    url: " + url + "\n";
}

TEST(ConfigConnections, UrlMustBeHttpOrHttpsWithAHost) {
  EXPECT_TRUE(only_error(load(with_url("ftp://files.example.org/in")), 6, 10,
                         "connections[0].url: expected an http:// or https:// URL, got "
                         "\"ftp://files.example.org/in\" (scheme \"ftp\")"));
  EXPECT_TRUE(only_error(load(with_url("app.openfn.org/i/abc")), 6, 10,
                         "expected an http:// or https:// URL with a host, got "
                         "\"app.openfn.org/i/abc\""));
  EXPECT_TRUE(only_error(load(with_url("'http:///path'")), 6, 10,
                         "expected an http:// or https:// URL with a host"));
  EXPECT_TRUE(only_error(load(with_url("'http://exa mple.org/'")), 6, 10,
                         "expected an http:// or https:// URL with a host"));
  EXPECT_TRUE(only_error(load(with_url("https://a.org/#frag")), 6, 10, "#fragment"));
  EXPECT_TRUE(
      only_error(load(with_url("https://a.org:0/")), 6, 10, "port 0 is not from 1 to 65535"));
  EXPECT_TRUE(only_error(load(with_url("https://a.org:70000/")), 6, 10, "port 70000"));
  EXPECT_TRUE(load(with_url("HTTPS://a.org:8443/x?y=1")).config);
  EXPECT_TRUE(load(with_url("http://[::1]:8080/x")).config);
}

TEST(ConfigConnections, UrlWithCredentialsIsRejectedWithoutShowingThem) {
  const LoadResult r = load(with_url("https://alice:pa55word@a.org/in"));
  EXPECT_TRUE(only_error(r, 6, 10, "must not contain user:password@"));
  EXPECT_EQ(r.errors[0].message.find("pa55word"), std::string::npos) << dump(r);
  const LoadResult bad = load(with_url("'https://alice:pa55word@bad host/in'"));
  ASSERT_EQ(bad.errors.size(), 1u) << dump(bad);
  EXPECT_EQ(bad.errors[0].message.find("pa55word"), std::string::npos) << dump(bad);
}

TEST(ConfigConnections, DuplicateNames) {
  const LoadResult r = load(kTokens + R"(connections:
  - name: openfn
    url: https://a.org/
  - name: openfn
    url: https://b.org/
)");
  EXPECT_TRUE(only_error(r, 7, 11,
                         "connections[1].name: duplicate connection name \"openfn\" "
                         "(first given at line 5)"));
}

TEST(ConfigConnections, ReservedHeaders) {
  const LoadResult r = load(kTokens + R"(connections:
  - name: c
    url: https://c.org/
    headers:
      X-Source: repeaterd
      content-type: application/json
      Host: other.org
      Content-Length: 5
      Transfer-Encoding: chunked
      Idempotency-Key: k
      X-Request-Id: i
      Received-On: r
)");
  ASSERT_EQ(r.errors.size(), 7u) << dump(r);
  EXPECT_TRUE(has_error(r, 9, 7,
                        "connections[0].headers: \"content-type\" is set by repeaterd "
                        "itself and cannot be configured"));
  EXPECT_TRUE(has_error(r, 10, 7, "\"Host\" is set by repeaterd itself"));
  EXPECT_TRUE(has_error(r, 11, 7, "\"Content-Length\" is set by repeaterd itself"));
  EXPECT_TRUE(has_error(r, 12, 7, "\"Transfer-Encoding\" is set by repeaterd itself"));
  EXPECT_TRUE(has_error(r, 13, 7, "\"Idempotency-Key\" is set by repeaterd itself"));
  EXPECT_TRUE(has_error(r, 14, 7, "\"X-Request-Id\" is set by repeaterd itself"));
  EXPECT_TRUE(has_error(r, 15, 7, "\"Received-On\" is set by repeaterd itself"));
}

TEST(ConfigConnections, BadHeaders) {
  const LoadResult r = load(kTokens + R"(connections:
  - name: c
    url: https://c.org/
    headers:
      X-A: one
      x-a: two
      "Bad Name": v
      X-Token: "abc\r\nInjected: yes"
      X-List: [a]
      X-Empty:
  - name: d
    url: https://d.org/
    headers: [X-A]
)");
  ASSERT_EQ(r.errors.size(), 6u) << dump(r);
  EXPECT_TRUE(has_error(r, 9, 7, "header \"x-a\" is given twice"));
  EXPECT_TRUE(has_error(r, 10, 7, "expected a header name like X-Source, got \"Bad Name\""));
  EXPECT_TRUE(has_error(r, 11, 16,
                        "connections[0].headers.X-Token: the value contains a line "
                        "break or control character"));
  EXPECT_TRUE(has_error(r, 12, 15,
                        "connections[0].headers.X-List: expected a header value, got "
                        "a list"));
  EXPECT_TRUE(has_error(r, 13, 7,
                        "connections[0].headers.X-Empty: expected a header value, got "
                        "nothing"));
  EXPECT_TRUE(has_error(r, 16, 14, "connections[1].headers: expected a mapping of header names"));
}

TEST(ConfigConnections, TlsVerifyFalseWarns) {
  const LoadResult r = load(kTokens + R"(connections:
  - name: legacy
    url: https://legacy.example.org/
    tls:
      verify: false
)");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_FALSE(r.config->connections[0].tls.verify);
  ASSERT_EQ(r.warnings.size(), 1u) << dump(r);
  EXPECT_TRUE(has_warning(r, 8, 15,
                          "connection legacy: tls.verify is false: the server's "
                          "certificate and host name are not checked"));
}

TEST(ConfigConnections, CaFileMustBeReadablePem) {
  TempDir dir;
  const std::string missing = dir.path("missing.pem");
  const std::string not_pem = dir.write("key.pem", "-----BEGIN PRIVATE KEY-----\nx\n");
  const std::string base = kTokens + "connections:\n  - name: c\n    url: https://c.org/\n";
  EXPECT_TRUE(only_error(
      load(base + "    tls: {ca_file: " + missing + "}\n"), 7, 20,
      "connections[0].tls.ca_file: cannot read \"" + missing + "\": No such file or directory"));
  EXPECT_TRUE(only_error(load(base + "    tls: {ca_file: " + not_pem + "}\n"), 7, 20,
                         "holds no PEM certificate"));
  EXPECT_TRUE(only_error(load(base + "    tls: {ca_file: " + dir.path("") + "}\n"), 7, 20,
                         "is a directory"));
}

// ---------------------------------------------------------------------------------------
// Repeaters

TEST(ConfigRepeaters, MissingConnectionListsKnownOnes) {
  const LoadResult r = load(kTokens + R"(connections:
  - name: openfn
    url: https://a.org/
  - name: dhis2
    url: https://b.org/
repeaters:
  - name: a
    connection: openfn
  - name: b
    connection: openfnn
)");
  EXPECT_TRUE(only_error(r, 13, 17,
                         "repeaters[1].connection: no connection named \"openfnn\" "
                         "(known: openfn, dhis2)"));
}

TEST(ConfigRepeaters, DuplicateNames) {
  const LoadResult r = load(with_repeater("  - name: r\n    connection: c\n"));
  EXPECT_TRUE(only_error(r, 10, 11,
                         "repeaters[1].name: duplicate repeater name \"r\" (first "
                         "given at line 8)"));
}

TEST(ConfigRepeaters, PausedWarns) {
  const LoadResult r = load(with_repeater("    paused: true\n"));
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_TRUE(r.config->repeaters[0].paused);
  ASSERT_EQ(r.warnings.size(), 1u) << dump(r);
  EXPECT_TRUE(has_warning(r, 10, 13, "repeater r is paused"));
}

TEST(ConfigRepeaters, DomainWithoutATokenWarns) {
  const LoadResult r = load(with_repeater("    domain: other\n"));
  ASSERT_TRUE(r.config) << dump(r);
  ASSERT_EQ(r.warnings.size(), 1u) << dump(r);
  EXPECT_TRUE(has_warning(r, 10, 13, "no ingest token is for domain \"other\""));
  EXPECT_TRUE(load(with_repeater("    domain: demo\n")).warnings.empty());
}

TEST(ConfigRepeaters, BadDomain) {
  EXPECT_TRUE(only_error(load(with_repeater("    domain: a/b\n")), 10, 13,
                         "repeaters[0].domain: expected a project space name"));
  EXPECT_TRUE(only_error(load(with_repeater("    domain:\n")), 10, 5,
                         "repeaters[0].domain: expected a project space name, got nothing"));
}

// ---------------------------------------------------------------------------------------
// Ingest tokens and secrets

TEST(ConfigTokens, EmptyDomain) {
  const LoadResult r =
      load("ingest_tokens:\n  - domain: \"\"\n    token_env: REPEATERD_TOKEN_DEMO\n");
  EXPECT_TRUE(only_error(r, 2, 13,
                         "ingest_tokens[0].domain: expected a project space name, got "
                         "\"\""));
}

TEST(ConfigTokens, NoTokensWarns) {
  const LoadResult absent = load("storage: {path: a.db}\n");
  ASSERT_TRUE(absent.config) << dump(absent);
  ASSERT_EQ(absent.warnings.size(), 1u) << dump(absent);
  EXPECT_EQ(absent.warnings[0].to_string(),
            "repeaterd.yaml: no ingest_tokens are configured: nobody can submit forms "
            "or cases");
  const LoadResult empty = load("storage: {path: a.db}\ningest_tokens: []\n");
  ASSERT_TRUE(empty.config) << dump(empty);
  EXPECT_TRUE(has_warning(empty, 2, 1, "no ingest_tokens are configured"));
}

TEST(ConfigSecrets, FromInjectedEnvironment) {
  const LoadResult r = load(kValid);
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->ingest_tokens[0].domain, "demo");
  EXPECT_EQ(r.config->ingest_tokens[0].token.value, "demo-token-1234");
  EXPECT_EQ(r.config->ingest_tokens[0].token.origin, "env REPEATERD_TOKEN_DEMO");
}

TEST(ConfigSecrets, FromProcessEnvironmentWhenNoneIsInjected) {
  ::setenv("REPEATERD_CONFIG_TEST_TOKEN", "from-the-process", 1);
  const LoadResult r = load_config_text(
      "ingest_tokens:\n  - domain: d\n    token_env: REPEATERD_CONFIG_TEST_TOKEN\n", "f.yaml",
      nullptr);
  ::unsetenv("REPEATERD_CONFIG_TEST_TOKEN");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->ingest_tokens[0].token.value, "from-the-process");
}

TEST(ConfigSecrets, EnvironmentVariableUnsetOrEmpty) {
  const std::map<std::string, std::string> empty_var{{"REPEATERD_TOKEN_DEMO", ""}};
  EXPECT_TRUE(only_error(load(kTokens, {}), 3, 16,
                         "ingest_tokens[0].token_env: environment variable REPEATERD_TOKEN_DEMO "
                         "is not set"));
  EXPECT_TRUE(only_error(load(kTokens, empty_var), 3, 16,
                         "environment variable REPEATERD_TOKEN_DEMO is empty"));
  EXPECT_TRUE(only_error(load("ingest_tokens:\n  - domain: d\n    token_env: not-a-name\n"), 3, 16,
                         "expected an environment variable name like REPEATERD_TOKEN_DEMO, got "
                         "\"not-a-name\""));
}

TEST(ConfigSecrets, FromFileWithTrailingNewlinesStripped) {
  TempDir dir;
  const std::string path = dir.write("token", "file-token-5678\r\n\n");
  const LoadResult r = load("ingest_tokens:\n  - domain: d\n    token_file: " + path + "\n");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->ingest_tokens[0].token.value, "file-token-5678");
  EXPECT_EQ(r.config->ingest_tokens[0].token.origin, "file " + path);
  EXPECT_TRUE(r.warnings.empty()) << dump(r);
}

TEST(ConfigSecrets, FileUnreadableOrEmpty) {
  TempDir dir;
  const std::string missing = dir.path("nope");
  const std::string empty = dir.write("empty", "\n");
  const std::string big = dir.write("big", std::string(64 * 1024 + 1, 'x'));
  EXPECT_TRUE(only_error(
      load("ingest_tokens:\n  - domain: d\n    token_file: " + missing + "\n"), 3, 17,
      "ingest_tokens[0].token_file: cannot read \"" + missing + "\": No such file or directory"));
  EXPECT_TRUE(only_error(load("ingest_tokens:\n  - domain: d\n    token_file: " + empty + "\n"), 3,
                         17, "file \"" + empty + "\" is empty"));
  EXPECT_TRUE(only_error(load("ingest_tokens:\n  - domain: d\n    token_file: " + big + "\n"), 3,
                         17, "larger than 64 KiB"));
}

TEST(ConfigSecrets, InlineIsAcceptedWithAWarning) {
  const LoadResult r = load("ingest_tokens:\n  - domain: d\n    token: inline-secret-99\n");
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->ingest_tokens[0].token.value, "inline-secret-99");
  EXPECT_EQ(r.config->ingest_tokens[0].token.origin, "inline");
  ASSERT_EQ(r.warnings.size(), 1u) << dump(r);
  EXPECT_TRUE(has_warning(r, 3, 12,
                          "ingest_tokens[0].token: the secret is written in the config "
                          "file; use token_env (an environment variable) or token_file"));
}

TEST(ConfigSecrets, ExactlyOneForm) {
  const LoadResult r =
      load("ingest_tokens:\n  - domain: d\n    token_env: REPEATERD_TOKEN_DEMO\n    token: x\n");
  EXPECT_TRUE(only_error(r, 4, 5,
                         "ingest_tokens[0]: give only one of token_env, token_file or "
                         "token"));
}

TEST(ConfigSecrets, TokenWithSpaceIsRejected) {
  const LoadResult r = load("ingest_tokens:\n  - domain: d\n    token: \"two words\"\n");
  EXPECT_TRUE(only_error(r, 3, 12, "the token (inline) contains a space or control character"));
}

TEST(ConfigSecrets, ValuesNeverAppearInDiagnostics) {
  TempDir dir;
  const std::string spaced = dir.write("spaced", "s3cret file value\n");
  const std::map<std::string, std::string> env{{"TOKEN_A",
                                                "s3cret\x01"
                                                "env"}};
  const std::string text = R"(ingest_tokens:
  - domain: a
    token: "s3cret inline"
  - domain: b
    token_file: )" + spaced +
                           R"(
  - domain: c
    token_env: TOKEN_A
  - domain: d
    token: s3cret-both
    token_env: TOKEN_A
  - domain: e
    token: [s3cret-list]
  - domain: f
    tokn: s3cret-typo
    token: s3cret-warned
connections:
  - name: c
    url: https://c.org/
    headers: {Authorization: "Bearer s3cret\nnext", X-Key: [s3cret-in-list]}
)";
  const LoadResult r = load(text, env);
  EXPECT_FALSE(r.config);
  EXPECT_EQ(r.errors.size(), 8u) << dump(r);
  for (const auto* list : {&r.errors, &r.warnings}) {
    for (const auto& d : *list) {
      EXPECT_EQ(d.message.find("s3cret"), std::string::npos) << d.to_string();
    }
  }
}

}  // namespace
}  // namespace repeaterd::config

namespace repeaterd::config {
namespace {

// A valid config whose one connection has `extra` appended; the first extra line is line 7.
std::string with_connection(const std::string& extra) {
  return "ingest_tokens:\n  - domain: demo\n    token_env: REPEATERD_TOKEN_DEMO\n"
         "connections:\n  - name: c\n    url: https://c.org/\n" +
         extra + "repeaters:\n  - name: r\n    connection: c\n";
}

const std::map<std::string, std::string> kSecrets{{"REPEATERD_TOKEN_DEMO", "demo-token-1234"},
                                                  {"PW", "s3cret-pw"},
                                                  {"TOK", "tok-abc"},
                                                  {"KEY", "key-xyz"},
                                                  {"CS", "client-secret-1"},
                                                  {"WH", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}};

TEST(ConfigAuth, EveryType) {
  auto r = load(with_connection("    auth: {type: basic, username: alice, password_env: PW}\n"), kSecrets);
  ASSERT_TRUE(r.config) << dump(r);
  const auto& a = r.config->connections[0].auth;
  EXPECT_EQ(a.type, Auth::Type::basic);
  EXPECT_EQ(a.username, "alice");
  EXPECT_EQ(a.password.value, "s3cret-pw");
  EXPECT_EQ(a.password.origin, "env PW");

  r = load(with_connection("    auth: {type: digest, username: bob, password_env: PW}\n"), kSecrets);
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->connections[0].auth.type, Auth::Type::digest);

  r = load(with_connection("    auth: {type: bearer, token_env: TOK}\n"), kSecrets);
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->connections[0].auth.token.value, "tok-abc");

  r = load(with_connection("    auth: {type: api_key, header: X-API-Key, key_env: KEY}\n"), kSecrets);
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_EQ(r.config->connections[0].auth.header, "X-API-Key");
  EXPECT_EQ(r.config->connections[0].auth.key.value, "key-xyz");

  r = load(with_connection("    auth:\n      type: oauth2_client_credentials\n      token_url: https://id.example/token\n"
                           "      client_id: repeaterd\n      client_secret_env: CS\n      scope: forms.write\n"
                           "      client_auth: body\n"),
           kSecrets);
  ASSERT_TRUE(r.config) << dump(r);
  const auto& o = r.config->connections[0].auth;
  EXPECT_EQ(o.type, Auth::Type::oauth2_client_credentials);
  EXPECT_EQ(o.token_url, "https://id.example/token");
  EXPECT_EQ(o.client_id, "repeaterd");
  EXPECT_EQ(o.client_secret.value, "client-secret-1");
  EXPECT_EQ(o.scope, "forms.write");
  EXPECT_TRUE(o.client_auth_in_body);
}

TEST(ConfigAuth, MissingPiecesAndStrayKeys) {
  auto r = load(with_connection("    auth: {type: basic, username: alice}\n"), kSecrets);
  EXPECT_FALSE(r.config);
  EXPECT_TRUE(has_error(r, 7, 11, "auth type basic needs password_env")) << dump(r);
  r = load(with_connection("    auth: {type: bearer, token_env: TOK, username: x}\n"), kSecrets);
  EXPECT_TRUE(has_error(r, 7, 42, "\"username\" does not apply to auth type bearer")) << dump(r);
  r = load(with_connection("    auth: {type: kerberos}\n"), kSecrets);
  EXPECT_TRUE(has_error(r, 7, 18, "expected none, basic, digest, bearer, api_key or oauth2_client_credentials")) << dump(r);
  r = load(with_connection("    auth: {type: oauth2_client_credentials, client_id: x, client_secret_env: CS}\n"), kSecrets);
  EXPECT_TRUE(has_error(r, 7, 11, "needs token_url")) << dump(r);
  r = load(with_connection("    auth: {type: api_key, header: 'bad header', key_env: KEY}\n"), kSecrets);
  EXPECT_TRUE(has_error(r, 7, 35, "expected a header name")) << dump(r);
}

TEST(ConfigAuth, SecretsNeverInMessages) {
  auto r = load(with_connection("    auth: {type: basic, username: alice, password: inline-pw-999}\n"), kSecrets);
  ASSERT_TRUE(r.config) << dump(r);
  for (const auto& d : r.warnings) EXPECT_EQ(d.to_string().find("inline-pw-999"), std::string::npos);
  r = load(with_connection("    signing_secret: not-base64!!\n"), kSecrets);
  ASSERT_FALSE(r.config);
  for (const auto& d : r.errors) EXPECT_EQ(d.to_string().find("not-base64!!"), std::string::npos) << d.to_string();
}

TEST(ConfigConnection, RateLimitSigningAndClientCertificates) {
  auto r = load(with_connection("    rate_limit: 600/m\n    signing_secret_env: WH\n"), kSecrets);
  ASSERT_TRUE(r.config) << dump(r);
  EXPECT_DOUBLE_EQ(*r.config->connections[0].rate_limit, 10.0);
  ASSERT_TRUE(r.config->connections[0].signing_secret);
  EXPECT_EQ(r.config->connections[0].signing_secret->value.size(), 24u) << "the decoded key, not its text";
  r = load(with_connection("    rate_limit: fast\n"), kSecrets);
  EXPECT_TRUE(has_error(r, 7, 17, "expected a rate like 20/s")) << dump(r);
  r = load(with_connection("    tls: {client_cert_file: /nonexistent/c.pem}\n"), kSecrets);
  EXPECT_TRUE(has_error(r, 7, 29, "cannot read")) << dump(r);
  EXPECT_TRUE(has_error(r, 7, 10, "client_cert_file and client_key_file go together")) << dump(r);
}

}  // namespace
}  // namespace repeaterd::config

namespace repeaterd::config {
namespace {

const char* const kSmtpConfig =
    "ingest_tokens:\n  - domain: demo\n    token_env: REPEATERD_TOKEN_DEMO\n"
    "smtp:\n"
    "  url: smtp://127.0.0.1:2525\n"
    "  from: repeaterd@example.org\n"
    "  username: alerts\n"
    "  password_env: PW\n"
    "  starttls: required\n"
    "  throttle: 2m\n"
    "  retry: {initial: 5s, multiplier: 3, max_delay: 1h}\n"
    "connections:\n"
    "  - name: c\n    url: https://c.org/\n    notify: [a@example.org, b@example.org]\n"
    "  - name: quiet\n    url: https://q.org/\n"
    "repeaters:\n  - name: r\n    connection: c\n";

TEST(ConfigSmtp, ReadsEveryKeyAndWarnsAboutConnectionsWithoutNotify) {
  const std::map<std::string, std::string> env{{"REPEATERD_TOKEN_DEMO", "t-1234"}, {"PW", "smtp-pw-77"}};
  auto r = load(kSmtpConfig, env);
  ASSERT_TRUE(r.config) << dump(r);
  const auto& s = *r.config->smtp;
  EXPECT_EQ(s.url, "smtp://127.0.0.1:2525");
  EXPECT_EQ(s.from, "repeaterd@example.org");
  EXPECT_EQ(s.username, "alerts");
  EXPECT_EQ(s.password.value, "smtp-pw-77");
  EXPECT_TRUE(s.starttls_required);
  EXPECT_EQ(s.throttle, std::chrono::minutes(2));
  EXPECT_EQ(s.retry_initial, std::chrono::seconds(5));
  EXPECT_DOUBLE_EQ(s.retry_multiplier, 3.0);
  EXPECT_EQ(s.retry_max_delay, std::chrono::hours(1));
  EXPECT_EQ(r.config->connections[0].notify, (std::vector<std::string>{"a@example.org", "b@example.org"}));
  EXPECT_TRUE(has_warning(r, 16, 5, "connection quiet has no notify addresses")) << dump(r);
  for (const auto& d : r.warnings) EXPECT_EQ(d.to_string().find("smtp-pw-77"), std::string::npos);
}

TEST(ConfigSmtp, BadValues) {
  const std::map<std::string, std::string> env{{"REPEATERD_TOKEN_DEMO", "t-1234"}};
  auto r = load("smtp:\n  url: http://mail.example.org\n  from: not-an-address\n  username: u\n", env);
  EXPECT_FALSE(r.config);
  EXPECT_TRUE(has_error(r, 2, 8, "expected smtp://host[:port] or smtps://host[:port]")) << dump(r);
  EXPECT_TRUE(has_error(r, 3, 9, "expected an email address")) << dump(r);
  EXPECT_TRUE(has_error(r, 2, 3, "username is set but not password_env")) << dump(r);
  r = load(with_connection("    notify: [nobody]\n"), env);
  EXPECT_TRUE(has_error(r, 7, 13, "\"nobody\" is not an email address")) << dump(r);
}

TEST(ConfigValues, ListenPublicUrl) {
  const LoadResult ok = load(kValid + "listen:\n  public_url: https://repeaterd.example.org/base\n");
  ASSERT_TRUE(ok.config) << dump(ok);
  EXPECT_EQ(ok.config->listen.public_url, "https://repeaterd.example.org/base");
  // Attachment paths are appended with their own '/', so trailing slashes are dropped.
  const LoadResult slash = load(kValid + "listen:\n  public_url: http://10.0.0.5:8080//\n");
  ASSERT_TRUE(slash.config) << dump(slash);
  EXPECT_EQ(slash.config->listen.public_url, "http://10.0.0.5:8080");
  const LoadResult absent = load(kValid);
  ASSERT_TRUE(absent.config) << dump(absent);
  EXPECT_EQ(absent.config->listen.public_url, "");
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  public_url: ftp://files.example.org\n"), 11, 15,
                         "listen.public_url: expected an http:// or https:// URL, got \"ftp://files.example.org\" "
                         "(scheme \"ftp\")"));
  EXPECT_TRUE(only_error(load(kValid + "listen:\n  public_url: https://r.example.org/?x=1\n"), 11, 15,
                         "listen.public_url: must not contain a ?query"));
}

}  // namespace
}  // namespace repeaterd::config
