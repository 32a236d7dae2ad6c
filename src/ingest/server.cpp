#include "ingest/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/algorithm/string/predicate.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <list>
#include <optional>
#include <system_error>
#include <type_traits>

#include "ingest/beast_request.hpp"

namespace repeaterd::ingest {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
using unix_socket = asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

namespace {

http::response<http::string_body> to_beast(Reply&& r, unsigned version, bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "repeaterd");
  res.set(http::field::content_type, r.content_type);
  for (const auto& [k, v] : r.headers) res.set(k, v);
  res.body() = std::move(r.body);
  res.keep_alive(keep_alive && !r.close);
  res.prepare_payload();
  return res;
}

// sockaddr_un's sun_path is 108 bytes on Linux, one of them the terminating NUL.
constexpr std::size_t kMaxUnixPath = sizeof(sockaddr_un::sun_path) - 1;

// What is at a Unix socket path before we bind it.
struct Probe {
  enum What { nothing, listening, stale, not_socket, failed } what = nothing;
  int error = 0;  // failed: the errno
};

// Connects without blocking: a listener with a full backlog answers EAGAIN, which still means
// someone is there (a blocking connect would wait for it instead).
Probe probe_unix_path(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? Probe{} : Probe{Probe::failed, errno};
  if (!S_ISSOCK(st.st_mode)) return {Probe::not_socket};
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return {Probe::failed, errno};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int e = rc == 0 ? 0 : errno;
  ::close(fd);
  if (rc == 0 || e == EAGAIN || e == EINPROGRESS) return {Probe::listening};
  if (e == ECONNREFUSED) return {Probe::stale};
  return {Probe::failed, e};
}

std::string errno_text(int e) { return std::generic_category().message(e); }

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  // What stop_all() and busy() need of a connection, whatever its protocol.
  struct SessionBase {
    virtual ~SessionBase() = default;
    virtual void close() = 0;
    bool busy = false;
  };

  template <class Protocol>
  struct Session : SessionBase {
    explicit Session(typename Protocol::socket s) : stream(std::move(s)) {}
    void close() override {
      beast::error_code ignored;
      stream.socket().close(ignored);
    }
    beast::basic_stream<Protocol> stream;
  };

  // A request as the observer is told of it.
  struct Answered {
    std::string method;
    std::string target;
    Clock::time_point since = Clock::now();
  };

  Impl(asio::any_io_executor ex, config::Listen l, Handler h, ErrorReply e)
      : executor(ex),
        listen(std::move(l)),
        handler(std::move(h)),
        error_reply(std::move(e)),
        tcp_acceptor(ex),
        unix_acceptor(ex) {}

  // The server's own answers end the connection: the rest of the request was not read. Its
  // 503s are passing conditions, so they say when to come back.
  Reply own_error(int status, const std::string& message, const std::string& target) {
    Reply r = error_reply(status, message, target);
    r.close = true;
    const bool has_retry_after = std::any_of(r.headers.begin(), r.headers.end(),
                                             [](const auto& h) { return boost::iequals(h.first, "Retry-After"); });
    if (status == 503 && !has_retry_after) r.headers.emplace_back("Retry-After", "5");
    return r;
  }

  // Bytes of request bodies held in memory across this listener's connections, each counted
  // from when its headers are read until its reply is written (the body is handed to the
  // handler and held through its commit). Capped by listen.max_body_memory, so a flood of large
  // submissions on many connections cannot take more memory than the operator allowed.
  struct BodyMemory {
    std::uint64_t held = 0;
    // A request's share, given back when it is done with, on every path out of the loop.
    struct Share {
      BodyMemory* memory = nullptr;
      std::uint64_t bytes = 0;
      Share() = default;
      Share(const Share&) = delete;
      Share& operator=(const Share&) = delete;
      ~Share() { release(); }
      void release() {
        if (memory != nullptr) memory->held -= bytes;
        memory = nullptr;
      }
    };
    // What the body will take: its Content-Length, or max_body when it is chunked (its length is
    // not known until it has arrived).
    bool take(Share& share, std::uint64_t bytes, std::uint64_t limit) {
      if (bytes == 0) return true;
      if (held + bytes > limit) return false;
      held += bytes;
      share.memory = this;
      share.bytes = bytes;
      return true;
    }
  };

