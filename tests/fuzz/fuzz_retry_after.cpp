// Retry-After values (parse_retry_after): delay-seconds or an HTTP-date, from a receiver's answer.
#include "fuzz.hpp"
#include "repeaterd/time.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // 2025-12-06T05:46:40Z: a "now" that dates before and after it both reach.
  constexpr repeaterd::Micros kNow = 1'765'000'000'000'000;
  auto delay = repeaterd::parse_retry_after(repeaterd::fuzz::as_text(data, size), kNow);
  if (delay) FUZZ_CHECK(delay->count() >= 0);
  return 0;
}
