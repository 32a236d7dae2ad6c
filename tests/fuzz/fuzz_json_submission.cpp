// JSON submissions (payload::parse_json_submission): a Kobo-style JSON body.
#include "fuzz.hpp"
#include "payload/form_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto s = repeaterd::payload::parse_json_submission(repeaterd::fuzz::as_text(data, size));
  if (s) FUZZ_CHECK(!s->instance_id.empty());
  return 0;
}
