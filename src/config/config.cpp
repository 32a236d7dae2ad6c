// The config schema (spec §2, as far as this version implements it) and the checks that span
// sections: unique names, repeaters naming existing connections, the warnings an operator
// should see at every start.
#include "repeaterd/config.hpp"

#include <arpa/inet.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>
#include <nlohmann/json.hpp>
#include <cctype>
#include <filesystem>
#include <limits>
#include <sstream>
#include <utility>

#include "common/encoding.hpp"
#include "common/ids.hpp"
#include "config/read_file.hpp"
#include "config/reporter.hpp"
#include <nlohmann/json.hpp>
#include "config/secret.hpp"
#include "config/yaml_reader.hpp"

namespace repeaterd::config {
namespace {

using detail::describe;
using detail::Environment;
using detail::Field;
using detail::KeySet;
using detail::MapReader;
using detail::quote;
using detail::Reporter;

using Empty = MapReader::Empty;

constexpr std::size_t kMaxConfigFile = 16u << 20;
constexpr std::size_t kMaxCaFile = 16u << 20;
constexpr std::size_t kMaxNameLength = 64;

const KeySet kTopKeys{{"listen", "ingest_tokens", "admin", "storage", "log", "smtp", "connections", "repeaters"},
                      {}};
const KeySet kAdminKeys{{"listen", "address", "port", "token", "token_env", "token_file"}, {}};
const KeySet kSmtpKeys{{"url", "from", "username", "password", "password_env", "password_file", "starttls", "tls",
                        "throttle", "retry"},
                       {}};
const KeySet kSmtpTlsKeys{{"verify", "ca_file"}, {}};
const KeySet kSmtpRetryKeys{{"initial", "multiplier", "max_delay"}, {}};
constexpr std::array<std::string_view, 2> kStarttls{"when_offered", "required"};
const KeySet kListenKeys{{"address", "port", "max_body", "max_header", "read_timeout",
                          "idle_timeout", "max_connections", "max_body_memory", "public_url"},
                         {"tls"}};
const KeySet kTokenKeys{{"domain", "token", "token_env", "token_file"}, {}};
const KeySet kStorageKeys{{"path", "retention"}, {}};
const KeySet kLogKeys{{"events_file", "level", "queue_summary_every"}, {}};
const KeySet kConnectionKeys{
    {"name", "url", "headers", "connect_timeout", "timeout", "max_in_flight", "tls", "auth", "rate_limit",
     "signing_secret", "signing_secret_env", "signing_secret_file", "notify", "circuit"},
    {}};
const KeySet kCircuitKeys{{"failures", "cooldown", "max_cooldown"}, {}};
const KeySet kConnectionTlsKeys{{"verify", "ca_file", "client_cert_file", "client_key_file"}, {}};
const KeySet kAuthKeys{{"type", "username", "password", "password_env", "password_file", "token", "token_env",
                        "token_file", "header", "key", "key_env", "key_file", "token_url", "client_id",
                        "client_secret", "client_secret_env", "client_secret_file", "scope", "client_auth"},
                       {}};
constexpr std::array<std::string_view, 6> kAuthTypes{"none",   "basic",   "digest",
                                                     "bearer", "api_key", "oauth2_client_credentials"};
const KeySet kRepeaterKeys{{"name", "domain", "type", "connection", "format", "method",
                            "include_app_id_param", "paused", "retry", "template", "filters", "ordered"},
                           {}};
const KeySet kFilterKeys{{"form_xmlns", "case_types", "exclude_users"}, {}};
const KeySet kRetryKeys{
    {"initial", "multiplier", "max_delay", "max_attempts", "max_attempts_client_error", "jitter"},
    {}};

constexpr std::array<std::string_view, 5> kLogLevels{"trace", "debug", "info", "warn", "error"};
constexpr std::array<std::string_view, 3> kMethods{"POST", "PUT", "PATCH"};
constexpr std::array<std::string_view, 2> kClientAuth{"basic", "body"};
constexpr std::array<std::string_view, 4> kRepeaterTypes{"form", "case", "form_stub", "app_structure"};
// repeaterd computes these for every request; a configured value would contradict it or
// break the request framing.
constexpr std::array<std::string_view, 7> kReservedHeaders{
    "Host",         "Content-Length", "Transfer-Encoding", "Content-Type", "Idempotency-Key",
    "X-Request-Id", "Received-On"};

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lx = static_cast<unsigned char>(x);
           const auto ly = static_cast<unsigned char>(y);
           return std::tolower(lx) == std::tolower(ly);
         });
}

// Deliberately loose (RFC 5322 allows far more): one @, something on each side, no spaces or
// brackets that would break a header.
bool is_email_address(std::string_view s) {
  const auto at = s.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 >= s.size() || s.find('@', at + 1) != std::string_view::npos) {
    return false;
  }
  return s.find_first_of(" \t\r\n<>,;\"") == std::string_view::npos;
}

template <std::size_t N>
bool one_of(std::string_view s, const std::array<std::string_view, N>& list) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

template <std::size_t N>
std::string join(const std::array<std::string_view, N>& list, std::string_view last_sep) {
  std::string out;
  for (std::size_t i = 0; i < N; ++i) {
    if (i > 0) out += (i + 1 == N) ? std::string(last_sep) : std::string(", ");
    out += list[i];
  }
  return out;
}

std::string join(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& s : list) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// Names and domains appear in URL paths (/a/{domain}/receiver, /api/v1/repeaters/{name}),
// in the event log and on the command line: keep them to characters that need no escaping.
bool is_name(std::string_view s) {
  return !s.empty() && s.size() <= kMaxNameLength && std::all_of(s.begin(), s.end(), [](char c) {
    return is_alnum(c) || c == '-' || c == '_' || c == '.';
  });
}

// RFC 9110 token characters.
bool is_header_name(std::string_view s) {
  constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
    return is_alnum(c) || kSpecials.find(c) != std::string_view::npos;
  });
}

