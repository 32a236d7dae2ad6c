// repeaterd's configuration: the one YAML file an operator writes (spec §2).
//
// load_config() reads and validates the whole file and reports every problem at once as
// `FILE:LINE:COL: message`; a Config that comes back is complete and consistent (every
// repeater names an existing connection, every secret was resolved). Plain data, no I/O after
// loading; safe to copy and to read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "repeaterd/time.hpp"

namespace repeaterd::config {

// A secret's resolved value. Never print `value`; `origin` says where it came from
// ("env REPEATERD_TOKEN_DEMO", "file /etc/...", "inline") and is safe to print.
struct Secret {
  std::string value;
  std::string origin;
  bool operator==(const Secret&) const = default;
};

struct Listen {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
  std::uint64_t max_body = 10ull << 20;  // larger submissions get 413. Default: 10MiB
  std::uint64_t max_header = 16ull << 10;  // request line + headers. Default: 16KiB
  Duration read_timeout = std::chrono::seconds(30);  // to receive a whole request. Default: 30s
  Duration idle_timeout = std::chrono::seconds(60);  // keep-alive between requests. Default: 60s
  std::uint32_t max_connections = 1024;  // concurrent client connections. Default: 1024
  // Request bodies held in memory at once, over all connections (each is held from its first
  // byte until its reply): a request that would go over waits for none and gets 503 with
  // Retry-After before its body is read. At least max_body. Default: 256MiB, or max_body if larger
  std::uint64_t max_body_memory = 256ull << 20;
  // How receivers reach this listener (http(s)://host[:port][/prefix], no trailing slash): the
  // base of the attachment URLs in form JSON. Default: none, and the URLs are left out.
  std::string public_url;
  // Set instead of address/port: listen on this Unix socket (mode 0660). The admin listener's
  // default; the ingest listener is always TCP.
  std::string unix_path;
  bool operator==(const Listen&) const = default;
};

struct IngestToken {
  std::string domain;
  Secret token;
  bool operator==(const IngestToken&) const = default;
};

// The admin API's listener (docs/admin-api.md). Its size and time limits are the ingest
// listener's. Default: the Unix socket repeaterd.sock beside the database.
struct Admin {
  std::string unix_path;        // set: a Unix socket at this path
  std::string address;          // else a TCP listener on address:port
  std::uint16_t port = 0;
  std::optional<Secret> token;  // required for TCP off loopback
  // "unix:PATH" or "ADDRESS:PORT", for messages.
  std::string describe() const;
  bool operator==(const Admin&) const = default;
};

struct Storage {
  std::string path = "/var/lib/repeaterd/repeaterd.db";
  Duration retention = std::chrono::hours(24 * 30);  // Default: 30d
  bool operator==(const Storage&) const = default;
};

struct Log {
  std::string events_file = "/var/log/repeaterd/events.log";
  std::string level = "info";  // trace | debug | info | warn | error
  Duration queue_summary_every = std::chrono::seconds(60);
  bool operator==(const Log&) const = default;
};

struct ConnectionTls {
  bool verify = true;  // false: accept any certificate (warned at every start)
  std::string ca_file;  // extra trust anchors, in addition to the system store
  std::string client_cert_file;  // mTLS: PEM certificate (chain) presented to the server
  std::string client_key_file;   // mTLS: its PEM private key; REQUIRES: both or neither
  bool operator==(const ConnectionTls&) const = default;
};

// How requests to a connection authenticate (spec §2 auth).
struct Auth {
  enum class Type { none, basic, digest, bearer, api_key, oauth2_client_credentials };
  Type type = Type::none;
  std::string username;  // basic, digest
  Secret password;       // basic, digest
  Secret token;          // bearer
  std::string header;    // api_key: the header that carries the key
  Secret key;            // api_key
  // oauth2_client_credentials: the token endpoint (reached with the connection's tls
  // settings), the client, an optional scope, and where the client credentials go.
  std::string token_url;
  std::string client_id;
  Secret client_secret;
  std::string scope;
  bool client_auth_in_body = false;  // false: a Basic header (RFC 6749 §2.3.1), true: the form body
  bool operator==(const Auth&) const = default;
};

// When a connection's circuit opens and how it probes (spec §5; scheduler/circuit.hpp).
struct Circuit {
  // Consecutive retryable failures (network, timeout, 5xx, 408, 425, 429) across the
  // connection's records that open it; 0: never.
  std::uint32_t failures = 5;
  Duration cooldown = std::chrono::seconds(5);      // before the first probe; doubles per failed probe
  Duration max_cooldown = std::chrono::minutes(5);  // the longest wait between probes
  bool operator==(const Circuit&) const = default;
};

struct Connection {
  std::string name;
  std::string url;  // http:// or https://, no fragment
  std::vector<std::pair<std::string, std::string>> headers;  // sent with every request
  ConnectionTls tls;
  Duration connect_timeout = std::chrono::seconds(10);  // resolve + connect + TLS handshake
  Duration timeout = std::chrono::seconds(60);          // whole request, send to last byte
  // The most concurrent requests; the scheduler's limit adapts below it (scheduler/pacing.hpp).
  std::uint32_t max_in_flight = 64;
  Auth auth;
  std::vector<std::string> notify;  // addresses emailed when its records fail or are cancelled
  std::optional<double> rate_limit;  // requests a second; requests wait for their turn
  // Standard Webhooks signing key (decoded from its whsec_ base64 form); empty: no signature.
  std::optional<Secret> signing_secret;
  Circuit circuit;
  bool operator==(const Connection&) const = default;
};

struct Retry {
  Duration initial = std::chrono::minutes(1);
  double multiplier = 3.0;
  Duration max_delay = std::chrono::hours(24);
  std::uint32_t max_attempts = 8;
  std::uint32_t max_attempts_client_error = 3;
  double jitter = 0.2;  // delays are spread uniformly by ±jitter
  bool operator==(const Retry&) const = default;
};

// What a repeater forwards (spec §4): the form, each case it touched, a stub naming both,
// or the id of a saved/built app.
enum class RepeaterType { form, case_, form_stub, app_structure };
// The body's format. form and case: xml (default) or json; form_stub is always json and
// app_structure always plain text.
enum class PayloadFormat { xml, json, text };

// Which payloads a repeater takes; an empty list takes all.
struct Filters {
  std::vector<std::string> form_xmlns;     // form and form_stub: only forms with these xmlns
  std::vector<std::string> case_types;     // case: only cases of these types
  std::vector<std::string> exclude_users;  // never payloads submitted by these user ids
  bool operator==(const Filters&) const = default;
};

struct Repeater {
  std::string name;
  std::optional<std::string> domain;  // nullopt: every domain
  RepeaterType type = RepeaterType::form;
  std::string connection;
  PayloadFormat format = PayloadFormat::xml;
  std::string method = "POST";  // POST | PUT | PATCH
  bool include_app_id_param = true;
  bool paused = false;
  // A record waits while an earlier record of the same case (case repeaters) or form (the
  // others) for this repeater is pending or failed. Default: true for case repeaters.
  bool ordered = false;
  // JSON bodies only: the forwarded body is this text with %SUBMISSION% replaced by the JSON
  // payload (a Kobo-style wrapper such as {"form": "intake", "body": %SUBMISSION%}).
  std::optional<std::string> body_template;
  Filters filters;
  Retry retry;
  bool operator==(const Repeater&) const = default;
};

// Where notification emails go out (spec §6). Absent: no emails.
struct Smtp {
  std::string url;             // smtp://host[:port] (STARTTLS when offered) or smtps://host[:port]
  std::string from;
  std::string username;        // empty: no AUTH
  Secret password;
  bool starttls_required = false;  // smtp://: refuse to send without STARTTLS
  bool tls_verify = true;
  std::string ca_file;
  Duration throttle = std::chrono::minutes(15);  // per connection: one email a window, the rest summarised
  // While the server cannot be reached: initial × multiplier^(n-1), at most max_delay, forever.
  Duration retry_initial = std::chrono::seconds(10);
  double retry_multiplier = 2.0;
  Duration retry_max_delay = std::chrono::minutes(10);
  bool operator==(const Smtp&) const = default;
};

struct Config {
  std::string file;    // the path it was loaded from
  std::string sha256;  // of the text it was loaded from (lowercase hex)
  Listen listen;
  std::vector<IngestToken> ingest_tokens;
  Admin admin;
  Storage storage;
  Log log;
  std::optional<Smtp> smtp;
  std::vector<Connection> connections;
  std::vector<Repeater> repeaters;

