// What a reload applies, keeps and reports (config/reload.hpp).
#include "config/reload.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace repeaterd::config {
namespace {

const std::map<std::string, std::string> kEnv{{"T", "token-1"}, {"T2", "token-2"}};

Config load(const std::string& text) {
  auto r = load_config_text(text, "repeaterd.yaml", &kEnv);
  EXPECT_TRUE(r.config) << (r.errors.empty() ? "" : r.errors[0].to_string());
  return r.config ? *r.config : Config{};
}

const std::string kBase = R"(listen: {address: 127.0.0.1, port: 8080}
ingest_tokens: [{domain: demo, token_env: T}]
storage: {path: var/q.db}
connections:
  - {name: a, url: "http://127.0.0.1:9000/a"}
  - {name: b, url: "http://127.0.0.1:9000/b"}
repeaters:
  - {name: ra, connection: a}
  - {name: rb, connection: b}
)";

// `text` with the first `from` replaced by `to`.
std::string with(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

TEST(ReloadPlan, TheSameFileChangesNothing) {
  const Config c = load(kBase);
  const ReloadPlan p = plan_reload(c, c);
  EXPECT_TRUE(p.changed.empty());
  EXPECT_TRUE(p.restart_needed.empty());
  EXPECT_TRUE(p.connections_replaced.empty());
  EXPECT_EQ(p.applied.connections, c.connections);
}

TEST(ReloadPlan, NamesAddedChangedAndRemovedConnectionsAndRepeaters) {
  const Config before = load(kBase);
  std::string text = with(kBase, "9000/b", "9001/b");  // b changed
  text = with(text, "  - {name: a,", "  - {name: c, url: \"http://127.0.0.1:9000/c\"}\n  - {name: a,");  // c added
  text = with(text, "{name: ra, connection: a}", "{name: rc, connection: c}");  // ra removed, rc added
  const ReloadPlan p = plan_reload(before, load(text));
  EXPECT_TRUE(has(p.changed, "connection c added")) << testing::PrintToString(p.changed);
  EXPECT_TRUE(has(p.changed, "connection b changed"));
  EXPECT_TRUE(has(p.changed, "repeater rc added"));
  EXPECT_TRUE(has(p.changed, "repeater ra removed"));
  EXPECT_FALSE(has(p.changed, "connection a changed"));
  EXPECT_EQ(p.connections_replaced, std::vector<std::string>{"b"});
  EXPECT_TRUE(p.restart_needed.empty());
}

TEST(ReloadPlan, ListenersDatabaseAndEventLogWaitForARestart) {
  const Config before = load(kBase);
  std::string text = with(with(kBase, "port: 8080", "port: 8090"), "path: var/q.db", "path: var/r.db");
  text += "admin: {listen: 127.0.0.1:9999}\nlog: {events_file: var/other.log, level: debug}\n";
  const ReloadPlan p = plan_reload(before, load(text));
  EXPECT_EQ(p.restart_needed, (std::vector<std::string>{"listen", "storage.path", "log.events_file", "admin.listen"}));
  EXPECT_EQ(p.applied.listen.port, 8080);
  EXPECT_EQ(p.applied.storage.path, "var/q.db");
  EXPECT_EQ(p.applied.admin.unix_path, before.admin.unix_path);
  EXPECT_EQ(p.applied.log.events_file, before.log.events_file);
  EXPECT_TRUE(has(p.changed, "log.level info -> debug"));  // applied live
  EXPECT_EQ(p.applied.log.level, "debug");
}

TEST(ReloadPlan, TokensSmtpAndSecretsCountAsChanges) {
  const Config before = load(kBase);
  std::string text = with(kBase, "token_env: T}", "token_env: T2}");
  text += "smtp: {url: \"smtp://127.0.0.1:25\", from: a@example.org}\n";
  const ReloadPlan p = plan_reload(before, load(text));
  EXPECT_TRUE(has(p.changed, "ingest_tokens"));
  EXPECT_TRUE(has(p.changed, "smtp"));
}

}  // namespace
}  // namespace repeaterd::config
