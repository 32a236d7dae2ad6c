#include "common/ids.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <random>
#include <stdexcept>

#include "common/encoding.hpp"

namespace repeaterd {
namespace {

// Ids need uniqueness, not secrecy; a per-thread engine seeded from the OS avoids a lock.
std::mt19937_64& engine() {
  thread_local std::mt19937_64 e = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }();
  return e;
}

std::string format_uuid(const std::array<std::uint8_t, 16>& b) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0xf]);
  }
  return out;
}

std::array<std::uint8_t, 16> random_bytes() {
  std::array<std::uint8_t, 16> b{};
  std::uint64_t hi = engine()();
  std::uint64_t lo = engine()();
  for (int i = 0; i < 8; ++i) {
    b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(hi >> (8 * i));
    b[static_cast<std::size_t>(8 + i)] = static_cast<std::uint8_t>(lo >> (8 * i));
  }
  return b;
}

}  // namespace

std::string uuid_v4() {
  auto b = random_bytes();
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);
  return format_uuid(b);
}

std::string uuid_v7(Micros now) {
  auto b = random_bytes();
  // ms << 12 | the millisecond's fraction in 1/4096ths, at least one more than the last id's.
  static std::atomic<std::uint64_t> last{0};
  const auto t = static_cast<std::uint64_t>(std::max<Micros>(now, 0));
  std::uint64_t stamp = (t / 1000) << 12 | (t % 1000) * 4096 / 1000;
  std::uint64_t prev = last.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t next = std::max(stamp, prev + 1);
    if (last.compare_exchange_weak(prev, next, std::memory_order_relaxed)) {
      stamp = next;
      break;
    }
  }
  const std::uint64_t ms = stamp >> 12;
  for (int i = 0; i < 6; ++i) b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(ms >> (8 * (5 - i)));
  b[6] = static_cast<std::uint8_t>(0x70 | ((stamp >> 8) & 0x0f));
  b[7] = static_cast<std::uint8_t>(stamp & 0xff);
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);
  return format_uuid(b);
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_Digest(sha256) failed");
  }
  return hex_encode(std::string_view(reinterpret_cast<const char*>(md.data()), len));
}

bool equal_secret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace repeaterd
