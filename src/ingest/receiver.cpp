#include "ingest/receiver.hpp"

#include <spdlog/spdlog.h>

#include <boost/algorithm/string/case_conv.hpp>
#include <boost/algorithm/string/predicate.hpp>
#include <boost/algorithm/string/trim.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <set>

#include "common/encoding.hpp"
#include "common/ids.hpp"
#include "common/json_text.hpp"
#include "common/text.hpp"
#include "common/text_position.hpp"
#include "ingest/case_store.hpp"
#include "ingest/multipart.hpp"
#include "payload/case.hpp"
#include "payload/form_json.hpp"
#include "payload/untrusted.hpp"
#include "payload/xform.hpp"
#include "store/async.hpp"
#include "store/body_codec.hpp"

namespace repeaterd::ingest {

namespace {


// The token from "Bearer TOKEN" or "Basic base64(user:TOKEN)".
std::string presented_token(const std::string& authorization) {
  std::string_view a = authorization;
  if (boost::istarts_with(a, "Bearer ")) return boost::trim_copy(std::string(a.substr(7)));
  if (boost::istarts_with(a, "Basic ")) {
    const std::string decoded = base64_decode(boost::trim_copy(std::string(a.substr(6)))).value_or("");
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

// Messages quote request targets, decoded paths, form ids and attachment names, which need not
// be UTF-8: bad bytes are replaced rather than thrown on by dump().
Reply json_error(int status, const std::string& message) {
  Reply r;
  r.status = status;
  r.body = json_text::dump({{"error", message}}) + "\n";
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

namespace {

// Text as pugixml escapes PCDATA: the markup characters as entities, control characters other
// than tab, newline and carriage return as character references.
// Like pugixml given a C string, the text ends at a NUL byte (XML cannot carry one).
void append_xml_text(std::string& out, std::string_view text) {
  text = text.substr(0, text.find('\0'));
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      default:
        if (c < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') {
          out += "&#";  // always two digits, as pugixml writes them
          out += static_cast<char>('0' + c / 10);
          out += static_cast<char>('0' + c % 10);
          out += ';';
        } else {
          out += ch;
        }
    }
  }
}

}  // namespace

// Written directly (every submission is answered with one): the same text pugixml's
// save(out, "  ") gives for this document.
std::string openrosa_response(bool success, const std::string& message, const std::string& form_id,
                              int records_created) {
  std::string out;
  out.reserve(200 + message.size() + form_id.size());
  out += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\">\n";
  out += success ? "  <message nature=\"submit_success\">" : "  <message nature=\"submit_error\">";
  append_xml_text(out, message);
  out += "</message>\n";
  if (!form_id.empty()) {
    out += "  <form_id>";
    append_xml_text(out, form_id);
    out += "</form_id>\n";
  }
  if (records_created >= 0) {
    out += "  <records_created>" + std::to_string(records_created) + "</records_created>\n";
  }
  out += "</OpenRosaResponse>\n";
  return out;
}

namespace {

// Which endpoint a path names; decides the answers' format too (OpenRosa XML on the form
// receiver, JSON elsewhere) and the one method it takes.
enum class Endpoint { none, receiver, cases, apps, attachment };

struct Route {
  Endpoint endpoint = Endpoint::none;
  std::string domain;
  std::string app_id;   // apps: from the path; receiver: the ?app_id= parameter
  std::string form_id;  // attachment: percent-decoded, like every segment
  std::string name;     // attachment
};

// The first part of the route whose bytes are not UTF-8, or nullptr.
const char* non_utf8_part(const Route& r) {
  if (!valid_utf8(r.domain)) return "project space";
  if (!valid_utf8(r.app_id)) return "app id";
  if (!valid_utf8(r.form_id)) return "form id";
  if (!valid_utf8(r.name)) return "attachment name";
  return nullptr;
}

const char* method_of(Endpoint e) { return e == Endpoint::attachment ? "GET" : "POST"; }

Route route(const boost::urls::url_view& url) {
  std::vector<std::string> segs;
  for (auto seg : url.segments()) segs.push_back(seg);
  Route r;
  if (segs.size() < 3 || segs[0] != "a" || segs[1].empty()) return r;
  r.domain = segs[1];
  if (segs.size() == 3 && segs[2] == "receiver") {
    r.endpoint = Endpoint::receiver;
    if (auto it = url.params().find("app_id"); it != url.params().end()) r.app_id = (*it).value;
  } else if (segs.size() == 3 && segs[2] == "cases") {
    r.endpoint = Endpoint::cases;
  } else if (segs.size() == 4 && segs[2] == "apps" && !segs[3].empty()) {
    r.endpoint = Endpoint::apps;
    r.app_id = segs[3];
  } else if (segs.size() == 6 && segs[2] == "receiver" && segs[3] == "attachments" && !segs[4].empty() &&
             !segs[5].empty()) {
    r.endpoint = Endpoint::attachment;
    r.form_id = segs[4];
    r.name = segs[5];
  }
  return r;
}

Reply error_for(Endpoint e, int status, const std::string& message) {
  return e == Endpoint::receiver ? xml_reply(status, false, message) : json_error(status, message);
}

// The store could not do its job (disk full, locked): 503, and when to try again.
Reply store_unavailable(Endpoint e, const std::string& message) {
  Reply r = error_for(e, 503, message);
  r.headers.emplace_back("Retry-After", "30");
  return r;
}

// A submission answered in the format its client sent: OpenRosa XML to XForm clients,
// JSON to everyone else.
Reply success_for(bool xml, int status, const std::string& message, const std::string& id, int records,
                  const std::vector<std::string>& case_ids) {
  if (xml) return xml_reply(status, true, message, id, records);
  Reply r;
  r.status = status;
  r.body = json_text::dump({{"message", message}, {"id", id}, {"records_created", records}, {"case_ids", case_ids}}) +
           "\n";
  return r;
}

Endpoint endpoint_of(const std::string& target) {
  auto url = boost::urls::parse_origin_form(target);
  return url ? route(*url).endpoint : Endpoint::none;
}

}  // namespace

Reply Receiver::error_reply(int status, const std::string& message, const std::string& target) {
  return error_for(endpoint_of(target), status, message);
}

std::string Receiver::endpoint_name(const std::string& method, const std::string& target) {
  const Endpoint e = endpoint_of(target);
  if (e == Endpoint::none || method != method_of(e)) return "other";
  switch (e) {
    case Endpoint::receiver:
      return "receiver";
    case Endpoint::cases:
      return "cases";
    case Endpoint::apps:
      return "apps";
    case Endpoint::attachment:
      return "attachments";
    case Endpoint::none:
      break;
  }
  return "other";
}

Receiver::Receiver(config::ConfigHolder& config, store::Store& store, EventLog& events,
                   std::function<void(const std::string&)> on_records)
    : config_(config),
      store_(store),
      events_(events),
      on_records_(std::move(on_records)),
      parsed_cases_(std::make_shared<ParsedCases>()) {}

boost::asio::awaitable<Reply> Receiver::handle(IncomingRequest request) {
  auto url = boost::urls::parse_origin_form(request.target);
  if (!url) co_return json_error(400, "the request target \"" + request.target + "\" is not a valid path");
  const Route r = route(*url);
  if (r.endpoint == Endpoint::none) {
    co_return error_for(Endpoint::none, 404,
                        "no such endpoint: " + std::string(url->path()) +
                            " (POST /a/{domain}/receiver, /a/{domain}/cases or /a/{domain}/apps/{app_id}; "
                            "GET /a/{domain}/receiver/attachments/{form_id}/{name})");
  }
  if (const char* allowed = method_of(r.endpoint); request.method != allowed) {
    Reply reply = error_for(r.endpoint, 405, std::string("use ") + allowed + " on " + std::string(url->path()));
    reply.headers.emplace_back("Allow", allowed);
    co_return reply;
  }
  // Every id here is stored, logged and forwarded as text: bytes that are not UTF-8 (%FF) name
  // nothing and are refused before anything is read.
  if (const char* what = non_utf8_part(r)) {
    co_return error_for(r.endpoint, 400, std::string("the ") + what +
                                             " in the request target is not UTF-8 once percent-decoded; percent-encode "
                                             "its UTF-8 bytes; nothing was stored");
  }
  const std::shared_ptr<const config::Config> config = config_.get();
  switch (authenticate(config->ingest_tokens, request.authorization, r.domain)) {
    case AuthResult::ok:
      break;
    case AuthResult::missing: {
      Reply reply = error_for(r.endpoint, 401,
                              "authentication required: send \"Authorization: Bearer <token>\" (or Basic auth with "
                              "the token as the password) with an ingest token for project space \"" + r.domain + "\"");
      reply.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"repeaterd\"");
      co_return reply;
    }
    case AuthResult::unknown_token: {
      Reply reply = error_for(r.endpoint, 401,
                              "the token is not a known ingest token; check ingest_tokens in the configuration");
      reply.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"repeaterd\", error=\"invalid_token\"");
      co_return reply;
    }
    case AuthResult::wrong_domain:
      co_return error_for(r.endpoint, 403, "the token is valid but not for project space \"" + r.domain +
                                               "\"; use that project space's token or submit to the token's own");
  }
  if (r.endpoint == Endpoint::attachment) co_return co_await serve_attachment(r.domain, r.form_id, r.name);
  Read s = Rejection{404, ""};
  bool xml_client = false;
  switch (r.endpoint) {
    case Endpoint::receiver:
      xml_client = media_type(request.content_type) != "application/json";
      s = read_form(request, r.domain, r.app_id);
      break;
    case Endpoint::cases:
      s = read_cases(request, r.domain);
      break;
    case Endpoint::apps:
      s = read_app_change(request, r.domain, r.app_id);
      break;
    case Endpoint::none:
    case Endpoint::attachment:
      break;
  }
  if (auto* refused = std::get_if<Rejection>(&s)) {
    co_return error_for(xml_client ? Endpoint::receiver : Endpoint::cases, refused->status,
                        refused->reason + "; nothing was stored");
  }
  co_return co_await store_submission(std::move(std::get<Submission>(s)), xml_client, config);
}

namespace {

Rejection status_error(int status, std::string reason) { return {status, std::move(reason)}; }

// Case JSON carries every form of the case; only then are they read back from the store.
bool needs_xform_ids(const config::Config& config) {
  return std::any_of(config.repeaters.begin(), config.repeaters.end(), [](const config::Repeater& r) {
    return r.type == config::RepeaterType::case_ && r.format == config::PayloadFormat::json;
  });
}

const char* kReceiverTypes =
    "submit the XForm as text/xml or application/xml, as OpenRosa multipart/form-data with the form in the part "
    "xml_submission_file, or a JSON submission as application/json";

}  // namespace

Receiver::Read Receiver::read_form(IncomingRequest& request, const std::string& domain, const std::string& app_id) {
  const std::string type = media_type(request.content_type);
  Submission s;
  s.payload.domain = domain;
  s.payload.app_id = app_id;
  s.payload.received_on = now_micros();
  s.phone_submission = !request.openrosa_version.empty();
  s.submit_ip = request.remote_address;
  if (type == "application/json") {
    auto j = payload::parse_json_submission(request.body);
    if (!j) return status_error(400, j.error().message);
    s.kind = SubmissionKind::json_form;
    s.payload.payload_type = "form";
    s.payload.payload_id = j->instance_id;
    s.payload.xmlns = j->xmlns;
    s.payload.content_type = "application/json";
    s.payload.body = std::move(request.body);
    return s;
  }
  std::string xml;
  if (type == "multipart/form-data") {
    auto parts = parse_multipart(request.content_type, request.body);
    if (!parts) return status_error(400, "malformed multipart/form-data: " + parts.error().message);
    bool found = false;
    for (auto& part : *parts) {
      if (part.name == "xml_submission_file" && !found) {
        xml = std::move(part.body);
        found = true;
      } else {
        s.attachments.push_back({part.name, part.filename, part.content_type, std::move(part.body)});
      }
    }
    if (!found) return status_error(400, "the multipart submission has no part named xml_submission_file (the XForm)");
    std::set<std::string> names;
    for (const auto& a : s.attachments) {
      if (!names.insert(a.name).second) return status_error(400, "two attachments are named \"" + a.name + "\"");
    }
  } else if (type == "text/xml" || type == "application/xml") {
    xml = std::move(request.body);
  } else {
    return status_error(415, "unsupported Content-Type \"" + request.content_type + "\": " + kReceiverTypes);
  }
  auto form = payload::parse_xform(xml);
  if (!form) return status_error(400, form.error().message);
  s.kind = form->device_report ? SubmissionKind::device_report : SubmissionKind::xform;
  s.payload.payload_type = form->device_report ? "device_report" : "form";
  s.payload.payload_id = form->instance_id;
  s.payload.xmlns = form->xmlns;
  s.payload.content_type = "text/xml";
  s.payload.body = std::move(xml);
  s.user_id = form->user_id;
  s.xform = form->document;
  if (!form->device_report) {
    auto blocks = payload::find_case_blocks(form->document->document_element(), s.payload.body);
    if (!blocks) return status_error(422, blocks.error().message);
    s.case_blocks = std::move(*blocks);
  }
  return s;
}

Receiver::Read Receiver::read_cases(IncomingRequest& request, const std::string& domain) {
  const std::string type = media_type(request.content_type);
  Submission s;
  s.kind = SubmissionKind::cases;
  s.payload.domain = domain;
  s.payload.payload_type = "case";
  // Case updates have no form of their own; like CommCare's system forms they get an id.
  s.payload.payload_id = uuid_v4();
  s.payload.received_on = now_micros();
  if (type == "application/json") {
    auto blocks = payload::parse_case_json(request.body);
    if (!blocks) return status_error(blocks.error().message.rfind("case", 0) == 0 ? 422 : 400, blocks.error().message);
    s.case_blocks = std::move(*blocks);
    s.payload.content_type = "application/json";
  } else if (type == "text/xml" || type == "application/xml") {
    pugi::xml_document doc;
    if (auto loaded = payload::load_untrusted_xml(doc, request.body); !loaded) {
      return status_error(400, loaded.error().message);
    }
    auto blocks = payload::find_case_blocks(doc, request.body);
    if (!blocks) return status_error(422, blocks.error().message);
    s.case_blocks = std::move(*blocks);
    s.payload.content_type = "text/xml";
  } else {
    return status_error(415, "unsupported Content-Type \"" + request.content_type +
                                 "\": send case blocks as text/xml or case objects as application/json");
  }
  if (s.case_blocks.empty()) {
    return status_error(400, "no case blocks found: send <case xmlns=\"http://commcarehq.org/case/transaction/v2\" "
                             "case_id=\"...\"> elements, or JSON objects with a case_id");
  }
  s.payload.body = std::move(request.body);
  return s;
}

Receiver::Read Receiver::read_app_change(IncomingRequest& request, const std::string& domain,
                                             const std::string& app_id) {
  Submission s;
  s.kind = SubmissionKind::app_change;
  s.payload.domain = domain;
  s.payload.payload_type = "app";
  s.payload.payload_id = uuid_v4();  // every save or build is an event of its own
  s.payload.app_id = app_id;
  s.payload.received_on = now_micros();
  s.payload.content_type = request.content_type.empty() ? "application/json" : request.content_type;
  if (!boost::trim_copy(request.body).empty()) {
    if (auto checked = payload::check_untrusted_json(request.body); !checked) {
      return status_error(400, checked.error().message);
    }
    auto j = nlohmann::json::parse(request.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || (j.contains("build_id") && !j["build_id"].is_string())) {
      return status_error(400, "an app change is an empty body (the app was saved) or {\"build_id\": \"...\"} (a "
                               "version was built)");
    }
    if (j.contains("build_id")) s.build_id = j["build_id"].get<std::string>();
  }
  s.payload.body = std::move(request.body);
  return s;
}

boost::asio::awaitable<Reply> Receiver::store_submission(Submission s, bool xml_client,
                                                         std::shared_ptr<const config::Config> config) {
  const Micros now = s.payload.received_on;
  store::prepare_payload(s.payload);  // digest and compression here, not on the writer thread
  auto shared = std::make_shared<Submission>(std::move(s));
  auto records = std::make_shared<std::vector<store::NewRecord>>();
  auto cases = std::make_shared<std::vector<payload::CaseState>>();
  // Named, not a temporary in the co_await expression: GCC 12 destroys such temporaries twice.
  std::function<store::IngestResult(store::Db&)> job = [config, shared, records, cases, now,
                                                        parsed = parsed_cases_](store::Db& db) {
    Submission& sub = *shared;
    store::IngestResult out;
    const std::string& digest = sub.payload.sha256;
    const auto latest = store::Store::latest_version(db, sub.payload);
    if (latest && latest->digest == digest) {
      out.duplicate = true;
      return out;
    }
    // The same id with other bytes: an edit, which replaces the earlier form's case blocks.
    if (latest) sub.edit_of_received_on = latest->received_on;
    const std::vector<std::string>* edited_cases = latest ? &latest->case_ids : nullptr;
    auto changes = apply_and_save_cases(db, sub, edited_cases, needs_xform_ids(*config), parsed.get());
    if (!changes) {
      out.rejected = changes.error().message;
      return out;
    }
    for (auto& c : *changes) {
      if (!c.form.blocks.empty()) sub.payload.case_ids.push_back(c.state.case_id);
      cases->push_back(std::move(c.state));
    }
    *records = make_records(*config, sub, *cases, now);
    out = store::Store::insert(db, sub.payload, digest, *records, now);
    store::Store::add_attachments(db, out.payload_row, sub.attachments);
    return out;
  };
  auto stored = co_await store::async_run<store::IngestResult>(store_, std::move(job));
  const auto& p = shared->payload;
  if (!stored.ok()) {
    spdlog::error("ingest: {} {} not stored: {}", p.payload_type, p.payload_id, stored.error().message);
    co_return store_unavailable(xml_client ? Endpoint::receiver : Endpoint::cases,
                                "the submission could not be stored (" + stored.error().message +
                                    "); nothing was kept, submit it again later");
  }
  if (!stored->rejected.empty()) {
    co_return error_for(xml_client ? Endpoint::receiver : Endpoint::cases, 422,
                        stored->rejected + "; the whole submission was rejected and nothing was stored");
  }
  const std::vector<std::string> case_ids = touched_case_ids(shared->case_blocks);
  if (stored->duplicate) {
    co_return success_for(xml_client, 202,
                          p.payload_type + " " + p.payload_id +
                              " was already received with identical content; nothing new was queued",
                          p.payload_id, 0, case_ids);
  }
  for (const auto& rec : *records) {
    const config::Repeater* r = config->find_repeater(rec.repeater);
    events_.emit("record.created", {{"record_id", rec.id},
                                    {"repeater", rec.repeater},
                                    {"connection", r != nullptr ? r->connection : ""},
                                    {"domain", p.domain},
                                    {"payload_type", rec.case_id.empty() ? p.payload_type : "case"},
                                    {"payload_id", rec.case_id.empty() ? p.payload_id : rec.case_id},
                                    {"state", "pending"}});
    on_records_(rec.repeater);
  }
  const int n = static_cast<int>(records->size());
  std::string what = p.payload_type == "form" ? "Thanks! Form " + p.payload_id + " received"
                     : p.payload_type == "device_report" ? "Device report received (stored, not forwarded)"
                     : p.payload_type == "case" ? std::to_string(case_ids.size()) + " case(s) updated"
                                                : "App change for " + p.app_id + " received";
  co_return success_for(xml_client, 201, what + "; " + std::to_string(n) + " repeat record(s) queued.", p.payload_id, n,
                        case_ids);
}

boost::asio::awaitable<Reply> Receiver::serve_attachment(std::string domain, std::string form_id,
                                                         std::string name) {
  // A read, but still a store job: the writer thread owns the only connection.
  std::function<store::AttachmentLookup(store::Db&)> job = [domain, form_id, name](store::Db& db) {
    return store::Store::load_attachment(db, domain, form_id, name);
  };
  auto found = co_await store::async_run<store::AttachmentLookup>(store_, std::move(job));
  if (!found.ok()) {
    spdlog::error("ingest: attachment \"{}\" of form {} not read: {}", name, form_id, found.error().message);
    co_return store_unavailable(Endpoint::attachment,
                                "the attachment could not be read (" + found.error().message + "); try again later");
  }
  if (!found->form_found) {
    co_return error_for(Endpoint::attachment, 404,
                        "no form \"" + form_id + "\" has been received for project space \"" + domain +
                            "\" (or it has been purged); check the form id in the URL, which is the form's "
                            "meta/instanceID");
  }
  if (!found->attachment) {
    std::string has;
    for (std::size_t i = 0; i < found->names.size() && i < 20; ++i) has += (i ? ", \"" : "\"") + found->names[i] + "\"";
    if (found->names.size() > 20) has += ", ...";
    co_return error_for(Endpoint::attachment, 404,
                        "form \"" + form_id + "\" has no attachment named \"" + name + "\"; " +
                            (has.empty() ? std::string("its latest submission has no attachments")
                                         : "its latest submission has " + has) +
                            " (names are the multipart part names, percent-encoded in the URL)");
  }
  store::NewAttachment& a = *found->attachment;
  Reply r;
  r.status = 200;
  // The stored type came from the client; one that cannot be a header value is not passed on.
  const bool printable = std::all_of(a.content_type.begin(), a.content_type.end(),
                                     [](char c) { return c >= 0x20 && c < 0x7f; });
  r.content_type = a.content_type.empty() || !printable ? "application/octet-stream" : a.content_type;
  // The bytes are the submitter's: never let a browser sniff them into something it runs.
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  const std::string& filename = a.filename.empty() ? a.name : a.filename;
  std::string ascii;
  for (char c : filename) ascii += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? c : '_';
  r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" +
                                                    boost::urls::encode(filename, boost::urls::unreserved_chars));
  r.body = std::move(a.body);
  co_return r;
}

}  // namespace repeaterd::ingest
