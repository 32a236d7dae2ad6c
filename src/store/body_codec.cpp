#include "store/body_codec.hpp"

#include <libdeflate.h>

#include <memory>

#include "common/ids.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::store {

namespace {

// Smaller bodies gain too little to be worth a compression on ingest and one on every send.
constexpr std::size_t kMinDeflate = 256;

// One compressor and one decompressor per thread, made once: libdeflate's state (a few hundred
// KB for the compressor) is reused for every body.
struct FreeCompressor {
  void operator()(libdeflate_compressor* c) const { libdeflate_free_compressor(c); }
};
struct FreeDecompressor {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};

libdeflate_compressor* compressor() {
  // Level 1: within 1 % of level 6 on form XML (575 against 572 bytes for the seed form) at
  // three quarters of the time.
  thread_local std::unique_ptr<libdeflate_compressor, FreeCompressor> c(libdeflate_alloc_compressor(1));
  return c.get();
}

libdeflate_decompressor* decompressor() {
  thread_local std::unique_ptr<libdeflate_decompressor, FreeDecompressor> d(libdeflate_alloc_decompressor());
  return d.get();
}

}  // namespace

std::optional<std::string> deflate_body(std::string_view body) {
  if (body.size() < kMinDeflate) return std::nullopt;
  libdeflate_compressor* c = compressor();
  if (c == nullptr) return std::nullopt;
  // Only a result at least a tenth smaller is kept: room for that much and no more.
  std::string out(body.size() - body.size() / 10, '\0');
  const std::size_t n = libdeflate_zlib_compress(c, body.data(), body.size(), out.data(), out.size());
  if (n == 0) return std::nullopt;
  out.resize(n);
  return out;
}

void prepare_payload(NewPayload& p) {
  if (p.sha256.empty()) p.sha256 = sha256_hex(p.body);
  if (!p.deflated) p.deflated = deflate_body(p.body);
}

Result<std::string> claimed_body(ClaimedRecord& rec) {
  if (rec.body_encoding.empty()) return std::move(rec.body);
  try {
    return stored_body(rec.body, rec.body_encoding, rec.body_size, "the payload of record " + rec.id);
  } catch (const SqliteError& e) {
    return make_error(e.what());
  }
}

std::string stored_body(std::string_view stored, std::string_view encoding, std::int64_t size,
                        std::string_view what) {
  if (encoding.empty()) return std::string(stored);
  if (encoding != kDeflate) {
    throw SqliteError(SQLITE_CORRUPT, std::string(what) + ": unknown body encoding \"" + std::string(encoding) + "\"");
  }
  // No body the listener takes comes near 4 GiB: a larger size is damage, not a reason to try
  // allocating it.
  if (size < 0 || size > (std::int64_t{1} << 32)) {
    throw SqliteError(SQLITE_CORRUPT, std::string(what) + ": deflated body without a valid size");
  }
  std::string out(static_cast<std::size_t>(size), '\0');
  libdeflate_decompressor* d = decompressor();
  std::size_t got = 0;
  const libdeflate_result rc = d == nullptr ? LIBDEFLATE_INSUFFICIENT_SPACE
                                            : libdeflate_zlib_decompress(d, stored.data(), stored.size(), out.data(),
                                                                         out.size(), &got);
  if (d == nullptr || rc != LIBDEFLATE_SUCCESS || got != out.size()) {
    throw SqliteError(SQLITE_CORRUPT, std::string(what) + ": the stored body does not inflate (" +
                                          (d == nullptr              ? "out of memory"
                                           : rc == LIBDEFLATE_SUCCESS ? "wrong length"
                                           : rc == LIBDEFLATE_BAD_DATA ? "not deflate data"
                                                                      : "longer than its recorded size") +
                                          "); the database file is damaged");
  }
  return out;
}

}  // namespace repeaterd::store
