// ingest::Server: the listener that takes submissions over HTTP/1.1, on TCP or on a Unix socket.
//
// One coroutine per client connection. Every request gets a fresh parser with limits on the
// header size (431) and body size (413, answered from the Content-Length before the body is
// read), and a deadline to arrive in full (read_timeout); idle keep-alive connections are
// closed after idle_timeout; at most max_connections are served at once (others get 503).
// The handler sees a Beast-free IncomingRequest and returns a Reply. Both protocols run the
// same session code with the same limits; a Unix peer's remote address is "unix".
//
// With listen.unix_path set the server listens on that Unix socket instead of address:port:
// it refuses to start when another process answers on the path, replaces a stale socket left
// by a process that died, creates the socket with mode 0660 (the mode is the access control)
// and removes it again on stop() or destruction. The admin API uses it (set_name("admin")).
//
// Thread-safety: runs on the one executor given to the constructor; call everything there.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

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
  // Told of every reply once it is written (or its write failed because the peer left), the
  // server's own 413/431/400/503 answers included: the request's method and target (empty when
  // not read) and the seconds from the moment the whole request had been read (for the server's
  // own answers, from when it found the fault) to the reply written. Called on the executor.
  using Observer =
      std::function<void(const std::string& method, const std::string& target, int status, double seconds)>;

  Server(boost::asio::any_io_executor executor, config::Listen listen, Handler handler, ErrorReply error_reply);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The prefix of the server's log lines ("ingest: accept failed: ..."). Default: "ingest".
  // REQUIRES (both): called before start().
  void set_name(std::string name);
  void observe(Observer observer);

  // Binds the listening socket (TCP, or listen.unix_path). Errors name the address or path and
  // what to do.
  Status bind();
  // The bound TCP port (useful with port 0); 0 for a Unix socket or before bind().
  std::uint16_t port() const;
  // Starts accepting connections.
  void start();
  // Stops accepting, closes idle connections, removes the Unix socket file it created;
  // requests being handled still get their answer.
  void stop();
  // Requests currently being handled.
  std::size_t busy() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace repeaterd::ingest