// A header value may not hold line breaks or other control characters (tab excepted):
// they would end the header early or be rejected by the server.
bool is_header_value(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return c == '\t' || (u >= 0x20 && u != 0x7f);
  });
}

bool is_ip_address(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// 127.0.0.0/8 and ::1: only this host can reach a listener there.
bool is_loopback(const std::string& s) {
  unsigned char buf[16] = {};
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) return buf[0] == 127;
  static constexpr unsigned char kV6Loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return inet_pton(AF_INET6, s.c_str(), buf) == 1 && std::equal(buf, buf + 16, kV6Loopback);
}

// Hides "user:password@" in a URL that is echoed in a message.
std::string redact_userinfo(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const auto authority = scheme_end + 3;
  const auto authority_end = url.find_first_of("/?#", authority);
  const auto at =
      url.rfind('@', authority_end == std::string_view::npos ? url.size() : authority_end);
  if (at == std::string_view::npos || at < authority) return std::string(url);
  return std::string(url.substr(0, authority)) + "***@" + std::string(url.substr(at + 1));
}

// Why `url` cannot be a connection URL, or empty when it can.
std::string url_problem(const std::string& url) {
  const auto parsed = boost::urls::parse_uri(url);
  const std::string shown = quote(redact_userinfo(url));
  if (!parsed) {
    return "expected an http:// or https:// URL with a host, got " + shown + " (" +
           parsed.error().message() + ")";
  }
  const auto& u = *parsed;
  if (u.scheme_id() != boost::urls::scheme::http && u.scheme_id() != boost::urls::scheme::https) {
    return "expected an http:// or https:// URL, got " + shown + " (scheme \"" +
           std::string(u.scheme()) + "\")";
  }
  if (!u.has_authority() || u.encoded_host().empty()) {
    return "expected an http:// or https:// URL with a host, got " + shown;
  }
  if (u.has_userinfo()) {
    return "must not contain user:password@ (the URL is shown in logs and emails): " + shown;
  }
  if (u.has_fragment()) {
    return "must not contain a #fragment, which is never sent to the server: " + shown;
  }
  if (u.has_port()) {
    const std::string_view port = u.port();
    std::uint64_t n = 0;
    for (char c : port)
      n = std::min<std::uint64_t>(n * 10 + static_cast<unsigned>(c - '0'), 100000);
    if (!port.empty() && (n == 0 || n > 65535)) {
      return "port " + std::string(port) + " is not from 1 to 65535 in " + shown;
    }
  }
  return {};
}

// A name as written, and where: for checks that need all entries first.
struct NameAt {
  std::string name;
  std::string path;  // "repeaters[1].connection"
  YAML::Mark mark;
};

class Loader {
 public:
  Loader(Reporter& reporter, const Environment& env) : reporter_(reporter), env_(env) {}

  Config load(const YAML::Node& root) {
    Config config;
    const MapReader top(root, "", kTopKeys, reporter_, Empty::is_error);
    if (!top.valid()) return config;
    if (const Field* f = top.find("listen")) read_listen(*f, config.listen);
    const Field* tokens = top.find("ingest_tokens");
    if (tokens != nullptr) read_tokens(*tokens, config.ingest_tokens);
    if (const Field* f = top.find("storage")) read_storage(*f, config.storage);
    read_admin(top.find("admin"), config);
    if (const Field* f = top.find("log")) read_log(*f, config.log);
    if (const Field* f = top.find("smtp")) read_smtp(*f, config.smtp.emplace());
    if (const Field* f = top.find("connections")) {
      detail::for_each_item(*f, reporter_, [&](const YAML::Node& node, const std::string& path) {
        config.connections.push_back(read_connection(node, path));
      });
    }
    if (const Field* f = top.find("repeaters")) {
      detail::for_each_item(*f, reporter_, [&](const YAML::Node& node, const std::string& path) {
        config.repeaters.push_back(read_repeater(node, path));
      });
    }
    // The seeds' advice: every connection should have someone to tell when forwarding stops.
    if (config.smtp) {
      for (std::size_t i = 0; i < config.connections.size(); ++i) {
        if (config.connections[i].notify.empty()) {
          reporter_.warning(connection_marks_[i], "connection " + config.connections[i].name +
                                                      " has no notify addresses: nobody will be emailed when "
                                                      "its records fail or are cancelled");
        }
      }
    } else {
      for (std::size_t i = 0; i < config.connections.size(); ++i) {
        if (!config.connections[i].notify.empty()) {
          reporter_.warning(connection_marks_[i], "connection " + config.connections[i].name +
                                                      " has notify addresses but there is no smtp section: no "
                                                      "email can be sent");
        }
      }
    }
    check_names(connection_names_, "connection");
    check_names(repeater_names_, "repeater");
    check_references();
    if (tokens == nullptr || (tokens->value.IsSequence() && tokens->value.size() == 0) ||
        tokens->value.IsNull()) {
      const std::string message =
          "no ingest_tokens are configured: nobody can submit forms or cases";
      if (tokens == nullptr) {
        reporter_.file_warning(message);
      } else {
        reporter_.warning(tokens->key.Mark(), message);
      }
    }
    return config;
  }

