// admin_client: how repeaterctl finds repeaterd's admin API and talks HTTP to it.
//
// locate_daemon() works out where the API listens and which token to send, from the command
// line, else from the few keys of the config file that say so (admin.listen or
// admin.address/port, admin.token_file/token_env/token, storage.path). It deliberately does
// not use the daemon's config loader: that one needs every secret's environment variable,
// which an operator's shell does not have.
//
// AdminClient sends one request at a time with libcurl, over the Unix socket or TCP, with a
// connect timeout and a total timeout; an answer of any status is a Response, and only a
// failure to get one (nobody listening, a timeout, a dropped connection) is an Error, whose
// message names the address, the reason and what to do. Neither ever shows the token.
//
// Not thread-safe: an AdminClient keeps one libcurl handle (so --all pages reuse one
// connection); use it from one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "repeaterd/result.hpp"

namespace repeaterd::ctl {

inline constexpr std::string_view kDefaultConfigPath = "/etc/repeaterd/repeaterd.yaml";
inline constexpr std::string_view kDefaultStoragePath = "/var/lib/repeaterd/repeaterd.db";
inline constexpr std::string_view kTokenEnv = "REPEATERD_ADMIN_TOKEN";

// Where the admin API listens.
struct Endpoint {
  std::string unix_path;  // set: HTTP over this Unix socket (relative to the working directory)
  std::string url;        // else the base URL, "http://HOST:PORT" without a trailing slash
  // Where the address came from and how to change it, added to "cannot reach" errors:
  // "the socket is set by admin.listen in FILE; use --socket or --config".
  std::string hint;

  // "unix:PATH" or the URL.
  std::string describe() const;
};

// The bearer token to send, if any. `origin` and `hint` never contain the token.
struct Credentials {
  std::string token;   // empty: no Authorization header
  std::string origin;  // "file /etc/repeaterd/admin-token (admin.token_file in FILE)"
  std::string hint;    // what to do when the daemon answers 401
};

struct Target {
  Endpoint endpoint;
  Credentials credentials;
};

// The command line's say in it; empty means not given.
struct LocateOptions {
  std::string socket;      // --socket PATH
  std::string url;         // --url http://HOST:PORT
  std::string config;      // --config FILE; else $REPEATERD_CONFIG, else kDefaultConfigPath
  std::string token_file;  // --token-file FILE
};

// Reads an environment variable (injectable for tests); nullopt when unset.
using GetEnv = std::function<std::optional<std::string>(const std::string& name)>;
std::optional<std::string> process_env(const std::string& name);

// Finds the daemon and its token:
//  - address: --socket or --url (not both), else the config's admin.listen (`unix:PATH` or
//    `ADDRESS:PORT`) or admin.address + admin.port, else repeaterd.sock in the directory of
//    storage.path (default kDefaultStoragePath). A wildcard listen address (0.0.0.0, ::) is
//    reached on loopback.
//  - token: --token-file, else admin.token_file, else the variable admin.token_env names (when
//    set here), else an inline admin.token, else $REPEATERD_ADMIN_TOKEN, else none. Trailing
//    newlines of a token file are dropped, as the daemon does.
// The config file is read only when something is still unknown. A missing default config file
// means the defaults; a config named by --config or $REPEATERD_CONFIG must be readable.
// Errors: ErrorKind::invalid for a malformed --url or --socket with --url (a usage error), else
// ErrorKind::io / failed, naming the file and key at fault.
Result<Target> locate_daemon(const LocateOptions& options, const GetEnv& getenv = process_env);

struct ClientOptions {
  // To connect (or to fail to). Default: 5s, or the total timeout when that is shorter.
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(5);
  // The whole request, connecting included. Default: 30s. A bulk action on many records can
  // take longer: --timeout raises it.
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  // Bodies kept in memory (not those get_to() streams) are refused past this. Default: 256MiB.
  std::size_t max_body = std::size_t{256} << 20;
};

// An answer of any status.
struct Response {
  long status = 0;
  std::string content_type;  // as sent, parameters included; empty when absent
  std::string body;          // empty when get_to() streamed a 2xx body
  bool ok() const { return status >= 200 && status < 300; }
};

class AdminClient {
 public:
  explicit AdminClient(Target target, ClientOptions options = {});
  ~AdminClient();
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;
  AdminClient(AdminClient&&) noexcept;
  AdminClient& operator=(AdminClient&&) noexcept;

  // `path_with_query` starts with '/', with its values already percent-encoded
  // ("/api/v1/records?state=failed"). The answer, whatever its status; an Error only when no
  // answer came.
  Result<Response> get(const std::string& path_with_query);
  // A POST with an empty body (the admin API's actions take their arguments in the path).
  Result<Response> post(const std::string& path_with_query);
  // A GET whose 2xx body is written to `out` as it arrives (so a large payload is never held in
  // memory) instead of Response::body; any other status's body is kept in Response::body.
  // A failure to write `out` is an Error (ErrorKind::io).
  Result<Response> get_to(const std::string& path_with_query, std::FILE* out);

  const Target& target() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace repeaterd::ctl
