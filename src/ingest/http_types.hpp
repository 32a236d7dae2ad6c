// The ingest side's view of an HTTP exchange, free of Beast so that routing, authentication
// and validation are plain code, tested without sockets.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace repeaterd::ingest {

struct IncomingRequest {
  std::string method;         // "POST"
  std::string target;         // origin-form: "/a/demo/receiver?app_id=x"
  std::string authorization;  // the Authorization header, or ""
  std::string content_type;   // the Content-Type header, or ""
  std::string openrosa_version;  // the X-OpenRosa-Version header (phones send it), or ""
  std::string body;
  std::string remote;         // peer address and port, for logs
  std::string remote_address;  // peer address alone (form JSON's submit_ip)
};

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool close = false;  // close the connection after this reply
};

}  // namespace repeaterd::ingest
