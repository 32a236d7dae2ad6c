// OAuth 2.0 token responses (sender::parse_token_response). Input: a status line ("200 OK"), a
// newline, then the token endpoint's body.
#include <charconv>

#include "fuzz.hpp"
#include "sender/auth.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto [status_line, body] = repeaterd::fuzz::split_first_line(repeaterd::fuzz::as_text(data, size));
  int status = 200;
  const auto [end, ec] = std::from_chars(status_line.data(), status_line.data() + status_line.size(), status);
  (void)ec;
  std::string_view reason = status_line.substr(static_cast<std::size_t>(end - status_line.data()));
  if (!reason.empty() && reason.front() == ' ') reason.remove_prefix(1);
  auto token = repeaterd::sender::parse_token_response(status, reason, body);
  if (token) {
    FUZZ_CHECK(!token->access_token.empty());
    // The token goes into an Authorization header.
    FUZZ_CHECK(token->access_token.find_first_of("\r\n") == std::string::npos);
  }
  return 0;
}
