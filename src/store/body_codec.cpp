#include "store/body_codec.hpp"

#define ZLIB_CONST  // next_in points to const bytes
#include <zlib.h>

#include <limits>

#include "common/ids.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

namespace repeaterd::store {

namespace {

// Smaller bodies gain too little to be worth a compression on ingest and one on every send.
constexpr std::size_t kMinDeflate = 256;

// One compressor and one decompressor per thread, reset for each body. A fresh deflate state is
// ~270 KB, which malloc maps and unmaps for every call: allocating one per form cost more (page
// faults) than the compression itself.
struct Deflater {
  z_stream z{};
  bool ok = false;
  Deflater() { ok = deflateInit(&z, Z_BEST_SPEED) == Z_OK; }
  ~Deflater() {
    if (ok) deflateEnd(&z);
  }
};

struct Inflater {
  z_stream z{};
  bool ok = false;
  Inflater() { ok = inflateInit(&z) == Z_OK; }
  ~Inflater() {
    if (ok) inflateEnd(&z);
  }
};

}  // namespace

std::optional<std::string> deflate_body(std::string_view body) {
  if (body.size() < kMinDeflate || body.size() > std::numeric_limits<uInt>::max() / 2) return std::nullopt;
  // Level 1: most of level 9's saving on form XML (592 against 571 bytes for the seed form) at a
  // fraction of the time.
  thread_local Deflater d;
  if (!d.ok || deflateReset(&d.z) != Z_OK) return std::nullopt;
  const uLong room = deflateBound(&d.z, static_cast<uLong>(body.size()));
  std::string out(room, '\0');
  d.z.next_in = reinterpret_cast<const Bytef*>(body.data());
  d.z.avail_in = static_cast<uInt>(body.size());
  d.z.next_out = reinterpret_cast<Bytef*>(out.data());
  d.z.avail_out = static_cast<uInt>(room);
  if (deflate(&d.z, Z_FINISH) != Z_STREAM_END) return std::nullopt;
  const std::size_t n = room - d.z.avail_out;
  if (n > body.size() - body.size() / 10) return std::nullopt;
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
  if (size < 0 || static_cast<std::uint64_t>(size) > std::numeric_limits<uInt>::max() ||
      stored.size() > std::numeric_limits<uInt>::max()) {
    throw SqliteError(SQLITE_CORRUPT, std::string(what) + ": deflated body without a valid size");
  }
  thread_local Inflater in;
  std::string out(static_cast<std::size_t>(size), '\0');
  int rc = in.ok ? inflateReset(&in.z) : Z_MEM_ERROR;
  if (rc == Z_OK) {
    in.z.next_in = reinterpret_cast<const Bytef*>(stored.data());
    in.z.avail_in = static_cast<uInt>(stored.size());
    in.z.next_out = reinterpret_cast<Bytef*>(out.data());
    in.z.avail_out = static_cast<uInt>(out.size());
    rc = inflate(&in.z, Z_FINISH);
  }
  if (rc != Z_STREAM_END || in.z.avail_out != 0 || in.z.avail_in != 0) {
    throw SqliteError(SQLITE_CORRUPT, std::string(what) + ": the stored body does not inflate (" +
                                          (rc == Z_STREAM_END ? std::string("wrong length") : std::string(zError(rc))) +
                                          "); the database file is damaged");
  }
  return out;
}

}  // namespace repeaterd::store
