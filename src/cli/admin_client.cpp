#include "cli/admin_client.hpp"

#include <curl/curl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <utility>

#include "config/read_file.hpp"

namespace repeaterd::ctl {
namespace {

constexpr std::size_t kMaxConfigFile = std::size_t{16} << 20;  // the daemon's own cap
constexpr std::size_t kMaxTokenFile = std::size_t{64} << 10;   // a token is a line

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

// ---------------------------------------------------------------------------------------------
// The config file, as far as repeaterctl reads it.

struct ConfigView {
  std::string path;
  bool found = false;  // false: the default file does not exist, so the defaults apply
  std::optional<std::string> listen;
  std::optional<std::string> address;
  std::optional<std::string> port;
  std::optional<std::string> token_file;
  std::optional<std::string> token_env;
  std::optional<std::string> token;  // inline (the daemon warns about it, but accepts it)
  std::string storage_path{kDefaultStoragePath};
};

// The scalar at `map[key]`, nullopt when absent or null. A list or mapping there is an error
// that names its shape only: the key may hold a secret.
Result<std::optional<std::string>> scalar_at(const YAML::Node& map, const char* key, const std::string& where) {
  const YAML::Node node = map[key];
  if (!node.IsDefined() || node.IsNull()) return std::optional<std::string>{};
  if (!node.IsScalar()) {
    return make_error(where + "." + key + ": expected a single value, got a " +
                          (node.IsSequence() ? "list" : "mapping"));
  }
  return std::optional<std::string>{node.Scalar()};
}

// Reads only admin.* and storage.path; the rest of the file is the daemon's business.
Result<ConfigView> read_config_view(const std::string& path) {
  ConfigView view;
  view.path = path;
  auto text = config::detail::read_small_file(path, kMaxConfigFile);
  if (!text) return make_error("cannot read " + path + ": " + text.error().message, ErrorKind::io);
  view.found = true;
  YAML::Node root;
  try {
    root = YAML::Load(text.value());
  } catch (const YAML::Exception& e) {
    return make_error(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                          ": " + e.msg);
  }
  if (root.IsNull()) return view;
  if (!root.IsMap()) return make_error(path + ": expected a mapping at the top");

  const auto section = [&](const char* name) -> Result<YAML::Node> {
    const YAML::Node node = root[name];
    if (!node.IsDefined() || node.IsNull()) return YAML::Node(YAML::NodeType::Map);
    if (!node.IsMap()) return make_error(path + ": " + name + ": expected a mapping");
    return node;
  };
  auto admin = section("admin");
  if (!admin) return admin.error();
  auto storage = section("storage");
  if (!storage) return storage.error();

  const std::string where = path + ": admin";
  for (auto [key, out] : {std::pair{"listen", &view.listen}, std::pair{"address", &view.address},
                          std::pair{"port", &view.port}, std::pair{"token_file", &view.token_file},
                          std::pair{"token_env", &view.token_env}, std::pair{"token", &view.token}}) {
    auto v = scalar_at(*admin, key, where);
    if (!v) return v.error();
    *out = std::move(v.value());
  }
  auto storage_path = scalar_at(*storage, "path", path + ": storage");
  if (!storage_path) return storage_path.error();
  if (storage_path->has_value() && !(*storage_path)->empty()) view.storage_path = **storage_path;
  return view;
}

// "http://ADDRESS:PORT" for a listen address, nullopt when `port` is not a port. A wildcard
// address is where the daemon listens, not somewhere to connect to: loopback reaches it.
std::optional<std::string> tcp_url(std::string address, std::string_view port) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) return std::nullopt;
  if (address.size() >= 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);
  }
  if (address.empty()) return std::nullopt;
  if (address == "0.0.0.0") address = "127.0.0.1";
  if (address == "::" || address == "0:0:0:0:0:0:0:0") address = "::1";
  if (address.find(':') != std::string::npos) address = "[" + address + "]";
  return "http://" + address + ":" + std::to_string(value);
}

