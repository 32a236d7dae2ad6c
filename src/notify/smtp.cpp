#include "notify/smtp.hpp"

#include <curl/curl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

#include "common/text.hpp"
#include "notify/mail_text.hpp"

namespace repeaterd::notify {
namespace {

std::string_view ascii_prefix_lower(std::string_view s, std::string& buf, std::size_t n) {
  buf.assign(s.substr(0, n));
  for (char& c : buf) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return buf;
}

// The address inside "<...>" when the config gave "Name <addr>", else the trimmed text. CR, LF
// and NUL would let an address smuggle SMTP commands; such an address is refused.
Result<std::string> envelope_address(std::string_view text) {
  std::string_view a = text;
  if (const auto open = a.find('<'); open != std::string_view::npos) {
    const auto close = a.find('>', open);
    if (close == std::string_view::npos) return make_error("malformed address \"" + one_line(text) + "\"");
    a = a.substr(open + 1, close - open - 1);
  }
  while (!a.empty() && (a.front() == ' ' || a.front() == '\t')) a.remove_prefix(1);
  while (!a.empty() && (a.back() == ' ' || a.back() == '\t')) a.remove_suffix(1);
  if (a.empty()) return make_error("empty address");
  if (a.find_first_of(std::string_view("\r\n\0<>", 5)) != std::string_view::npos) {
    return make_error("malformed address \"" + one_line(text) + "\"");
  }
  return "<" + std::string(a) + ">";
}

struct Upload {
  std::string_view data;
  std::size_t pos = 0;
};

std::size_t read_message(char* buffer, std::size_t size, std::size_t nitems, void* userp) {
  auto* up = static_cast<Upload*>(userp);
  const std::size_t n = std::min(size * nitems, up->data.size() - up->pos);
  std::memcpy(buffer, up->data.data() + up->pos, n);
  up->pos += n;
  return n;
}

// Keeps the server's latest error reply, so a failure can say what the server said ("535 5.7.8
// Authentication credentials invalid") rather than the "221 Bye" that follows it. Only
// CURLINFO_HEADER_IN is read: HEADER_OUT holds our own commands, AUTH credentials among them.
int on_debug(CURL* /*handle*/, curl_infotype type, char* data, std::size_t size, void* userp) {
  if (type != CURLINFO_HEADER_IN) return 0;
  std::string_view chunk(data, size);
  while (!chunk.empty()) {
    const std::size_t eol = chunk.find('\n');
    std::string_view line = chunk.substr(0, eol);
    chunk.remove_prefix(eol == std::string_view::npos ? chunk.size() : eol + 1);
    while (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool error_reply = line.size() >= 3 && (line[0] == '4' || line[0] == '5') &&
                             line[1] >= '0' && line[1] <= '9' && line[2] >= '0' && line[2] <= '9';
    constexpr std::size_t kMaxReply = 300;
    if (error_reply) *static_cast<std::string*>(userp) = shorten(one_line(line), kMaxReply);
  }
  return 0;
}

Status global_init() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (result != CURLE_OK) return make_error(std::string("libcurl initialisation failed: ") + curl_easy_strerror(result));
  return Ok{};
}

void replace_all(std::string& s, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (std::size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + with.size())) {
    s.replace(pos, what.size(), with);
  }
}

int on_progress(void* cancel, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const SmtpCancel*>(cancel)->cancelled() ? 1 : 0;
}

curl_socket_t on_open_socket(void* cancel, curlsocktype, curl_sockaddr* address) {
  const curl_socket_t fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  if (fd != CURL_SOCKET_BAD) static_cast<SmtpCancel*>(cancel)->attach(fd);
  return fd;
}

int on_close_socket(void* cancel, curl_socket_t fd) {
  static_cast<SmtpCancel*>(cancel)->detach(fd);
  return ::close(fd);
}

}  // namespace