 private:
  void read_listen(const Field& field, Listen& out) {
    const MapReader m(field.value, field.path, kListenKeys, reporter_, Empty::means_defaults);
    if (const Field* f = detail::read_string(m, "address", out.address, "an IP address")) {
      if (!is_ip_address(out.address)) {
        reporter_.error(f->mark(), f->path +
                                       ": expected an IP address like 127.0.0.1, 0.0.0.0 "
                                       "or ::1, got " +
                                       describe(f->value));
      }
    }
    detail::read_uint<std::uint16_t>(m, "port", 1, "a port number", out.port);
    detail::read_size(m, "max_body", out.max_body);
    detail::read_size(m, "max_header", out.max_header);
    detail::read_duration(m, "read_timeout", out.read_timeout);
    detail::read_duration(m, "idle_timeout", out.idle_timeout);
    detail::read_uint<std::uint32_t>(m, "max_connections", 1, "a whole number",
                                     out.max_connections);
    if (const Field* f = detail::read_size(m, "max_body_memory", out.max_body_memory); f == nullptr) {
      out.max_body_memory = std::max(out.max_body_memory, out.max_body);  // the default makes room for one
    } else if (out.max_body_memory < out.max_body) {
      reporter_.error(f->mark(), f->path + ": must be at least listen.max_body (" + std::to_string(out.max_body) +
                                     " bytes), or no submission of the largest size allowed could ever be received");
    }
    if (const Field* f = detail::read_string(m, "public_url", out.public_url, "an http:// or https:// URL")) {
      if (std::string problem = url_problem(out.public_url); !problem.empty()) {
        reporter_.error(f->mark(), f->path + ": " + problem);
      } else if (out.public_url.find('?') != std::string::npos) {
        reporter_.error(f->mark(), f->path + ": must not contain a ?query: attachment paths are appended to it");
      }
      while (out.public_url.ends_with('/')) out.public_url.pop_back();
    }
  }

  void read_tokens(const Field& field, std::vector<IngestToken>& out) {
    detail::for_each_item(field, reporter_, [&](const YAML::Node& node, const std::string& path) {
      const MapReader m(node, path, kTokenKeys, reporter_, Empty::is_error);
      if (!m.valid()) return;
      IngestToken token;
      if (m.require("domain") != nullptr) {
        if (const Field* f =
                detail::read_string(m, "domain", token.domain, "a project space name")) {
          if (is_name(token.domain)) {
            token_domains_.push_back(token.domain);
          } else {
            reporter_.error(f->mark(), f->path +
                                           ": expected a project space name of letters, "
                                           "digits, '.', '_' or '-', got " +
                                           describe(f->value));
          }
        }
      }
      const auto secret = detail::read_secret(m, "token", env_);
      if (!secret.given) {
        reporter_.error(m.mark(), path +
                                      ": missing the token: give token_env (an environment "
                                      "variable) or token_file (a file)");
      } else if (secret.secret) {
        const std::string& v = secret.secret->value;
        const bool printable = std::all_of(v.begin(), v.end(), [](char c) {
          const auto u = static_cast<unsigned char>(c);
          return u > 0x20 && u != 0x7f;
        });
        if (!printable) {
          // Says where the token came from, never what it is.
          reporter_.error(secret.source->mark(),
                          secret.source->path + ": the token (" + secret.secret->origin +
                              ") contains a space or control character, which an "
                              "Authorization header cannot carry");
        }
        token.token = *secret.secret;
      }
      out.push_back(std::move(token));
    });
  }

