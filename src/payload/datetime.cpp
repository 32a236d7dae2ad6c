// Phone times to UTC. See datetime.hpp.
#include "payload/datetime.hpp"

namespace repeaterd::payload {
namespace {

constexpr Micros kMicrosPerSecond = 1'000'000;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads exactly `n` digits at `pos`.
bool read_digits(std::string_view s, std::size_t& pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!is_digit(s[pos + i])) return false;
    v = v * 10 + (s[pos + i] - '0');
  }
  pos += n;
  out = v;
  return true;
}

int days_in_month(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
std::int64_t days_from_civil(int y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const int yoe = y - era * 400;
  const int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return static_cast<std::int64_t>(era) * 146097 + doe - 719468;
}

// "Z", "+hh", "+hh:mm" or "+hhmm" (or "-") as seconds east of UTC.
std::optional<int> zone_offset(std::string_view zone) {
  if (zone == "Z" || zone == "z") return 0;
  if (zone.empty() || (zone[0] != '+' && zone[0] != '-')) return std::nullopt;
  std::size_t pos = 1;
  int hours = 0, minutes = 0;
  if (!read_digits(zone, pos, 2, hours) || hours > 23) return std::nullopt;
  if (pos < zone.size()) {
    if (zone[pos] == ':') ++pos;
    if (!read_digits(zone, pos, 2, minutes) || minutes > 59 || pos != zone.size()) return std::nullopt;
  }
  const int east = hours * 3600 + minutes * 60;
  return zone[0] == '-' ? -east : east;
}

}  // namespace

std::optional<PhoneTime> parse_phone_time(std::string_view text) {
  std::size_t pos = 0;
  int year = 0, month = 0, day = 0;
  if (!read_digits(text, pos, 4, year) || pos >= text.size() || text[pos++] != '-' ||
      !read_digits(text, pos, 2, month) || pos >= text.size() || text[pos++] != '-' ||
      !read_digits(text, pos, 2, day)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)) return std::nullopt;
  PhoneTime out;
  out.utc = days_from_civil(year, month, day) * 86'400 * kMicrosPerSecond;
  if (pos == text.size()) return out;

  if (text[pos] != 'T' && text[pos] != ' ') return std::nullopt;
  ++pos;
  int hour = 0, minute = 0, second = 0;
  if (!read_digits(text, pos, 2, hour) || pos >= text.size() || text[pos++] != ':' ||
      !read_digits(text, pos, 2, minute)) {
    return std::nullopt;
  }
  if (pos < text.size() && text[pos] == ':') {
    ++pos;
    if (!read_digits(text, pos, 2, second)) return std::nullopt;
  }
  // No leap second: HQ's parser refuses 60 too, and leaves such text as it was.
  if (hour > 23 || minute > 59 || second > 59) return std::nullopt;
  Micros fraction = 0;
  if (pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
    ++pos;
    const std::size_t start = pos;
    Micros scale = 100'000;
    for (; pos < text.size() && is_digit(text[pos]); ++pos, scale /= 10) {
      fraction += (text[pos] - '0') * scale;  // digits beyond microseconds are dropped (scale 0)
    }
    if (pos == start) return std::nullopt;
    out.fraction_digits = static_cast<int>(pos - start);
  }
  int offset = 0;
  if (pos < text.size()) {
    const auto zone = zone_offset(text.substr(pos));
    if (!zone) return std::nullopt;  // junk after a time is not a time
    offset = *zone;
  }
  out.has_time = true;
  out.utc += (static_cast<Micros>(hour) * 3600 + minute * 60 + second - offset) * kMicrosPerSecond + fraction;
  return out;
}

std::string normalize_datetime(std::string_view text) {
  const auto t = parse_phone_time(text);
  return t ? format_iso8601(t->utc) : std::string(text);
}

std::optional<std::string> adjust_datetime(std::string_view text) {
  const auto t = parse_phone_time(text);
  if (!t || !t->has_time) return std::nullopt;
  if (t->fraction_digits != 0 && (t->fraction_digits < 3 || t->fraction_digits > 6)) return std::nullopt;
  return format_iso8601(t->utc);
}

std::string date_only(std::string_view normalized) { return std::string(normalized.substr(0, 10)); }

}  // namespace repeaterd::payload
