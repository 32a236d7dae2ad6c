// sender/auth: HTTP Basic and Digest, OAuth 2.0 client credentials, Standard Webhooks
// signatures and the rate_limit token bucket. Everything here is pure: the caller brings the
// clock, the nonces and the network.
#include "sender/auth.hpp"

#include "common/encoding.hpp"
#include "common/text.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

namespace repeaterd::sender {
namespace {

// ---------------------------------------------------------------------------------------------
// Small text helpers (ASCII only: HTTP tokens are ASCII, and locale-dependent <cctype> would
// make header parsing depend on the environment).

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// RFC 9110 tchar.
bool is_tchar(char c) {
  if (is_alnum(c)) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

// RFC 7235 token68 characters (without the trailing '=' padding).
bool is_token68_char(char c) {
  return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

bool is_ows(char c) { return c == ' ' || c == '\t'; }

// ---------------------------------------------------------------------------------------------
// Encodings and OpenSSL wrappers.


// Lowercase hex digest, as RFC 7616 requires for every H(...).
std::string hex_digest(const EVP_MD* md, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> buf{};
  unsigned int len = 0;
  // EVP_Digest only fails on allocation failure or a provider without the algorithm; both are
  // broken installations, not input errors, so there is nothing useful to return instead.
  const int ok = EVP_Digest(data.data(), data.size(), buf.data(), &len, md, nullptr);
  assert(ok == 1);
  (void)ok;
  return hex_encode(std::string_view(reinterpret_cast<const char*>(buf.data()), len));
}

// RFC 6749 Appendix B: application/x-www-form-urlencoded, the HTML way (space is '+').
std::string form_urlencode(std::string_view s) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_alnum(ch) || ch == '*' || ch == '-' || ch == '.' || ch == '_') {
      out.push_back(ch);
    } else if (ch == ' ') {
      out.push_back('+');
    } else {
      out.push_back('%');
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 0x0f]);
    }
  }
  return out;
}

// RFC 8187 value-chars for username* (attr-char, everything else percent-encoded).
std::string ext_value_encode(std::string_view s) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out = "UTF-8''";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    const bool attr_char = is_alnum(ch) || ch == '!' || ch == '#' || ch == '$' || ch == '&' || ch == '+' ||
                           ch == '-' || ch == '.' || ch == '^' || ch == '_' || ch == '`' || ch == '|' || ch == '~';
    if (attr_char) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 0x0f]);
    }
  }
  return out;
}

// A quoted-string, escaping the two characters that would end it early.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

// Whether `s` holds a control character (HTAB aside). Field values never do (RFC 9110 §5.5), so
// a challenge whose realm, nonce or opaque holds one is malformed; echoing it would put a CR or
// LF into our Authorization header.
bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c != '\t' && (c < 0x20 || c == 0x7f);
  });
}