  // admin: listen (unix:PATH | ADDRESS:PORT) or spec §2's address/port, and the token. Needs
  // storage.path read first: the default socket sits beside the database.
  void read_admin(const Field* field, Config& config) {
    Admin& out = config.admin;
    const auto parent = std::filesystem::path(config.storage.path).parent_path();
    out.unix_path = (parent.empty() ? std::filesystem::path(".") : parent) / "repeaterd.sock";
    if (field == nullptr) return;
    const MapReader m(field->value, field->path, kAdminKeys, reporter_, Empty::means_defaults);
    std::string listen;
    const Field* lf = detail::read_string(m, "listen", listen, "unix:PATH or ADDRESS:PORT");
    const Field* af = detail::read_string(m, "address", out.address, "an IP address");
    const Field* pf = detail::read_uint<std::uint16_t>(m, "port", 1, "a port number", out.port);
    if (lf != nullptr && (af != nullptr || pf != nullptr)) {
      reporter_.error(lf->mark(), lf->path + ": give either listen or address and port, not both");
    } else if (lf != nullptr) {
      if (listen.starts_with("unix:")) {
        out.unix_path = listen.substr(5);
        if (out.unix_path.empty()) reporter_.error(lf->mark(), lf->path + ": unix: needs a socket path after it");
        else if (out.unix_path.size() > 107) {
          reporter_.error(lf->mark(), lf->path + ": a Unix socket path holds at most 107 bytes; this one has " +
                                          std::to_string(out.unix_path.size()));
        }
      } else {
        // ADDRESS:PORT, with IPv6 addresses in brackets: [::1]:8081.
        const auto colon = listen.rfind(':');
        std::string addr = colon == std::string::npos ? "" : listen.substr(0, colon);
        if (addr.size() >= 2 && addr.front() == '[' && addr.back() == ']') addr = addr.substr(1, addr.size() - 2);
        const std::string port = colon == std::string::npos ? "" : listen.substr(colon + 1);
        const bool port_ok = !port.empty() && port.size() <= 5 &&
                             std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                             std::stoul(port) >= 1 && std::stoul(port) <= 65535;
        if (!is_ip_address(addr) || !port_ok) {
          reporter_.error(lf->mark(), lf->path + ": expected unix:PATH or ADDRESS:PORT (127.0.0.1:8081, [::1]:8081), got " +
                                          describe(lf->value));
        } else {
          out.unix_path.clear();
          out.address = addr;
          out.port = static_cast<std::uint16_t>(std::stoul(port));
        }
      }
    } else if (af != nullptr || pf != nullptr) {
      if (af == nullptr || pf == nullptr) {
        reporter_.error(m.mark(), field->path + ": give both address and port (or listen: ADDRESS:PORT)");
      } else if (!is_ip_address(out.address)) {
        reporter_.error(af->mark(), af->path + ": expected an IP address like 127.0.0.1 or ::1, got " +
                                        describe(af->value));
      } else {
        out.unix_path.clear();
      }
    }
    const auto secret = detail::read_secret(m, "token", env_);
    if (secret.secret) {
      const std::string& v = secret.secret->value;
      if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) {
            const auto u = static_cast<unsigned char>(c);
            return u > 0x20 && u != 0x7f;
          })) {
        reporter_.error(secret.source->mark(), secret.source->path + ": the token (" + secret.secret->origin +
                                                   ") is empty or contains a space or control character, "
                                                   "which an Authorization header cannot carry");
      }
      out.token = *secret.secret;
    }
    if (out.unix_path.empty() && !out.address.empty() && !out.token && !secret.given) {
      if (!is_loopback(out.address)) {
        reporter_.error(m.mark(), field->path + ": the admin API listens on " + out.describe() +
                                      ", which is not loopback: give token_env or token_file (every request must "
                                      "then carry it), or listen on 127.0.0.1 or a unix: socket");
      }
    }
  }

  void read_storage(const Field& field, Storage& out) {
    const MapReader m(field.value, field.path, kStorageKeys, reporter_, Empty::means_defaults);
    detail::read_string(m, "path", out.path, "a file path");
    detail::read_duration(m, "retention", out.retention);
  }

  // A string that must be one of `choices`; `out` keeps its default otherwise.
  template <std::size_t N>
  void read_choice(const MapReader& m, std::string_view key, const std::array<std::string_view, N>& choices,
                   std::string_view what, std::string& out) {
    std::string text;
    if (const Field* f = detail::read_string(m, key, text, what)) {
      if (one_of(text, choices)) {
        out = text;
      } else {
        reporter_.error(f->mark(), f->path + ": expected " + std::string(what) + ", got " + describe(f->value));
      }
    }
  }

  void read_log(const Field& field, Log& out) {
    const MapReader m(field.value, field.path, kLogKeys, reporter_, Empty::means_defaults);
    detail::read_string(m, "events_file", out.events_file, "a file path");
    read_choice(m, "level", kLogLevels, "one of trace, debug, info, warn or error", out.level);
    detail::read_duration(m, "queue_summary_every", out.queue_summary_every);
  }

  Connection read_connection(const YAML::Node& node, const std::string& path) {
    Connection c;
    connection_marks_.push_back(node.Mark());
    const MapReader m(node, path, kConnectionKeys, reporter_, Empty::is_error);
    if (!m.valid()) return c;
    if (m.require("name") != nullptr) {
      if (const Field* f = read_name(m, c.name))
        connection_names_.push_back({c.name, f->path, f->mark()});
    }
    if (m.require("url") != nullptr) {
      if (const Field* f = detail::read_string(m, "url", c.url, "an http:// or https:// URL")) {
        if (const std::string problem = url_problem(c.url); !problem.empty()) {
          reporter_.error(f->mark(), f->path + ": " + problem);
        }
      }
    }
    if (const Field* f = m.find("headers")) read_headers(*f, c.headers);
    detail::read_duration(m, "connect_timeout", c.connect_timeout);
    detail::read_duration(m, "timeout", c.timeout);
    detail::read_uint<std::uint32_t>(m, "max_in_flight", 1, "a whole number", c.max_in_flight,
                                     1024);
    if (const Field* f = m.find("tls")) {
      read_connection_tls(*f, c.name.empty() ? path : c.name, c.tls);
    }
    if (const Field* f = m.find("auth")) read_auth(*f, c.auth);
    if (const Field* f = m.find("circuit")) read_circuit(*f, c.circuit);
    read_string_list(m, "notify", c.notify);
    if (const Field* f = m.find("notify")) {
      for (const auto& address : c.notify) {
        if (!is_email_address(address)) {
          reporter_.error(f->mark(), f->path + ": " + quote(address) + " is not an email address like name@example.org");
        }
      }
    }
    std::string rate;
    if (const Field* f = detail::read_string(m, "rate_limit", rate, "a rate like 20/s, 600/m or 3600/h")) {
      c.rate_limit = parse_rate(rate);
      if (!c.rate_limit) {
        reporter_.error(f->mark(), f->path + ": expected a rate like 20/s, 600/m or 3600/h, got " + describe(f->value));
      }
    }
    if (const auto signing = detail::read_secret(m, "signing_secret", env_); signing.secret) {
      // Standard Webhooks writes the key as "whsec_" + base64; keep the decoded bytes.
      auto key = decode_webhook_secret(signing.secret->value);
      if (!key) {
        reporter_.error(signing.source->mark(),
                        signing.source->path + " (" + signing.secret->origin + "): " + key.error().message);
      } else {
        c.signing_secret = Secret{std::move(key).value(), signing.secret->origin};
      }
    }
    return c;
  }

  // A secret the auth type needs: reported at the auth mapping when missing.
  Secret required_secret(const MapReader& m, std::string_view name, std::string_view type) {
    auto read = detail::read_secret(m, name, env_);
    if (!read.given) {
      reporter_.error(m.mark(), m.path() + ": auth type " + std::string(type) + " needs " + std::string(name) +
                                    "_env (an environment variable) or " + std::string(name) + "_file (a file)");
    }
    return read.secret.value_or(Secret{});
  }

  std::string required_string(const MapReader& m, std::string_view key, std::string_view type, std::string_view what) {
    std::string out;
    if (m.find(key) == nullptr) {
      reporter_.error(m.mark(), m.path() + ": auth type " + std::string(type) + " needs " + std::string(key) +
                                    " (" + std::string(what) + ")");
    } else {
      detail::read_string(m, key, out, what);
    }
    return out;
  }

  void read_auth(const Field& field, Auth& out) {
    const MapReader m(field.value, field.path, kAuthKeys, reporter_, Empty::is_error);
    if (!m.valid()) return;
    std::string type = "none";
    if (m.require("type") != nullptr) read_choice(m, "type", kAuthTypes, join(kAuthTypes, " or "), type);
    // Keys that belong to another type are mistakes worth pointing at.
    std::vector<std::string_view> allowed{"type"};
    if (type == "basic" || type == "digest") {
      out.type = type == "basic" ? Auth::Type::basic : Auth::Type::digest;
      out.username = required_string(m, "username", type, "the user name");
      out.password = required_secret(m, "password", type);
      allowed.insert(allowed.end(), {"username", "password", "password_env", "password_file"});
    } else if (type == "bearer") {
      out.type = Auth::Type::bearer;
      out.token = required_secret(m, "token", type);
      allowed.insert(allowed.end(), {"token", "token_env", "token_file"});
    } else if (type == "api_key") {
      out.type = Auth::Type::api_key;
      out.header = required_string(m, "header", type, "the header that carries the key, like X-API-Key");
      if (!out.header.empty() && !is_header_name(out.header)) {
        reporter_.error(m.find("header")->mark(), m.path() + ".header: expected a header name like X-API-Key");
      }
      out.key = required_secret(m, "key", type);
      allowed.insert(allowed.end(), {"header", "key", "key_env", "key_file"});
    } else if (type == "oauth2_client_credentials") {
      out.type = Auth::Type::oauth2_client_credentials;
      out.token_url = required_string(m, "token_url", type, "the token endpoint's URL");
      if (const Field* f = m.find("token_url"); f != nullptr && !out.token_url.empty()) {
        if (const std::string problem = url_problem(out.token_url); !problem.empty()) {
          reporter_.error(f->mark(), f->path + ": " + problem);
        }
      }
      out.client_id = required_string(m, "client_id", type, "the OAuth client id");
      out.client_secret = required_secret(m, "client_secret", type);
      detail::read_string(m, "scope", out.scope, "a scope");
      std::string how = "basic";
      read_choice(m, "client_auth", kClientAuth, "basic or body", how);
      out.client_auth_in_body = how == "body";
      allowed.insert(allowed.end(), {"token_url", "client_id", "client_secret", "client_secret_env",
                                     "client_secret_file", "scope", "client_auth"});
    }
    for (const auto& f : m.fields()) {
      if (std::find(allowed.begin(), allowed.end(), f.name) == allowed.end() && one_of(type, kAuthTypes)) {
        reporter_.error(f.key.Mark(), field.path + ": " + quote(f.name) + " does not apply to auth type " + type);
      }
    }
  }

  // Accepts any name of letters, digits, '.', '_' and '-'.
  const Field* read_name(const MapReader& m, std::string& out) {
    constexpr std::string_view kWhat = "a name of letters, digits, '.', '_' or '-'";
    const Field* f = detail::read_string(m, "name", out, kWhat);
    if (f != nullptr && !is_name(out)) {
      reporter_.error(f->mark(), f->path + ": expected " + std::string(kWhat) + " (at most " +
                                     std::to_string(kMaxNameLength) + "), got " +
                                     describe(f->value));
      return nullptr;
    }
    return f;
  }

  void read_headers(const Field& field, std::vector<std::pair<std::string, std::string>>& out) {
    if (field.value.IsNull()) return;
    if (!field.value.IsMap()) {
      reporter_.error(field.mark(), field.path +
                                        ": expected a mapping of header names to "
                                        "values, got " +
                                        describe(field.value));
      return;
    }
    for (auto it = field.value.begin(); it != field.value.end(); ++it) {
      // Copies: yaml-cpp's iterator hands out a temporary, so a reference would dangle.
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar() || !is_header_name(key.Scalar())) {
        reporter_.error(key.Mark(), field.path + ": expected a header name like X-Source, got " +
                                        describe(key));
        continue;
      }
      const std::string& name = key.Scalar();
      const std::string path = field.path + "." + name;
      if (const auto* reserved = std::find_if(kReservedHeaders.begin(), kReservedHeaders.end(),
                                              [&](auto r) { return iequals(r, name); });
          reserved != kReservedHeaders.end()) {
        reporter_.error(key.Mark(), field.path + ": " + quote(name) +
                                        " is set by repeaterd itself and cannot be configured "
                                        "(repeaterd sets " +
                                        join(kReservedHeaders, " and ") + ")");
        continue;
      }
      const auto same = std::find_if(out.begin(), out.end(),
                                     [&](const auto& h) { return iequals(h.first, name); });
      if (same != out.end()) {
        reporter_.error(key.Mark(), field.path + ": header " + quote(name) +
                                        " is given twice (header names ignore case)");
        continue;
      }
      // Header values may be credentials: messages describe them by shape, never by text.
      const YAML::Mark at = value.IsNull() ? key.Mark() : value.Mark();
      if (!value.IsScalar()) {
        reporter_.error(at,
                        path + ": expected a header value, got " + detail::describe_shape(value));
        continue;
      }
      if (!is_header_value(value.Scalar())) {
        reporter_.error(at, path + ": the value contains a line break or control character");
        continue;
      }
      out.emplace_back(name, value.Scalar());
    }
  }

  void read_connection_tls(const Field& field, const std::string& connection, ConnectionTls& out) {
    const MapReader m(field.value, field.path, kConnectionTlsKeys, reporter_,
                      Empty::means_defaults);
    if (const Field* f = detail::read_bool(m, "verify", out.verify); f != nullptr && !out.verify) {
      reporter_.warning(f->mark(), "connection " + connection +
                                       ": tls.verify is false: the server's certificate and host "
                                       "name are not checked");
    }
    for (auto [key, target] : {std::pair<std::string_view, std::string*>{"client_cert_file", &out.client_cert_file},
                               {"client_key_file", &out.client_key_file}}) {
      if (const Field* f = detail::read_string(m, key, *target, "a file path")) {
        if (auto content = detail::read_small_file(*target, kMaxCaFile); !content.ok()) {
          reporter_.error(f->mark(), f->path + ": cannot read " + quote(*target) + ": " + content.error().message);
        }
      }
    }
    if (out.client_cert_file.empty() != out.client_key_file.empty()) {
      reporter_.error(m.mark(), m.path() + ": client_cert_file and client_key_file go together (mutual TLS needs "
                                           "both the certificate and its key)");
    }
    if (const Field* f = detail::read_string(m, "ca_file", out.ca_file, "a file path")) {
      auto content = detail::read_small_file(out.ca_file, kMaxCaFile);
      if (!content.ok()) {
        reporter_.error(f->mark(), f->path + ": cannot read " + quote(out.ca_file) + ": " +
                                       content.error().message);
      } else if (content.value().find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
        reporter_.error(f->mark(), f->path + ": " + quote(out.ca_file) +
                                       " holds no PEM certificate (no \"-----BEGIN "
                                       "CERTIFICATE-----\" line)");
      }
    }
  }

  Repeater read_repeater(const YAML::Node& node, const std::string& path) {
    Repeater r;
    const MapReader m(node, path, kRepeaterKeys, reporter_, Empty::is_error);
    if (!m.valid()) return r;
    if (m.require("name") != nullptr) {
      if (const Field* f = read_name(m, r.name))
        repeater_names_.push_back({r.name, f->path, f->mark()});
    }
    std::string domain;
    if (const Field* f = detail::read_string(m, "domain", domain, "a project space name")) {
      if (is_name(domain)) {
        r.domain = domain;
        repeater_domains_.push_back({domain, f->path, f->mark()});
      } else {
        reporter_.error(f->mark(), f->path +
                                       ": expected a project space name of letters, "
                                       "digits, '.', '_' or '-' (omit the key for every "
                                       "project space), got " +
                                       describe(f->value));
      }
    }
    std::string text;
    if (const Field* f = detail::read_string(m, "type", text, "a repeater type")) {
      if (text == "case") r.type = RepeaterType::case_;
      else if (text == "form_stub") r.type = RepeaterType::form_stub;
      else if (text == "app_structure") r.type = RepeaterType::app_structure;
      else if (text != "form") {
        reporter_.error(f->mark(), f->path + ": type " + quote(text) + " is unknown; supported: " +
                                       join(kRepeaterTypes, " or "));
      }
    }
    read_format(m, r);
    if (const Field* f = detail::read_string(m, "template", text, "a JSON template")) {
      read_template(*f, text, r);
    }
    if (const Field* f = m.find("filters")) read_filters(*f, r);
    if (m.require("connection") != nullptr) {
      if (const Field* f =
              detail::read_string(m, "connection", r.connection, "a connection name")) {
        connection_refs_.push_back({r.connection, f->path, f->mark()});
      }
    }
    read_choice(m, "method", kMethods, "POST, PUT or PATCH", r.method);
    detail::read_bool(m, "include_app_id_param", r.include_app_id_param);
    if (const Field* f = detail::read_bool(m, "paused", r.paused); f != nullptr && r.paused) {
      reporter_.warning(f->mark(), "repeater " + (r.name.empty() ? path : r.name) +
                                       " is paused: its records are kept but not sent until it "
                                       "is resumed");
    }
    r.ordered = r.type == RepeaterType::case_;
    detail::read_bool(m, "ordered", r.ordered);
    if (const Field* f = m.find("retry")) read_retry(*f, r.retry);
    return r;
  }

  // form and case bodies come as xml (the default) or json; a stub is always JSON and an
  // app change always plain text, so a format there can only be a mistake.
  void read_format(const MapReader& m, Repeater& r) {
    if (r.type == RepeaterType::form_stub) r.format = PayloadFormat::json;
    if (r.type == RepeaterType::app_structure) r.format = PayloadFormat::text;
    std::string text;
    const Field* f = detail::read_string(m, "format", text, "a payload format");
    if (f == nullptr) return;
    const bool choosable = r.type == RepeaterType::form || r.type == RepeaterType::case_;
    if (!choosable) {
      reporter_.error(f->mark(), f->path + ": type " + std::string(to_string(r.type)) +
                                     " has a fixed format (" + to_string(r.format) + "); remove format");
    } else if (text == "xml") {
      r.format = PayloadFormat::xml;
    } else if (text == "json") {
      r.format = PayloadFormat::json;
    } else {
      reporter_.error(f->mark(), f->path + ": format " + quote(text) + " is unknown for type " +
                                     to_string(r.type) + "; supported: xml or json");
    }
  }

  // A template must produce JSON: try it with an empty object in place of the payload.
  void read_template(const Field& f, const std::string& text, Repeater& r) {
    if (r.format != PayloadFormat::json) {
      reporter_.error(f.mark(), f.path + ": a template applies to JSON bodies only (format json, or type "
                                         "form_stub)");
      return;
    }
    if (text.find("%SUBMISSION%") == std::string::npos) {
      reporter_.error(f.mark(), f.path + ": the template has no %SUBMISSION% placeholder for the payload");
      return;
    }
    std::string probe = text;
    for (auto pos = probe.find("%SUBMISSION%"); pos != std::string::npos; pos = probe.find("%SUBMISSION%", pos)) {
      probe.replace(pos, 12, "{}");
    }
    if (!nlohmann::json::accept(probe)) {
      reporter_.error(f.mark(), f.path + ": the template is not valid JSON once %SUBMISSION% is replaced by "
                                         "the payload: " + quote(text));
      return;
    }
    r.body_template = text;
  }

  void read_filters(const Field& field, Repeater& r) {
    const MapReader m(field.value, field.path, kFilterKeys, reporter_, Empty::means_defaults);
    if (!m.valid()) return;
    read_string_list(m, "form_xmlns", r.filters.form_xmlns);
    read_string_list(m, "case_types", r.filters.case_types);
    read_string_list(m, "exclude_users", r.filters.exclude_users);
    const bool forms = r.type == RepeaterType::form || r.type == RepeaterType::form_stub;
    if (const Field* f = m.find("form_xmlns"); f != nullptr && !forms) {
      reporter_.error(f->mark(), f->path + ": form_xmlns filters form and form_stub repeaters only");
    }
    if (const Field* f = m.find("case_types"); f != nullptr && r.type != RepeaterType::case_) {
      reporter_.error(f->mark(), f->path + ": case_types filters case repeaters only");
    }
  }

  void read_string_list(const MapReader& m, std::string_view key, std::vector<std::string>& out) {
    const Field* f = m.find(key);
    if (f == nullptr) return;
    detail::for_each_item(*f, reporter_, [&](const YAML::Node& item, const std::string& path) {
      if (!item.IsScalar() || item.Scalar().empty()) {
        reporter_.error(item.Mark(), path + ": expected a non-empty string, got " + detail::describe(item));
        return;
      }
      out.push_back(item.Scalar());
    });
  }

  void read_smtp(const Field& field, Smtp& out) {
    const MapReader m(field.value, field.path, kSmtpKeys, reporter_, Empty::is_error);
    if (!m.valid()) return;
    if (m.require("url") != nullptr) {
      if (const Field* f = detail::read_string(m, "url", out.url, "an smtp:// or smtps:// URL")) {
        const auto parsed = boost::urls::parse_uri(out.url);
        if (!parsed || (parsed->scheme() != "smtp" && parsed->scheme() != "smtps") || parsed->host().empty()) {
          reporter_.error(f->mark(), f->path + ": expected smtp://host[:port] or smtps://host[:port], got " +
                                         describe(f->value));
        } else if (parsed->has_userinfo()) {
          reporter_.error(f->mark(), f->path + ": put the SMTP user in username and the password in password_env, "
                                                 "not in the URL");
        }
      }
    }
    if (m.require("from") != nullptr) {
      if (const Field* f = detail::read_string(m, "from", out.from, "an email address")) {
        if (!is_email_address(out.from)) {
          reporter_.error(f->mark(), f->path + ": expected an email address like repeaterd@example.org, got " +
                                         describe(f->value));
        }
      }
    }
    detail::read_string(m, "username", out.username, "a user name");
    const auto password = detail::read_secret(m, "password", env_);
    if (password.secret) out.password = *password.secret;
    if (!out.username.empty() && !password.given) {
      reporter_.error(m.mark(), field.path + ": username is set but not password_env or password_file");
    }
    std::string starttls = "when_offered";
    read_choice(m, "starttls", kStarttls, "when_offered or required", starttls);
    out.starttls_required = starttls == "required";
    if (const Field* f = m.find("tls")) {
      const MapReader t(f->value, f->path, kSmtpTlsKeys, reporter_, Empty::means_defaults);
      detail::read_bool(t, "verify", out.tls_verify);
      if (const Field* c = detail::read_string(t, "ca_file", out.ca_file, "a file path")) {
        if (auto content = detail::read_small_file(out.ca_file, kMaxCaFile); !content.ok()) {
          reporter_.error(c->mark(), c->path + ": cannot read " + quote(out.ca_file) + ": " + content.error().message);
        }
      }
    }
    detail::read_duration(m, "throttle", out.throttle);
    if (const Field* f = m.find("retry")) {
      const MapReader r(f->value, f->path, kSmtpRetryKeys, reporter_, Empty::means_defaults);
      detail::read_duration(r, "initial", out.retry_initial);
      detail::read_double(r, "multiplier", 1.0, std::numeric_limits<double>::infinity(), true, out.retry_multiplier);
      detail::read_duration(r, "max_delay", out.retry_max_delay);
    }
  }

  void read_circuit(const Field& field, Circuit& out) {
    const MapReader m(field.value, field.path, kCircuitKeys, reporter_, Empty::means_defaults);
    detail::read_uint<std::uint32_t>(m, "failures", 0, "a whole number (0: never open)", out.failures, 1000000);
    const Field* cooldown = detail::read_duration(m, "cooldown", out.cooldown);
    const Field* max_cooldown = detail::read_duration(m, "max_cooldown", out.max_cooldown);
    check_not_shorter(m, "max_cooldown", max_cooldown, out.max_cooldown, "cooldown", cooldown, out.cooldown);
  }

  // `longest` (read into `longest_f`) must not be shorter than `least`; reported where the
  // operator wrote something, since a default cannot be the mistake. A key given but unreadable
  // was reported already.
  void check_not_shorter(const MapReader& m, std::string_view longest, const Field* longest_f, Duration longest_v,
                         std::string_view least, const Field* least_f, Duration least_v) {
    if ((longest_f == nullptr && m.find(longest) != nullptr) || (least_f == nullptr && m.find(least) != nullptr)) return;
    if (longest_v >= least_v) return;
    const std::string relation = std::string(longest) + " (" + detail::format_duration(longest_v) +
                                 (longest_f ? "" : ", the default") + ") is shorter than " + std::string(least) + " (" +
                                 detail::format_duration(least_v) + (least_f ? "" : ", the default") + ")";
    const Field* at = longest_f != nullptr ? longest_f : least_f;
    if (at != nullptr) reporter_.error(at->mark(), at->path + ": " + relation);
  }

  void read_retry(const Field& field, Retry& out) {
    const MapReader m(field.value, field.path, kRetryKeys, reporter_, Empty::means_defaults);
    const Field* initial = detail::read_duration(m, "initial", out.initial);
    detail::read_double(m, "multiplier", 1.0, std::numeric_limits<double>::infinity(), true,
                        out.multiplier);
    const Field* max_delay = detail::read_duration(m, "max_delay", out.max_delay);
    detail::read_uint<std::uint32_t>(m, "max_attempts", 1, "a whole number", out.max_attempts);
    detail::read_uint<std::uint32_t>(m, "max_attempts_client_error", 1, "a whole number",
                                     out.max_attempts_client_error);
    detail::read_double(m, "jitter", 0.0, 1.0, false, out.jitter);
    check_not_shorter(m, "max_delay", max_delay, out.max_delay, "initial", initial, out.initial);
  }

  void check_names(const std::vector<NameAt>& names, std::string_view kind) {
    for (std::size_t i = 0; i < names.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (names[j].name == names[i].name) {
          reporter_.error(names[i].mark, names[i].path + ": duplicate " + std::string(kind) +
                                             " name " + quote(names[i].name) +
                                             " (first given at line " +
                                             std::to_string(names[j].mark.line + 1) + ")");
          break;
        }
      }
    }
  }

  void check_references() {
    std::vector<std::string> known;
    for (const auto& c : connection_names_) {
      if (std::find(known.begin(), known.end(), c.name) == known.end()) known.push_back(c.name);
    }
    for (const auto& ref : connection_refs_) {
      if (std::find(known.begin(), known.end(), ref.name) != known.end()) continue;
      reporter_.error(ref.mark, ref.path + ": no connection named " + quote(ref.name) +
                                    (known.empty() ? " (no connections are defined)"
                                                   : " (known: " + join(known) + ")"));
    }
    if (token_domains_.empty()) return;  // the "no ingest_tokens" warning says it all
    for (const auto& d : repeater_domains_) {
      if (std::find(token_domains_.begin(), token_domains_.end(), d.name) == token_domains_.end()) {
        reporter_.warning(d.mark, d.path + ": no ingest token is for domain " + quote(d.name) +
                                      ", so this repeater receives nothing (token domains: " +
                                      join(token_domains_) + ")");
      }
    }
  }

  Reporter& reporter_;
  std::vector<YAML::Mark> connection_marks_;  // where each connection starts, for warnings
  const Environment& env_;
  std::vector<NameAt> connection_names_;
  std::vector<NameAt> repeater_names_;
  std::vector<NameAt> connection_refs_;
  std::vector<NameAt> repeater_domains_;
  std::vector<std::string> token_domains_;
};

