#include "ingest/submission.hpp"

#include <algorithm>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <nlohmann/json.hpp>
#include <set>

#include "common/ids.hpp"
#include "common/json_text.hpp"
#include "payload/form_json.hpp"

namespace repeaterd::ingest {
namespace {

using config::PayloadFormat;
using config::RepeaterType;

bool listed(const std::vector<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

// A JSON body, wrapped in the repeater's template when it has one.
std::string json_body(const config::Repeater& r, std::string json) {
  return r.body_template ? payload::apply_template(*r.body_template, json) : json;
}

std::string header_json(const char* name, const std::string& value) {
  return json_text::dump({{name, value}});
}

}  // namespace

std::vector<std::string> touched_case_ids(const std::vector<payload::CaseBlock>& blocks) {
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (const auto& b : blocks) {
    if (seen.insert(b.case_id).second) ids.push_back(b.case_id);
  }
  return ids;
}

std::vector<store::NewRecord> make_records(const config::Config& config, const Submission& s,
                                           const std::vector<payload::CaseState>& cases, Micros now) {
  std::vector<store::NewRecord> out;
  const auto& p = s.payload;
  const std::string received_on = format_iso8601(p.received_on);
  const bool is_form = s.kind == SubmissionKind::xform || s.kind == SubmissionKind::json_form;
  std::optional<std::string> form_json;  // rendered once, for every form/json repeater

  auto add = [&](const config::Repeater& r, std::string content_type, std::optional<std::string> body,
                 std::string headers, std::string case_id = {}) {
    store::NewRecord rec;
    rec.id = uuid_v7(now);
    rec.repeater = r.name;
    rec.content_type = std::move(content_type);
    rec.body = std::move(body);
    rec.headers_json = std::move(headers);
    rec.case_id = std::move(case_id);
    rec.ordered = r.ordered;
    out.push_back(std::move(rec));
    return &out.back();
  };

  for (const auto& r : config.repeaters) {
    if (r.domain && *r.domain != p.domain) continue;
    if (listed(r.filters.exclude_users, s.user_id) && !s.user_id.empty()) continue;
    switch (r.type) {
      case RepeaterType::form: {
        if (!is_form) break;
        if (!r.filters.form_xmlns.empty() && !listed(r.filters.form_xmlns, p.xmlns)) break;
        // HQ's FormRepeater.get_url adds ?app_id= whatever the format.
        auto with_app_id = [&](store::NewRecord* rec) {
          if (r.include_app_id_param && !p.app_id.empty()) {
            rec->query = "app_id=" + boost::urls::encode(p.app_id, boost::urls::unreserved_chars);
          }
        };
        if (s.kind == SubmissionKind::json_form) {
          // A JSON submission has no XML to send: JSON repeaters get it as submitted.
          if (r.format != PayloadFormat::json) break;
          with_app_id(add(r, "application/json", json_body(r, p.body), header_json("Received-On", received_on)));
          break;
        }
        if (r.format == PayloadFormat::xml) {
          with_app_id(add(r, "text/xml", std::nullopt, header_json("Received-On", received_on)));
          break;
        }
        if (!form_json) {
          form_json = payload::render_form_json(s.xform->document_element(), [&] {
            payload::FormJsonFields f;
            f.id = p.payload_id;
            f.domain = p.domain;
            f.app_id = p.app_id;
            f.received_on = s.edit_of_received_on.value_or(p.received_on);
            f.server_modified_on = p.received_on;
            if (s.edit_of_received_on) {
              f.edited_on = p.received_on;
              f.edited_by_user_id = s.user_id;
            }
            f.is_phone_submission = s.phone_submission;
            f.submit_ip = s.submit_ip;
            for (const auto& a : s.attachments) f.attachments.push_back({a.name, a.content_type, a.body.size()});
            if (!config.listen.public_url.empty()) {
              const auto seg = [](const std::string& v) { return boost::urls::encode(v, boost::urls::unreserved_chars); };
              f.attachment_url_base =
                  config.listen.public_url + "/a/" + seg(p.domain) + "/receiver/attachments/" + seg(p.payload_id);
            }
            return f;
          }());
        }
        with_app_id(add(r, "application/json", json_body(r, *form_json), header_json("Received-On", received_on)));
        break;
      }
      case RepeaterType::form_stub: {
        if (s.kind != SubmissionKind::xform) break;
        if (!r.filters.form_xmlns.empty() && !listed(r.filters.form_xmlns, p.xmlns)) break;
        add(r, "application/json",
            json_body(r, payload::render_form_stub(received_on, p.payload_id, touched_case_ids(s.case_blocks))),
            header_json("Received-On", received_on));
        break;
      }
      case RepeaterType::case_: {
        for (const auto& c : cases) {
          if (!r.filters.case_types.empty() && !listed(r.filters.case_types, c.case_type)) continue;
          // Case posts have no submitting form user: the case's own user decides.
          if (!c.user_id.empty() && listed(r.filters.exclude_users, c.user_id)) continue;
          const std::string modified = header_json("Server-Modified-On", format_iso8601(c.server_modified_on));
          if (r.format == PayloadFormat::xml) {
            add(r, "text/xml", payload::render_case_xml(c), modified, c.case_id);
          } else {
            add(r, "application/json", json_body(r, payload::render_case_json(c)), modified, c.case_id);
          }
        }
        break;
      }
      case RepeaterType::app_structure: {
        if (s.kind != SubmissionKind::app_change) break;
        // HQ's AppStructureGenerator sends the id with its generator's default type, text/xml.
        add(r, "text/xml", s.build_id.empty() ? p.app_id : s.build_id, "{}");
        break;
      }
    }
  }
  return out;
}

}  // namespace repeaterd::ingest