Result<Endpoint> endpoint_from_config(const ConfigView& view) {
  Endpoint e;
  if (view.listen) {
    const std::string& listen = *view.listen;
    const std::string key = "admin.listen in " + view.path;
    if (listen.starts_with("unix:") && listen.size() > 5) {
      e.unix_path = listen.substr(5);
      e.hint = "the socket is set by " + key + "; use --socket or --config";
      return e;
    }
    const auto colon = listen.rfind(':');
    const auto url = colon == std::string::npos
                         ? std::nullopt
                         : tcp_url(listen.substr(0, colon), std::string_view(listen).substr(colon + 1));
    if (!url) {
      return make_error(view.path + ": admin.listen: expected unix:PATH or ADDRESS:PORT, got \"" + listen +
                            "\"; use --socket or --url");
    }
    e.url = *url;
    e.hint = "the address is set by " + key + "; use --url or --config";
    return e;
  }
  if (view.address || view.port) {
    const auto url = view.address && view.port ? tcp_url(*view.address, *view.port) : std::nullopt;
    if (!url) {
      return make_error(view.path + ": admin: address and port must both be given, an address and a port "
                            "number; use --socket or --url");
    }
    e.url = *url;
    e.hint = "the address is set by admin.address and admin.port in " + view.path + "; use --url or --config";
    return e;
  }
  const auto dir = std::filesystem::path(view.storage_path).parent_path();
  e.unix_path = ((dir.empty() ? std::filesystem::path(".") : dir) / "repeaterd.sock").string();
  if (view.found) {
    e.hint = "the socket is repeaterd.sock beside storage.path in " + view.path +
             " unless admin.listen says otherwise; use --socket or --config";
  } else {
    e.hint = "there is no " + view.path + ", so this is the default socket; use --config or --socket";
  }
  return e;
}

Result<Endpoint> endpoint_from_url(std::string url) {
  const auto usage = [&url](std::string_view why) {
    return make_error("--url " + url + ": " + std::string(why) + " (expected http://HOST:PORT)", ErrorKind::invalid);
  };
  if (!url.starts_with("http://")) return usage("the admin API speaks plain HTTP: start with http://");
  while (url.size() > 7 && url.back() == '/') url.pop_back();
  if (url.size() == 7) return usage("no host");
  if (url.find_first_of("?#@ ") != std::string::npos) return usage("no credentials, query or fragment here");
  Endpoint e;
  e.url = url;
  e.hint = "the address is the one given to --url";
  return e;
}

// Checks a token the way the daemon does: it has to fit in an Authorization header.
Status check_token(const std::string& token, const std::string& origin) {
  if (token.empty()) return make_error("the admin token from " + origin + " is empty");
  const bool printable = std::all_of(token.begin(), token.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u != 0x7f;
  });
  if (!printable) {
    return make_error("the admin token from " + origin +
                          " contains a space or control character, which an Authorization header cannot carry");
  }
  return Ok{};
}

Result<std::string> read_token_file(const std::string& path, const std::string& origin) {
  auto content = config::detail::read_small_file(path, kMaxTokenFile);
  if (!content) {
    return make_error("cannot read the admin token file " + path + " (" + origin + "): " + content.error().message +
                          "; pass --token-file FILE with a file you may read",
                      ErrorKind::io);
  }
  std::string token = std::move(content.value());
  // Editors and `echo` end files with a newline that is not part of the token.
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (auto ok = check_token(token, "file " + path); !ok) return ok.error();
  return token;
}