// Whether a value can travel in a quoted-string as is: RFC 7616 §3.4.4 sends anything else
// (non-ASCII, controls) as username* instead.
bool quotable(std::string_view s) {
  return !has_control(s) && std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// ---------------------------------------------------------------------------------------------
// WWW-Authenticate parsing (RFC 9110 §11.6.1, formerly RFC 7235 §4.1).

struct Challenge {
  std::string scheme;
  std::map<std::string, std::string> params;  // names lowercased; token68 credentials dropped
};

class ChallengeParser {
 public:
  explicit ChallengeParser(std::string_view s) : s_(s) {}

  std::vector<Challenge> parse() {
    std::vector<Challenge> out;
    while (true) {
      skip_ows_and_commas();
      if (at_end()) break;
      std::string scheme = read_token();
      if (scheme.empty()) {  // garbage where a scheme should be: resynchronise at the next comma
        skip_to_comma();
        continue;
      }
      Challenge c{std::move(scheme), {}};
      read_params(c);
      out.push_back(std::move(c));
    }
    return out;
  }

 private:
  // A challenge's parameters run until a token that is not followed by '=' appears after a
  // comma: that token is the next challenge's scheme. Right after the scheme (no comma yet) such
  // a token is a token68 instead, which no scheme we use needs.
  void read_params(Challenge& c) {
    bool first = true;
    while (true) {
      const bool saw_comma = skip_ows_and_commas();
      if (at_end()) return;
      const std::size_t item_start = pos_;
      const std::string name = read_token();
      if (name.empty()) {
        if (first && is_token68_char(s_[pos_])) {
          skip_token68();
        } else {
          skip_to_comma();
        }
        first = false;
        continue;
      }
      skip_ows();
      if (!at_end() && s_[pos_] == '=') {
        ++pos_;
        skip_ows();
        if (!at_end() && s_[pos_] == '"') {
          c.params[lower(name)] = read_quoted();
        } else if (!at_end() && s_[pos_] == '=') {
          // "abc==": token68 padding, not a parameter.
          while (!at_end() && s_[pos_] == '=') ++pos_;
        } else {
          c.params[lower(name)] = read_token();
        }
      } else if (first && !saw_comma) {
        pos_ = item_start;
        skip_token68();
      } else {
        pos_ = item_start;  // the next challenge's scheme
        return;
      }
      first = false;
    }
  }

  bool at_end() const { return pos_ >= s_.size(); }

  void skip_ows() {
    while (!at_end() && is_ows(s_[pos_])) ++pos_;
  }

  // Returns whether a comma was skipped (empty list elements are allowed by RFC 9110 §5.6.1).
  bool skip_ows_and_commas() {
    bool comma = false;
    while (!at_end() && (is_ows(s_[pos_]) || s_[pos_] == ',')) {
      comma = comma || s_[pos_] == ',';
      ++pos_;
    }
    return comma;
  }

  void skip_to_comma() {
    while (!at_end() && s_[pos_] != ',') {
      if (s_[pos_] == '"') {
        (void)read_quoted();
      } else {
        ++pos_;
      }
    }
  }

  void skip_token68() {
    while (!at_end() && is_token68_char(s_[pos_])) ++pos_;
    while (!at_end() && s_[pos_] == '=') ++pos_;
  }

  std::string read_token() {
    const std::size_t start = pos_;
    while (!at_end() && is_tchar(s_[pos_])) ++pos_;
    return std::string(s_.substr(start, pos_ - start));
  }

  // At a '"'. An unterminated string runs to the end: lenient, and it cannot swallow anything
  // but the rest of this one header value.
  std::string read_quoted() {
    std::string out;
    ++pos_;
    while (!at_end()) {
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c == '\\' && !at_end()) {
        out.push_back(s_[pos_++]);
      } else {
        out.push_back(c);
      }
    }
    return out;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Digest algorithms.

struct DigestAlgorithm {
  const EVP_MD* md;
  bool sess;
  int preference;  // higher is stronger
};

std::optional<DigestAlgorithm> lookup_algorithm(std::string_view name) {
  if (iequals(name, "MD5")) return DigestAlgorithm{EVP_md5(), false, 1};
  if (iequals(name, "MD5-sess")) return DigestAlgorithm{EVP_md5(), true, 1};
  if (iequals(name, "SHA-256")) return DigestAlgorithm{EVP_sha256(), false, 2};
  if (iequals(name, "SHA-256-sess")) return DigestAlgorithm{EVP_sha256(), true, 2};
  if (iequals(name, "SHA-512-256")) return DigestAlgorithm{EVP_sha512_256(), false, 3};
  if (iequals(name, "SHA-512-256-sess")) return DigestAlgorithm{EVP_sha512_256(), true, 3};
  return std::nullopt;
}

// Whether a comma-separated qop list (RFC 7616: qop="auth,auth-int") offers plain "auth".
bool offers_qop_auth(std::string_view list) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), "auth")) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

std::string param_or_empty(const Challenge& c, const std::string& name) {
  const auto it = c.params.find(name);
  return it == c.params.end() ? std::string() : it->second;
}

// Up to `max_bytes` of `s` for an error message: cut at a UTF-8 boundary, with control
// characters (newlines in an HTML error page) flattened so the event log stays one line.
std::string excerpt(std::string_view s, std::size_t max_bytes) {
  s = trim(s);
  bool cut = false;
  if (s.size() > max_bytes) {
    std::size_t end = max_bytes;
    while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
    s = s.substr(0, end);
    cut = true;
  }
  std::string out;
  out.reserve(s.size() + 3);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(c < 0x20 || c == 0x7f ? ' ' : ch);
  }
  if (cut) out += "...";
  return out;
}

std::optional<std::int64_t> expires_in_from(const nlohmann::json& v) {
  double seconds = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      return u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                 ? std::numeric_limits<std::int64_t>::max()
                 : static_cast<std::int64_t>(u);
    }
    const auto i = v.get<std::int64_t>();
    return i < 0 ? std::nullopt : std::optional<std::int64_t>(i);
  }
  if (v.is_number_float()) {
    seconds = v.get<double>();
  } else if (v.is_string()) {
    // Some servers (older Azure AD among them) send "3599" as a string.
    const std::string_view s = trim(v.get_ref<const std::string&>());
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), seconds);
    if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  } else {
    return std::nullopt;
  }
  // A negative or absurd lifetime is as good as none: the caller then refreshes on 401.
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 9.0e18) return std::nullopt;
  return static_cast<std::int64_t>(seconds);
}

