// A request Beast has read, as the Beast-free IncomingRequest the receiver handles. Included only
// where Beast is already (the listener, and the receiver's fuzz target, which must hand the
// receiver exactly what the listener does).
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string>
#include <utility>

#include "ingest/http_types.hpp"

namespace repeaterd::ingest {

// Moves the body out of `req`; its header stays readable (version, keep-alive).
inline IncomingRequest incoming_request(boost::beast::http::request<boost::beast::http::string_body>& req,
                                        std::string remote, std::string remote_address) {
  namespace http = boost::beast::http;
  IncomingRequest in;
  in.method = std::string(req.method_string());
  in.target = std::string(req.target());
  in.authorization = std::string(req[http::field::authorization]);
  in.content_type = std::string(req[http::field::content_type]);
  in.openrosa_version = std::string(req["X-OpenRosa-Version"]);
  in.body = std::move(req.body());
  in.remote = std::move(remote);
  in.remote_address = std::move(remote_address);
  return in;
}

}  // namespace repeaterd::ingest
