// HttpClient against an in-process HTTP(S) server on 127.0.0.1: what arrives, keep-alive reuse,
// refused/silent/resetting servers, capped bodies, redirects left alone, and TLS verification.
#include "sender/http_client.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace repeaterd::sender {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::string ok_response(const std::string& body = "ok", const std::string& extra = "") {
  return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + extra +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct Received {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  std::string header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (beast::iequals(n, name)) return v;
    }
    return "<missing>";
  }
};

// A scripted HTTP/1.1 server on its own thread and io_context, so a client that blocks or
// misbehaves cannot stall it. Plain TCP, or TLS when given a server context.
class TestServer {
 public:
  enum class Mode {
    respond,               // answer every request with the canned response, keep the stream
    close_after_response,  // answer, then close the stream (it still looks keep-alive)
    never_answer,          // read the request, then say nothing until the client goes away
    reset,                 // read the request, then reset the connection
    silent,                // accept TCP, never read or write (a TLS handshake never ends)
  };

  explicit TestServer(std::shared_ptr<ssl::context> tls = nullptr)
      : tls_(std::move(tls)), acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    asio::co_spawn(ioc_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
  }

  ~TestServer() {
    ioc_.stop();
    thread_.join();
  }

  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  std::string url(const std::string& path = "/") const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port()) + path;
  }

  void set_response(std::string raw) {
    std::lock_guard lock(mutex_);
    response_ = std::move(raw);
  }
  void set_mode(Mode mode) {
    std::lock_guard lock(mutex_);
    mode_ = mode;
  }
  int accepted() const { return accepted_.load(); }
  std::vector<Received> received() const {
    std::lock_guard lock(mutex_);
    return received_;
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
      if (ec) co_return;
      ++accepted_;
      asio::co_spawn(ioc_, serve(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> serve(tcp::socket socket) {
    if (current_mode() == Mode::silent) {
      // Hold the connection open without ever reading a byte of the client's handshake; the
      // server's io_context stopping ends this.
      asio::steady_timer forever(ioc_, std::chrono::steady_clock::time_point::max());
      co_await forever.async_wait(use_tuple);
      co_return;
    }
    if (!tls_) {
      co_await serve_http(socket, socket);
      co_return;
    }
    ssl::stream<tcp::socket> stream(std::move(socket), *tls_);
    auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_tuple);
    if (ec) co_return;  // the client rejected our certificate: that is the test's business
    co_await serve_http(stream, stream.next_layer());
  }

  template <class Stream>
  asio::awaitable<void> serve_http(Stream& stream, tcp::socket& socket) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(16 << 20);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
      if (ec) co_return;
      record(parser.get());
      std::string response;
      Mode mode;
      {
        std::lock_guard lock(mutex_);
        response = response_;
        mode = mode_;
      }
      switch (mode) {
        case Mode::never_answer: {
          std::array<char, 4096> sink;
          for (;;) {
            auto [rec, rn] = co_await stream.async_read_some(asio::buffer(sink), use_tuple);
            if (rec) co_return;
          }
        }
        case Mode::reset: {
          boost::system::error_code ignored;
          socket.set_option(asio::socket_base::linger(true, 0), ignored);
          socket.close(ignored);
          co_return;
        }
        case Mode::respond:
        case Mode::close_after_response:
        case Mode::silent: {
          auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(response), use_tuple);
          if (wec || mode == Mode::close_after_response) {
            boost::system::error_code ignored;
            socket.shutdown(tcp::socket::shutdown_both, ignored);
            socket.close(ignored);
            co_return;
          }
        }
      }
    }
  }

  Mode current_mode() const {
    std::lock_guard lock(mutex_);
    return mode_;
  }

  void record(const http::request<http::string_body>& request) {
    Received r;
    r.method = std::string(request.method_string());
    r.target = std::string(request.target());
    for (const auto& field : request) {
      r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    r.body = request.body();
    std::lock_guard lock(mutex_);
    received_.push_back(std::move(r));
  }

  std::shared_ptr<ssl::context> tls_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<int> accepted_{0};
  mutable std::mutex mutex_;
  Mode mode_ = Mode::respond;
  std::string response_ = ok_response();
  std::vector<Received> received_;
};