Result<Credentials> find_credentials(const LocateOptions& options, const ConfigView& view, const GetEnv& getenv) {
  Credentials c;
  const std::string refused = "; pass --token-file FILE with the token repeaterd is configured with";
  if (!options.token_file.empty()) {
    c.origin = "file " + options.token_file + " (--token-file)";
    auto token = read_token_file(options.token_file, "--token-file");
    if (!token) return token.error();
    c.token = std::move(token.value());
    c.hint = "the token from " + c.origin + " was refused; check that it is the one repeaterd uses";
    return c;
  }
  if (view.token_file) {
    const std::string key = "admin.token_file in " + view.path;
    c.origin = "file " + *view.token_file + " (" + key + ")";
    auto token = read_token_file(*view.token_file, key);
    if (!token) return token.error();
    c.token = std::move(token.value());
    c.hint = "the token from " + c.origin + " was refused" + refused;
    return c;
  }
  std::string unset_note;
  if (view.token_env) {
    if (auto value = getenv(*view.token_env); value && !value->empty()) {
      c.origin = "environment variable " + *view.token_env + " (admin.token_env in " + view.path + ")";
      if (auto ok = check_token(*value, c.origin); !ok) return ok.error();
      c.token = std::move(*value);
      c.hint = "the token from " + c.origin + " was refused" + refused;
      return c;
    }
    unset_note = " (" + view.path + " names " + *view.token_env + " in admin.token_env, which is not set here)";
  }
  if (view.token) {
    c.origin = "admin.token in " + view.path;
    if (auto ok = check_token(*view.token, c.origin); !ok) return ok.error();
    c.token = *view.token;
    c.hint = "the token from " + c.origin + " was refused" + refused;
    return c;
  }
  if (auto value = getenv(std::string(kTokenEnv)); value && !value->empty()) {
    c.origin = "environment variable " + std::string(kTokenEnv);
    if (auto ok = check_token(*value, c.origin); !ok) return ok.error();
    c.token = std::move(*value);
    c.hint = "the token from " + c.origin + " was refused" + refused;
    return c;
  }
  c.hint = "repeaterd wants its admin token: pass --token-file FILE, or set " + std::string(kTokenEnv) + unset_note;
  return c;
}

// ---------------------------------------------------------------------------------------------
// libcurl

// Where a transfer's body goes: `out` for a 2xx answer when streaming, else `body`, capped.
struct BodySink {
  CURL* handle = nullptr;
  std::FILE* out = nullptr;
  std::string* body = nullptr;
  std::size_t max = 0;
  bool too_big = false;
  int write_errno = 0;
};

std::size_t on_body(char* data, std::size_t /*size*/, std::size_t n, void* userp) {
  auto& sink = *static_cast<BodySink*>(userp);
  if (sink.out != nullptr) {
    long status = 0;
    curl_easy_getinfo(sink.handle, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
      if (std::fwrite(data, 1, n, sink.out) != n) {
        sink.write_errno = errno;
        return 0;  // aborts the transfer with CURLE_WRITE_ERROR
      }
      return n;
    }
  }
  if (sink.body->size() + n > sink.max) {
    sink.too_big = true;
    return 0;
  }
  sink.body->append(data, n);
  return n;
}

