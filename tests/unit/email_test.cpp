#include "notify/compose.hpp"
#include "notify/smtp.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "common/encoding.hpp"
#include "notify/mail_text.hpp"
#include "temp_dir.hpp"

extern char** environ;

namespace repeaterd::notify {
namespace {

using store::Notification;

constexpr Micros kSecond = 1'000'000;
// Mon, 23 Nov 2026 15:41:58 UTC
constexpr Micros kNow = 1795448518 * kSecond;

// ---------------------------------------------------------------------------------------------
// A small reader for what compose() writes, so the tests check what a mail client would see.

struct Parsed {
  std::string raw_headers;
  std::map<std::string, std::string> headers;  // unfolded, name as written
  std::string raw_body;
  std::string body;  // quoted-printable decoded
};

std::string decode_quoted_printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '=') {
      out += s[i];
      continue;
    }
    if (s.substr(i + 1, 2) == "\r\n") {  // soft line break
      i += 2;
      continue;
    }
    out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  // Back to the "\n" line breaks the caller's text used.
  std::string lf;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '\r' && i + 1 < out.size() && out[i + 1] == '\n') continue;
    lf += out[i];
  }
  return lf;
}

// RFC 2047: adjacent encoded-words are joined without the white space between them (but a
// space encoded inside a word stays).
std::string decode_encoded_words(std::string_view s) {
  std::string out;
  bool previous_encoded = false;
  std::size_t decoded_end = 0;  // where the last encoded-word's text ends in `out`
  std::size_t i = 0;
  while (i < s.size()) {
    if (s.substr(i, 10) == "=?UTF-8?B?") {
      const std::size_t end = s.find("?=", i + 10);
      auto bytes = base64_decode(s.substr(i + 10, end - i - 10));
      EXPECT_TRUE(bytes.has_value());
      if (previous_encoded) out.resize(decoded_end);
      out += bytes.value_or("");
      decoded_end = out.size();
      i = end + 2;
      previous_encoded = true;
    } else {
      out += s[i++];
      if (s[i - 1] != ' ') previous_encoded = false;
    }
  }
  return out;
}

Parsed parse(const std::string& msg) {
  Parsed p;
  const std::size_t split = msg.find("\r\n\r\n");
  EXPECT_NE(split, std::string::npos);
  p.raw_headers = msg.substr(0, split + 2);
  p.raw_body = msg.substr(split + 4);
  std::string unfolded;
  for (std::size_t i = 0; i < p.raw_headers.size(); ++i) {
    if (p.raw_headers.compare(i, 3, "\r\n ") == 0 || p.raw_headers.compare(i, 3, "\r\n\t") == 0) {
      ++i;  // drop the CRLF, keep the white space (RFC 5322 §2.2.3)
      continue;
    }
    unfolded += p.raw_headers[i];
  }
  std::istringstream lines(unfolded);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::size_t colon = line.find(':');
    EXPECT_NE(colon, std::string::npos) << line;
    EXPECT_EQ(p.headers.count(line.substr(0, colon)), 0u) << "duplicate header " << line;
    std::string value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.erase(0, 1);
    p.headers[line.substr(0, colon)] = value;
  }
  p.body = decode_quoted_printable(p.raw_body);
  return p;
}

// Every line ends in CRLF, none is longer than the limit, no bare CR or LF anywhere.
void expect_wire_format(const std::string& msg) {
  ASSERT_GE(msg.size(), 2u);
  EXPECT_EQ(msg.substr(msg.size() - 2), "\r\n");
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < msg.size(); ++i) {
    if (msg[i] == '\r') {
      ASSERT_TRUE(i + 1 < msg.size() && msg[i + 1] == '\n') << "bare CR at " << i;
    } else if (msg[i] == '\n') {
      ASSERT_TRUE(i > 0 && msg[i - 1] == '\r') << "bare LF at " << i;
      EXPECT_LE(i - 1 - line_start, 998u) << "line at " << line_start;
      line_start = i + 1;
    }
  }
  // Headers also keep to the 78 characters RFC 5322 recommends; the QP body to 76.
  const std::size_t split = msg.find("\r\n\r\n");
  std::size_t pos = 0;
  while (pos < msg.size()) {
    const std::size_t end = msg.find("\r\n", pos);
    EXPECT_LE(end - pos, pos < split ? 78u : 76u) << msg.substr(pos, end - pos);
    pos = end + 2;
  }
}

// White space collapsed, so phrases can be found across the body's word wrapping.
std::string squeeze(std::string_view s) { return squeeze_spaces(s); }

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "missing: " << (needle) << "\nin:\n" << (haystack)