config::Connection connection_to(const std::string& url) {
  config::Connection c;
  c.name = "test";
  c.url = url;
  c.connect_timeout = 1s;
  c.timeout = 1500ms;
  return c;
}

// Runs the client on the test thread's io_context until this one send() is done (a detached
// TLS close_notify may still be pending; it is not waited for).
class HttpClientTest : public ::testing::Test {
 protected:
  Response send(HttpClient& client, Request request = {}) {
    std::optional<Response> result;
    asio::co_spawn(ioc_, client.send(std::move(request)),
                   [&](std::exception_ptr e, Response r) {
                     if (e) std::rethrow_exception(e);
                     result = std::move(r);
                   });
    while (!result) {
      if (ioc_.run_one() == 0) ioc_.restart();
    }
    return *result;
  }

  std::unique_ptr<HttpClient> client(config::Connection c) {
    return std::make_unique<HttpClient>(ioc_.get_executor(), std::move(c));
  }

  asio::io_context ioc_;
};

TEST_F(HttpClientTest, PostArrivesWithExactTargetHeadersAndBody) {
  TestServer server;
  server.set_response(ok_response("{}", "X-Answer: 42\r\n"));
  auto c = connection_to(server.url("/i/abc?token=t1"));
  c.headers = {{"X-Conn", "from-connection"}, {"X-Both", "connection"}};
  auto http_client = client(c);

  Request request;
  request.method = "POST";
  request.query = "app_id=abc";
  request.headers = {{"Content-Type", "text/xml"}, {"X-Both", "request"}};
  request.body = "<data id=\"1\">héllo</data>";
  const Response response = send(*http_client, request);

  ASSERT_EQ(response.outcome, Outcome::response) << response.error;
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.reason, "OK");
  EXPECT_EQ(response.body, "{}");
  EXPECT_FALSE(response.body_truncated);
  bool answer_seen = false;
  for (const auto& [name, value] : response.headers) answer_seen |= name == "X-Answer" && value == "42";
  EXPECT_TRUE(answer_seen);

  const auto received = server.received();
  ASSERT_EQ(received.size(), 1u);
  const Received& r = received[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/i/abc?token=t1&app_id=abc");
  EXPECT_EQ(r.body, request.body);
  EXPECT_EQ(r.header("Host"), "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(r.header("User-Agent"), "repeaterd/0.1");
  EXPECT_EQ(r.header("Content-Length"), std::to_string(request.body.size()));
  EXPECT_EQ(r.header("Content-Type"), "text/xml");
  EXPECT_EQ(r.header("X-Conn"), "from-connection");
  EXPECT_EQ(r.header("X-Both"), "request");
}

TEST_F(HttpClientTest, TargetWithoutPathOrQueryGetsSlashAndQuestionMark) {
  TestServer server;
  auto http_client = client(connection_to("http://127.0.0.1:" + std::to_string(server.port())));
  Request request;
  request.method = "PUT";
  request.query = "app_id=abc";
  ASSERT_EQ(send(*http_client, request).outcome, Outcome::response);
  Request plain;
  ASSERT_EQ(send(*http_client, plain).outcome, Outcome::response);

  const auto received = server.received();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[0].method, "PUT");
  EXPECT_EQ(received[0].target, "/?app_id=abc");
  EXPECT_EQ(received[1].target, "/");
  EXPECT_EQ(received[1].header("Content-Length"), "0");
}

TEST_F(HttpClientTest, DisplayUrlAndErrorsNeverShowUserinfo) {
  // A port nobody listens on: bind one, then let it go.
  unsigned short port = 0;
  {
    tcp::acceptor probe(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }
  auto http_client =
      client(connection_to("http://user:s3cret@127.0.0.1:" + std::to_string(port) + "/in?x=1"));
  EXPECT_EQ(http_client->display_url(), "http://127.0.0.1:" + std::to_string(port) + "/in?x=1");
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::network_error);
  EXPECT_EQ(response.error.find("s3cret"), std::string::npos) << response.error;
  EXPECT_EQ(response.error.find("user"), std::string::npos) << response.error;
}

