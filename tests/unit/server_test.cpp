// ingest::Server against a client on 127.0.0.1: a handler that throws costs its request a 500,
// and the connection goes on serving the next request.
#include "ingest/server.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <stdexcept>
#include <string>
#include <thread>

namespace repeaterd::ingest {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

asio::awaitable<Reply> handle(IncomingRequest req) {
  if (req.target == "/throws") throw std::runtime_error("boom");
  Reply r;
  r.body = "served " + req.target;
  co_return r;
}

Reply error_reply(int status, const std::string& message, const std::string& target) {
  Reply r;
  r.status = status;
  r.body = message + " (" + target + ")";
  return r;
}

http::response<http::string_body> exchange(tcp::socket& socket, beast::flat_buffer& buffer, const std::string& target) {
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.body() = "x";
  req.prepare_payload();
  http::write(socket, req);
  http::response<http::string_body> res;
  http::read(socket, buffer, res);
  return res;
}

TEST(ServerTest, HandlerExceptionIsOne500AndTheConnectionServesOn) {
  asio::io_context io(1);
  config::Listen listen;
  listen.port = 0;
  Server server(io.get_executor(), listen, &handle, &error_reply);
  ASSERT_TRUE(server.bind());
  server.start();
  std::thread runner([&] { io.run(); });

  asio::io_context client_io;
  tcp::socket socket(client_io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  beast::flat_buffer buffer;
  const auto failed = exchange(socket, buffer, "/throws");
  EXPECT_EQ(failed.result_int(), 500);
  EXPECT_NE(failed.body().find("internal error"), std::string::npos) << failed.body();
  EXPECT_NE(failed.body().find("(/throws)"), std::string::npos) << failed.body();
  EXPECT_TRUE(failed.keep_alive());
  // The same connection: the next request is handled as usual.
  const auto next = exchange(socket, buffer, "/next");
  EXPECT_EQ(next.result_int(), 200);
  EXPECT_EQ(next.body(), "served /next");

  asio::post(io, [&] { server.stop(); });
  socket.close();
  runner.join();
}

}  // namespace
}  // namespace repeaterd::ingest
