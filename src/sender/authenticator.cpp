#include "sender/authenticator.hpp"

#include <openssl/rand.h>

#include <boost/algorithm/string/predicate.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <optional>

#include "common/encoding.hpp"
#include "sender/auth.hpp"

namespace repeaterd::sender {

namespace asio = boost::asio;
using asio::awaitable;
using Type = config::Auth::Type;

namespace {

// Tokens are renewed this long before the server says they expire, so a request never
// leaves with a token that dies on the way.
constexpr auto kTokenMargin = std::chrono::seconds(30);
// Digest exchanges one attempt may make: a fresh challenge and a couple of stale nonces.
constexpr int kMaxDigestRounds = 3;
// A token without expires_in is kept this long.
constexpr auto kTokenDefaultLifetime = std::chrono::minutes(5);

std::vector<std::string> header_values(const Response& r, std::string_view name) {
  std::vector<std::string> out;
  for (const auto& [k, v] : r.headers) {
    if (boost::iequals(k, name)) out.push_back(v);
  }
  return out;
}

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(raw.size()));
  return hex_encode(raw);
}

bool is_401(const Response& r) { return r.outcome == Outcome::response && r.status == 401; }

// The token endpoint is reached with the connection's own TLS settings and timeouts.
config::Connection token_endpoint(const config::Connection& c) {
  config::Connection t;
  t.name = c.name + " token endpoint";
  t.url = c.auth.token_url;
  t.tls = c.tls;
  t.connect_timeout = c.connect_timeout;
  t.timeout = c.timeout;
  t.max_in_flight = 1;
  return t;
}

}  // namespace

struct Authenticator::Impl {
  Impl(asio::any_io_executor ex, const config::Connection& c)
      : executor(ex), connection(c), token_changed(ex) {
    if (c.auth.type == Type::oauth2_client_credentials) {
      token_client = std::make_unique<HttpClient>(ex, token_endpoint(c));
    }
  }

  awaitable<Response> send(HttpClient& client, Request request) {
    const auto& a = connection.auth;
    switch (a.type) {
      case Type::none:
        co_return co_await client.send(std::move(request));
      case Type::basic:
        request.headers.emplace_back("Authorization", basic_authorization(a.username, a.password.value));
        co_return co_await client.send(std::move(request));
      case Type::bearer:
        request.headers.emplace_back("Authorization", "Bearer " + a.token.value);
        co_return co_await client.send(std::move(request));
      case Type::api_key:
        request.headers.emplace_back(a.header, a.key.value);
        co_return co_await client.send(std::move(request));
      case Type::digest:
        co_return co_await send_digest(client, std::move(request));
      case Type::oauth2_client_credentials:
        co_return co_await send_oauth(client, std::move(request));
    }
    co_return co_await client.send(std::move(request));
  }

  // -- digest ----------------------------------------------------------------------------

  Request with_digest(const Request& base, const std::string& target) {
    Request r = base;
    const auto& a = connection.auth;
    r.headers.emplace_back("Authorization", digest_authorization(*challenge, a.username, a.password.value, r.method,
                                                                 target, ++nonce_count, random_hex(16)));
    return r;
  }

  awaitable<Response> send_digest(HttpClient& client, Request request) {
    const std::string target = client.target(request.query);
    // With a nonce from an earlier exchange, authenticate up front; else learn the challenge.
    // Named, not temporaries in the co_await expressions: GCC 12 destroys those twice.
    Request attempt = challenge ? with_digest(request, target) : request;
    Response resp = co_await client.send(std::move(attempt));
    // Answer one fresh challenge, and any stale=true ones (the credentials were right, the
    // nonce was not), all within this attempt. A fresh challenge refusing our answer to a
    // fresh challenge means the credentials are wrong: that 401 stands.
    bool answered_fresh = false;
    for (int round = 0; round < kMaxDigestRounds && is_401(resp); ++round) {
      auto offered = pick_digest_challenge(header_values(resp, "WWW-Authenticate"));
      if (!offered) break;  // no Digest challenge we can answer
      if (!offered->stale) {
        if (answered_fresh) break;
        answered_fresh = true;
      }
      challenge = *offered;
      nonce_count = 0;
      Request answer = with_digest(request, target);
      resp = co_await client.send(std::move(answer));
    }
    co_return resp;
  }