TEST_F(HttpClientTest, KeepAliveReusesOneConnection) {
  TestServer server;
  auto http_client = client(connection_to(server.url("/in")));
  for (int i = 0; i < 3; ++i) {
    const Response response = send(*http_client);
    ASSERT_EQ(response.outcome, Outcome::response) << response.error;
    EXPECT_EQ(response.body, "ok");
  }
  EXPECT_EQ(server.received().size(), 3u);
  EXPECT_EQ(server.accepted(), 1);
}

TEST_F(HttpClientTest, ConnectionCloseIsNotReused) {
  TestServer server;
  server.set_mode(TestServer::Mode::close_after_response);
  server.set_response(ok_response("bye", "Connection: close\r\n"));
  auto http_client = client(connection_to(server.url()));
  EXPECT_EQ(send(*http_client).outcome, Outcome::response);
  EXPECT_EQ(send(*http_client).outcome, Outcome::response);
  EXPECT_EQ(server.accepted(), 2);
}

TEST_F(HttpClientTest, CloseIdleDropsKeptStreams) {
  TestServer server;
  auto http_client = client(connection_to(server.url()));
  EXPECT_EQ(send(*http_client).outcome, Outcome::response);
  http_client->close_idle();
  EXPECT_EQ(send(*http_client).outcome, Outcome::response);
  EXPECT_EQ(server.accepted(), 2);
}

TEST_F(HttpClientTest, ConnectionRefusedIsNetworkError) {
  unsigned short port = 0;
  {
    tcp::acceptor probe(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }
  auto http_client = client(connection_to("http://127.0.0.1:" + std::to_string(port) + "/"));
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::network_error);
  EXPECT_EQ(response.error, "connect to 127.0.0.1:" + std::to_string(port) + ": Connection refused");
  EXPECT_EQ(response.status, 0);
}

TEST_F(HttpClientTest, NoAnswerTimesOutAfterTheConfiguredTimeout) {
  TestServer server;
  server.set_mode(TestServer::Mode::never_answer);
  auto c = connection_to(server.url());
  c.timeout = 300ms;
  auto http_client = client(c);
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::timeout);
  EXPECT_EQ(response.error, "no response within 300ms");
  EXPECT_GE(response.duration, 290ms);
  EXPECT_LT(response.duration, 1000ms);
  EXPECT_EQ(server.received().size(), 1u);
}

TEST_F(HttpClientTest, ResetBeforeAnswerIsNetworkError) {
  TestServer server;
  server.set_mode(TestServer::Mode::reset);
  auto http_client = client(connection_to(server.url()));
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::network_error);
  EXPECT_NE(response.error.find("while reading the response"), std::string::npos) << response.error;
  // A fresh stream is never retried: the request went out once.
  EXPECT_EQ(server.received().size(), 1u);
}

TEST_F(HttpClientTest, HugeBodyIsTruncatedAndTheStreamDropped) {
  TestServer server;
  const std::string huge(1 << 20, 'x');
  server.set_response("HTTP/1.1 500 Internal Server Error\r\nX-Trace: t\r\nContent-Length: " +
                      std::to_string(huge.size()) + "\r\n\r\n" + huge);
  auto http_client = client(connection_to(server.url()));
  const Response response = send(*http_client);
  ASSERT_EQ(response.outcome, Outcome::response) << response.error;
  EXPECT_EQ(response.status, 500);
  EXPECT_EQ(response.reason, "Internal Server Error");
  EXPECT_EQ(response.body.size(), kMaxResponseBody);
  EXPECT_EQ(response.body, huge.substr(0, kMaxResponseBody));
  EXPECT_TRUE(response.body_truncated);
  ASSERT_FALSE(response.headers.empty());

  server.set_response(ok_response());
  EXPECT_EQ(send(*http_client).outcome, Outcome::response);
  EXPECT_EQ(server.accepted(), 2);  // the half-read stream was not reused
}