Notification failure(int n = 1) {
  Notification e;
  e.id = n;
  e.kind = Notification::Kind::failed;
  e.at = kNow - 60 * kSecond;
  e.record_id = "0190c5a2-0000-7000-8000-" + std::to_string(100000000000 + n);
  e.repeater = "forms-to-openfn";
  e.domain = "demo";
  e.payload_type = "form";
  e.payload_id = "f0rm-" + std::to_string(n);
  e.attempt = 2;
  e.http_status = 500;
  e.error = "HTTP 500 Internal Server Error: {\"error\": \"database is down\"}";
  e.next_attempt_at = kNow + 180 * kSecond;
  return e;
}

Notification cancellation(int n = 1) {
  Notification e = failure(n);
  e.kind = Notification::Kind::cancelled;
  e.attempt = 8;
  e.http_status = 413;
  e.error = "HTTP 413 Payload Too Large: body exceeds 1 MiB";
  e.next_attempt_at.reset();
  return e;
}

Message message(std::vector<Notification> events) {
  Message m;
  m.from = "repeaterd@example.org";
  m.to = {"data-team@example.org", "alice@example.org"};
  m.connection = "openfn";
  m.url = "https://app.openfn.org/i/abc123";
  m.config_file = "/etc/repeaterd/repeaterd.yaml";
  m.events = std::move(events);
  m.now = kNow;
  m.message_id_domain = "host.example.org";
  return m;
}

void expect_standard_headers(const Parsed& p) {
  EXPECT_EQ(p.headers.at("Date"), "Mon, 23 Nov 2026 15:41:58 +0000");
  EXPECT_EQ(p.headers.at("From"), "repeaterd@example.org");
  EXPECT_EQ(p.headers.at("To"), "data-team@example.org, alice@example.org");
  EXPECT_EQ(p.headers.at("MIME-Version"), "1.0");
  EXPECT_EQ(p.headers.at("Content-Type"), "text/plain; charset=UTF-8");
  EXPECT_EQ(p.headers.at("Content-Transfer-Encoding"), "quoted-printable");
  const std::string& id = p.headers.at("Message-ID");
  ASSERT_EQ(id.size(), 1 + 36 + 1 + std::string("host.example.org").size() + 1) << id;
  EXPECT_EQ(id.front(), '<');
  EXPECT_EQ(id.substr(37), "@host.example.org>");
}

void expect_stop_section(const std::string& body) {
  const std::string b = squeeze(body);
  EXPECT_CONTAINS(b, "How to stop these emails");
  EXPECT_CONTAINS(b, "connections[].notify for the connection \"openfn\" in /etc/repeaterd/repeaterd.yaml");
  EXPECT_CONTAINS(b, "remove your address");
  EXPECT_CONTAINS(b, "systemctl restart repeaterd");
  EXPECT_CONTAINS(b, "at most one email per connection in each smtp.throttle window");
}

// compose(), checked for what every email must be on the wire and in its headers, read back as
// a mail client would.
Parsed compose_checked(const Message& m) {
  const std::string msg = compose(m);
  expect_wire_format(msg);
  Parsed p = parse(msg);
  expect_standard_headers(p);
  return p;
}

std::string subject(const Parsed& p) { return decode_encoded_words(p.headers.at("Subject")); }

TEST(EmailCompose, SingleFailureNamesEverythingTheRecipientNeeds) {
  const std::string msg = compose(message({failure()}));
  expect_wire_format(msg);
  const Parsed p = parse(msg);
  expect_standard_headers(p);
  EXPECT_EQ(p.headers.at("Subject"), "[repeaterd] forwarding to openfn failed: demo form f0rm-1");
  const std::string b = squeeze(p.body);
  EXPECT_CONTAINS(b, "A record could not be forwarded to openfn and will be retried.");
  EXPECT_CONTAINS(b, "Project space: demo");
  EXPECT_CONTAINS(b, "URL: https://app.openfn.org/i/abc123");
  EXPECT_CONTAINS(b, "Form id: f0rm-1");
  EXPECT_CONTAINS(b, "Record id: 0190c5a2-0000-7000-8000-100000000001");
  EXPECT_CONTAINS(b, "Repeater: forms-to-openfn");
  EXPECT_CONTAINS(b, "Attempt: 2");
  EXPECT_CONTAINS(b, "Next retry: 2026-11-23T15:44:58.000000Z");
  EXPECT_CONTAINS(b, "HTTP status: 500");
  // The error is quoted verbatim on its own line.
  EXPECT_CONTAINS(p.body, "\n    HTTP 500 Internal Server Error: {\"error\": \"database is down\"}\n");
  EXPECT_EQ(b.find("cancelled"), std::string::npos);
  expect_stop_section(p.body);
}

