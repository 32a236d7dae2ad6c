// XForm instance and meta extraction (payload::parse_xform): a raw XForm body.
#include "fuzz.hpp"
#include "payload/xform.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto form = repeaterd::payload::parse_xform(repeaterd::fuzz::as_text(data, size));
  if (form) {
    // A stored form always has an id (its own, a made-up one, or a device report's digest) and
    // its parsed document, which the case blocks and the JSON renderings walk next.
    FUZZ_CHECK(!form->instance_id.empty());
    FUZZ_CHECK(form->document != nullptr);
  } else {
    FUZZ_CHECK(!form.error().message.empty());
  }
  return 0;
}