  template <class Protocol>
  awaitable<void> accept_loop(typename Protocol::acceptor& acceptor) {
    auto self = shared_from_this();
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(kUseTuple);
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) break;
        // Out of file descriptors and the like: log, breathe, keep serving.
        spdlog::warn("{}: accept failed: {}", name, ec.message());
        asio::steady_timer t(executor, std::chrono::milliseconds(100));
        co_await t.async_wait(kUseTuple);
        continue;
      }
      auto session = std::make_shared<Session<Protocol>>(std::move(socket));
      sessions.push_back(session);
      auto it = std::prev(sessions.end());
      asio::co_spawn(executor, serve(session), [self, it](std::exception_ptr e) {
        self->sessions.erase(it);
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("{}: connection failed: {}", self->name, ex.what());
        }
      });
    }
  }

  // Writes a reply and tells the observer. A failed write is not an error here: the peer left,
  // and the request was handled all the same.
  template <class Stream>
  awaitable<void> answer(Stream& stream, Reply r, const Answered& request, unsigned version, bool keep_alive) {
    const int status = r.status;
    auto res = to_beast(std::move(r), version, keep_alive);
    stream.expires_after(listen.read_timeout);
    co_await http::async_write(stream, res, kUseTuple);
    if (observer) {
      observer(request.method, request.target, status,
               std::chrono::duration<double>(Clock::now() - request.since).count());
    }
  }

  // The answer to a connection over max_connections; nothing of its request is read.
  template <class Stream>
  awaitable<void> refuse_busy(Stream& stream) {
    Reply busy = own_error(503, "too many connections; retry shortly", "");
    const Answered unread;
    co_await answer(stream, std::move(busy), unread, 11, false);
    stream.socket().shutdown(asio::socket_base::shutdown_send, ignored);
  }

  template <class Protocol>
  awaitable<void> serve(std::shared_ptr<Session<Protocol>> s) {
    beast::flat_buffer buffer;
    std::string remote, remote_address;
    if constexpr (std::is_same_v<Protocol, tcp>) {
      beast::error_code ec;
      auto ep = s->stream.socket().remote_endpoint(ec);
      if (!ec) {
        remote_address = ep.address().to_string();
        remote = remote_address + ":" + std::to_string(ep.port());
      }
    } else {
      // A Unix peer has no address worth logging (its socket is usually unnamed).
      remote = remote_address = "unix";
    }
    if (sessions.size() > listen.max_connections) {
      // A coroutine of its own: GCC 12 destroyed the locals of this block twice when the block
      // ended in co_return (free(): invalid pointer).
      co_await refuse_busy(s->stream);
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
      // Beast applies header_limit to the part of the header each read brings in, so a header
      // that arrives in pieces can pass it by up to the bytes already parsed; hn is the whole
      // header, so the limit is the operator's to the byte.
      if (!hec && hn > listen.max_header) hec = http::error::header_limit;
      BodyMemory::Share share;
      if (!hec) {
        s->busy = true;
        const auto length = parser.content_length();
        // A length over max_body is refused by the body read below (413); it needs no memory.
        const std::uint64_t need = parser.chunked() ? listen.max_body
                                   : length && *length <= listen.max_body ? *length
                                                                          : 0;
        if (!body_memory.take(share, need, listen.max_body_memory)) {
          spdlog::warn("{}: {} bytes of request bodies are held (listen.max_body_memory {}); a request of {} more "
                       "from {} got 503",
                       name, body_memory.held, listen.max_body_memory, need, remote);
          const Answered refused{std::string(parser.get().method_string()), std::string(parser.get().target())};
          co_await answer(s->stream, own_error(503, "the server is receiving too many large submissions at once; "
                                                    "nothing was stored, retry shortly", refused.target),
                          refused, parser.get().version(), false);
          break;
        }
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
      IncomingRequest in = incoming_request(req, remote, remote_address);
      Answered answered{in.method, in.target};
      const unsigned version = req.version();
      const bool keep_alive = req.keep_alive();
      // A handler that throws (a bug, or a library refusing odd input) costs this request a 500,
      // not the connection and not the other requests on it.
      Reply reply;
      bool failed = false;
      std::string failure;
      try {
        reply = co_await handler(std::move(in));
      } catch (const std::exception& ex) {
        failed = true;
        failure = ex.what();
      }
      if (failed) {
        spdlog::error("{}: {} {} from {} failed: {}", name, answered.method, answered.target, remote, failure);
        reply = error_reply(500,
                            "internal error while handling the request (the daemon's log has the details); retry it: "
                            "a submission that was already stored is recognised as a duplicate",
                            answered.target);
      }
      const bool close = !keep_alive || reply.close;
      co_await answer(s->stream, std::move(reply), answered, version, keep_alive && !stopping);
      s->busy = false;
      if (close) break;
    }
    s->stream.socket().shutdown(asio::socket_base::shutdown_send, ignored);
  }

  template <class Protocol>
  awaitable<void> answer_read_error(Session<Protocol>& s, beast::error_code ec,
                                    const http::request_parser<http::string_body>& parser) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || ec == asio::error::eof) {
      if (ec == beast::error::timeout && s.busy) {
        spdlog::info("{}: request not received within read_timeout; connection closed", name);
      }
      co_return;  // the peer went away or was too slow; nobody is left to answer
    }
    Reply r;
    // The method and target are set as soon as the request line is parsed, before any header
    // limit trips; both are empty when it was not.
    const Answered request{std::string(parser.get().method_string()), std::string(parser.get().target())};
    if (ec == http::error::body_limit) {
      r = own_error(413, "the submission is larger than listen.max_body (" + std::to_string(listen.max_body) +
                             " bytes); nothing was stored", request.target);
    } else if (ec == http::error::header_limit) {
      r = own_error(431, "the request headers are larger than listen.max_header (" +
                             std::to_string(listen.max_header) + " bytes)", request.target);
    } else {
      r = own_error(400, "malformed HTTP request: " + ec.message(), request.target);
    }
    const unsigned version = parser.is_header_done() ? parser.get().version() : 11;
    co_await answer(s.stream, std::move(r), request, version, false);
  }

  Status bind_tcp() {
    beast::error_code ec;
    auto addr = asio::ip::make_address(listen.address, ec);
    if (ec) return make_error("listen.address \"" + listen.address + "\" is not an IP address: " + ec.message());
    tcp::endpoint ep(addr, listen.port);
    auto& a = tcp_acceptor;
    const std::string where = listen.address + ":" + std::to_string(listen.port);
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

  Status bind_unix() {
    const std::string& path = listen.unix_path;
    const std::string where = "cannot listen on the Unix socket " + path;
    if (path.size() > kMaxUnixPath) {
      return make_error(where + ": the path is " + std::to_string(path.size()) + " bytes and a Unix socket path " +
                        "(sun_path) holds at most " + std::to_string(kMaxUnixPath) + "; choose a shorter path");
    }
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    if (!dir.empty()) {
      // Any other trouble with the directory (permissions) is bind()'s to report.
      std::error_code fec;
      const auto type = std::filesystem::status(dir, fec).type();
      if (type == std::filesystem::file_type::not_found) {
        return make_error(where + ": the directory " + dir.string() +
                          " does not exist; create it (writable by the user repeaterd runs as) or choose another path");
      }
      if (!fec && type != std::filesystem::file_type::directory) {
        return make_error(where + ": " + dir.string() + " is not a directory; choose another path");
      }
    }
    switch (const Probe p = probe_unix_path(path); p.what) {
      case Probe::nothing:
        break;
      case Probe::listening:
        return make_error("another process is serving on " + path + "; is repeaterd already running?");
      case Probe::stale:
        // Left behind by a process that did not stop cleanly: nobody answers on it.
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
          const int e = errno;
          return make_error(where + ": cannot remove the stale socket left there (" + errno_text(e) +
                            "); remove it by hand");
        }
        spdlog::info("{}: removed the stale socket {}", name, path);
        break;
      case Probe::not_socket:
        return make_error(where + ": the path exists and is not a socket; remove it or choose another path");
      case Probe::failed:
        return make_error(where + ": cannot check what is there (" + errno_text(p.error) +
                          "); check the permissions of the path and its directory");
    }
    beast::error_code ec;
    auto& a = unix_acceptor;
    if (a.open(unix_socket(), ec); ec) return make_error(where + ": cannot open a socket: " + ec.message());
    if (a.bind(unix_socket::endpoint(path), ec); ec) {
      return make_error(where + ": " + ec.message() + " (can the user repeaterd runs as write to " +
                        (dir.empty() ? std::string(".") : dir.string()) + "?)");
    }
    // The mode is set before listen(): until then a connect is refused, so the socket is never
    // reachable with the umask's mode.
    struct stat st {};
    if (::chmod(path.c_str(), 0660) != 0 || ::lstat(path.c_str(), &st) != 0) {
      const int e = errno;
      a.close(ec);
      ::unlink(path.c_str());
      return make_error(where + ": cannot set its mode to 0660: " + errno_text(e));
    }
    created = Created{st.st_dev, st.st_ino};
    if (a.listen(asio::socket_base::max_listen_connections, ec); ec) {
      remove_socket_file();
      return make_error(where + ": " + ec.message());
    }
    return Ok{};
  }

  // Removes the socket file bind_unix() made, unless another process has since put its own
  // socket there (say, a new repeaterd started while this one was stopping).
  void remove_socket_file() {
    if (!created) return;
    struct stat st {};
    if (::lstat(listen.unix_path.c_str(), &st) == 0 && st.st_dev == created->dev && st.st_ino == created->ino) {
      if (::unlink(listen.unix_path.c_str()) != 0) {
        const int e = errno;
        spdlog::warn("{}: cannot remove the socket {}: {}", name, listen.unix_path, errno_text(e));
      }
    }
    created.reset();
  }

  void stop_all() {
    stopping = true;
    tcp_acceptor.close(ignored);
    unix_acceptor.close(ignored);
    remove_socket_file();
    for (auto& s : sessions) {
      if (!s->busy) s->close();  // idle keep-alive: nothing to lose
    }
  }

  asio::any_io_executor executor;
  config::Listen listen;
  Handler handler;
  ErrorReply error_reply;
  Observer observer;
  std::string name = "ingest";
  tcp::acceptor tcp_acceptor;
  unix_socket::acceptor unix_acceptor;
  // The socket file bind_unix() created, identified so that only it is removed.
  struct Created {
    dev_t dev;
    ino_t ino;
  };
  std::optional<Created> created;
  std::list<std::shared_ptr<SessionBase>> sessions;
  BodyMemory body_memory;
  bool stopping = false;
  beast::error_code ignored;
};

