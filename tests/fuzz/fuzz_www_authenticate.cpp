// WWW-Authenticate challenges (sender::pick_digest_challenge) from a destination's 401, and the
// Digest answer computed from the chosen one. Input: one header value a line (a 401 may carry
// several WWW-Authenticate headers; Basic and Bearer challenges are among them and are skipped).
#include <string>
#include <vector>

#include "fuzz.hpp"
#include "sender/auth.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> headers;
  std::string_view rest = repeaterd::fuzz::as_text(data, size);
  while (!rest.empty()) {
    auto [line, tail] = repeaterd::fuzz::split_first_line(rest);
    headers.emplace_back(line);
    rest = tail;
  }
  auto challenge = repeaterd::sender::pick_digest_challenge(headers);
  if (challenge) {
    const std::string header = repeaterd::sender::digest_authorization(*challenge, "user", "secret", "POST",
                                                                       "/inbox?x=1", 1, "0a4f113b");
    FUZZ_CHECK(header.rfind("Digest ", 0) == 0);
    // The header goes on the wire: a challenge must not smuggle a line break into it.
    FUZZ_CHECK(header.find_first_of("\r\n") == std::string::npos);
  }
  return 0;
}