std::string status_line(int status, std::string_view reason) {
  std::string out = "HTTP " + std::to_string(status);
  reason = trim(reason);
  if (!reason.empty()) {
    out += ' ';
    out += excerpt(reason, 100);
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string basic_authorization(std::string_view username, std::string_view password) {
  // RFC 7617 §2.1: the charset is UTF-8, which is what the config strings already are.
  std::string credentials;
  credentials.reserve(username.size() + 1 + password.size());
  credentials.append(username).append(":").append(password);
  return "Basic " + base64_encode(credentials);
}

std::optional<DigestChallenge> pick_digest_challenge(const std::vector<std::string>& www_authenticate) {
  std::optional<DigestChallenge> best;
  int best_preference = 0;
  for (const std::string& header : www_authenticate) {
    for (const Challenge& c : ChallengeParser(header).parse()) {
      if (!iequals(c.scheme, "Digest")) continue;
      DigestChallenge d;
      d.nonce = param_or_empty(c, "nonce");
      if (d.nonce.empty()) continue;  // nothing to answer
      d.realm = param_or_empty(c, "realm");
      d.opaque = param_or_empty(c, "opaque");
      if (has_control(d.realm) || has_control(d.nonce) || has_control(d.opaque)) continue;
      if (const auto it = c.params.find("algorithm"); it != c.params.end()) d.algorithm = it->second;
      const auto algorithm = lookup_algorithm(d.algorithm);
      if (!algorithm) continue;  // e.g. a future algorithm: another challenge may suit
      if (const auto it = c.params.find("qop"); it != c.params.end()) {
        d.qop_auth = offers_qop_auth(it->second);
        // Only auth-int offered: answering without qop would be refused, and auth-int would
        // need the body hashed into every challenge response; we do not do that.
        if (!d.qop_auth) continue;
      }
      d.stale = iequals(param_or_empty(c, "stale"), "true");
      d.userhash = iequals(param_or_empty(c, "userhash"), "true");
      // Strictly greater: among equals the server's first (its preferred) challenge wins.
      if (algorithm->preference > best_preference) {
        best_preference = algorithm->preference;
        best = std::move(d);
      }
    }
  }
  return best;
}

std::string digest_authorization(const DigestChallenge& c, std::string_view username, std::string_view password,
                                 std::string_view method, std::string_view uri, std::uint32_t nc,
                                 std::string_view cnonce) {
  // pick_digest_challenge only returns algorithms we know; MD5 keeps a hand-built challenge
  // with a typo working the way RFC 2617 servers expect.
  const DigestAlgorithm algorithm = lookup_algorithm(c.algorithm).value_or(DigestAlgorithm{EVP_md5(), false, 1});
  const auto h = [&](std::string_view data) { return hex_digest(algorithm.md, data); };
  const auto join = [](std::initializer_list<std::string_view> parts) {
    std::string out;
    for (const std::string_view p : parts) {
      if (!out.empty()) out.push_back(':');
      out.append(p);
    }
    return out;
  };

  std::string ha1 = h(join({username, c.realm, password}));
  if (algorithm.sess) ha1 = h(join({ha1, c.nonce, cnonce}));
  const std::string ha2 = h(join({method, uri}));

  std::array<char, 9> nc_hex{};
  std::snprintf(nc_hex.data(), nc_hex.size(), "%08x", static_cast<unsigned>(nc));
  const std::string_view nc_text(nc_hex.data(), 8);

  const std::string response = c.qop_auth ? h(join({ha1, c.nonce, nc_text, cnonce, "auth", ha2}))
                                          : h(join({ha1, c.nonce, ha2}));  // RFC 2069

  std::string out = "Digest ";
  if (c.userhash) {
    out += "username=" + quote(h(join({username, c.realm})));
  } else if (quotable(username)) {
    out += "username=" + quote(username);
  } else {
    out += "username*=" + ext_value_encode(username);
  }
  out += ", realm=" + quote(c.realm);
  out += ", nonce=" + quote(c.nonce);
  out += ", uri=" + quote(uri);
  out += ", algorithm=" + c.algorithm;
  out += ", response=" + quote(response);
  if (c.qop_auth) {
    out += ", qop=auth, nc=";
    out += nc_text;
    out += ", cnonce=" + quote(cnonce);
  } else if (algorithm.sess) {
    // Without qop there is no cnonce field in RFC 2069, but the -sess HA1 used one: the server
    // can only check the response if it learns it.
    out += ", cnonce=" + quote(cnonce);
  }
  if (!c.opaque.empty()) out += ", opaque=" + quote(c.opaque);
  if (c.userhash) out += ", userhash=true";
  return out;
}

TokenRequest token_request(std::string_view client_id, std::string_view client_secret, std::string_view scope,
                           ClientAuth how) {
  TokenRequest r;
  r.body = "grant_type=client_credentials";
  if (!scope.empty()) r.body += "&scope=" + form_urlencode(scope);
  if (how == ClientAuth::basic) {
    // RFC 6749 §2.3.1: each part is form-urlencoded before the Basic encoding, so a ':' in the
    // client id cannot split it.
    r.authorization = basic_authorization(form_urlencode(client_id), form_urlencode(client_secret));
  } else {
    r.body += "&client_id=" + form_urlencode(client_id);
    r.body += "&client_secret=" + form_urlencode(client_secret);
  }
  return r;
}

Result<OAuthToken> parse_token_response(int status, std::string_view reason, std::string_view body) {
  const std::string prefix = "token endpoint answered " + status_line(status, reason);
  const nlohmann::json json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);

  if (status < 200 || status > 299) {
    if (json.is_object()) {
      const auto error = json.find("error");
      if (error != json.end() && error->is_string()) {
        std::string message = prefix + ": " + excerpt(error->get_ref<const std::string&>(), 200);
        const auto description = json.find("error_description");
        if (description != json.end() && description->is_string() && !description->get_ref<const std::string&>().empty()) {
          message += " (" + excerpt(description->get_ref<const std::string&>(), 200) + ")";
        }
        return make_error(std::move(message));
      }
    }
    const std::string start = excerpt(body, 200);
    return make_error(start.empty() ? prefix : prefix + ": " + start);
  }

  // The body of a 2xx is never quoted: it may hold a token (e.g. a form-encoded answer).
  if (!json.is_object()) {
    return make_error(prefix + " but its body is not a JSON object; is token_url the token endpoint?");
  }
  const auto access_token = json.find("access_token");
  if (access_token == json.end() || !access_token->is_string() ||
      access_token->get_ref<const std::string&>().empty()) {
    return make_error(prefix + " without an access_token string");
  }
  if (const auto type = json.find("token_type"); type != json.end()) {
    // RFC 6749 §7.1: we only know how to present bearer tokens. Absent is tolerated: some
    // servers omit it, and bearer is the only type in use.
    if (!type->is_string() || !iequals(type->get_ref<const std::string&>(), "bearer")) {
      return make_error(prefix + " with token_type " + excerpt(type->dump(), 50) + "; only bearer tokens are supported");
    }
  }
  // RFC 6750 §2.1: the token goes into "Authorization: Bearer TOKEN", whose b64token syntax is
  // visible ASCII. A control character (CR/LF above all) would split the header; a space or a
  // byte past 0x7E would be refused by the receiver. The token itself is never quoted.
  const std::string& value = access_token->get_ref<const std::string&>();
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c < 0x21 || c > 0x7E) {
      return make_error(prefix + " with an access_token that cannot go in an Authorization header (byte " +
                        std::to_string(i + 1) + " of " + std::to_string(value.size()) +
                        " is not visible ASCII); is token_url the token endpoint?");
    }
  }
  OAuthToken token;
  token.access_token = value;
  if (const auto expires = json.find("expires_in"); expires != json.end()) token.expires_in_s = expires_in_from(*expires);
  return token;
}


