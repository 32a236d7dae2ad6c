// Time helpers: clock, ISO 8601 output, and the parsers for the duration and size strings of
// the config file and for HTTP Retry-After values.
#include "repeaterd/time.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "common/text.hpp"

namespace repeaterd {
namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::sys_days;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads a run of decimal digits starting at `pos` into `out`. False when there is no digit or
// the number does not fit: a config value that silently wrapped would be worse than an error.
bool read_number(std::string_view s, std::size_t& pos, std::uint64_t& out) {
  const std::size_t start = pos;
  std::uint64_t n = 0;
  while (pos < s.size() && is_digit(s[pos])) {
    if (__builtin_mul_overflow(n, std::uint64_t{10}, &n) ||
        __builtin_add_overflow(n, static_cast<std::uint64_t>(s[pos] - '0'), &n)) {
      return false;
    }
    ++pos;
  }
  out = n;
  return pos > start;
}

struct Unit {
  std::string_view name;
  std::int64_t millis;
};

// Longest names first where one is a prefix of another ("ms" before "m").
constexpr std::array<Unit, 5> kDurationUnits{{
    {"d", 24LL * 60 * 60 * 1000},
    {"h", 60LL * 60 * 1000},
    {"ms", 1},
    {"m", 60LL * 1000},
    {"s", 1000},
}};

// Rank by size, to require terms from largest to smallest ("1h30m", not "30m1h" or "1m1m"):
// anything else is more likely a typo than an intent.
int unit_rank(std::int64_t millis) {
  switch (millis) {
    case 24LL * 60 * 60 * 1000:
      return 5;
    case 60LL * 60 * 1000:
      return 4;
    case 60LL * 1000:
      return 3;
    case 1000:
      return 2;
    default:
      return 1;
  }
}

struct SizeUnit {
  std::string_view name;
  std::uint64_t bytes;
};

constexpr std::array<SizeUnit, 9> kSizeUnits{{
    {"B", 1},
    {"KiB", 1ULL << 10},
    {"MiB", 1ULL << 20},
    {"GiB", 1ULL << 30},
    {"TiB", 1ULL << 40},
    {"KB", 1000ULL},
    {"MB", 1000ULL * 1000},
    {"GB", 1000ULL * 1000 * 1000},
    {"TB", 1000ULL * 1000 * 1000 * 1000},
}};

// HTTP's optional whitespace: spaces and tabs, never line breaks.
constexpr std::string_view kOws = " \t";

// Fixed-width decimal field of an HTTP-date.
bool fixed_number(std::string_view s, std::size_t pos, std::size_t width, unsigned& out) {
  if (pos + width > s.size()) return false;
  unsigned n = 0;
  for (std::size_t i = pos; i < pos + width; ++i) {
    if (!is_digit(s[i])) return false;
    n = n * 10 + static_cast<unsigned>(s[i] - '0');
  }
  out = n;
  return true;
}

// IMF-fixdate (RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT". Returns seconds since the
// epoch. The obsolete RFC 850 and asctime forms are not accepted: servers have sent the fixed
// form for decades, and an unparseable Retry-After only means the normal backoff applies.
std::optional<std::int64_t> parse_imf_fixdate(std::string_view s) {
  static constexpr std::array<std::string_view, 7> kDays{"Mon", "Tue", "Wed", "Thu",
                                                         "Fri", "Sat", "Sun"};
  static constexpr std::array<std::string_view, 12> kMonths{
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  // "Sun, 06 Nov 1994 08:49:37 GMT" is exactly 29 characters.
  if (s.size() != 29) return std::nullopt;
  bool day_ok = false;
  for (auto d : kDays) day_ok = day_ok || s.substr(0, 3) == d;
  if (!day_ok || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT") {
    return std::nullopt;
  }
  unsigned month = 0;
  for (unsigned i = 0; i < kMonths.size(); ++i) {
    if (s.substr(8, 3) == kMonths[i]) month = i + 1;
  }
  unsigned day = 0, year = 0, hour = 0, minute = 0, second = 0;
  if (month == 0 || !fixed_number(s, 5, 2, day) || !fixed_number(s, 12, 4, year) ||
      !fixed_number(s, 17, 2, hour) || !fixed_number(s, 20, 2, minute) ||
      !fixed_number(s, 23, 2, second)) {
    return std::nullopt;
  }
  // Second 60 is a leap second, which the format allows.
  if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
  const std::chrono::year_month_day date{std::chrono::year{static_cast<int>(year)},
                                         std::chrono::month{month}, std::chrono::day{day}};
  if (!date.ok()) return std::nullopt;
  const std::int64_t day_count = sys_days{date}.time_since_epoch().count();
  return day_count * 86400 + hour * 3600LL + minute * 60LL + second;
}

struct CivilDate {
  std::int64_t year;
  unsigned month;  // 1..12
  unsigned day;    // 1..31
};

// Proleptic Gregorian date of a day number (days since 1970-01-01), for every int64 input.
// Howard Hinnant's civil_from_days; std::chrono::year_month_day would wrap beyond its year
// range (±32767), and a timestamp must never print as a plausible but wrong date.
CivilDate civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);                    // [0, 146096]
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                // [0, 365]
  const unsigned mp = (5 * doy + 2) / 153;                                     // [0, 11]
  const unsigned day = doy - (153 * mp + 2) / 5 + 1;
  const unsigned month = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t year = static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2 ? 1 : 0);
  return {year, month, day};
}

}  // namespace