  // -- oauth2 ----------------------------------------------------------------------------

  // The current token, fetching one when there is none, it is about to expire, or the API
  // refused `rejected`. Concurrent callers wait for one fetch instead of each making their own.
  awaitable<std::variant<std::string, Response>> current_token(const std::string& rejected) {
    // The fetcher arms the timer once and cancels it when done; waiters only wait on it
    // (re-arming it here would cancel the other waiters' waits).
    while (fetching) co_await token_changed.async_wait(asio::as_tuple(asio::use_awaitable));
    const auto now = std::chrono::steady_clock::now();
    if (token && now < token_expires && *token != rejected) co_return *token;
    fetching = true;
    token_changed.expires_at(asio::steady_timer::time_point::max());
    auto fetched = co_await fetch_token();
    fetching = false;
    token_changed.cancel();  // wake the waiters
    co_return fetched;
  }

  awaitable<std::variant<std::string, Response>> fetch_token() {
    const auto& a = connection.auth;
    const TokenRequest tr = token_request(a.client_id, a.client_secret.value, a.scope,
                                          a.client_auth_in_body ? ClientAuth::body : ClientAuth::basic);
    Request req;
    req.method = "POST";
    req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
    req.headers.emplace_back("Accept", "application/json");
    if (!tr.authorization.empty()) req.headers.emplace_back("Authorization", tr.authorization);
    req.body = tr.body;
    Response r = co_await token_client->send(std::move(req));
    ++fetched_count;
    if (r.outcome != Outcome::response) {
      r.error = "token endpoint " + token_client->display_url() + ": " + r.error;
      co_return r;
    }
    auto parsed = parse_token_response(r.status, r.reason, r.body);
    if (!parsed) {
      Response failed;
      // 5xx and 429 are the endpoint's trouble: retry later. Other answers refuse the client.
      const bool transient = r.status >= 500 || r.status == 429 || r.status == 408;
      failed.outcome = transient ? Outcome::network_error : Outcome::auth_refused;
      failed.error = "token endpoint " + token_client->display_url() + ": " + parsed.error().message;
      failed.duration = r.duration;
      token.reset();
      co_return failed;
    }
    token = parsed->access_token;
    const auto lifetime = parsed->expires_in_s ? std::chrono::seconds(*parsed->expires_in_s)
                                               : std::chrono::duration_cast<std::chrono::seconds>(kTokenDefaultLifetime);
    // Short-lived tokens are renewed at half their life rather than never.
    const auto margin = std::min<std::chrono::seconds>(kTokenMargin, lifetime / 2);
    token_expires = std::chrono::steady_clock::now() + lifetime - margin;
    co_return *token;
  }

  awaitable<Response> send_oauth(HttpClient& client, Request request) {
    std::string used;
    for (int round = 0;; ++round) {
      auto t = co_await current_token(used);
      if (auto* failed = std::get_if<Response>(&t)) co_return std::move(*failed);
      used = std::get<std::string>(t);
      Request r = request;
      r.headers.emplace_back("Authorization", "Bearer " + used);
      Response resp = co_await client.send(std::move(r));
      // One refresh and one retry on a 401: the token may have been revoked early.
      if (!is_401(resp) || round == 1) co_return resp;
    }
  }

  asio::any_io_executor executor;
  const config::Connection& connection;
  std::optional<DigestChallenge> challenge;
  std::uint32_t nonce_count = 0;
  std::unique_ptr<HttpClient> token_client;
  std::optional<std::string> token;
  std::chrono::steady_clock::time_point token_expires{};
  bool fetching = false;
  asio::steady_timer token_changed;
  std::uint64_t fetched_count = 0;
};

Authenticator::Authenticator(asio::any_io_executor executor, const config::Connection& connection)
    : impl_(std::make_unique<Impl>(executor, connection)) {}

Authenticator::~Authenticator() = default;

awaitable<Response> Authenticator::send(HttpClient& client, Request request) {
  return impl_->send(client, std::move(request));
}

std::uint64_t Authenticator::tokens_fetched() const { return impl_->fetched_count; }

}  // namespace repeaterd::sender
