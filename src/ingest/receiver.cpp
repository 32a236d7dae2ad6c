#include "ingest/receiver.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <boost/algorithm/string/case_conv.hpp>
#include <boost/algorithm/string/predicate.hpp>
#include <boost/algorithm/string/trim.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <sstream>

#include "common/ids.hpp"
#include "payload/xform.hpp"
#include "store/async.hpp"

namespace repeaterd::ingest {

namespace {

bool equal_secret(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string base64_decode(std::string_view in) {
  std::string out(3 * ((in.size() + 3) / 4), '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  if (n < 0) return {};
  out.resize(static_cast<std::size_t>(n));
  // EVP_DecodeBlock keeps the zero bytes that stand for '=' padding.
  std::size_t pad = 0;
  for (auto it = in.rbegin(); it != in.rend() && *it == '='; ++it) ++pad;
  out.resize(out.size() - std::min(pad, out.size()));
  return out;
}

// The token from "Bearer TOKEN" or "Basic base64(user:TOKEN)".
std::string presented_token(const std::string& authorization) {
  std::string_view a = authorization;
  if (boost::istarts_with(a, "Bearer ")) return boost::trim_copy(std::string(a.substr(7)));
  if (boost::istarts_with(a, "Basic ")) {
    const std::string decoded = base64_decode(boost::trim_copy(std::string(a.substr(6))));
    const auto colon = decoded.find(':');
    return colon == std::string::npos ? std::string() : decoded.substr(colon + 1);
  }
  return {};
}

Reply xml_reply(int status, bool success, const std::string& message, const std::string& form_id = {},
                int records = -1) {
  Reply r;
  r.status = status;
  r.content_type = "text/xml; charset=utf-8";
  r.headers.emplace_back("X-OpenRosa-Version", "1.0");
  r.body = openrosa_response(success, message, form_id, records);
  return r;
}

Reply json_error(int status, const std::string& message) {
  Reply r;
  r.status = status;
  r.body = nlohmann::json{{"error", message}}.dump() + "\n";
  return r;
}

std::string media_type(const std::string& content_type) {
  std::string t = content_type.substr(0, content_type.find(';'));
  boost::trim(t);
  boost::to_lower(t);
  return t;
}

}  // namespace

AuthResult authenticate(const std::vector<config::IngestToken>& tokens, const std::string& authorization,
                        const std::string& domain) {
  const std::string token = presented_token(authorization);
  if (token.empty()) return AuthResult::missing;
  bool known = false;
  // Compare against every token, whatever matches early, so timing says nothing about which.
  bool allowed = false;
  for (const auto& t : tokens) {
    if (equal_secret(t.token.value, token)) {
      known = true;
      allowed = allowed || t.domain == domain;
    }
  }
  if (allowed) return AuthResult::ok;
  return known ? AuthResult::wrong_domain : AuthResult::unknown_token;
}

std::string openrosa_response(bool success, const std::string& message, const std::string& form_id,
                              int records_created) {
  pugi::xml_document doc;
  auto decl = doc.append_child(pugi::node_declaration);
  decl.append_attribute("version") = "1.0";
  decl.append_attribute("encoding") = "UTF-8";
  auto root = doc.append_child("OpenRosaResponse");
  root.append_attribute("xmlns") = "http://openrosa.org/http/response";
  auto msg = root.append_child("message");
  msg.append_attribute("nature") = success ? "submit_success" : "submit_error";
  msg.text() = message.c_str();
  if (!form_id.empty()) root.append_child("form_id").text() = form_id.c_str();
  if (records_created >= 0) root.append_child("records_created").text() = records_created;
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default, pugi::encoding_utf8);
  return out.str();
}

Reply Receiver::error_reply(int status, const std::string& message, const std::string& target) {
  auto url = boost::urls::parse_origin_form(target);
  if (url && boost::ends_with(url->path(), "/receiver")) return xml_reply(status, false, message);
  return json_error(status, message);
}

Receiver::Receiver(const config::Config& config, store::Store& store, EventLog& events,
                   std::function<void(const std::string&)> on_records)
    : config_(config), store_(store), events_(events), on_records_(std::move(on_records)) {}

boost::asio::awaitable<Reply> Receiver::handle(IncomingRequest request) {
  auto url = boost::urls::parse_origin_form(request.target);
  if (!url) co_return json_error(400, "the request target \"" + request.target + "\" is not a valid path");
  std::vector<std::string> segs;
  for (auto seg : url->segments()) segs.push_back(seg);
  const bool receiver = segs.size() == 3 && segs[0] == "a" && !segs[1].empty() && segs[2] == "receiver";
  if (!receiver) {
    co_return json_error(404, "no such endpoint: " + std::string(url->path()) +
                                  " (submit forms to POST /a/{domain}/receiver)");
  }
  if (request.method != "POST") {
    Reply r = xml_reply(405, false, "use POST to submit a form to " + std::string(url->path()));
    r.headers.emplace_back("Allow", "POST");
    co_return r;
  }
  const std::string& domain = segs[1];
  switch (authenticate(config_.ingest_tokens, request.authorization, domain)) {
    case AuthResult::ok:
      break;
    case AuthResult::missing: {
      Reply r = xml_reply(401, false,
                          "authentication required: send \"Authorization: Bearer <token>\" (or Basic auth with the "
                          "token as the password) with an ingest token for project space \"" + domain + "\"");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"repeaterd\"");
      co_return r;
    }
    case AuthResult::unknown_token: {
      Reply r = xml_reply(401, false, "the token is not a known ingest token; check ingest_tokens in the configuration");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"repeaterd\", error=\"invalid_token\"");
      co_return r;
    }
    case AuthResult::wrong_domain:
      co_return xml_reply(403, false, "the token is valid but not for project space \"" + domain +
                                          "\"; use that project space's token or submit to the token's own");
  }
  std::string app_id;
  if (auto it = url->params().find("app_id"); it != url->params().end()) app_id = (*it).value;
  co_return co_await receive_form(request, domain, app_id);
}