Micros now_micros() {
  return duration_cast<microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string format_iso8601(Micros t) {
  // Floor division, not truncation: a time before 1970 belongs to the earlier day. Done on
  // integers so that no value of t can overflow.
  constexpr std::int64_t kMicrosPerDay = 86'400'000'000;
  std::int64_t day = t / kMicrosPerDay;
  std::int64_t in_day = t % kMicrosPerDay;
  if (in_day < 0) {
    in_day += kMicrosPerDay;
    --day;
  }
  const CivilDate date = civil_from_days(day);
  const std::int64_t secs = in_day / 1'000'000;
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), "%04lld-%02u-%02uT%02d:%02d:%02d.%06dZ",
                static_cast<long long>(date.year), date.month, date.day,
                static_cast<int>(secs / 3600), static_cast<int>(secs / 60 % 60),
                static_cast<int>(secs % 60), static_cast<int>(in_day % 1'000'000));
  return buf.data();
}

std::optional<Duration> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::size_t pos = 0;
  std::int64_t total = 0;
  int last_rank = 6;
  while (pos < text.size()) {
    std::uint64_t n = 0;
    if (!read_number(text, pos, n)) return std::nullopt;
    const Unit* unit = nullptr;
    for (const auto& u : kDurationUnits) {
      if (text.substr(pos, u.name.size()) == u.name) {
        unit = &u;
        break;
      }
    }
    if (unit == nullptr) return std::nullopt;
    pos += unit->name.size();
    const int rank = unit_rank(unit->millis);
    if (rank >= last_rank) return std::nullopt;
    last_rank = rank;
    std::int64_t term = 0;
    if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
        __builtin_mul_overflow(static_cast<std::int64_t>(n), unit->millis, &term) ||
        __builtin_add_overflow(total, term, &total)) {
      return std::nullopt;
    }
  }
  return Duration{total};
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t pos = 0;
  std::uint64_t n = 0;
  if (!read_number(text, pos, n)) return std::nullopt;
  const std::string_view suffix = text.substr(pos);
  if (suffix.empty()) return n;
  for (const auto& u : kSizeUnits) {
    if (suffix == u.name) {
      std::uint64_t bytes = 0;
      if (__builtin_mul_overflow(n, u.bytes, &bytes)) return std::nullopt;
      return bytes;
    }
  }
  return std::nullopt;
}

std::optional<Duration> parse_retry_after(std::string_view value, Micros now) {
  value = trim(value, kOws);
  if (value.empty()) return std::nullopt;
  if (is_digit(value.front())) {
    std::size_t pos = 0;
    std::uint64_t secs = 0;
    const bool fits = read_number(value, pos, secs);
    // Only digits are a delay-seconds; "120s" or "1.5" are not valid and not guessed at.
    for (std::size_t i = pos; i < value.size(); ++i) {
      if (!is_digit(value[i])) return std::nullopt;
    }
    // A delay too long to represent is still a valid answer ("wait a very long time");
    // callers cap it at the repeater's max_delay.
    constexpr auto kMaxSecs =
        static_cast<std::uint64_t>(std::numeric_limits<Duration::rep>::max() / 1000);
    if (!fits || secs > kMaxSecs) return Duration::max();
    return Duration{static_cast<Duration::rep>(secs) * 1000};
  }
  const auto at = parse_imf_fixdate(value);
  if (!at) return std::nullopt;
  std::int64_t delta_micros = 0;
  if (__builtin_sub_overflow(*at * 1'000'000, now, &delta_micros)) return std::nullopt;
  if (delta_micros <= 0) return Duration{0};
  // Round up: retrying a fraction of a millisecond before the server's date is too early.
  return Duration{(delta_micros + 999) / 1000};
}

// Spaces around the parts are forgiven: "30 / m" is as clear as "30/m".
std::optional<double> parse_rate(std::string_view text) {
  text = trim(text, kOws);
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string_view number = trim(text.substr(0, slash), kOws);
  const std::string_view unit = trim(text.substr(slash + 1), kOws);
  double count = 0;
  const auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), count);
  if (number.empty() || ec != std::errc() || ptr != number.data() + number.size()) return std::nullopt;
  double per_seconds = 0;
  if (unit == "s") {
    per_seconds = 1;
  } else if (unit == "m") {
    per_seconds = 60;
  } else if (unit == "h") {
    per_seconds = 3600;
  } else {
    return std::nullopt;
  }
  const double rate = count / per_seconds;
  if (!std::isfinite(rate) || !(rate > 0)) return std::nullopt;
  return rate;
}

}  // namespace repeaterd
