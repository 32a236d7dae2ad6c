// notify/smtp: handing a composed email to an SMTP server (spec §6).
//
// send_mail() sends one RFC 5322 message with libcurl (smtp:// with STARTTLS when offered or
// required, smtps://, AUTH). It blocks: run it off the event loops. SmtpCancel lets another
// thread abandon a send in progress (shutdown). What the message says is notify/compose's job.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "repeaterd/result.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd::notify {

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
// password. The server's permanent refusal (a 5xx reply) is ErrorKind::refused; anything else
// (unreachable, TLS, a timeout, a 4xx) may pass and is ErrorKind::failed.
Status send_mail(const SmtpSettings& smtp, const std::string& from, const std::vector<std::string>& to,
                 const std::string& message);

}  // namespace repeaterd::notify
