// The HTTP(S) client behind HttpClient: Beast over Asio coroutines, one executor, a small pool of
// idle keep-alive streams. Every failure comes back as a Response with an Outcome and a sentence
// for people; nothing here throws past send().
#include "sender/http_client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <variant>

namespace repeaterd::sender {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
namespace urls = boost::urls;
using tcp = asio::ip::tcp;
using asio::awaitable;
using Clock = std::chrono::steady_clock;

// Errors are values here: every step reports through its error_code, never by throwing.
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

constexpr std::uint32_t kMaxResponseHeader = 64 * 1024;
constexpr std::string_view kUserAgent = "repeaterd/0.1";
// Bounds the polite TLS close_notify exchange on streams we are done with.
constexpr auto kTlsShutdownTimeout = std::chrono::seconds(5);

std::string format_duration(Duration d) {
  const auto ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

bool is_timeout(const boost::system::error_code& ec) { return ec == beast::error::timeout; }

// A short lower-case phrase for the failures people meet most; the library's text otherwise.
std::string describe(const boost::system::error_code& ec) {
  if (ec == asio::error::connection_reset) return "connection reset by peer";
  if (ec == http::error::end_of_stream || ec == asio::error::eof) return "connection closed by peer";
  // The peer closed TCP without a TLS close_notify: for a reader it is the same event.
  if (ec == ssl::error::stream_truncated) return "connection closed by peer";
  if (ec == asio::error::broken_pipe) return "connection closed by peer (broken pipe)";
  if (ec == http::error::header_limit) return "response header larger than 64 KiB";
  if (ec == http::error::partial_message) return "connection closed by peer mid-message";
  if (ec.category() == http::make_error_code(http::error::bad_version).category()) {
    return "malformed response (" + ec.message() + ")";
  }
  return ec.message();
}

Response failure(Outcome outcome, std::string error) {
  Response r;
  r.outcome = outcome;
  r.error = std::move(error);
  return r;
}

bool has_line_break(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

// Framing is ours: a configured Content-Length or Transfer-Encoding would desynchronise the
// stream for every later request on it.
bool is_framing_field(std::string_view name) {
  return beast::iequals(name, "Content-Length") || beast::iequals(name, "Transfer-Encoding");
}

// One connection to the host. The read buffer lives with the stream because bytes read past
// one response belong to the next one on the same stream.
struct Stream {
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;

  beast::tcp_stream& tcp() { return tls ? tls->next_layer() : *plain; }

  void close() {
    boost::system::error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp().socket().close(ignored);
  }
};

// Sends close_notify and waits briefly for the peer's; runs on its own so the caller's response
// is not delayed by a courtesy.
awaitable<void> shutdown_tls(std::unique_ptr<Stream> stream) {
  stream->tcp().expires_after(kTlsShutdownTimeout);
  auto [ec] = co_await stream->tls->async_shutdown(use_tuple);
  // stream_truncated is expected: many servers close TCP right after their response without a
  // close_notify. Nothing was lost (the message was framed), so any error here is ignored.
  (void)ec;
  stream->close();
}

// What one request/response exchange on one stream came to.
struct Exchange {
  Response response;
  bool reusable = false;  // complete body, keep-alive, nothing extra buffered
  bool clean_end = false;  // the message ended properly; a TLS close_notify is worth sending
  bool stale = false;      // failed before any response byte, and not by timing out
};

}  // namespace

struct HttpClient::Impl {
  Impl(asio::any_io_executor executor, config::Connection connection);

  awaitable<Response> send(Request request);
  void close_idle();

  std::string target_for(const std::string& extra_query) const;
  std::optional<Response> build_request(const Request& request,
                                        http::request<http::string_body>& out) const;
  awaitable<std::variant<std::unique_ptr<Stream>, Response>> open_stream();
  awaitable<std::variant<tcp::resolver::results_type, Response>> resolve(Clock::time_point deadline);
  Response handshake_failure(const boost::system::error_code& ec, SSL* ssl) const;
  template <class AsyncStream>
  awaitable<Exchange> exchange(AsyncStream& stream, beast::tcp_stream& tcp,
                               beast::flat_buffer& buffer,
                               const http::request<http::string_body>& request);
  awaitable<Exchange> exchange(Stream& stream, const http::request<http::string_body>& request);
  void finish(std::unique_ptr<Stream> stream, const Exchange& exchange);

  asio::any_io_executor executor_;
  config::Connection connection_;
  bool https_ = false;
  std::string host_;         // for resolving, SNI and certificate checks: no brackets, decoded
  bool host_is_ip_ = false;
  std::string port_;
  std::string authority_;    // host:port for messages, IPv6 in brackets
  std::string host_header_;  // as written in the URL, without userinfo
  std::string path_;         // never empty
  std::string url_query_;    // the URL's own query, encoded, without '?'
  bool url_has_query_ = false;
  std::string display_url_;
  std::optional<ssl::context> tls_context_;
  std::optional<Response> setup_error_;  // reported by every send(): e.g. an unreadable ca_file
  // Most recently used last: it is the one least likely to have been closed by the server.
  std::vector<std::unique_ptr<Stream>> idle_;
};

HttpClient::Impl::Impl(asio::any_io_executor executor, config::Connection connection)
    : executor_(std::move(executor)), connection_(std::move(connection)) {
  auto parsed = urls::parse_uri(connection_.url);
  // The message names the connection, never the URL: it may carry a password.
  if (!parsed) {
    throw std::invalid_argument("connection '" + connection_.name +
                                "': url is not a valid URL: " + parsed.error().message());
  }
  const urls::url_view url = *parsed;
  if (url.scheme_id() == urls::scheme::https) {
    https_ = true;
  } else if (url.scheme_id() != urls::scheme::http) {
    throw std::invalid_argument("connection '" + connection_.name +
                                "': url must start with http:// or https://");
  }
  host_ = url.host_address();
  if (host_.empty()) {
    throw std::invalid_argument("connection '" + connection_.name + "': url has no host");
  }
  host_is_ip_ = url.host_type() == urls::host_type::ipv4 || url.host_type() == urls::host_type::ipv6;
  port_ = url.has_port() && !url.port().empty() ? std::string(url.port()) : (https_ ? "443" : "80");
  authority_ = std::string(url.encoded_host()) + ":" + port_;
  host_header_ = std::string(url.encoded_host_and_port());
  path_ = url.encoded_path().empty() ? "/" : std::string(url.encoded_path());
  url_has_query_ = url.has_query();
  url_query_ = std::string(url.encoded_query());

  urls::url without_userinfo(url);
  without_userinfo.remove_userinfo();
  display_url_ = std::string(without_userinfo.buffer());

  if (!https_) return;
  auto& ctx = tls_context_.emplace(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  ctx.set_default_verify_paths(ec);
  // A missing system store is not fatal: ca_file or verify:false may still make this work.
  if (!connection_.tls.ca_file.empty()) {
    ctx.load_verify_file(connection_.tls.ca_file, ec);
    if (ec) {
      setup_error_ = failure(Outcome::tls_error, "cannot load tls.ca_file " + connection_.tls.ca_file +
                                                     ": " + ec.message());
    }
  }
  if (!connection_.tls.client_cert_file.empty()) {
    // Mutual TLS: the chain file may hold intermediates after the certificate.
    ctx.use_certificate_chain_file(connection_.tls.client_cert_file, ec);
    if (!ec) ctx.use_private_key_file(connection_.tls.client_key_file, ssl::context::pem, ec);
    if (ec) {
      setup_error_ = failure(Outcome::tls_error, "cannot load the client certificate " +
                                                     connection_.tls.client_cert_file + " or its key " +
                                                     connection_.tls.client_key_file + ": " + ec.message());
    }
  }
  if (!connection_.tls.verify) {
    ctx.set_verify_mode(ssl::verify_none);
    return;
  }
  ctx.set_verify_mode(ssl::verify_peer);
  // host_name_verification only says no; OpenSSL would then report "unspecified certificate
  // verification error". Recording the mismatch on the store context gives people the reason.
  ctx.set_verify_callback([check = ssl::host_name_verification(host_), ip = host_is_ip_](
                              bool preverified, ssl::verify_context& vctx) {
    if (check(preverified, vctx)) return true;
    if (preverified) {
      X509_STORE_CTX_set_error(vctx.native_handle(), ip ? X509_V_ERR_IP_ADDRESS_MISMATCH
                                                        : X509_V_ERR_HOSTNAME_MISMATCH);
    }
    return false;
  });
}

std::string HttpClient::Impl::target_for(const std::string& extra_query) const {
  std::string query = url_query_;
  if (!extra_query.empty()) {
    if (!query.empty()) query += '&';
    query += extra_query;
  }
  std::string target = path_;
  if (url_has_query_ || !query.empty()) target += "?" + query;
  return target;
}

std::optional<Response> HttpClient::Impl::build_request(const Request& request,
                                                        http::request<http::string_body>& out) const {
  if (request.method.empty() || has_line_break(request.method) ||
      request.method.find(' ') != std::string::npos) {
    return failure(Outcome::network_error, "invalid HTTP method '" + request.method + "'");
  }
  const std::string target = target_for(request.query);
  if (has_line_break(target) || target.find(' ') != std::string::npos) {
    return failure(Outcome::network_error, "invalid query string");
  }

  out.version(11);
  out.method_string(request.method);
  out.target(target);
  out.set(http::field::host, host_header_);
  out.set(http::field::user_agent, kUserAgent);
  out.content_length(request.body.size());
  // A later layer replaces an earlier one's field of the same name: the connection's headers
  // override our defaults, the request's override the connection's.
  for (const Headers* layer : {&connection_.headers, &request.headers}) {
    for (const auto& [name, value] : *layer) {
      if (name.empty() || has_line_break(name) || has_line_break(value) ||
          name.find_first_of(" :") != std::string::npos) {
        return failure(Outcome::network_error, "invalid header field '" + name + "'");
      }
      if (is_framing_field(name)) continue;
      out.set(name, value);
    }
  }
  out.body() = request.body;
  return std::nullopt;
}

awaitable<std::variant<tcp::resolver::results_type, Response>> HttpClient::Impl::resolve(
    Clock::time_point deadline) {
  // getaddrinfo cannot be interrupted, so the lookup races a timer instead of being bounded by
  // it; a late answer lands in the shared state and is dropped.
  struct State {
    explicit State(const asio::any_io_executor& ex) : resolver(ex), timer(ex) {}
    tcp::resolver resolver;
    asio::steady_timer timer;
    bool done = false;
    boost::system::error_code ec;
    tcp::resolver::results_type results;
  };
  auto state = std::make_shared<State>(executor_);
  state->timer.expires_at(deadline);
  const auto flags = tcp::resolver::numeric_service |
                     (host_is_ip_ ? tcp::resolver::numeric_host : tcp::resolver::flags{});
  state->resolver.async_resolve(host_, port_, flags, [state](const boost::system::error_code& ec,
                                                             tcp::resolver::results_type results) {
    state->done = true;
    state->ec = ec;
    state->results = std::move(results);
    state->timer.cancel();
  });
  co_await state->timer.async_wait(use_tuple);
  if (!state->done) {
    state->resolver.cancel();
    co_return failure(Outcome::timeout, "DNS lookup of " + host_ + " timed out after " +
                                            format_duration(connection_.connect_timeout));
  }
  if (state->ec) {
    co_return failure(Outcome::network_error,
                      "DNS lookup of " + host_ + " failed: " + state->ec.message());
  }
  co_return std::move(state->results);
}

Response HttpClient::Impl::handshake_failure(const boost::system::error_code& ec,
                                             SSL* ssl) const {
  if (is_timeout(ec)) {
    return failure(Outcome::timeout, "TLS handshake with " + authority_ + " timed out after " +
                                         format_duration(connection_.connect_timeout));
  }
  if (connection_.tls.verify) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      return failure(Outcome::tls_certificate,
                     "TLS certificate rejected by " + authority_ + ": " +
                         X509_verify_cert_error_string(verify));
    }
  }
  return failure(Outcome::tls_error,
                 "TLS handshake with " + authority_ + " failed: " + describe(ec));
}

awaitable<std::variant<std::unique_ptr<Stream>, Response>> HttpClient::Impl::open_stream() {
  const auto deadline = Clock::now() + connection_.connect_timeout;
  auto resolved = co_await resolve(deadline);
  if (auto* r = std::get_if<Response>(&resolved)) co_return std::move(*r);
  const auto& endpoints = std::get<tcp::resolver::results_type>(resolved);

  auto stream = std::make_unique<Stream>();
  if (https_) {
    stream->tls.emplace(executor_, *tls_context_);
  } else {
    stream->plain.emplace(executor_);
  }
  auto& tcp = stream->tcp();
  tcp.expires_at(deadline);
  auto [ec, endpoint] = co_await tcp.async_connect(endpoints, use_tuple);
  (void)endpoint;
  if (is_timeout(ec)) {
    co_return failure(Outcome::timeout, "connect to " + authority_ + " timed out after " +
                                            format_duration(connection_.connect_timeout));
  }
  if (ec) co_return failure(Outcome::network_error, "connect to " + authority_ + ": " + ec.message());
  boost::system::error_code ignored;
  tcp.socket().set_option(tcp::no_delay(true), ignored);  // a request is one burst; don't hold it back

  if (stream->tls) {
    // SNI carries host names only (RFC 6066); an IP literal is checked against the certificate.
    if (!host_is_ip_ && !SSL_set_tlsext_host_name(stream->tls->native_handle(), host_.c_str())) {
      co_return failure(Outcome::tls_error, "cannot set TLS server name " + host_);
    }
    tcp.expires_at(deadline);
    auto [hec] = co_await stream->tls->async_handshake(ssl::stream_base::client, use_tuple);
    if (hec) co_return handshake_failure(hec, stream->tls->native_handle());
  }
  co_return std::move(stream);
}

template <class AsyncStream>
awaitable<Exchange> HttpClient::Impl::exchange(AsyncStream& stream, beast::tcp_stream& tcp,
                                               beast::flat_buffer& buffer,
                                               const http::request<http::string_body>& request) {
  Exchange out;
  const std::string waited = format_duration(connection_.timeout);
  auto fail = [&](const boost::system::error_code& ec, bool got_some, const char* during) {
    if (is_timeout(ec)) {
      out.response = failure(Outcome::timeout, got_some ? "response not complete within " + waited
                                                        : "no response within " + waited);
    } else {
      out.response = failure(Outcome::network_error, describe(ec) + " " + during);
      out.stale = !got_some;
    }
    return std::move(out);
  };

  tcp.expires_after(connection_.timeout);
  auto [wec, written] = co_await http::async_write(stream, request, use_tuple);
  (void)written;
  if (wec) co_return fail(wec, false, "while sending the request");

  bool interim_seen = false;  // an interim response counts as a response byte: no retry after it
  for (;;) {
    http::response_parser<http::buffer_body> parser;
    parser.header_limit(kMaxResponseHeader);
    // The body is capped below by reading in chunks; Beast's own limit would refuse a long
    // Content-Length before we could keep the first part.
    parser.body_limit(boost::none);
    // A response to HEAD announces a body it does not carry.
    if (request.method() == http::verb::head) parser.skip(true);
    auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    (void)hn;
    if (hec) co_return fail(hec, interim_seen || parser.got_some(), "while reading the response");

    Response& r = out.response;
    r = Response{};
    r.outcome = Outcome::response;
    r.status = static_cast<int>(parser.get().result_int());
    // An interim response (100 Continue and friends) precedes the real one on the same stream.
    if (r.status >= 100 && r.status < 200 && r.status != 101 && parser.is_done()) {
      interim_seen = true;
      continue;
    }
    r.reason = std::string(parser.get().reason());
    for (const auto& field : parser.get()) {
      r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }

    std::array<char, 16 * 1024> chunk;
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      auto [bec, bn] = co_await http::async_read(stream, buffer, parser, use_tuple);
      (void)bn;
      if (bec == http::error::need_buffer) bec = {};
      if (bec) co_return fail(bec, true, "while reading the response body");
      const std::size_t got = chunk.size() - parser.get().body().size;
      const std::size_t room = kMaxResponseBody - r.body.size();
      if (got > room) {
        // The rest is not read: the stream is closed instead, so a huge body costs nothing.
        r.body.append(chunk.data(), room);
        r.body_truncated = true;
        co_return std::move(out);
      }
      r.body.append(chunk.data(), got);
    }
    out.clean_end = true;
    out.reusable = parser.keep_alive() && r.status != 101 && buffer.size() == 0;
    co_return std::move(out);
  }
}