// True when line `line` (0-based) of `text` is indented with a tab.
bool tab_indented(const std::string& text, int line) {
  std::size_t pos = 0;
  for (int i = 0; i < line && pos != std::string::npos; ++i) {
    pos = text.find('\n', pos);
    if (pos != std::string::npos) ++pos;
  }
  if (pos == std::string::npos) return false;
  for (; pos < text.size() && (text[pos] == ' ' || text[pos] == '\t'); ++pos) {
    if (text[pos] == '\t') return true;
  }
  return false;
}

// Where each document of a YAML stream starts; nothing else is kept.
class DocumentStarts final : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// yaml-cpp 0.7 (Debian 12) never returns from LoadAll on a token no node can start with, such as
// a ',' outside [...] or {...} (jbeder/yaml-cpp#1040, found by fuzz_config): its parser hands
// out the same empty document at that token forever without consuming it. Walking the documents
// with the event parser first, two documents starting at the same place mean that; it is a
// syntax error at that place. A stream that passes is finite, and LoadAll then returns.
std::optional<YAML::Mark> stuck_at(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts documents;
  while (parser.HandleNextDocument(documents)) {
    const auto& s = documents.starts;
    if (s.size() >= 2 && s[s.size() - 1].pos == s[s.size() - 2].pos) return s.back();
  }
  return std::nullopt;
}

