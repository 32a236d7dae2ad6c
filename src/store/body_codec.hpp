// How a payload's body is kept on disk. A form is stored deflated (zlib, RFC 1950) when that
// saves at least a tenth of it: XML and JSON submissions shrink to about half, which is the
// biggest part of the bytes a record costs on disk. Bodies that do not shrink (small ones, or
// already compressed) are kept as received. Encoding happens on the ingest thread, before the
// submission reaches the writer; decoding in the sender (claimed_body) and the admin API, never
// on the writer thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "repeaterd/result.hpp"

namespace repeaterd::store {

struct NewPayload;
struct ClaimedRecord;

// The payloads.encoding value of a deflated body ('' is a body kept as received).
inline constexpr std::string_view kDeflate = "deflate";

// The body deflated, or nullopt when deflating would not save at least a tenth of it.
std::optional<std::string> deflate_body(std::string_view body);

// Fills p.sha256 (of the body as received) and p.deflated, so that the writer thread does
// neither. Store::ingest takes a payload with or without them.
void prepare_payload(NewPayload& p);

// A claimed record's body as it is sent (inflated when stored deflated), moved out of `rec`; an
// error naming the record when a deflated body does not inflate.
Result<std::string> claimed_body(ClaimedRecord& rec);

// A stored body as it was received. `encoding` and `size` are the payloads row's columns.
// Throws SqliteError(SQLITE_CORRUPT) naming `what` when a deflated body does not inflate to
// exactly `size` bytes.
std::string stored_body(std::string_view stored, std::string_view encoding, std::int64_t size,
                        std::string_view what);

}  // namespace repeaterd::store