  const Connection* find_connection(const std::string& name) const;
  const Repeater* find_repeater(const std::string& name) const;
};

// The config in force. A reload swaps it whole; every operation takes a snapshot (get()) and
// reads only that, so nothing changes under it and what it points into stays alive.
// Thread-safe.
class ConfigHolder {
 public:
  explicit ConfigHolder(std::shared_ptr<const Config> config) : config_(std::move(config)) {}
  std::shared_ptr<const Config> get() const {
    std::lock_guard lock(mu_);
    return config_;
  }
  void set(std::shared_ptr<const Config> config) {
    std::lock_guard lock(mu_);
    config_ = std::move(config);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Config> config_;  // GUARDED_BY(mu_)
};

struct Diagnostic {
  std::string file;
  int line = 0;    // 1-based; 0 when the problem is not at a place in the file
  int column = 0;  // 1-based
  std::string message;  // never contains a secret's value
  std::string to_string() const;  // FILE:LINE:COL: message (FILE: message when line is 0)
};

struct LoadResult {
  std::optional<Config> config;         // set when there are no errors
  std::vector<Diagnostic> errors;       // every error found, in file order
  std::vector<Diagnostic> warnings;     // e.g. inline secrets, tls.verify: false
};

// Reads, parses and validates `path`. `env` looks up environment variables (injectable for tests;
// nullptr uses the process environment). Relative paths in the file (storage.path, events_file,
// *_file secrets, ca_file) are taken relative to the process's working directory.
LoadResult load_config(const std::string& path,
                       const std::map<std::string, std::string>* env = nullptr);

// The same, from text already in memory; `file` names it in diagnostics.
LoadResult load_config_text(const std::string& text, const std::string& file,
                            const std::map<std::string, std::string>* env = nullptr);

const char* to_string(RepeaterType t);
const char* to_string(PayloadFormat f);

}  // namespace repeaterd::config