// Parses the text into one document, reporting syntax errors. Null when there is none.
std::optional<YAML::Node> parse(const std::string& text, Reporter& reporter) {
  std::vector<YAML::Node> docs;
  try {
    if (const auto at = stuck_at(text)) {
      const auto pos = static_cast<std::size_t>(at->pos);
      const char c = pos < text.size() ? text[pos] : ' ';
      std::string message = "YAML syntax error: no value can start with ";
      message += (c == ',' || c == ']' || c == '}') ? std::string("'") + c + "' outside [...] or {...}"
                                                     : "what is here";
      reporter.error(*at, message);
      return std::nullopt;
    }
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    std::string message = "YAML syntax error: " + e.msg;
    if (tab_indented(text, e.mark.line) ||
        (e.mark.line > 0 && tab_indented(text, e.mark.line - 1))) {
      message += " (a tab is used for indentation; YAML needs spaces)";
    }
    reporter.error(e.mark, message);
    return std::nullopt;
  }
  if (docs.empty() || docs[0].IsNull()) {
    reporter.file_error("the file holds no configuration; expected a mapping with keys " + [] {
      std::string keys;
      for (auto k : kTopKeys.supported) {
        if (!keys.empty()) keys += ", ";
        keys += k;
      }
      return keys;
    }());
    return std::nullopt;
  }
  if (docs.size() > 1) {
    reporter.error(docs[1].Mark(), "only one YAML document is allowed; a second one starts here");
  }
  return docs[0];
}

}  // namespace