Server::Server(asio::any_io_executor executor, config::Listen listen, Handler handler, ErrorReply error_reply)
    : impl_(std::make_shared<Impl>(executor, std::move(listen), std::move(handler), std::move(error_reply))) {}

Server::~Server() { impl_->stop_all(); }

void Server::set_name(std::string name) { impl_->name = std::move(name); }

void Server::observe(Observer observer) { impl_->observer = std::move(observer); }

Status Server::bind() { return impl_->listen.unix_path.empty() ? impl_->bind_tcp() : impl_->bind_unix(); }

std::uint16_t Server::port() const {
  beast::error_code ec;
  auto ep = impl_->tcp_acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void Server::start() {
  auto done = [name = impl_->name](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::critical("{}: accept loop ended: {}", name, ex.what());
    }
  };
  if (impl_->listen.unix_path.empty()) {
    asio::co_spawn(impl_->executor, impl_->accept_loop<tcp>(impl_->tcp_acceptor), done);
  } else {
    asio::co_spawn(impl_->executor, impl_->accept_loop<unix_socket>(impl_->unix_acceptor), done);
  }
}

void Server::stop() { impl_->stop_all(); }

std::size_t Server::busy() const {
  std::size_t n = 0;
  for (const auto& s : impl_->sessions) n += s->busy ? 1 : 0;
  return n;
}

}  // namespace repeaterd::ingest