std::string seconds_text(std::chrono::milliseconds ms) {
  const auto count = ms.count();
  std::string s = std::to_string(count / 1000);
  if (count % 1000 != 0) {
    std::string frac = std::to_string(1000 + count % 1000).substr(1);
    while (frac.back() == '0') frac.pop_back();
    s += "." + frac;
  }
  return s + " s";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string Endpoint::describe() const { return unix_path.empty() ? url : "unix:" + unix_path; }

std::optional<std::string> process_env(const std::string& name) {
  // getenv is fine here: repeaterctl is single-threaded and never changes its environment.
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

Result<Target> locate_daemon(const LocateOptions& options, const GetEnv& getenv) {
  if (!options.socket.empty() && !options.url.empty()) {
    return make_error("give --socket or --url, not both", ErrorKind::invalid);
  }
  ConfigView view;
  bool named = true;  // the user chose this config file
  view.path = options.config;
  if (view.path.empty()) {
    auto env = getenv("REPEATERD_CONFIG");
    named = env && !env->empty();
    view.path = named ? *env : std::string(kDefaultConfigPath);
  }
  const bool address_given = !options.socket.empty() || !options.url.empty();
  if (!address_given || options.token_file.empty()) {
    auto read = read_config_view(view.path);
    if (read) {
      view = std::move(read.value());
    } else if (std::error_code ec; named || (!address_given && std::filesystem::status(view.path, ec).type() !=
                                                                      std::filesystem::file_type::not_found)) {
      // A file that was asked for, or one that may be there (a directory we may not search
      // hides it), must be readable: a connection to a guessed address would fail worse.
      // The default install keeps the config readable to the repeaterd group only.
      const bool denied = ::access(view.path.c_str(), R_OK) != 0 && errno == EACCES;
      return make_error(read.error().message +
                            (denied ? "; run repeaterctl as a member of the repeaterd group (or with sudo), or"
                                    : ";") +
                            " give --config FILE, or --socket PATH (or --url) and --token-file",
                        read.error().kind);
    }
    // Else: no default config (the defaults apply), or one we do not need for the address.
  }

  Target target;
  if (!options.socket.empty()) {
    target.endpoint.unix_path = options.socket;
    target.endpoint.hint = "the socket is the one given to --socket";
  } else if (!options.url.empty()) {
    auto e = endpoint_from_url(options.url);
    if (!e) return e.error();
    target.endpoint = std::move(e.value());
  } else {
    auto e = endpoint_from_config(view);
    if (!e) return e.error();
    target.endpoint = std::move(e.value());
  }
  auto credentials = find_credentials(options, view, getenv);
  if (!credentials) return credentials.error();
  target.credentials = std::move(credentials.value());
  return target;
}

// ---------------------------------------------------------------------------------------------

struct AdminClient::Impl {
  Target target;
  ClientOptions options;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl{nullptr, &curl_easy_cleanup};

  Result<Response> perform(bool post, const std::string& path, std::FILE* out);
  Error transfer_error(CURLcode rc, const char* errbuf, const BodySink& sink) const;
};

AdminClient::AdminClient(Target target, ClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->target = std::move(target);
  impl_->options = options;
}
AdminClient::~AdminClient() = default;
AdminClient::AdminClient(AdminClient&&) noexcept = default;
AdminClient& AdminClient::operator=(AdminClient&&) noexcept = default;

const Target& AdminClient::target() const { return impl_->target; }

Result<Response> AdminClient::get(const std::string& path_with_query) {
  return impl_->perform(false, path_with_query, nullptr);
}

Result<Response> AdminClient::post(const std::string& path_with_query) {
  return impl_->perform(true, path_with_query, nullptr);
}

Result<Response> AdminClient::get_to(const std::string& path_with_query, std::FILE* out) {
  return impl_->perform(false, path_with_query, out);
}

Result<Response> AdminClient::Impl::perform(bool post, const std::string& path, std::FILE* out) {
  static const CURLcode global_init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global_init != CURLE_OK) {
    return make_error(std::string("libcurl initialisation failed: ") + curl_easy_strerror(global_init));
  }
  if (!curl) curl.reset(curl_easy_init());
  if (!curl) return make_error("cannot create a libcurl handle");
  CURL* h = curl.get();
  // Reset keeps the open connection, so --all's pages share one.
  curl_easy_reset(h);

  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr, &curl_slist_free_all);
  const auto add_header = [&headers](const std::string& line) {
    curl_slist* grown = curl_slist_append(headers.get(), line.c_str());
    if (grown != nullptr) {
      (void)headers.release();  // `grown` owns the list now, the old head included
      headers.reset(grown);
    }
    return grown != nullptr;
  };
  bool headers_ok = true;
  if (!target.credentials.token.empty()) headers_ok = add_header("Authorization: Bearer " + target.credentials.token);
  // An empty POST needs no Content-Type; libcurl would otherwise claim a form.
  if (post) headers_ok = headers_ok && add_header("Content-Type:");
  if (!headers_ok) return make_error("out of memory");

  Response response;
  BodySink sink{h, out, &response.body, options.max_body};
  std::array<char, CURL_ERROR_SIZE> errbuf{};
  const Endpoint& e = target.endpoint;
  const std::string url = (e.unix_path.empty() ? e.url : std::string("http://localhost")) + path;
  const auto connect_ms = std::min(options.connect_timeout, options.timeout);

  CURLcode rc = CURLE_OK;
  // Stops at the first option libcurl refuses, so a failure names the option.
  const auto set = [&](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, option, value);
  };
  set(CURLOPT_URL, url.c_str());
  if (!e.unix_path.empty()) set(CURLOPT_UNIX_SOCKET_PATH, e.unix_path.c_str());
  set(CURLOPT_PROTOCOLS_STR, "http");
  // The path is built and percent-encoded by the caller; libcurl must not squash "/../" in it.
  set(CURLOPT_PATH_AS_IS, 1L);
  // An http_proxy in the operator's environment must not carry admin requests (and the token)
  // elsewhere: "" disables proxies whatever the environment says.
  set(CURLOPT_PROXY, "");
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_ERRORBUFFER, errbuf.data());
  set(CURLOPT_USERAGENT, "repeaterctl/0.1.0");
  set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_ms.count()));
  set(CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout.count()));
  set(CURLOPT_WRITEFUNCTION, &on_body);
  set(CURLOPT_WRITEDATA, &sink);
  if (headers) set(CURLOPT_HTTPHEADER, headers.get());
  if (post) {
    set(CURLOPT_POST, 1L);
    set(CURLOPT_POSTFIELDS, "");
    set(CURLOPT_POSTFIELDSIZE, 0L);
  } else {
    set(CURLOPT_HTTPGET, 1L);
  }
  if (rc != CURLE_OK) return make_error(std::string("cannot configure libcurl: ") + curl_easy_strerror(rc));

  rc = curl_easy_perform(h);
  if (rc != CURLE_OK) return transfer_error(rc, errbuf.data(), sink);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
  const char* content_type = nullptr;
  curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &content_type);
  if (content_type != nullptr) response.content_type = content_type;
  if (out != nullptr && response.ok() && std::fflush(out) != 0) {
    return make_error("cannot write the body: " + errno_text(errno), ErrorKind::io);
  }
  return response;
}

