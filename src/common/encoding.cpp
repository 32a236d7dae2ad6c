#include "common/encoding.hpp"
#include "common/text.hpp"

#include <openssl/evp.h>

namespace repeaterd {
namespace {

bool is_base64_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

}  // namespace

std::string hex_encode(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0x0f]);
  }
  return out;
}

std::string base64_encode(std::string_view in) {
  if (in.empty()) return {};
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');  // +1: EVP_EncodeBlock writes a NUL
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// Standard base64 with padding. EVP_DecodeBlock skips surrounding whitespace, accepts a
// missing '=' nowhere and counts padding as zero bytes, so the shape is checked here first and
// the padding subtracted afterwards.
std::optional<std::string> base64_decode(std::string_view in) {
  if (in.empty()) return std::string();
  if (in.size() % 4 != 0) return std::nullopt;
  std::size_t padding = 0;
  if (in.back() == '=') {
    ++padding;
    if (in[in.size() - 2] == '=') ++padding;
  }
  for (std::size_t i = 0; i < in.size() - padding; ++i) {
    const char c = in[i];
    if (!is_base64_char(c)) return std::nullopt;
  }
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  if (n < 0 || static_cast<std::size_t>(n) < padding) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

Result<std::string> decode_webhook_secret(std::string_view secret) {
  constexpr std::string_view kPrefix = "whsec_";
  secret = trim(secret);  // a secret file usually ends with a newline
  if (secret.substr(0, kPrefix.size()) == kPrefix) secret.remove_prefix(kPrefix.size());
  auto key = base64_decode(secret);
  if (!key) {
    return make_error("signing secret is not valid: expected standard base64, optionally after \"whsec_\"");
  }
  if (key->empty()) return make_error("signing secret is empty: expected \"whsec_\" followed by a base64 key");
  return std::move(*key);
}

}  // namespace repeaterd