TEST(EmailCompose, SingleCancellationSaysItWillNotBeRetried) {
  Notification e = cancellation();
  e.payload_type = "case";
  e.payload_id = "c4se-9";
  const std::string msg = compose(message({e}));
  expect_wire_format(msg);
  const Parsed p = parse(msg);
  expect_standard_headers(p);
  EXPECT_EQ(p.headers.at("Subject"), "[repeaterd] record cancelled for openfn: demo case c4se-9");
  const std::string b = squeeze(p.body);
  EXPECT_CONTAINS(b, "A record for openfn was cancelled and will not be retried.");
  EXPECT_CONTAINS(b, "Project space: demo");
  EXPECT_CONTAINS(b, "URL: https://app.openfn.org/i/abc123");
  EXPECT_CONTAINS(b, "Case id: c4se-9");
  EXPECT_CONTAINS(b, "Record id: 0190c5a2-0000-7000-8000-100000000001");
  EXPECT_CONTAINS(b, "Attempt: 8");
  EXPECT_CONTAINS(b, "Next retry: cancelled");
  EXPECT_CONTAINS(p.body, "\n    HTTP 413 Payload Too Large: body exceeds 1 MiB\n");
  EXPECT_CONTAINS(b, "sent again once the cause is fixed");
  expect_stop_section(p.body);
}

TEST(EmailCompose, NetworkErrorIsQuotedLineByLine) {
  Notification e = failure();
  e.http_status.reset();
  e.error = "TLS handshake failed:\r\ncertificate verify failed (self-signed certificate)";
  const Parsed p = parse(compose(message({e})));
  EXPECT_CONTAINS(p.body, "\n    TLS handshake failed:\n    certificate verify failed (self-signed certificate)\n");
  EXPECT_EQ(p.body.find("HTTP status"), std::string::npos);
}

TEST(EmailCompose, SummaryOf25EventsCountsListsTwentyAndSaysHowManyMore) {
  std::vector<Notification> events;
  for (int i = 1; i <= 25; ++i) events.push_back(i % 5 == 0 ? cancellation(i) : failure(i));
  // A long error is shortened to one line in the list.
  events[0].error = "HTTP 502 Bad Gateway:\n" + std::string(2000, 'x');
  const std::string msg = compose(message(events));
  expect_wire_format(msg);
  const Parsed p = parse(msg);
  expect_standard_headers(p);
  EXPECT_EQ(p.headers.at("Subject"), "[repeaterd] openfn: 20 failed, 5 cancelled");
  const std::string b = squeeze(p.body);
  EXPECT_CONTAINS(b, "20 failed (will be retried), 5 cancelled (will not be retried)");
  EXPECT_CONTAINS(b, "Project space: demo");
  EXPECT_CONTAINS(b, "URL: https://app.openfn.org/i/abc123");
  std::size_t listed = 0;
  std::istringstream lines(p.body);
  std::string line;
  std::size_t record_lines = 0;
  while (std::getline(lines, line)) {
    if (line.find(". Record 0190c5a2-") != std::string::npos) ++record_lines;
  }
  EXPECT_EQ(record_lines, 20u);
  for (int i = 1; i <= 25; ++i) {
    if (b.find("form f0rm-" + std::to_string(i) + " ") != std::string::npos) ++listed;
  }
  EXPECT_EQ(listed, 20u);
  // Cancelled records, which need someone to act, come first.
  EXPECT_CONTAINS(b, "1. Record 0190c5a2-0000-7000-8000-100000000005: form f0rm-5 (project space demo, repeater forms-to-openfn) cancelled, attempt 8 Error: HTTP 413 Payload Too Large");
  EXPECT_CONTAINS(b, "failed, attempt 2, next retry 2026-11-23T15:44:58.000000Z");
  EXPECT_CONTAINS(b, "and 5 more");
  // The 2000-character error is cut to about 300 characters on its one line.
  const std::size_t err = p.body.find("Error: HTTP 502 Bad Gateway: xxx");
  ASSERT_NE(err, std::string::npos);
  const std::size_t eol = p.body.find('\n', err);
  EXPECT_LT(eol - err, 320u);
  EXPECT_GT(eol - err, 280u);
  expect_stop_section(p.body);
}

TEST(EmailCompose, TwoEventsOfOneRecordAreOneRecord) {
  // Failed, then cancelled within the same throttle window: one cancelled record.
  const Parsed p = parse(compose(message({failure(1), cancellation(1)})));
  EXPECT_EQ(p.headers.at("Subject"), "[repeaterd] record cancelled for openfn: demo form f0rm-1");
  const Parsed q = parse(compose(message({failure(1), failure(2), cancellation(1)})));
  EXPECT_EQ(q.headers.at("Subject"), "[repeaterd] openfn: 1 failed, 1 cancelled");
}

