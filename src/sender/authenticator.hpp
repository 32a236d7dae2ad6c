// sender/authenticator: sends a connection's requests with its auth (spec §2 auth).
//
// basic, bearer and api_key add a header. digest answers the server's 401 challenge within
// the same call (the challenge round trip is not a failed attempt), then reuses the nonce with
// a rising nonce count; a stale=true challenge is answered again without counting as a
// failure. oauth2_client_credentials fetches a token from token_url, shares it between all
// requests of the connection until shortly before it expires, and on a 401 from the API
// fetches a fresh one once and retries. A token endpoint that refuses the client is reported as
// Outcome::auth_refused with the endpoint's own error; one that cannot be reached, as a network
// error. No secret ever goes into a Response's error text.
//
// Thread-safety: one Authenticator per connection, on its executor.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <memory>

#include "repeaterd/config.hpp"
#include "sender/http_client.hpp"

namespace repeaterd::sender {

class Authenticator {
 public:
  Authenticator(boost::asio::any_io_executor executor, const config::Connection& connection);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  boost::asio::awaitable<Response> send(HttpClient& client, Request request);

  // OAuth tokens fetched so far (for metrics and tests).
  std::uint64_t tokens_fetched() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace repeaterd::sender
