// payload/datetime: phone times as CommCare HQ stores and forwards them (spec §4).
//
// Phones write local times with an offset (2015-04-17T16:04:54.950-04). HQ converts them to
// UTC with microseconds and a Z (2015-04-17T20:04:54.950000Z) wherever it writes them: case
// dates, and every datetime-looking value of a form's JSON (HQ's adjust_datetimes). The 2015
// seed page shows the offset dropped and the wall-clock digits kept; HQ has fixed that since,
// and so has repeaterd. Pure code.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "repeaterd/time.hpp"

namespace repeaterd::payload {

// A date ("2010-06-29") or a date and time ("2015-04-17T16:04:54.950-04", with 'T' or a space,
// optional seconds, any number of fraction digits, and "Z", "+hh", "+hhmm" or "+hh:mm").
struct PhoneTime {
  Micros utc = 0;       // the instant; a time without an offset is taken as UTC
  bool has_time = false;
  int fraction_digits = 0;  // digits after the seconds' decimal point, as written
};
std::optional<PhoneTime> parse_phone_time(std::string_view text);

// A date or a date and time as UTC ISO 8601 with microseconds: "2015-04-17T16:04:54.950-04" ->
// "2015-04-17T20:04:54.950000Z", "2010-06-29" -> "2010-06-29T00:00:00.000000Z". Text that is
// not a valid date/time is returned unchanged.
std::string normalize_datetime(std::string_view text);

// HQ's adjust_datetimes for one string value: a date *and time* that HQ's re_loose_datetime
// matches (a fraction, when there is one, of 3 to 6 digits) becomes UTC ISO 8601 with
// microseconds; anything else (a date alone, a time alone, "…:34.1", "2015-13-01T..", free
// text) is nullopt and stays as it was.
std::optional<std::string> adjust_datetime(std::string_view text);

// "2015-04-17T20:04:54.950000Z" -> "2015-04-17" (the first ten characters of a normalised time).
std::string date_only(std::string_view normalized);

}  // namespace repeaterd::payload
