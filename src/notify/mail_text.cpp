#include "notify/mail_text.hpp"

#include "common/text.hpp"

namespace repeaterd::notify {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

std::string clean_text(std::string_view s, bool single_line) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t len = utf8_sequence_length(s, i);
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (len > 1) {
      out.append(s.substr(i, len));
      i += len;
      continue;
    }
    const char c = s[i++];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i < s.size() && s[i] == '\n') ++i;  // CRLF is one break
      out += single_line ? ' ' : '\n';
    } else if (c == '\t') {
      out += single_line ? ' ' : '\t';
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
      // Escape sequences and NULs help no reader and can confuse terminal mail clients.
      out += kReplacement;
    } else {
      out += c;
    }
  }
  return out;
}

std::string one_line(std::string_view s) { return clean_text(s, true); }

std::string squeeze_spaces(std::string_view s) {
  std::string out;
  bool pending_space = false;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    out += c;
  }
  return out;
}

// The config's connection URL has no userinfo by contract; this is the second line of defence
// for spec §8 (secrets never appear in emails), since an email leaves the machine.
std::string without_userinfo(std::string_view url) {
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const std::size_t host_start = scheme_end + 3;
  std::size_t authority_end = url.find_first_of("/?#", host_start);
  if (authority_end == std::string_view::npos) authority_end = url.size();
  const std::size_t at = url.substr(host_start, authority_end - host_start).rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  return std::string(url.substr(0, host_start)) + std::string(url.substr(host_start + at + 1));
}

}  // namespace repeaterd::notify
