// sender/auth: the pure parts of authenticating and signing requests (spec §2 auth, §4
// signing, §5 rate_limit), free of I/O and clocks so they are tested with fixed inputs.
//
// - HTTP Basic (RFC 7617) and Digest (RFC 7616: MD5, SHA-256 and their -sess variants,
//   qop=auth, nonce counts, stale=true).
// - OAuth 2.0 client credentials (RFC 6749 §4.4): the token request and the token response.
// - Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature).
// - A token bucket for rate_limit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "repeaterd/result.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd::sender {

// "Basic base64(user:password)"
std::string basic_authorization(std::string_view username, std::string_view password);

struct DigestChallenge {
  std::string realm;
  std::string nonce;
  std::string opaque;              // echoed back when present
  std::string algorithm = "MD5";   // MD5, SHA-256, SHA-512-256 and their -sess forms (as the server wrote it)
  bool qop_auth = false;           // the server offered qop="auth" (we never use auth-int)
  bool stale = false;              // the nonce expired; the credentials were right
  bool userhash = false;
};

// The best Digest challenge among WWW-Authenticate header values (several headers, or several
// challenges in one header): SHA-256 before MD5, and only algorithms we support. nullopt when
// there is none (e.g. only Basic was offered).
std::optional<DigestChallenge> pick_digest_challenge(const std::vector<std::string>& www_authenticate);

// The Authorization header for one request. `nc` counts the requests made with this nonce
// (1 for the first); `cnonce` is a fresh client nonce (hex). `uri` is the request target.
std::string digest_authorization(const DigestChallenge& c, std::string_view username, std::string_view password,
                                 std::string_view method, std::string_view uri, std::uint32_t nc,
                                 std::string_view cnonce);

// OAuth 2.0 client credentials.
enum class ClientAuth { basic, body };  // client_id/secret in a Basic header (default) or in the form body

struct TokenRequest {
  std::string body;           // application/x-www-form-urlencoded
  std::string authorization;  // the Authorization header, empty with ClientAuth::body
};
TokenRequest token_request(std::string_view client_id, std::string_view client_secret, std::string_view scope,
                           ClientAuth how);

struct OAuthToken {
  std::string access_token;
  std::optional<std::int64_t> expires_in_s;  // absent: the server did not say
};
// The token endpoint's answer. Errors quote what the endpoint said (RFC 6749 §5.2 error and
// error_description, or the status line and the start of the body); never the secret.
Result<OAuthToken> parse_token_response(int status, std::string_view reason, std::string_view body);

// Standard Webhooks: the key comes decoded from the config (common/encoding.hpp
// decode_webhook_secret).
// "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body))
std::string webhook_signature(std::string_view key, std::string_view id, std::int64_t timestamp_s,
                              std::string_view body);

// A token bucket: `rate` tokens a second, holding at most `burst`. Requests wait; they do not
// fail. Not thread-safe (one per connection, on its executor).
class TokenBucket {
 public:
  TokenBucket(double rate_per_s, double burst, Micros now);
  // Takes a token; returns how long the caller must wait before sending (0 when one was there).
  // Tokens taken while waiting are accounted, so concurrent callers queue up evenly.
  Duration take(Micros now);

 private:
  double rate_;
  double burst_;
  double tokens_;
  Micros last_;
};

}  // namespace repeaterd::sender