boost::asio::awaitable<Reply> Receiver::receive_form(IncomingRequest& request, const std::string& domain,
                                                     const std::string& app_id) {
  const std::string type = media_type(request.content_type);
  if (type != "text/xml" && type != "application/xml") {
    co_return xml_reply(415, false, "unsupported Content-Type \"" + request.content_type +
                                        "\": submit the XForm instance with Content-Type: text/xml or application/xml");
  }
  auto form = payload::parse_xform(request.body);
  if (!form) co_return xml_reply(400, false, form.error().message + "; nothing was stored");

  const Micros now = now_micros();
  store::NewPayload p;
  p.domain = domain;
  p.payload_type = "form";
  p.payload_id = form->instance_id;
  p.xmlns = form->xmlns;
  p.app_id = app_id;
  p.content_type = request.content_type;
  p.body = std::move(request.body);
  p.received_on = now;

  const std::string received_on = format_iso8601(now);
  std::vector<store::NewRecord> records;
  std::vector<const config::Repeater*> targets;
  for (const auto& r : config_.repeaters) {
    if (r.type != config::RepeaterType::form) continue;
    if (r.domain && *r.domain != domain) continue;
    store::NewRecord rec;
    rec.id = uuid_v7(now);
    rec.repeater = r.name;
    rec.content_type = "text/xml";
    if (r.include_app_id_param && !app_id.empty()) {
      rec.query = "app_id=" + boost::urls::encode(app_id, boost::urls::unreserved_chars);
    }
    rec.headers_json = nlohmann::json{{"Received-On", received_on}}.dump();
    records.push_back(std::move(rec));
    targets.push_back(&r);
  }

  // Named, not a temporary in the co_await expression: GCC 12 destroys such temporaries twice.
  std::function<store::IngestResult(store::Db&)> job = [p = std::move(p), records, now](store::Db& db) {
    return store::Store::ingest(db, p, records, now);
  };
  auto stored = co_await store::async_run<store::IngestResult>(store_, std::move(job));
  if (!stored.ok()) {
    spdlog::error("ingest: form {} from {} not stored: {}", form->instance_id, request.remote, stored.error().message);
    Reply r = xml_reply(503, false, "the form could not be stored (" + stored.error().message +
                                        "); nothing was kept, submit it again later");
    r.headers.emplace_back("Retry-After", "30");
    co_return r;
  }
  if (stored->duplicate) {
    co_return xml_reply(202, true, "form " + form->instance_id + " was already received with identical content; "
                                   "nothing new was queued", form->instance_id, 0);
  }
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto* r = targets[i];
    events_.emit("record.created", {{"record_id", records[i].id},
                                    {"repeater", r->name},
                                    {"connection", r->connection},
                                    {"domain", domain},
                                    {"payload_type", "form"},
                                    {"payload_id", form->instance_id},
                                    {"state", "pending"}});
    on_records_(r->name);
  }
  const int n = static_cast<int>(records.size());
  co_return xml_reply(201, true, "Thanks! Form " + form->instance_id + " received; " + std::to_string(n) +
                                     " repeat record(s) queued.", form->instance_id, n);
}

}  // namespace repeaterd::ingest