Error AdminClient::Impl::transfer_error(CURLcode rc, const char* errbuf, const BodySink& sink) const {
  const Endpoint& e = target.endpoint;
  const std::string where = e.describe();
  const std::string hint = e.hint.empty() ? "" : " (" + e.hint + ")";
  if (sink.write_errno != 0) return make_error("cannot write the body: " + errno_text(sink.write_errno), ErrorKind::io);
  if (sink.too_big) {
    return make_error("repeaterd at " + where + " sent an answer larger than " +
                          std::to_string(options.max_body >> 20) + " MiB; not read",
                      ErrorKind::io);
  }
  long os_errno = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_OS_ERRNO, &os_errno);
  curl_off_t connected_us = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_CONNECT_TIME_T, &connected_us);
  // The OS's reason ("No such file or directory", "Connection refused") says more than
  // libcurl's "Couldn't connect to server".
  const std::string reason = os_errno != 0 ? errno_text(static_cast<int>(os_errno))
                             : errbuf[0] != '\0' ? std::string(errbuf)
                                                 : std::string(curl_easy_strerror(rc));
  const bool timed_out = rc == CURLE_OPERATION_TIMEDOUT;
  if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || (timed_out && connected_us == 0)) {
    std::string advice = "is repeaterd running?";
    if (os_errno == EACCES) {
      advice = "the socket is open to its owner and group only: run repeaterctl as a member of repeaterd's "
               "group, or with sudo";
    } else if (timed_out) {
      advice = "nothing answered within " + seconds_text(std::min(options.connect_timeout, options.timeout)) +
               ": is repeaterd running, and is this its address?";
    }
    return make_error("cannot reach repeaterd at " + where + ": " + reason + " \xE2\x80\x94 " + advice + hint,
                      ErrorKind::io);
  }
  if (timed_out) {
    return make_error("repeaterd at " + where + " did not answer within " + seconds_text(options.timeout) +
                          " \xE2\x80\x94 it may be busy: try again, or give --timeout more seconds",
                      ErrorKind::io);
  }
  return make_error("repeaterd at " + where + " closed the connection without a complete answer: " + reason +
                        " \xE2\x80\x94 try again; if it keeps happening, look at repeaterd's log",
                    ErrorKind::io);
}

}  // namespace repeaterd::ctl
