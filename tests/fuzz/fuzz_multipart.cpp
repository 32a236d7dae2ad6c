// OpenRosa multipart (ingest::parse_multipart). Input: the Content-Type header's value, a
// newline, then the body.
#include "fuzz.hpp"
#include "ingest/multipart.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto [content_type, body] = repeaterd::fuzz::split_first_line(repeaterd::fuzz::as_text(data, size));
  auto parts = repeaterd::ingest::parse_multipart(content_type, body);
  if (parts) {
    // Parts are slices of the body: together they cannot hold more than it.
    std::size_t total = 0;
    for (const auto& p : *parts) total += p.body.size();
    FUZZ_CHECK(total <= body.size());
  }
  return 0;
}
