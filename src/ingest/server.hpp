// ingest::Server: the listener that takes submissions over HTTP/1.1.
//
// One coroutine per client connection. Every request gets a fresh parser with limits on the
// header size (431) and body size (413, answered from the Content-Length before the body is
// read), and a deadline to arrive in full (read_timeout); idle keep-alive connections are
// closed after idle_timeout; at most max_connections are served at once (others get 503).
// The handler sees a Beast-free IncomingRequest and returns a Reply.
//
// Thread-safety: runs on the one executor given to the constructor.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <memory>

#include "ingest/http_types.hpp"
#include "repeaterd/config.hpp"
#include "repeaterd/result.hpp"

namespace repeaterd::ingest {

class Server {
 public:
  using Handler = std::function<boost::asio::awaitable<Reply>(IncomingRequest)>;
  // Formats the answers the server gives itself (413, 431, 400, 503) for a request target,
  // which is empty when the request line was not read.
  using ErrorReply = std::function<Reply(int status, const std::string& message, const std::string& target)>;

  Server(boost::asio::any_io_executor executor, config::Listen listen, Handler handler, ErrorReply error_reply);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket. Errors name the address and what to do.
  Status bind();
  std::uint16_t port() const;
  // Starts accepting connections.
  void start();
  // Stops accepting, closes idle connections; requests being handled still get their answer.
  void stop();
  // Requests currently being handled.
  std::size_t busy() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace repeaterd::ingest
