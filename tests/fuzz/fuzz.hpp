// tests/fuzz: what every fuzz target shares.
//
// Each fuzz_*.cpp defines LLVMFuzzerTestOneInput over one parser that sees untrusted bytes.
// Built with clang's -fsanitize=fuzzer (REPEATERD_FUZZ, scripts/fuzz) it is a libFuzzer binary;
// built with replay_main.cpp in the ordinary build it replays the seed corpus and the
// regression inputs as a ctest test, so every CI run (the ASan+UBSan half too) feeds them again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

namespace repeaterd::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// (the first line without its "\n" or "\r\n", the rest): how targets that take two inputs (a
// header and a body, a status line and a body) read them from one buffer.
inline std::pair<std::string_view, std::string_view> split_first_line(std::string_view text) {
  const std::size_t nl = text.find('\n');
  if (nl == std::string_view::npos) return {text, {}};
  std::string_view first = text.substr(0, nl);
  if (!first.empty() && first.back() == '\r') first.remove_suffix(1);
  return {first, text.substr(nl + 1)};
}

// A promise the code under test makes that the input broke: a finding, so it stops the run like
// a crash does (libFuzzer saves the input; the replay test fails).
[[noreturn]] inline void broken_promise(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", file, line, what);
  std::abort();
}

}  // namespace repeaterd::fuzz

#define FUZZ_CHECK(cond) \
  ((cond) ? (void)0 : ::repeaterd::fuzz::broken_promise(#cond, __FILE__, __LINE__))
