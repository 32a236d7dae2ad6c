// ingest::Receiver: what repeaterd does with a submission (spec §3).
//
// Routes the request, authenticates the token for the path's project space (domain), checks
// and parses the body, then stores the payload and one repeat record per matching repeater in
// one store job. It answers 201 only after that job's batch is committed; a rejected request
// stores nothing. Every error answer carries a reason a person can act on.
//
// Thread-safety: runs on the daemon's executor; the store does the blocking work.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <string>

#include "common/event_log.hpp"
#include "ingest/http_types.hpp"
#include "repeaterd/config.hpp"
#include "store/store.hpp"

namespace repeaterd::ingest {

class Receiver {
 public:
  // `on_records` is told each repeater that got new records (to wake the scheduler).
  Receiver(const config::Config& config, store::Store& store, EventLog& events,
           std::function<void(const std::string& repeater)> on_records);

  boost::asio::awaitable<Reply> handle(IncomingRequest request);

  // An error answer in the form the target's clients read: OpenRosa XML on the form
  // receiver, JSON elsewhere.
  static Reply error_reply(int status, const std::string& message, const std::string& target);

 private:
  boost::asio::awaitable<Reply> receive_form(IncomingRequest& request, const std::string& domain,
                                             const std::string& app_id);

  const config::Config& config_;
  store::Store& store_;
  EventLog& events_;
  std::function<void(const std::string&)> on_records_;
};

// Which token check a request passed or failed. Pure, for tests.
enum class AuthResult { ok, missing, unknown_token, wrong_domain };
AuthResult authenticate(const std::vector<config::IngestToken>& tokens, const std::string& authorization,
                        const std::string& domain);

// The OpenRosa response body for a submission.
std::string openrosa_response(bool success, const std::string& message, const std::string& form_id = {},
                              int records_created = -1);

}  // namespace repeaterd::ingest