void SmtpCancel::cancel() {
  cancelled_ = true;
  std::lock_guard lock(mu_);
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

void SmtpCancel::attach(int fd) {
  std::lock_guard lock(mu_);
  fd_ = fd;
  if (cancelled_) ::shutdown(fd_, SHUT_RDWR);
}

void SmtpCancel::detach(int fd) {
  std::lock_guard lock(mu_);
  if (fd_ == fd) fd_ = -1;
}

Status send_mail(const SmtpSettings& smtp, const std::string& from, const std::vector<std::string>& to,
                 const std::string& message) {
  const std::string shown_url = one_line(without_userinfo(smtp.url));
  // Every message leaves through here, so this is where the password is kept out of errors,
  // whatever libcurl or the server chose to echo.
  auto fail = [&](std::string text, ErrorKind kind = ErrorKind::failed) -> Status {
    std::string out = "SMTP " + shown_url + ": " + std::move(text);
    replace_all(out, smtp.password, "[redacted]");
    return make_error(std::move(out), kind);
  };

  std::string scheme_buf;
  const std::string_view scheme = ascii_prefix_lower(smtp.url, scheme_buf, 8);
  const bool smtps = scheme.substr(0, 8) == "smtps://";
  if (!smtps && scheme.substr(0, 7) != "smtp://") return fail("the URL must start with smtp:// or smtps://");
  if (to.empty()) return fail("no recipients");

  auto mail_from = envelope_address(from);
  if (!mail_from) return fail("sender: " + mail_from.error().message);

  if (auto init = global_init(); !init) return fail(init.error().message);

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) return fail("cannot create a libcurl handle");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> rcpts(nullptr, &curl_slist_free_all);
  for (const auto& address : to) {
    auto rcpt = envelope_address(address);
    if (!rcpt) return fail("recipient: " + rcpt.error().message);
    curl_slist* grown = curl_slist_append(rcpts.get(), rcpt->c_str());
    if (grown == nullptr) return fail("out of memory");
    (void)rcpts.release();  // `grown` now owns the list, including the old head
    rcpts.reset(grown);
  }

  Upload upload{message, 0};
  std::string last_error_reply;
  std::array<char, CURL_ERROR_SIZE> errbuf{};
  CURL* h = curl.get();
  CURLcode rc = CURLE_OK;
  // Stops at the first option libcurl refuses, so a failure names the option, not the transfer.
  auto set = [&](CURLoption option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, option, value);
  };
  set(CURLOPT_URL, smtp.url.c_str());
  set(CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  set(CURLOPT_NOSIGNAL, 1L);  // libcurl must not use SIGALRM for DNS timeouts in a threaded daemon
  set(CURLOPT_ERRORBUFFER, errbuf.data());
  set(CURLOPT_MAIL_FROM, mail_from->c_str());
  set(CURLOPT_MAIL_RCPT, rcpts.get());
  // One mistyped address must not keep the whole list from being told; the transfer still fails
  // when every recipient is refused.
  set(CURLOPT_MAIL_RCPT_ALLLOWFAILS, 1L);
  set(CURLOPT_UPLOAD, 1L);
  set(CURLOPT_READFUNCTION, &read_message);
  set(CURLOPT_READDATA, &upload);
  set(CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
  set(CURLOPT_USE_SSL, static_cast<long>(smtp.starttls_required || smtps ? CURLUSESSL_ALL : CURLUSESSL_TRY));
  if (!smtp.username.empty()) {
    set(CURLOPT_USERNAME, smtp.username.c_str());
    set(CURLOPT_PASSWORD, smtp.password.c_str());
  }
  // Debian's libcurl keeps its built-in CA path (/etc/ssl/certs) when CAINFO is replaced, so the
  // system store stays trusted next to ca_file.
  if (!smtp.ca_file.empty()) set(CURLOPT_CAINFO, smtp.ca_file.c_str());
  if (!smtp.tls_verify) {
    set(CURLOPT_SSL_VERIFYPEER, 0L);
    set(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(smtp.connect_timeout.count()));
  set(CURLOPT_TIMEOUT_MS, static_cast<long>(smtp.timeout.count()));
  // Without it, closing the handle sends QUIT and waits for the answer forever when a server
  // went silent; with it every reply, QUIT's too, is bounded.
  set(CURLOPT_SERVER_RESPONSE_TIMEOUT, static_cast<long>(std::max<long>(
      1, static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(smtp.timeout).count()))));
  if (smtp.cancel != nullptr) {
    // Shutting down: abandon the send at once; the email stays in the outbox for next time.
    set(CURLOPT_NOPROGRESS, 0L);
    set(CURLOPT_XFERINFOFUNCTION, &on_progress);
    set(CURLOPT_XFERINFODATA, smtp.cancel);
    set(CURLOPT_OPENSOCKETFUNCTION, &on_open_socket);
    set(CURLOPT_OPENSOCKETDATA, smtp.cancel);
    set(CURLOPT_CLOSESOCKETFUNCTION, &on_close_socket);
    set(CURLOPT_CLOSESOCKETDATA, smtp.cancel);
  }
  set(CURLOPT_DEBUGFUNCTION, &on_debug);
  set(CURLOPT_DEBUGDATA, &last_error_reply);
  set(CURLOPT_VERBOSE, 1L);  // only so that on_debug sees the replies; nothing is printed
  if (rc != CURLE_OK) return fail(std::string("cannot configure libcurl: ") + curl_easy_strerror(rc));

  rc = curl_easy_perform(h);
  if (rc == CURLE_OK) return Ok{};

  std::string text = errbuf[0] != '\0' ? std::string(errbuf.data()) : std::string(curl_easy_strerror(rc));
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  // A reply code of 400 or more means the server refused something; after a local failure (a
  // refused certificate, a timeout) there is no verdict of the server's to quote.
  if (code >= 400) {
    text += " (server said: " + (last_error_reply.empty() ? std::to_string(code) : last_error_reply) + ")";
  }
  // RFC 5321 4.2.1: a 5yz reply is a permanent refusal (sending the same again will not help),
  // a 4yz one a temporary one.
  const bool permanent = last_error_reply.empty() ? code >= 500 : last_error_reply.front() == '5';
  return fail(std::move(text), permanent ? ErrorKind::refused : ErrorKind::failed);
}

}  // namespace repeaterd::notify