TEST_F(HttpClientTest, BodyOfExactlyTheCapIsCompleteAndReused) {
  TestServer server;
  const std::string body(kMaxResponseBody, 'y');
  server.set_response(ok_response(body));
  auto http_client = client(connection_to(server.url()));
  const Response response = send(*http_client);
  ASSERT_EQ(response.outcome, Outcome::response) << response.error;
  EXPECT_EQ(response.body, body);
  EXPECT_FALSE(response.body_truncated);
  EXPECT_EQ(send(*http_client).outcome, Outcome::response);
  EXPECT_EQ(server.accepted(), 1);
}

TEST_F(HttpClientTest, ChunkedBodyIsDecoded) {
  TestServer server;
  server.set_response(
      "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  auto http_client = client(connection_to(server.url()));
  const Response response = send(*http_client);
  ASSERT_EQ(response.outcome, Outcome::response) << response.error;
  EXPECT_EQ(response.status, 201);
  EXPECT_EQ(response.body, "hello world");
}

TEST_F(HttpClientTest, RedirectIsNotFollowed) {
  TestServer target;
  TestServer server;
  server.set_response("HTTP/1.1 302 Found\r\nLocation: " + target.url("/elsewhere") +
                      "\r\nContent-Length: 0\r\n\r\n");
  auto http_client = client(connection_to(server.url()));
  const Response response = send(*http_client);
  ASSERT_EQ(response.outcome, Outcome::response) << response.error;
  EXPECT_EQ(response.status, 302);
  bool location_seen = false;
  for (const auto& [name, value] : response.headers) {
    location_seen |= name == "Location" && value == target.url("/elsewhere");
  }
  EXPECT_TRUE(location_seen);
  EXPECT_EQ(server.received().size(), 1u);
  EXPECT_EQ(target.accepted(), 0);
}

TEST_F(HttpClientTest, IdleStreamClosedByServerIsRetriedOnAFreshOne) {
  TestServer server;
  server.set_mode(TestServer::Mode::close_after_response);  // keep-alive promised, then closed
  auto http_client = client(connection_to(server.url()));
  ASSERT_EQ(send(*http_client).outcome, Outcome::response);
  std::this_thread::sleep_for(20ms);  // let the server's close land while the stream is idle
  const Response second = send(*http_client);
  EXPECT_EQ(second.outcome, Outcome::response) << second.error;
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(server.accepted(), 2);
  EXPECT_EQ(server.received().size(), 2u);
}

TEST_F(HttpClientTest, ReusedStreamTimeoutIsNotRetried) {
  TestServer server;
  auto c = connection_to(server.url());
  c.timeout = 200ms;
  auto http_client = client(c);
  ASSERT_EQ(send(*http_client).outcome, Outcome::response);
  server.set_mode(TestServer::Mode::never_answer);
  const Response second = send(*http_client);
  EXPECT_EQ(second.outcome, Outcome::timeout);
  EXPECT_LT(second.duration, 1000ms);
  EXPECT_EQ(server.accepted(), 1);  // a retry would have opened a second connection
  EXPECT_EQ(server.received().size(), 2u);
}

// Certificates made with the openssl command once for the suite: one for localhost/127.0.0.1
// and one for a name nobody here uses.
class HttpsClientTest : public HttpClientTest {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = (std::filesystem::temp_directory_path() / "repeaterd-tls-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    make_cert("good", "/CN=localhost", "IP:127.0.0.1,DNS:localhost");
    make_cert("other", "/CN=other.example", "DNS:other.example");
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  static void make_cert(const std::string& name, const std::string& subject, const std::string& san) {
    const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -subj " + subject +
                                " -addext subjectAltName=" + san + " -days 1 -keyout " +
                                key(name) + " -out " + cert(name) + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static std::string cert(const std::string& name) { return (dir_ / (name + ".crt")).string(); }
  static std::string key(const std::string& name) { return (dir_ / (name + ".key")).string(); }

  static std::shared_ptr<ssl::context> server_tls(const std::string& name) {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->use_certificate_chain_file(cert(name));
    ctx->use_private_key_file(key(name), ssl::context::pem);
    return ctx;
  }

  static inline std::filesystem::path dir_;
};

TEST_F(HttpsClientTest, TrustedByCaFileSucceedsAndKeepsAlive) {
  TestServer server(server_tls("good"));
  auto c = connection_to(server.url("/in?a=1"));
  c.tls.ca_file = cert("good");
  auto http_client = client(c);
  Request request;
  request.body = "<x/>";
  const Response first = send(*http_client, request);
  ASSERT_EQ(first.outcome, Outcome::response) << first.error;
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.body, "ok");
  const Response second = send(*http_client, request);
  ASSERT_EQ(second.outcome, Outcome::response) << second.error;
  EXPECT_EQ(server.accepted(), 1);
  const auto received = server.received();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[0].target, "/in?a=1");
  EXPECT_EQ(received[0].body, "<x/>");
}

TEST_F(HttpsClientTest, LocalhostNameIsVerifiedToo) {
  TestServer server(server_tls("good"));
  auto c = connection_to("https://localhost:" + std::to_string(server.port()) + "/");
  c.tls.ca_file = cert("good");
  auto http_client = client(c);
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::response) << response.error;
}

