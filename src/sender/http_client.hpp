// sender: the HTTP(S) client that carries one record's request to a connection's URL.
//
// One HttpClient per configured connection. It keeps idle keep-alive streams to the
// connection's host and reuses them; it never follows redirects; it reads a response body only
// up to kMaxResponseBody; every step runs under the connection's connect_timeout and timeout.
// TLS uses the system trust store plus the connection's ca_file, SNI and host-name
// verification, unless tls.verify is false.
//
// This header is Beast-free on purpose: only http_client.cpp pulls in Beast.
// Thread-safety: an HttpClient and its coroutines run on the one executor it was given.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "repeaterd/config.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd::sender {

inline constexpr std::size_t kMaxResponseBody = 64 * 1024;

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method = "POST";
  std::string query;    // extra query parameters, already encoded ("app_id=abc"); appended to the URL's own
  Headers headers;      // added after the connection's own headers
  std::string body;
};

enum class Outcome {
  response,           // an HTTP response arrived (any status); see status
  network_error,      // resolve, connect, reset, refused, or a malformed response
  timeout,            // connect_timeout or timeout expired
  tls_error,          // TLS handshake failed for a reason other than the certificate
  tls_certificate,    // the peer's certificate was rejected (expired, self-signed, wrong name...)
  auth_refused,       // the credentials were refused before the request could be sent (OAuth token endpoint)
};

struct Response {
  Outcome outcome = Outcome::network_error;
  int status = 0;           // HTTP status when outcome == response
  std::string reason;       // HTTP reason phrase
  Headers headers;          // response headers
  std::string body;         // at most kMaxResponseBody bytes of the body
  bool body_truncated = false;
  std::string error;        // for anything but a response: what went wrong, for people
  Duration duration{0};     // from the start of send() to the end
};

class HttpClient {
 public:
  HttpClient(boost::asio::any_io_executor executor, config::Connection connection);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request on an idle kept-alive stream, or on a new one. Never throws for
  // network or HTTP failures: they come back as a Response with the matching Outcome.
  boost::asio::awaitable<Response> send(Request request);

  // Closes every idle stream (in-flight requests finish on their own).
  void close_idle();

  // For logs and errors: the URL without any userinfo.
  const std::string& display_url() const;

  // The request target send() uses for `extra_query` (Digest auth signs it).
  std::string target(const std::string& extra_query) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace repeaterd::sender
