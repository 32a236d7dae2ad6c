// Identifiers repeaterd makes: record ids (UUIDv7, so they sort by creation time and page
// well) and per-attempt request ids (UUIDv4).
#pragma once

#include <string>

#include "repeaterd/time.hpp"

namespace repeaterd {

std::string uuid_v4();
// RFC 9562 UUIDv7 from `now`: 48 bits of milliseconds, then 12 bits of the millisecond's
// fraction (§6.2 method 3), then random bits. Ids made by this process only ever increase, in
// the order they are made (a clock that stands still or steps back moves the fraction on), so
// id order is creation order: records of the same case are delivered in it (ordered repeaters).
std::string uuid_v7(Micros now);

// Lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

// Whether a presented secret equals the expected one, in a time that does not depend on where
// they first differ (tokens of the ingest and admin APIs).
bool equal_secret(std::string_view a, std::string_view b);

}  // namespace repeaterd