std::string webhook_signature(std::string_view key, std::string_view id, std::int64_t timestamp_s,
                              std::string_view body) {
  std::string message;
  message.reserve(id.size() + body.size() + 24);
  message.append(id).append(".").append(std::to_string(timestamp_s)).append(".").append(body);
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int len = 0;
  // Only fails on allocation failure; see hex_digest.
  const unsigned char* ok = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                 reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac.data(), &len);
  assert(ok != nullptr);
  (void)ok;
  return "v1," + base64_encode(std::string_view(reinterpret_cast<const char*>(mac.data()), len));
}


// A burst below one token could never satisfy a request without waiting, which is the same as a
// burst of one; clamping keeps take()'s arithmetic simple.
TokenBucket::TokenBucket(double rate_per_s, double burst, Micros now)
    : rate_(rate_per_s), burst_(std::max(burst, 1.0)), tokens_(burst_), last_(now) {
  assert(rate_per_s > 0 && std::isfinite(rate_per_s));  // parse_rate guarantees it
}

Duration TokenBucket::take(Micros now) {
  // A clock that steps back must not mint tokens, nor remove them.
  if (now > last_) {
    const double elapsed_s = static_cast<double>(now - last_) / 1e6;
    tokens_ = std::min(burst_, tokens_ + elapsed_s * rate_);
    last_ = now;
  }
  const double before = tokens_;
  tokens_ -= 1;
  if (before >= 1) return Duration::zero();
  // The token is taken now, paid for by future refills: the next caller sees a deeper debt and
  // waits one interval longer, so concurrent senders space out evenly instead of stampeding.
  const double wait_ms = (1 - before) / rate_ * 1000.0;
  // Round up (waking early would find no token), but not over float noise like 200.0000001.
  return Duration(static_cast<Duration::rep>(std::ceil(wait_ms - 1e-6)));
}

}  // namespace repeaterd::sender
