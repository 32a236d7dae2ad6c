#include "store/body_codec.hpp"

#include <zlib.h>

#include <limits>

#include "common/ids.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::store {

namespace {

// Smaller bodies gain too little to be worth a compression on ingest and one on every send.
constexpr std::size_t kMinDeflate = 256;

}  // namespace

std::optional<std::string> deflate_body(std::string_view body) {
  if (body.size() < kMinDeflate || body.size() > std::numeric_limits<uLong>::max() / 2) return std::nullopt;
  uLongf room = compressBound(static_cast<uLong>(body.size()));
  std::string out(room, '\0');
  // Level 1: most of level 9's saving on form XML (592 against 571 bytes for the seed form) at a
  // fraction of the time.
  if (compress2(reinterpret_cast<Bytef*>(out.data()), &room, reinterpret_cast<const Bytef*>(body.data()),
                static_cast<uLong>(body.size()), Z_BEST_SPEED) != Z_OK) {
    return std::nullopt;
  }
  if (room > body.size() - body.size() / 10) return std::nullopt;
  out.resize(room);
  return out;
}

void prepare_payload(NewPayload& p) {
  if (p.sha256.empty()) p.sha256 = sha256_hex(p.body);
  if (!p.deflated) p.deflated = deflate_body(p.body);
}

std::string stored_body(std::string_view stored, std::string_view encoding, std::int64_t size,
                        std::string_view what) {
  if (encoding.empty()) return std::string(stored);
  if (encoding != kDeflate) {
    throw SqliteError(SQLITE_CORRUPT, std::string(what) + ": unknown body encoding \"" + std::string(encoding) + "\"");
  }
  if (size < 0 || static_cast<std::uint64_t>(size) > std::numeric_limits<uLong>::max()) {
    throw SqliteError(SQLITE_CORRUPT, std::string(what) + ": deflated body without a valid size");
  }
  std::string out(static_cast<std::size_t>(size), '\0');
  uLongf got = static_cast<uLongf>(size);
  const int rc = uncompress(reinterpret_cast<Bytef*>(out.data()), &got, reinterpret_cast<const Bytef*>(stored.data()),
                            static_cast<uLong>(stored.size()));
  if (rc != Z_OK || got != static_cast<uLongf>(size)) {
    throw SqliteError(SQLITE_CORRUPT, std::string(what) + ": the stored body does not inflate (" +
                                          (rc == Z_OK ? std::string("wrong length") : std::string(zError(rc))) +
                                          "); the database file is damaged");
  }
  return out;
}

}  // namespace repeaterd::store