TEST(EmailCompose, NonAsciiErrorSurvivesAndNonAsciiSubjectIsEncoded) {
  Notification e = failure();
  e.domain = "santé-publique-côte-d’ivoire-région-des-lacs-et-des-montagnes";
  e.error = "HTTP 500 Erreur interne: la base de données est indisponible — réessayez 🙂";
  const std::string msg = compose(message({e}));
  expect_wire_format(msg);
  const Parsed p = parse(msg);
  EXPECT_CONTAINS(p.raw_headers, "Subject: =?UTF-8?B?");
  // Folded over several lines, each within 78 characters (checked by expect_wire_format).
  EXPECT_CONTAINS(p.raw_headers, "?=\r\n =?UTF-8?B?");
  EXPECT_EQ(decode_encoded_words(p.headers.at("Subject")),
            "[repeaterd] forwarding to openfn failed: " + e.domain + " form f0rm-1");
  EXPECT_CONTAINS(p.body, "\n    " + e.error + "\n");
  EXPECT_CONTAINS(p.body, "Project space:  " + e.domain + "\n");
  // The raw body is 7-bit.
  for (char c : p.raw_body) EXPECT_LT(static_cast<unsigned char>(c), 128u);
}

TEST(EmailCompose, InvalidUtf8AndControlBytesAreReplaced) {
  Notification e = failure();
  e.error = std::string("caf\xE9 \x1B[31mred\x00!", 15);
  const Parsed p = parse(compose(message({e})));
  EXPECT_CONTAINS(p.body, "    caf\xEF\xBF\xBD \xEF\xBF\xBD[31mred\xEF\xBF\xBD!\n");
}

TEST(EmailCompose, LongLinesBareLineFeedsAndDotsAreSafeOnTheWire) {
  Notification e = failure();
  const std::string long_line(5000, 'y');
  e.error = "first\n.\nFrom the server\r" + long_line + " \nlast  ";
  const std::string msg = compose(message({e}));
  expect_wire_format(msg);
  EXPECT_EQ(msg.find("\r\n.\r\n"), std::string::npos);
  EXPECT_EQ(msg.find("\r\nFrom "), std::string::npos);
  const Parsed p = parse(msg);
  EXPECT_CONTAINS(p.body, "    first\n    .\n    From the server\n    " + long_line + " \n    last  \n");
}

TEST(EmailCompose, HeaderFieldsCannotInjectHeaders) {
  Message m = message({failure()});
  m.connection = "openfn\r\nBcc: victim@example.org";
  m.to = {"a@example.org\r\nBcc: x@example.org"};
  const std::string msg = compose(m);
  expect_wire_format(msg);
  const Parsed p = parse(msg);
  EXPECT_EQ(p.headers.count("Bcc"), 0u);
}

TEST(EmailCompose, UrlCredentialsNeverReachTheEmail) {
  Message m = message({failure()});
  m.url = "https://user:hunter2@app.openfn.org/i/abc123";
  const std::string msg = compose(m);
  EXPECT_EQ(msg.find("hunter2"), std::string::npos);
  EXPECT_CONTAINS(parse(msg).body, "https://app.openfn.org/i/abc123");
}

TEST(EmailCompose, LongRecipientListIsFoldedAndMessageIdsAreUnique) {
  Message m = message({failure()});
  m.to.clear();
  for (int i = 0; i < 12; ++i) m.to.push_back("person-" + std::to_string(i) + "@example.org");
  const std::string a = compose(m);
  const std::string b = compose(m);
  expect_wire_format(a);
  const Parsed p = parse(a);
  EXPECT_EQ(p.headers.at("To").substr(0, 52), "person-0@example.org, person-1@example.org, person-2");
  EXPECT_CONTAINS(p.headers.at("To"), "person-11@example.org");
  EXPECT_NE(p.headers.at("Message-ID"), parse(b).headers.at("Message-ID"));
}

// -- circuit changes

Notification circuit_opened(int id = 30) {
  Notification e;
  e.id = id;
  e.kind = Notification::Kind::circuit_opened;
  e.at = kNow - 30 * kSecond;
  e.attempt = 5;  // consecutive failures
  e.http_status = 503;
  e.error = "HTTP 503 Service Unavailable: upstream connect error";
  e.next_attempt_at = kNow - 25 * kSecond;
  e.backlog = 1234;
  return e;
}

Notification circuit_closed(int id = 31) {
  Notification e;
  e.id = id;
  e.kind = Notification::Kind::circuit_closed;
  e.at = kNow - 5 * kSecond;
  e.outage_ms = 12 * 60'000 + 5'300;
  e.backlog = 1;
  return e;
}

// What an email whose newest circuit change is circuit_closed() starts with.
const std::string kClosedSubject =
    "[repeaterd] openfn: circuit closed — https://app.openfn.org/i/abc123 is answering again";
