// ingest::Receiver: what repeaterd does with a submission (spec §3).
//
// Routes the request (/a/{domain}/receiver, /cases, /apps/{app_id}), authenticates the token
// for the path's project space (domain), checks and parses the body, then, in one store job,
// applies its case blocks to the case store and stores the payload and its repeat records. It answers 201 only after that job's batch is committed; a rejected request
// stores nothing. Every error answer carries a reason a person can act on.
//
// It also serves a stored form's attachments back, to receivers that follow the attachment
// urls in form JSON: GET /a/{domain}/receiver/attachments/{form_id}/{name}, same tokens.
//
// Thread-safety: runs on the daemon's executor; the store does the blocking work.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <memory>
#include <string>
#include <variant>

#include "common/event_log.hpp"
#include "ingest/http_types.hpp"
#include "ingest/submission.hpp"
#include "repeaterd/config.hpp"
#include "store/store.hpp"

namespace repeaterd::ingest {

class ParsedCases;

// Why a request is refused before anything is stored.
struct Rejection {
  int status;  // 400, 415 or 422
  std::string reason;
};

class Receiver {
 public:
  // `on_records` is told each repeater that got new records (to wake the scheduler).
  // Each request reads the config in force when it arrived (a reload swaps `config`).
  Receiver(config::ConfigHolder& config, store::Store& store, EventLog& events,
           std::function<void(const std::string& repeater)> on_records);

  boost::asio::awaitable<Reply> handle(IncomingRequest request);

  // An error answer in the form the target's clients read: OpenRosa XML on the form
  // receiver, JSON elsewhere.
  static Reply error_reply(int status, const std::string& message, const std::string& target);

  // The endpoint a request reached, as a name from a fixed set (for metrics labels): "receiver"
  // (POST /a/{domain}/receiver), "cases" (POST /a/{domain}/cases), "apps" (POST
  // /a/{domain}/apps/{app_id}), "attachments" (GET /a/{domain}/receiver/attachments/{form_id}/
  // {name}), or "other": an unknown path, the wrong method, a target that is not a path, or
  // none (the request line was not read).
  static std::string endpoint_name(const std::string& method, const std::string& target);

 private:
  // Each reads a request into a Submission, or refuses it.
  using Read = std::variant<Submission, Rejection>;
  Read read_form(IncomingRequest& request, const std::string& domain, const std::string& app_id);
  Read read_cases(IncomingRequest& request, const std::string& domain);
  Read read_app_change(IncomingRequest& request, const std::string& domain, const std::string& app_id);
  // Applies the submission's case blocks, stores it and its records in one store job, then
  // answers: 201, 202 (duplicate), 422 (invalid case blocks) or 503.
  boost::asio::awaitable<Reply> store_submission(Submission s, bool xml_client,
                                                 std::shared_ptr<const config::Config> config);
  // Answers a GET for an attachment of the newest stored payload of `form_id`: 200 with its
  // bytes and content type, 404 naming what is unknown, 503 when the store fails.
  boost::asio::awaitable<Reply> serve_attachment(std::string domain, std::string form_id, std::string name);

  config::ConfigHolder& config_;
  store::Store& store_;
  EventLog& events_;
  std::function<void(const std::string&)> on_records_;
  // Shared with the store jobs, which may outlive the receiver at shutdown.
  std::shared_ptr<ParsedCases> parsed_cases_;
};

// Which token check a request passed or failed. Pure, for tests.
enum class AuthResult { ok, missing, unknown_token, wrong_domain };
AuthResult authenticate(const std::vector<config::IngestToken>& tokens, const std::string& authorization,
                        const std::string& domain);

// The OpenRosa response body for a submission.
std::string openrosa_response(bool success, const std::string& message, const std::string& form_id = {},
                              int records_created = -1);

}  // namespace repeaterd::ingest