awaitable<Exchange> HttpClient::Impl::exchange(Stream& stream,
                                               const http::request<http::string_body>& request) {
  if (stream.tls) co_return co_await exchange(*stream.tls, stream.tcp(), stream.buffer, request);
  co_return co_await exchange(*stream.plain, stream.tcp(), stream.buffer, request);
}

void HttpClient::Impl::finish(std::unique_ptr<Stream> stream, const Exchange& exchange) {
  if (exchange.reusable && idle_.size() < connection_.max_in_flight) {
    idle_.push_back(std::move(stream));
    return;
  }
  if (stream->tls && exchange.clean_end) {
    asio::co_spawn(executor_, shutdown_tls(std::move(stream)), [](const std::exception_ptr&) {
      // shutdown_tls reports nothing and only a failed allocation could throw; the stream is
      // gone either way.
    });
    return;
  }
  stream->close();
}

awaitable<Response> HttpClient::Impl::send(Request request) {
  if (setup_error_) co_return *setup_error_;
  http::request<http::string_body> message;
  if (auto invalid = build_request(request, message)) co_return std::move(*invalid);

  if (!idle_.empty()) {
    auto stream = std::move(idle_.back());
    idle_.pop_back();
    Exchange result = co_await exchange(*stream, message);
    if (!result.stale) {
      Response response = result.response;
      finish(std::move(stream), result);
      co_return response;
    }
    // The server closed this stream while it sat idle. The pool is used most-recent-first, so
    // every other idle stream is older and most likely closed too: start afresh.
    stream->close();
    close_idle();
  }

  auto opened = co_await open_stream();
  if (auto* r = std::get_if<Response>(&opened)) co_return std::move(*r);
  auto stream = std::move(std::get<std::unique_ptr<Stream>>(opened));
  Exchange result = co_await exchange(*stream, message);
  Response response = result.response;
  finish(std::move(stream), result);
  co_return response;
}

void HttpClient::Impl::close_idle() {
  // A plain close, no TLS close_notify: this is called from synchronous code, and the peer
  // treats a closed idle keep-alive stream like any other.
  for (auto& stream : idle_) stream->close();
  idle_.clear();
}

HttpClient::HttpClient(boost::asio::any_io_executor executor, config::Connection connection)
    : impl_(std::make_unique<Impl>(std::move(executor), std::move(connection))) {}

HttpClient::~HttpClient() = default;

boost::asio::awaitable<Response> HttpClient::send(Request request) {
  const auto start = Clock::now();
  Response response;
  try {
    response = co_await impl_->send(std::move(request));
  } catch (const std::exception& e) {
    // Only resource exhaustion or a library bug lands here; the caller still gets a value.
    response = failure(Outcome::network_error, std::string("request failed: ") + e.what());
  }
  response.duration = std::chrono::duration_cast<Duration>(Clock::now() - start);
  co_return response;
}

void HttpClient::close_idle() { impl_->close_idle(); }

std::string HttpClient::target(const std::string& extra_query) const { return impl_->target_for(extra_query); }

const std::string& HttpClient::display_url() const { return impl_->display_url_; }

}  // namespace repeaterd::sender