const std::string kClosedOpening =
    "The circuit for openfn closed: https://app.openfn.org/i/abc123 is\n"
    "answering again.\n"
    "\n";

// circuit_opened() as a summary lists it.
const std::string kOpenedLine =
    "- Circuit opened at 2026-11-23T15:41:28.000000Z after 5 consecutive failures; first probe "
    "2026-11-23T15:41:33.000000Z; 1234 records waiting. Last error: HTTP 503 Service Unavailable: "
    "upstream connect error\n";

TEST(EmailCompose, CircuitOpenedSaysWhatFailsAndThatRecordsWaitWithoutUsingTheirBudget) {
  const Parsed p = compose_checked(message({circuit_opened()}));
  EXPECT_EQ(subject(p),
            "[repeaterd] openfn: circuit opened — https://app.openfn.org/i/abc123 is failing");
  EXPECT_CONTAINS(p.body,
                  "Connection:     openfn\n"
                  "URL:            https://app.openfn.org/i/abc123\n"
                  "Failures:       5 in a row\n"
                  "Opened at:      2026-11-23T15:41:28.000000Z\n"
                  "First probe:    2026-11-23T15:41:33.000000Z\n"
                  "Backlog:        1234 records waiting\n"
                  "HTTP status:    503\n"
                  "\n"
                  "The last error, as reported:\n"
                  "\n"
                  "    HTTP 503 Service Unavailable: upstream connect error\n");
  const std::string b = squeeze(p.body);
  EXPECT_CONTAINS(b, "The circuit for openfn opened after 5 consecutive failures: https://app.openfn.org/i/abc123 "
                     "is failing, so repeaterd holds the connection's records back until it answers again.");
  EXPECT_CONTAINS(b, "no record is attempted except one probe at a time, and no record's attempt budget is used: "
                     "nothing is cancelled because of the outage.");
  // No record to name: a circuit is the connection's.
  EXPECT_EQ(b.find("Record id"), std::string::npos);
  EXPECT_EQ(b.find("Project space"), std::string::npos);
  expect_stop_section(p.body);
  EXPECT_CONTAINS(squeeze(p.body), "(a circuit opening or closing is emailed at once)");
}

TEST(EmailCompose, CircuitClosedSaysHowLongTheOutageLastedAndThatTheBacklogIsReleased) {
  const Parsed p = compose_checked(message({circuit_closed()}));
  EXPECT_EQ(subject(p), kClosedSubject);
  EXPECT_CONTAINS(p.body,
                  kClosedOpening +
                  "Connection:     openfn\n"
                  "URL:            https://app.openfn.org/i/abc123\n"
                  "Closed at:      2026-11-23T15:41:53.000000Z\n"
                  "Outage:         12 min 5 s\n"
                  "Backlog:        1 record waiting\n"
                  "\n");
  EXPECT_CONTAINS(squeeze(p.body), "being released at a rising rate");
  EXPECT_EQ(p.body.find("The last error"), std::string::npos);
  expect_stop_section(p.body);
}

TEST(EmailCompose, SummaryListsCircuitChangesFirstOneLineEach) {
  const Parsed p = compose_checked(message({failure(1), cancellation(2), circuit_opened()}));
  EXPECT_EQ(subject(p),
            "[repeaterd] openfn: circuit opened — https://app.openfn.org/i/abc123 is failing; 1 failed, 1 cancelled");
  EXPECT_CONTAINS(p.body,
                  "The circuit for openfn is open: https://app.openfn.org/i/abc123 is\n"
                  "failing.\n"
                  "\n"
                  "repeaterd had trouble forwarding records to openfn: 1 failed (will be\n"
                  "retried), 1 cancelled (will not be retried).\n"
                  "\n"
                  "Project space: demo\n"
                  "URL:           https://app.openfn.org/i/abc123\n"
                  "\n"
                  "Circuit:\n"
                  "\n"
                  + kOpenedLine +
                  "\n");
  EXPECT_CONTAINS(squeeze(p.body), "no record's attempt budget is used");
  const std::size_t circuit = p.body.find("Circuit:\n");
  const std::size_t records = p.body.find("Records:\n");
  ASSERT_NE(records, std::string::npos);
  EXPECT_LT(circuit, records);
  EXPECT_CONTAINS(p.body, "1. Record 0190c5a2-0000-7000-8000-100000000002: form f0rm-2");
  EXPECT_CONTAINS(p.body, "2. Record 0190c5a2-0000-7000-8000-100000000001: form f0rm-1");
  EXPECT_CONTAINS(squeeze(p.body), "sent again once the cause is fixed");
  expect_stop_section(p.body);
}

