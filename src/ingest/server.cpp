#include "ingest/server.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <list>

namespace repeaterd::ingest {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

namespace {

http::response<http::string_body> to_beast(const Reply& r, unsigned version, bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "repeaterd");
  res.set(http::field::content_type, r.content_type);
  for (const auto& [k, v] : r.headers) res.set(k, v);
  res.body() = r.body;
  res.keep_alive(keep_alive && !r.close);
  res.prepare_payload();
  return res;
}

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  struct Session {
    explicit Session(tcp::socket s) : stream(std::move(s)) {}
    beast::tcp_stream stream;
    bool busy = false;
  };

  Impl(asio::any_io_executor ex, config::Listen l, Handler h, ErrorReply e)
      : executor(ex), listen(std::move(l)), handler(std::move(h)), error_reply(std::move(e)), acceptor(ex) {}

  // The server's own answers end the connection: the rest of the request was not read.
  Reply own_error(int status, const std::string& message, const std::string& target) {
    Reply r = error_reply(status, message, target);
    r.close = true;
    return r;
  }

  awaitable<void> accept_loop() {
    auto self = shared_from_this();
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(kUseTuple);
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) break;
        // Out of file descriptors and the like: log, breathe, keep serving.
        spdlog::warn("ingest: accept failed: {}", ec.message());
        asio::steady_timer t(executor, std::chrono::milliseconds(100));
        co_await t.async_wait(kUseTuple);
        continue;
      }
      auto session = std::make_shared<Session>(std::move(socket));
      sessions.push_back(session);
      auto it = std::prev(sessions.end());
      asio::co_spawn(executor, serve(session), [self, it](std::exception_ptr e) {
        self->sessions.erase(it);
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("ingest: connection failed: {}", ex.what());
        }
      });
    }
  }

  awaitable<void> write_reply(Session& s, Reply r, unsigned version, bool keep_alive) {
    auto res = to_beast(r, version, keep_alive);
    s.stream.expires_after(listen.read_timeout);
    co_await http::async_write(s.stream, res, kUseTuple);
  }

  awaitable<void> serve(std::shared_ptr<Session> s) {
    beast::flat_buffer buffer;
    std::string remote, remote_address;
    {
      beast::error_code ec;
      auto ep = s->stream.socket().remote_endpoint(ec);
      if (!ec) {
        remote_address = ep.address().to_string();
        remote = remote_address + ":" + std::to_string(ep.port());
      }
    }
    if (sessions.size() > listen.max_connections) {
      Reply busy = own_error(503, "too many connections; retry shortly", "");
      co_await write_reply(*s, std::move(busy), 11, false);
      s->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    for (bool first = true; !stopping; first = false) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(listen.max_header));
      parser.body_limit(listen.max_body);

      // Waiting for the next request on a kept-alive connection is idle time; once it starts
      // arriving it has read_timeout to arrive in full.
      s->stream.expires_after(first ? listen.read_timeout : listen.idle_timeout);
      auto [hec, hn] = co_await http::async_read_header(s->stream, buffer, parser, kUseTuple);
      (void)hn;
      if (!hec) {
        s->busy = true;
        s->stream.expires_after(listen.read_timeout);
        auto [bec, bn] = co_await http::async_read(s->stream, buffer, parser, kUseTuple);
        (void)bn;
        hec = bec;
      }
      if (hec) {
        co_await answer_read_error(*s, hec, parser);
        break;
      }
      auto& req = parser.get();
      IncomingRequest in;
      in.method = std::string(req.method_string());
      in.target = std::string(req.target());
      in.authorization = std::string(req[http::field::authorization]);
      in.content_type = std::string(req[http::field::content_type]);
      in.openrosa_version = std::string(req["X-OpenRosa-Version"]);
      in.body = std::move(req.body());
      in.remote = remote;
      in.remote_address = remote_address;
      const unsigned version = req.version();
      const bool keep_alive = req.keep_alive();
      Reply reply = co_await handler(std::move(in));
      const bool close = !keep_alive || reply.close;
      co_await write_reply(*s, std::move(reply), version, keep_alive && !stopping);
      s->busy = false;
      if (close) break;
    }
    s->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  awaitable<void> answer_read_error(Session& s, beast::error_code ec,
                                    const http::request_parser<http::string_body>& parser) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || ec == asio::error::eof) {
      if (ec == beast::error::timeout && s.busy) {
        spdlog::info("ingest: request not received within read_timeout; connection closed");
      }
      co_return;  // the peer went away or was too slow; nobody is left to answer
    }
    Reply r;
    // The target is set as soon as the request line is parsed, before any header limit trips.
    const std::string target(parser.get().target());
    if (ec == http::error::body_limit) {
      r = own_error(413, "the submission is larger than listen.max_body (" + std::to_string(listen.max_body) +
                               " bytes); nothing was stored", target);
    } else if (ec == http::error::header_limit) {
      r = own_error(431, "the request headers are larger than listen.max_header (" +
                               std::to_string(listen.max_header) + " bytes)", target);
    } else {
      r = own_error(400, "malformed HTTP request: " + ec.message(), target);
    }
    const unsigned version = parser.is_header_done() ? parser.get().version() : 11;
    co_await write_reply(s, std::move(r), version, false);
  }

  void stop_all() {
    stopping = true;
    acceptor.close(ignored);
    for (auto& s : sessions) {
      if (!s->busy) s->stream.socket().close(ignored);  // idle keep-alive: nothing to lose
    }
  }

  asio::any_io_executor executor;
  config::Listen listen;
  Handler handler;
  ErrorReply error_reply;
  tcp::acceptor acceptor;
  std::list<std::shared_ptr<Session>> sessions;
  bool stopping = false;
  beast::error_code ignored;
};

Server::Server(asio::any_io_executor executor, config::Listen listen, Handler handler, ErrorReply error_reply)
    : impl_(std::make_shared<Impl>(executor, std::move(listen), std::move(handler), std::move(error_reply))) {}

Server::~Server() { impl_->stop_all(); }

Status Server::bind() {
  beast::error_code ec;
  auto addr = asio::ip::make_address(impl_->listen.address, ec);
  if (ec) return make_error("listen.address \"" + impl_->listen.address + "\" is not an IP address: " + ec.message());
  tcp::endpoint ep(addr, impl_->listen.port);
  auto& a = impl_->acceptor;
  const std::string where = impl_->listen.address + ":" + std::to_string(impl_->listen.port);
  if (a.open(ep.protocol(), ec); ec) return make_error("cannot open a socket for " + where + ": " + ec.message());
  a.set_option(asio::socket_base::reuse_address(true), ec);
  if (a.bind(ep, ec); ec) {
    return make_error("cannot listen on " + where + ": " + ec.message() +
                      " (is another process using the port? change listen.port)");
  }
  if (a.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return make_error("cannot listen on " + where + ": " + ec.message());
  }
  return Ok{};
}

std::uint16_t Server::port() const {
  beast::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void Server::start() {
  asio::co_spawn(impl_->executor, impl_->accept_loop(), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::critical("ingest: accept loop ended: {}", ex.what());
    }
  });
}

void Server::stop() { impl_->stop_all(); }

std::size_t Server::busy() const {
  std::size_t n = 0;
  for (const auto& s : impl_->sessions) n += s->busy ? 1 : 0;
  return n;
}

}  // namespace repeaterd::ingest
