// Base64 (RFC 4648, standard alphabet, padded), for Basic credentials, webhook signatures
// and their keys.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "repeaterd/result.hpp"

namespace repeaterd {

std::string base64_encode(std::string_view bytes);

// Lowercase hex, two digits a byte (digests, nonces).
std::string hex_encode(std::string_view bytes);
// nullopt when `text` is not valid padded base64 (whitespace is not allowed).
std::optional<std::string> base64_decode(std::string_view text);

// A Standard Webhooks signing key from its "whsec_" + base64 form (the prefix is optional,
// surrounding whitespace is ignored). Errors never repeat the secret.
Result<std::string> decode_webhook_secret(std::string_view secret);

}  // namespace repeaterd