TEST(EmailCompose, SummaryOfCircuitChangesAloneListsEachAndTellsTheStateNow) {
  const Parsed p = compose_checked(message({circuit_opened(30), circuit_closed(31)}));
  EXPECT_EQ(subject(p), kClosedSubject);
  EXPECT_CONTAINS(p.body,
                  kClosedOpening +
                  "URL:           https://app.openfn.org/i/abc123\n"
                  "\n"
                  "Circuit:\n"
                  "\n"
                  + kOpenedLine +
                  "- Circuit closed at 2026-11-23T15:41:53.000000Z after an outage of 12 min 5 s; 1 record "
                  "waiting, being released at a rising rate.\n"
                  "\n");
  EXPECT_EQ(p.body.find("Records:"), std::string::npos);
  EXPECT_EQ(p.body.find("had trouble forwarding"), std::string::npos);
  EXPECT_EQ(p.body.find("Cancelled records are not retried"), std::string::npos);
  expect_stop_section(p.body);
}

TEST(EmailCompose, CircuitEmailsKeepUrlCredentialsOut) {
  Message m = message({circuit_opened()});
  m.url = "https://user:hunter2@app.openfn.org/i/abc123";
  const std::string opened = compose(m);
  EXPECT_EQ(subject(parse(opened)).find("hunter2"), std::string::npos);
  EXPECT_EQ(opened.find("hunter2"), std::string::npos);
  m.events = {failure(1), circuit_closed()};
  const std::string summary = compose(m);
  EXPECT_EQ(subject(parse(summary)).find("hunter2"), std::string::npos);
  EXPECT_EQ(summary.find("hunter2"), std::string::npos);
}

