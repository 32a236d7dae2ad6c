// Case JSON (payload::parse_case_json, then process_case_blocks): a POST /a/{domain}/cases body.
#include "case_application.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (auto blocks = repeaterd::payload::parse_case_json(repeaterd::fuzz::as_text(data, size))) {
    repeaterd::fuzz::apply_case_blocks(*blocks, "");
  }
  return 0;
}