TEST_F(HttpsClientTest, SelfSignedWithoutCaFileIsCertificateError) {
  TestServer server(server_tls("good"));
  auto http_client = client(connection_to(server.url()));
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::tls_certificate);
  EXPECT_NE(response.error.find("TLS certificate rejected by 127.0.0.1:" + std::to_string(server.port())),
            std::string::npos)
      << response.error;
  EXPECT_NE(response.error.find("self-signed"), std::string::npos) << response.error;
}

TEST_F(HttpsClientTest, VerifyFalseAcceptsAnyCertificate) {
  TestServer server(server_tls("other"));
  auto c = connection_to(server.url());
  c.tls.verify = false;
  auto http_client = client(c);
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::response) << response.error;
  EXPECT_EQ(response.status, 200);
}

TEST_F(HttpsClientTest, CertificateForAnotherNameIsRejected) {
  TestServer server(server_tls("other"));
  auto c = connection_to("https://localhost:" + std::to_string(server.port()) + "/");
  c.tls.ca_file = cert("other");
  auto http_client = client(c);
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::tls_certificate);
  EXPECT_NE(lower(response.error).find("hostname mismatch"), std::string::npos) << response.error;
}

TEST_F(HttpsClientTest, CertificateWithoutTheIpAddressIsRejected) {
  TestServer server(server_tls("other"));
  auto c = connection_to(server.url());
  c.tls.ca_file = cert("other");
  auto http_client = client(c);
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::tls_certificate);
  EXPECT_NE(response.error.find("IP address mismatch"), std::string::npos) << response.error;
}

TEST_F(HttpsClientTest, PlainHttpServerIsTlsError) {
  TestServer server;  // no TLS
  auto c = connection_to("https://127.0.0.1:" + std::to_string(server.port()) + "/");
  auto http_client = client(c);
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::tls_error) << response.error;
  EXPECT_NE(response.error.find("TLS handshake with 127.0.0.1:"), std::string::npos) << response.error;
}

TEST_F(HttpsClientTest, StalledHandshakeTimesOutUnderConnectTimeout) {
  TestServer server;
  server.set_mode(TestServer::Mode::silent);
  auto c = connection_to("https://127.0.0.1:" + std::to_string(server.port()) + "/");
  c.connect_timeout = 300ms;
  auto http_client = client(c);
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::timeout);
  EXPECT_EQ(response.error, "TLS handshake with 127.0.0.1:" + std::to_string(server.port()) +
                                " timed out after 300ms");
  EXPECT_GE(response.duration, 290ms);
  EXPECT_LT(response.duration, 1000ms);
}

TEST_F(HttpsClientTest, UnreadableCaFileIsReportedOnSend) {
  TestServer server(server_tls("good"));
  auto c = connection_to(server.url());
  c.tls.ca_file = (dir_ / "missing.pem").string();
  auto http_client = client(c);
  const Response response = send(*http_client);
  EXPECT_EQ(response.outcome, Outcome::tls_error);
  EXPECT_NE(response.error.find("missing.pem"), std::string::npos) << response.error;
  EXPECT_EQ(server.accepted(), 0);
}

}  // namespace
}  // namespace repeaterd::sender