TEST(EmailCompose, HumanDurationSaysAnOutageAsAReaderWould) {
  EXPECT_EQ(human_duration(0), "0 ms");
  EXPECT_EQ(human_duration(850), "850 ms");
  EXPECT_EQ(human_duration(1'000), "1 s");
  EXPECT_EQ(human_duration(725'300), "12 min 5 s");
  EXPECT_EQ(human_duration(7'200'000), "2 h");
  EXPECT_EQ(human_duration(3'600'000 + 60'000), "1 h 1 min");
  EXPECT_EQ(human_duration(86'400'000 + 3 * 3'600'000 + 20 * 60'000 + 999), "1 d 3 h 20 min");
}

// ---------------------------------------------------------------------------------------------
// send_mail against a real SMTP server: aiosmtpd, run by the system Python.

constexpr const char* kServerScript = R"PY(
import asyncio, os, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

out, mode = sys.argv[1], sys.argv[2]

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('nobody'):
            return '550 5.1.1 No such user here'
        if address.startswith('busy'):
            return '450 4.2.1 Mailbox busy, try again later'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        with open(os.path.join(out, 'mail_from'), 'w') as f:
            f.write(envelope.mail_from)
        with open(os.path.join(out, 'rcpt_tos'), 'w') as f:
            f.write('\n'.join(envelope.rcpt_tos))
        with open(os.path.join(out, 'content'), 'wb') as f:
            f.write(envelope.original_content)
        return '250 OK'

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b'alice'
          and auth_data.password == b'correct-horse')
    return AuthResult(success=ok, handled=False)

kwargs = {}
if mode == 'auth':
    kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
elif mode == 'starttls':
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(out, 'cert.pem'), os.path.join(out, 'key.pem'))
    kwargs.update(tls_context=ctx, require_starttls=True)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), hostname='localhost', **kwargs), '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    with open(os.path.join(out, 'port.tmp'), 'w') as f:
        f.write(str(port))
    os.rename(os.path.join(out, 'port.tmp'), os.path.join(out, 'port'))
    await asyncio.sleep(60)  # dies by itself should the test never stop it

asyncio.run(main())
)PY";

// The Python that has aiosmtpd: pyenv or virtualenv shims may hide Debian's python3-aiosmtpd.
std::string python_with_aiosmtpd() {
  static const std::string python = [] {
    for (const char* candidate : {"/usr/bin/python3", "python3"}) {
      const std::string probe = std::string(candidate) + " -c 'import aiosmtpd' >/dev/null 2>&1";
      if (std::system(probe.c_str()) == 0) return std::string(candidate);
    }
    return std::string();
  }();
  return python;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

using testing::TempDir;

// One aiosmtpd process on 127.0.0.1 with an ephemeral port; killed when the test ends.
class SmtpServer {
 public:
  SmtpServer(const TempDir& dir, const std::string& mode) : dir_(dir.path()) {
    const std::string python = python_with_aiosmtpd();
    const std::string log = (dir_ / "server.log").string();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::string dir_arg = dir_.string();
    std::vector<char*> argv{const_cast<char*>(python.c_str()),
                            const_cast<char*>("-c"), const_cast<char*>(kServerScript), dir_arg.data(),
                            const_cast<char*>(mode.c_str()), nullptr};
    const int rc = posix_spawnp(&pid_, python.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      return;
    }
    // Bounded wait for the port file, or for the process to die trying.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(4);
    while (std::chrono::steady_clock::now() < deadline) {
      if (std::filesystem::exists(dir_ / "port")) {
        port_ = std::stoi(read_file(dir_ / "port"));
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~SmtpServer() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  SmtpServer(const SmtpServer&) = delete;
  SmtpServer& operator=(const SmtpServer&) = delete;

  bool ready() const { return port_ > 0; }
  std::string log() const { return read_file(dir_ / "server.log"); }
  std::string url() const { return "smtp://127.0.0.1:" + std::to_string(port_); }
  std::string received(const char* name) const { return read_file(dir_ / name); }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

class EmailSendMail : public ::testing::Test {
 protected:
  void SetUp() override {
    if (python_with_aiosmtpd().empty()) GTEST_SKIP() << "no python3 with aiosmtpd (apt install python3-aiosmtpd)";
  }
  SmtpSettings settings(const SmtpServer& server) const {
    SmtpSettings s;
    s.url = server.url();
    s.connect_timeout = std::chrono::seconds(2);
    s.timeout = std::chrono::seconds(4);
    return s;
  }
  TempDir dir_{"email_test"};
};

#define START_SERVER(var, mode)                                  \
  SmtpServer var(dir_, mode);                                    \
  ASSERT_TRUE(var.ready()) << "aiosmtpd did not start:\n" << var.log()

const std::vector<std::string> kRecipients{"data-team@example.org", "alice@example.org"};

TEST_F(EmailSendMail, DeliversTheMessageToEveryRecipient) {
  START_SERVER(server, "plain");
  const std::string msg = compose(message({failure()}));
  const Status st = send_mail(settings(server), "Repeaterd <repeaterd@example.org>", kRecipients, msg);
  ASSERT_TRUE(st.ok()) << st.error().message << "\n" << server.log();
  EXPECT_EQ(server.received("mail_from"), "repeaterd@example.org");
  EXPECT_EQ(server.received("rcpt_tos"), "data-team@example.org\nalice@example.org");
  EXPECT_EQ(server.received("content"), msg);
}

TEST_F(EmailSendMail, ARefusedRecipientDoesNotKeepTheOthersFromBeingTold) {
  START_SERVER(server, "plain");
  const std::string msg = compose(message({failure()}));
  const Status st = send_mail(settings(server), "repeaterd@example.org",
                              {"nobody@example.org", "alice@example.org"}, msg);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(server.received("rcpt_tos"), "alice@example.org");
  EXPECT_EQ(server.received("content"), msg);
}

TEST_F(EmailSendMail, FailsWhenEveryRecipientIsRefused) {
  START_SERVER(server, "plain");
  const Status st = send_mail(settings(server), "repeaterd@example.org", {"nobody@example.org"},
                              compose(message({failure()})));
  ASSERT_FALSE(st.ok());
  EXPECT_CONTAINS(st.error().message, "550 5.1.1 No such user here");
  EXPECT_EQ(st.error().kind, ErrorKind::refused) << "a 5xx is a permanent refusal";
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "content"));
}

TEST_F(EmailSendMail, ATemporaryRefusalIsNotPermanent) {
  START_SERVER(server, "plain");
  const Status st = send_mail(settings(server), "repeaterd@example.org", {"busy@example.org"},
                              compose(message({failure()})));
  ASSERT_FALSE(st.ok());
  EXPECT_CONTAINS(st.error().message, "450 4.2.1 Mailbox busy, try again later");
  EXPECT_EQ(st.error().kind, ErrorKind::failed) << "a 4xx may pass";
}

TEST_F(EmailSendMail, AuthenticatesWithUsernameAndPassword) {
  START_SERVER(server, "auth");
  SmtpSettings s = settings(server);
  s.username = "alice";
  s.password = "correct-horse";
  const std::string msg = compose(message({cancellation()}));
  const Status st = send_mail(s, "repeaterd@example.org", kRecipients, msg);
  ASSERT_TRUE(st.ok()) << st.error().message << "\n" << server.log();
  EXPECT_EQ(server.received("content"), msg);
}

TEST_F(EmailSendMail, WrongPasswordSaysWhatTheServerSaidButNotThePassword) {
  START_SERVER(server, "auth");
  SmtpSettings s = settings(server);
  s.username = "alice";
  s.password = "wrong-battery-staple";
  const Status st = send_mail(s, "repeaterd@example.org", kRecipients, compose(message({failure()})));
  ASSERT_FALSE(st.ok());
  const std::string& e = st.error().message;
  EXPECT_CONTAINS(e, "Login denied (server said: 535 5.7.8");
  EXPECT_EQ(st.error().kind, ErrorKind::refused);
  EXPECT_CONTAINS(e, server.url());
  EXPECT_EQ(e.find("wrong-battery-staple"), std::string::npos) << e;
  EXPECT_EQ(e.find(base64_encode(std::string("\0alice\0wrong-battery-staple", 27))), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "content"));
}

TEST_F(EmailSendMail, WithoutCredentialsAnAuthRequiringServerRefuses) {
  START_SERVER(server, "auth");
  const Status st = send_mail(settings(server), "repeaterd@example.org", kRecipients, compose(message({failure()})));
  ASSERT_FALSE(st.ok());
  EXPECT_CONTAINS(st.error().message, "(server said: 530 5.7.0 Authentication required)");
}

TEST_F(EmailSendMail, ConnectionRefusedNamesHostAndPort) {
  // A port that was free a moment ago: nothing listens on it.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  close(fd);

  SmtpSettings s;
  s.url = "smtp://user:pw-in-url@127.0.0.1:" + std::to_string(port);
  s.password = "pw-in-settings";
  s.username = "user";
  s.connect_timeout = std::chrono::seconds(2);
  const Status st = send_mail(s, "repeaterd@example.org", kRecipients, "Subject: x\r\n\r\nx\r\n");
  ASSERT_FALSE(st.ok());
  const std::string& e = st.error().message;
  EXPECT_CONTAINS(e, "127.0.0.1:" + std::to_string(port));
  EXPECT_CONTAINS(e, "Failed to connect");
  EXPECT_EQ(st.error().kind, ErrorKind::failed) << "an unreachable server may come back";
  EXPECT_EQ(e.find("pw-in-url"), std::string::npos) << e;
  EXPECT_EQ(e.find("pw-in-settings"), std::string::npos) << e;
}

TEST_F(EmailSendMail, RejectsOtherSchemesAndBadAddresses) {
  SmtpSettings s;
  s.url = "http://127.0.0.1:1";
  EXPECT_CONTAINS(send_mail(s, "a@example.org", kRecipients, "x").error().message, "smtp:// or smtps://");
  s.url = "smtp://127.0.0.1:1";
  EXPECT_CONTAINS(send_mail(s, "a@example.org", {}, "x").error().message, "no recipients");
  EXPECT_CONTAINS(send_mail(s, "a@example.org", {"b@example.org\r\nRSET"}, "x").error().message, "malformed address");
}

// A self-signed certificate for localhost and 127.0.0.1, made in the test's directory.
bool make_certificate(const std::filesystem::path& dir) {
  const std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                          "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '" +
                          (dir / "key.pem").string() + "' -out '" + (dir / "cert.pem").string() +
                          "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

TEST_F(EmailSendMail, StarttlsWithTheServersCaFileDelivers) {
  ASSERT_TRUE(make_certificate(dir_.path()));
  START_SERVER(server, "starttls");
  SmtpSettings s = settings(server);
  s.starttls_required = true;
  s.ca_file = (dir_.path() / "cert.pem").string();
  const std::string msg = compose(message({failure()}));
  const Status st = send_mail(s, "repeaterd@example.org", kRecipients, msg);
  ASSERT_TRUE(st.ok()) << st.error().message << "\n" << server.log();
  EXPECT_EQ(server.received("content"), msg);
}

TEST_F(EmailSendMail, StarttlsWithAnUntrustedCertificateFails) {
  ASSERT_TRUE(make_certificate(dir_.path()));
  START_SERVER(server, "starttls");
  SmtpSettings s = settings(server);
  const Status st = send_mail(s, "repeaterd@example.org", kRecipients, compose(message({failure()})));
  ASSERT_FALSE(st.ok());
  EXPECT_CONTAINS(st.error().message, "certificate");
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "content"));

  // verify: false is the operator's explicit choice to accept it.
  s.tls_verify = false;
  const Status insecure = send_mail(s, "repeaterd@example.org", kRecipients, compose(message({failure()})));
  EXPECT_TRUE(insecure.ok()) << insecure.error().message;
}

TEST_F(EmailSendMail, StarttlsRequiredFailsWhenTheServerDoesNotOfferIt) {
  START_SERVER(server, "plain");
  SmtpSettings s = settings(server);
  s.starttls_required = true;
  const Status st = send_mail(s, "repeaterd@example.org", kRecipients, compose(message({failure()})));
  ASSERT_FALSE(st.ok());
  EXPECT_CONTAINS(st.error().message, server.url());
  EXPECT_CONTAINS(st.error().message, "STARTTLS");
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "content"));
}

}  // namespace
}  // namespace repeaterd::notify
