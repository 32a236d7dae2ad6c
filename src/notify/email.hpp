// notify/email: what a notification email says, and sending it (spec §6).
//
// compose() turns a connection's pending notification events into one RFC 5322 message: a
// single event gets a detailed email, several get a summary (how many failed, how many were
// cancelled, up to 20 records with their payload ids and latest errors, and how many more).
// Every email names the project space, the URL (without credentials), the form or case id, the
// record id, the attempt number and the next retry time or "cancelled", quotes the error as
// the remote gave it, and says how to stop these emails. Pure: no I/O, no clock.
//
// send_mail() hands a message to an SMTP server with libcurl (smtp:// with STARTTLS when
// offered or required, smtps://, AUTH). It blocks: run it off the event loops.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "repeaterd/result.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd::notify {

// One reason to tell a connection's contacts something.
struct Event {
  std::int64_t id = 0;           // outbox row id
  enum class Kind { failed, cancelled } kind = Kind::failed;
  Micros at = 0;                 // when it happened
  std::string record_id;
  std::string repeater;
  std::string domain;            // project space
  std::string payload_type;      // form | case | app | ...
  std::string payload_id;        // the form or case id
  int attempt = 0;
  std::optional<int> http_status;
  std::string error;             // as the remote gave it: status line and body excerpt, or the network/TLS error
  std::optional<Micros> next_attempt_at;  // failed: when it is retried
};

struct Message {
  std::string from;
  std::vector<std::string> to;
  std::string connection;  // name
  std::string url;         // the connection's URL; shown without any userinfo
  std::string config_file; // where `notify` is set, for the "how to stop" section
  std::vector<Event> events;  // oldest first; REQUIRES: not empty
  Micros now = 0;
  std::string message_id_domain = "repeaterd.local";  // right-hand side of Message-ID
};

// The whole RFC 5322 message (CRLF line endings, UTF-8 body, MIME-Version, Content-Type
// text/plain; charset=UTF-8, Content-Transfer-Encoding 8bit or quoted-printable, Date,
// Message-ID, From, To, Subject (RFC 2047 encoded when not ASCII)).
std::string compose(const Message& m);

// Lets another thread abandon a send in progress at once (shutdown): the send's socket is shut
// down, so even a wait for a server that went silent ends now.
class SmtpCancel {
 public:
  void cancel();
  bool cancelled() const { return cancelled_.load(); }
  // Called by send_mail from the sending thread.
  void attach(int fd);
  void detach(int fd);

 private:
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  int fd_ = -1;  // GUARDED_BY(mu_)
};

struct SmtpSettings {
  std::string url;            // smtp://host:port or smtps://host:port
  bool starttls_required = false;  // smtp://: fail unless STARTTLS succeeds (else: used when offered)
  std::string username;       // empty: no AUTH
  std::string password;
  std::string ca_file;        // extra trust anchors for the SMTP server's certificate
  bool tls_verify = true;
  Duration connect_timeout = std::chrono::seconds(10);
  Duration timeout = std::chrono::seconds(30);  // the whole send, and each server reply
  SmtpCancel* cancel = nullptr;                  // set: a shutdown can abandon the send
};

// Sends `message` from `from` to every address in `to`. Errors say what failed ("connect to
// 127.0.0.1:2525: Connection refused", "SMTP AUTH refused: 535 ...") and never contain the
// password.
Status send_mail(const SmtpSettings& smtp, const std::string& from, const std::vector<std::string>& to,
                 const std::string& message);

}  // namespace repeaterd::notify