std::string Admin::describe() const {
  if (!unix_path.empty()) return "unix:" + unix_path;
  return (address.find(':') != std::string::npos ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

const Connection* Config::find_connection(const std::string& name) const {
  for (const auto& c : connections) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const Repeater* Config::find_repeater(const std::string& name) const {
  for (const auto& r : repeaters) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

std::string Diagnostic::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  return out + ": " + message;
}

LoadResult load_config_text(const std::string& text, const std::string& file,
                            const std::map<std::string, std::string>* env) {
  Reporter reporter(file, text);
  const Environment environment(env);
  Config config;
  if (const auto root = parse(text, reporter)) {
    config = Loader(reporter, environment).load(*root);
  }
  config.file = file;
  config.sha256 = sha256_hex(text);
  LoadResult result;
  if (!reporter.has_errors()) result.config = std::move(config);
  result.errors = reporter.take_errors();
  result.warnings = reporter.take_warnings();
  return result;
}

LoadResult load_config(const std::string& path, const std::map<std::string, std::string>* env) {
  auto text = detail::read_small_file(path, kMaxConfigFile);
  if (!text.ok()) {
    Reporter reporter(path, {});
    reporter.file_error("cannot read the config file: " + text.error().message);
    LoadResult result;
    result.errors = reporter.take_errors();
    return result;
  }
  return load_config_text(text.value(), path, env);
}

const char* to_string(RepeaterType t) {
  switch (t) {
    case RepeaterType::form: return "form";
    case RepeaterType::case_: return "case";
    case RepeaterType::form_stub: return "form_stub";
    case RepeaterType::app_structure: return "app_structure";
  }
  return "?";
}

const char* to_string(PayloadFormat f) {
  switch (f) {
    case PayloadFormat::xml: return "xml";
    case PayloadFormat::json: return "json";
    case PayloadFormat::text: return "text";
  }
  return "?";
}

}  // namespace repeaterd::config
