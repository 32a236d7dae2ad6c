"""Connections against real servers (spec §2 connections, §4, §5, §8): TLS verification and its
failure reasons, verify: false, mutual TLS, Basic and Digest auth (nginx, Apache, a Python
RFC 7616 server), bearer and API-key headers, OAuth 2.0 client credentials, Standard Webhooks
signatures checked by the reference npm library, and rate_limit.

Fixtures (servers.py) start and stop the servers; everything is on 127.0.0.1."""

import base64
import re
import secrets
import time
import unittest

import servers
from harness import (UUID_RE, DaemonTestCase, Reply, connection, free_port, repeater,
                     unique_form)

PASSWORD_ENV = "REPEATERD_TEST_PASSWORD"

# The reasons an attempt error must name (OpenSSL's words; compared case-insensitively).
EXPIRED_RE = r"certificate has expired"
SELF_SIGNED_RE = r"self[- ]signed certificate"
IP_MISMATCH_RE = r"IP address mismatch|hostname mismatch"
HOST_MISMATCH_RE = r"hostname mismatch"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class ConnectionTestCase(DaemonTestCase):
    """Shared helpers: submit one form per call, follow one record to its end."""

    def submit_form(self, d, records: int = 1) -> str:
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=records)
        return iid

    def record_of(self, d, repeater_name: str, payload_id: str | None = None) -> str:
        created = d.events.wait_event("record.created", repeater=repeater_name,
                                      **({"payload_id": payload_id} if payload_id else {}))
        return created[-1]["record_id"]

    def assertSucceededFirstTime(self, d, repeater_name: str, timeout: float = 15) -> dict:
        """The repeater's (only) record succeeded on attempt 1 with no failed attempt."""
        ok = d.events.wait_event("attempt.succeeded", timeout=timeout, repeater=repeater_name)[0]
        failed = d.events.of("attempt.failed", repeater=repeater_name)
        self.assertEqual(failed, [], f"{repeater_name}: no attempt may fail")
        self.assertEqual((ok["attempt"], ok["state"]), (1, "succeeded"), ok)
        self.assertEqual(d.db.attempts_of(ok["record_id"])[0][:3], (1, "succeeded", ok["http_status"]))
        return ok

    def assertCancelledAsClientError(self, d, repeater_name: str, error_re: str | None = None,
                                     http_status: int | None = None, attempts: int = 2) -> list[dict]:
        """The repeater's record failed `attempts` times (the client-error budget) and was
        cancelled; every attempt error (event and attempts.error) matches error_re."""
        cancelled = d.events.wait_event("record.cancelled", timeout=15, repeater=repeater_name)[0]
        failed = d.events.of("attempt.failed", repeater=repeater_name)
        self.assertEqual([(e["attempt"], e["state"]) for e in failed],
                         [(n, "failed") for n in range(1, attempts)] + [(attempts, "cancelled")],
                         f"{repeater_name}: a client error is retried max_attempts_client_error "
                         f"({attempts}) times, then cancelled: {failed}")
        self.assertEqual(cancelled["attempt"], attempts)
        for e in failed:
            self.assertEqual(e.get("http_status"), http_status, f"{repeater_name}: {e}")
            if error_re:
                self.assertRegex(e.get("error", ""), re.compile(error_re, re.I),
                                 f"{repeater_name}: attempt.failed error must name the reason")
        rows = d.db.attempts_of(cancelled["record_id"])
        self.assertEqual([(n, o, s) for n, o, s, _ in rows], [(n, "failed", http_status) for n in range(1, attempts + 1)])
        for _, _, _, error in rows:
            if error_re:
                self.assertRegex(error, re.compile(error_re, re.I), f"{repeater_name}: attempts.error")
        state = d.db.query("SELECT state, attempts FROM records WHERE id = ?", (cancelled["record_id"],))
        self.assertEqual(state, [("cancelled", attempts)])
        return failed


# --------------------------------------------------------------------------- nginx: TLS + Basic

class NginxTlsTest(ConnectionTestCase):
    """nginx over TLS: auth_basic in front of a harness Endpoint (proxy_pass), and servers with an
    expired certificate, one for another name and a self-signed one."""

    PASSWORD = "pw-" + secrets.token_hex(8)

    def setUp(self):
        super().setUp()
        self.pki = servers.shared_pki()
        self.ep = self.endpoint()
        ngdir = self.workdir("nginx")
        (ngdir / "htpasswd").write_text(servers.htpasswd_line("alice", self.PASSWORD))
        self.ports = {k: free_port() for k in ("basic", "expired", "other", "selfsigned")}
        ok = "        location / { return 200 '{}'; }"
        behind_auth = f"""\
        location / {{
            auth_basic "repeaterd test";
            auth_basic_user_file {ngdir}/htpasswd;
            proxy_pass http://127.0.0.1:{self.ep.port};
        }}"""
        both = ("127.0.0.1", "[::1]") if servers.ipv6_loopback() else ("127.0.0.1",)
        p = self.pki
        self.nginx = servers.Nginx(ngdir, [
            servers.nginx_server(self.ports["basic"], behind_auth, cert=p.server_crt, key=p.server_key),
            servers.nginx_server(self.ports["expired"], ok, cert=p.expired_crt, key=p.expired_key),
            servers.nginx_server(self.ports["other"], ok, cert=p.other_crt, key=p.other_key, listen=both),
            servers.nginx_server(self.ports["selfsigned"], ok, cert=p.selfsigned_crt, key=p.selfsigned_key),
        ], list(self.ports.values()))
        self.addCleanup(self.nginx.close)

    def url(self, which: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.ports[which]}/inbox"

    def tls(self, **kw) -> dict:
        return {"ca_file": str(self.pki.ca_crt), **kw}

    def nginx_lines(self, which: str) -> list[str]:
        return [line for line in self.nginx.access_lines() if line.startswith(f"{self.ports[which]} ")]

    def test_basic_auth_over_tls_delivers_body_and_credentials(self):
        d = self.daemon([connection("secure", self.url("basic"), tls=self.tls(),
                                    auth={"type": "basic", "username": "alice", "password_env": PASSWORD_ENV})],
                        [repeater("forms", "secure")], env={PASSWORD_ENV: self.PASSWORD})
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=1)
        req = self.ep.wait_count(1, 15)[0]
        self.assertEqual(req.body, form, "the form must arrive through nginx byte for byte")
        self.assertEqual(req.headers.get("authorization"), basic("alice", self.PASSWORD))
        self.assertEqual(req.headers.get("content-type"), "text/xml")
        ok = self.assertSucceededFirstTime(d, "forms")
        self.assertEqual(ok["http_status"], 200)
        self.assertEqual(len(self.nginx_lines("basic")), 1, self.nginx.access_lines())

    def test_basic_wrong_password_is_a_client_error_then_cancelled(self):
        d = self.daemon([connection("secure", self.url("basic"), tls=self.tls(),
                                    auth={"type": "basic", "username": "alice", "password_env": PASSWORD_ENV})],
                        [repeater("forms", "secure", retry={"max_attempts": 5, "max_attempts_client_error": 2})],
                        env={PASSWORD_ENV: "not-the-password"})
        self.submit_form(d)
        self.assertCancelledAsClientError(d, "forms", http_status=401)
        lines = self.nginx_lines("basic")
        self.assertEqual(len(lines), 2, f"two attempts, each one request: {lines}")
        self.assertTrue(all(f'auth="{basic("alice", "not-the-password")}"' in line for line in lines),
                        f"each attempt must carry the configured Basic credentials: {lines}")
        self.assertEqual(self.ep.count(), 0)

    def test_certificate_failures_are_client_errors_naming_the_reason(self):
        cases = {  # repeater -> (url, reason)
            "expired": (self.url("expired"), EXPIRED_RE),
            "wrong-ip": (self.url("other"), IP_MISMATCH_RE),
            "wrong-host": (self.url("other", "localhost"), HOST_MISMATCH_RE),
            "self-signed": (self.url("selfsigned"), SELF_SIGNED_RE),
        }
        d = self.daemon([connection(f"to-{name}", url, tls=self.tls()) for name, (url, _) in cases.items()],
                        [repeater(name, f"to-{name}", retry={"max_attempts": 5, "max_attempts_client_error": 2})
                         for name in cases])
        self.submit_form(d, records=len(cases))
        for name, (_, reason) in cases.items():
            with self.subTest(name):
                self.assertCancelledAsClientError(d, name, reason, http_status=None)
        self.assertEqual(self.nginx.access_lines(), [], "no HTTP request may be sent over a refused TLS session")

    def test_verify_false_delivers_despite_bad_certificates_and_warns(self):
        names = {"expired": self.url("expired"), "wrong-name": self.url("other"),
                 "self-signed": self.url("selfsigned")}
        d = self.daemon([connection(f"to-{n}", url, tls={"verify": False}) for n, url in names.items()],
                        [repeater(n, f"to-{n}") for n in names])
        self.submit_form(d, records=len(names))
        for n in names:
            with self.subTest(n):
                self.assertSucceededFirstTime(d, n)
        stderr = d.stderr_text()
        for n in names:
            self.assertRegex(stderr, re.compile(rf"to-{n}\b.*verify|verify.*\bto-{n}\b", re.I),
                             f"a warning naming connection to-{n} with verify: false is expected at start")


# --------------------------------------------------------------------------- nginx: mutual TLS

class NginxMutualTlsTest(ConnectionTestCase):

    def setUp(self):
        super().setUp()
        self.pki = servers.shared_pki()
        self.port = free_port()
        self.nginx = servers.Nginx(self.workdir("nginx"), [
            servers.nginx_server(self.port, "        location / { return 200 '{}'; }",
                                 cert=self.pki.server_crt, key=self.pki.server_key,
                                 client_ca=self.pki.client_ca_crt)], [self.port])
        self.addCleanup(self.nginx.close)
        self.url = f"https://127.0.0.1:{self.port}/inbox"

    def test_client_certificate_is_presented(self):
        tls = {"ca_file": str(self.pki.ca_crt), "client_cert_file": str(self.pki.client_crt),
               "client_key_file": str(self.pki.client_key)}
        d = self.daemon([connection("mtls", self.url, tls=tls)], [repeater("forms", "mtls")])
        self.submit_form(d)
        self.assertSucceededFirstTime(d, "forms")
        lines = self.nginx.access_lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('ssl_client="CN=repeaterd-client"', lines[0])

    def test_without_client_certificate_nginx_answers_400_a_client_error(self):
        d = self.daemon([connection("mtls", self.url, tls={"ca_file": str(self.pki.ca_crt)})],
                        [repeater("forms", "mtls", retry={"max_attempts": 5, "max_attempts_client_error": 2})])
        self.submit_form(d)
        self.assertCancelledAsClientError(d, "forms", http_status=400)
        self.assertTrue(all(' 400 ' in line and 'ssl_client="-"' in line for line in self.nginx.access_lines()),
                        self.nginx.access_lines())


# --------------------------------------------------------------------------- Digest

class ApacheDigestTest(ConnectionTestCase):
    """Apache httpd's mod_auth_digest (MD5; nonces live 1 s, so a reused nonce gets stale=true);
    mod_reflector answers 200 with the request body."""

    REALM = "repeaterd-apache"
    PASSWORD = "dg-" + secrets.token_hex(8)

    def start_apache(self, extra: str = "") -> servers.Apache:
        adir = self.workdir("apache")
        (adir / "htdigest").write_text(servers.htdigest_line("alice", self.REALM, self.PASSWORD))
        (adir / "htdigest").chmod(0o644)
        apache = servers.Apache(adir, f"""\
<Location /md5>
  SetHandler reflector
  AuthType Digest
  AuthName "{self.REALM}"
  AuthDigestProvider file
  AuthUserFile {adir}/htdigest
  AuthDigestAlgorithm MD5
  AuthDigestNonceLifetime 1
  Require valid-user
</Location>
{extra}""")
        self.addCleanup(apache.close)
        return apache

    def digest_daemon(self, url: str, password: str, **retry):
        return self.daemon([connection("apache", url, auth={"type": "digest", "username": "alice",
                                                            "password_env": PASSWORD_ENV})],
                           [repeater("forms", "apache", retry=retry or None)], env={PASSWORD_ENV: password})

    def test_md5_digest_delivers_and_a_stale_nonce_is_no_failure(self):
        apache = self.start_apache()
        d = self.digest_daemon(apache.url("/md5"), self.PASSWORD)
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=1)
        first = self.assertSucceededFirstTime(d, "forms")
        body = d.db.query("SELECT response_body FROM attempts WHERE record = ?", (first["record_id"],))[0][0]
        self.assertEqual(bytes(body), form, "mod_reflector echoes what arrived: the form, byte for byte")

        time.sleep(1.6)   # past AuthDigestNonceLifetime: a remembered nonce is now stale
        iid2, form2 = unique_form()
        self.assertSubmitted(d.submit(form2), 201, records=1)
        second = d.events.wait_event("attempt.succeeded", count=2, timeout=15)[1]
        self.assertEqual((second["attempt"], second["payload_id"]), (1, iid2))
        self.assertEqual(d.events.of("attempt.failed"), [], "a Digest challenge (stale or not) is no failure")
        self.assertEqual(d.db.count("attempts"), 2)
        ok_lines = [line for line in apache.access_lines() if line.startswith("200 ")]
        self.assertEqual(len(ok_lines), 2, apache.access_lines())
        self.assertTrue(all('auth="Digest ' in line for line in ok_lines), ok_lines)

    def test_md5_digest_wrong_password_is_a_client_error(self):
        apache = self.start_apache()
        d = self.digest_daemon(apache.url("/md5"), "wrong-" + self.PASSWORD,
                               max_attempts=5, max_attempts_client_error=2)
        self.submit_form(d)
        self.assertCancelledAsClientError(d, "forms", http_status=401)
        # Each attempt answers a fresh challenge once; one that first tries a remembered nonce may
        # answer the new challenge that refusal brings (at most two Digest tries an attempt).
        lines = apache.access_lines()
        digest_tries = [line for line in lines if 'auth="Digest ' in line]
        self.assertGreaterEqual(len(digest_tries), 2, f"each attempt answers the challenge: {lines}")
        self.assertLessEqual(len(digest_tries), 4, f"no more than two Digest tries an attempt: {lines}")
        self.assertTrue(all(line.startswith("401 ") for line in lines), lines)
        self.assertTrue(any("password mismatch" in line for line in apache.error_lines()),
                        "apache should have checked (and refused) the Digest response")

    def test_sha256_digest_on_apache(self):
        ok, why = servers.apache_supports('<Location /sha>\n  AuthType Digest\n  AuthName "x"\n'
                                          '  AuthDigestAlgorithm SHA-256\n</Location>')
        if not ok:
            self.skipTest("this Apache's mod_auth_digest has no SHA-256 (2.4.x supports MD5 only: "
                          f"{why.splitlines()[-1] if why else 'rejected'}); SHA-256 is tested against "
                          "the Python RFC 7616 server in PythonDigestTest")
        apache = self.start_apache(f"""\
<Location /sha>
  SetHandler reflector
  AuthType Digest
  AuthName "{self.REALM}"
  AuthDigestProvider file
  AuthUserFile {self.workdir('apache')}/htdigest
  AuthDigestAlgorithm SHA-256
  Require valid-user
</Location>""")
        d = self.digest_daemon(apache.url("/sha"), self.PASSWORD)
        self.submit_form(d)
        self.assertSucceededFirstTime(d, "forms")


class PythonDigestTest(ConnectionTestCase):
    """RFC 7616 against servers.DigestServer: SHA-256 preferred when offered, MD5, stale nonces,
    the request target (with its query) as the digest uri."""

    PASSWORD = "py-" + secrets.token_hex(8)

    def server(self, **kw) -> servers.DigestServer:
        s = servers.DigestServer({"bob": self.PASSWORD}, **kw)
        self.addCleanup(s.close)
        return s

    def test_sha256_is_chosen_and_stale_nonces_are_answered(self):
        sha = self.server(algorithms=("SHA-256", "MD5"), nonce_lifetime=1.0)
        md5 = self.server(algorithms=("MD5",))
        auth = {"type": "digest", "username": "bob", "password_env": PASSWORD_ENV}
        d = self.daemon([connection("sha", sha.url("/in"), auth=auth), connection("md5", md5.url("/in"), auth=auth)],
                        [repeater("to-sha", "sha"), repeater("to-md5", "md5")], env={PASSWORD_ENV: self.PASSWORD})
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form, app_id="app1"), 201, records=2)
        self.assertSucceededFirstTime(d, "to-sha")
        self.assertSucceededFirstTime(d, "to-md5")
        self.assertEqual([r.algorithm for r in sha.snapshot() if r.status == 200], ["SHA-256"],
                         "with SHA-256 and MD5 offered, SHA-256 is the stronger choice")
        self.assertEqual([r.algorithm for r in md5.snapshot() if r.status == 200], ["MD5"])
        ok = [r for r in sha.snapshot() if r.status == 200][0]
        self.assertEqual(ok.target, "/in?app_id=app1")
        self.assertEqual(ok.body, form)

        time.sleep(1.5)   # the SHA server's nonces are now stale
        self.assertSubmitted(d.submit(unique_form()[1]), 201, records=2)
        d.events.wait_event("attempt.succeeded", count=2, repeater="to-sha", timeout=15)
        d.events.wait_event("attempt.succeeded", count=2, repeater="to-md5", timeout=15)
        self.assertEqual(d.events.of("attempt.failed"), [])
        self.assertEqual({e["attempt"] for e in d.events.of("attempt.succeeded")}, {1})

    def test_a_stale_challenge_is_answered_within_the_attempt(self):
        # The server refuses the first right answer with stale=true (its nonces rotated between
        # challenge and answer): RFC 7616 says retry with the new nonce, without a failure.
        srv = self.server(algorithms=("MD5",), stale_once=True)
        d = self.daemon([connection("digest", srv.url("/in"), auth={"type": "digest", "username": "bob",
                                                                    "password_env": PASSWORD_ENV})],
                        [repeater("forms", "digest")], env={PASSWORD_ENV: self.PASSWORD})
        self.submit_form(d)
        self.assertSucceededFirstTime(d, "forms")
        reqs = srv.snapshot()
        self.assertEqual([(r.status, r.stale_sent, r.authorization is not None) for r in reqs],
                         [(401, False, False), (401, True, True), (200, False, True)],
                         "challenge; answer refused as stale; answer to the new nonce")
        first, second = (servers.parse_auth_params(r.authorization[7:]) for r in reqs[1:])
        self.assertNotEqual(first["nonce"], second["nonce"], "the stale challenge's new nonce is used")
        self.assertEqual(d.db.count("attempts"), 1)


# --------------------------------------------------------------------------- bearer / api_key

class HeaderAuthTest(ConnectionTestCase):

    def test_bearer_and_api_key_headers(self):
        token, key = "tok-" + secrets.token_hex(8), "key-" + secrets.token_hex(8)
        ep_b, ep_k = self.endpoint(), self.endpoint()
        d = self.daemon([connection("b", ep_b.url(), auth={"type": "bearer", "token_env": "T_ENV"}),
                         connection("k", ep_k.url(), auth={"type": "api_key", "header": "X-API-Key",
                                                           "key_env": "K_ENV"})],
                        [repeater("to-b", "b"), repeater("to-k", "k")], env={"T_ENV": token, "K_ENV": key})
        self.submit_form(d, records=2)
        self.assertEqual(ep_b.wait_count(1, 15)[0].headers.get("authorization"), f"Bearer {token}")
        got = ep_k.wait_count(1, 15)[0].headers
        self.assertEqual(got.get("x-api-key"), key)
        self.assertNotIn("authorization", got)


# --------------------------------------------------------------------------- OAuth 2.0

class OAuth2Test(ConnectionTestCase):

    SECRET = "cs-" + secrets.token_hex(8)

    def oauth(self, *, expires_in: int = 3600, client_auth: str = "basic", scope: str | None = "forms.write",
              secret: str | None = None, retry: dict | None = None, api=None):
        tokens = servers.TokenServer("repeaterd", self.SECRET, client_auth=client_auth, expires_in=expires_in,
                                     scope=scope)
        self.addCleanup(tokens.close)
        if api is None:
            api = servers.bearer_api(tokens)
            self._endpoints.append(api)
            self.addCleanup(api.close)
        auth = {"type": "oauth2_client_credentials", "token_url": tokens.token_url, "client_id": "repeaterd",
                "client_secret_env": "CS_ENV"}
        if scope:
            auth["scope"] = scope
        if client_auth != "basic":
            auth["client_auth"] = client_auth
        d = self.daemon([connection("api", api.url("/forms"), auth=auth)], [repeater("forms", "api", retry=retry)],
                        env={"CS_ENV": secret or self.SECRET})
        return d, tokens, api

    def test_one_token_serves_many_requests(self):
        d, tokens, api = self.oauth()
        ids = {self.submit_form(d) for _ in range(10)}
        d.events.wait_event("attempt.succeeded", count=10, timeout=20)
        self.assertEqual(d.events.of("attempt.failed"), [])
        self.assertEqual(tokens.count(), 1, "one token for all ten requests")
        seen = tokens.requests[0]
        self.assertEqual(seen.authorization, basic("repeaterd", self.SECRET))
        self.assertEqual(seen.form.get("grant_type"), "client_credentials")
        self.assertEqual(seen.form.get("scope"), "forms.write")
        self.assertNotIn("client_secret", seen.form)
        reqs = api.snapshot()
        self.assertEqual(len(reqs), 10)
        self.assertEqual({servers.bearer_token_of(r) for r in reqs}, {tokens.tokens()[0]})
        self.assertEqual({r.instance_id for r in reqs}, ids)

    def test_client_secret_in_the_body(self):
        d, tokens, api = self.oauth(client_auth="body", scope=None)
        self.submit_form(d)
        self.assertSucceededFirstTime(d, "forms")
        seen = tokens.requests[0]
        self.assertIsNone(seen.authorization, "client_auth: body sends no Authorization header")
        self.assertEqual((seen.form.get("client_id"), seen.form.get("client_secret")), ("repeaterd", self.SECRET))
        self.assertNotIn("scope", seen.form)

    def test_a_new_token_after_expiry(self):
        d, tokens, api = self.oauth(expires_in=2)
        self.submit_form(d)
        d.events.wait_event("attempt.succeeded", timeout=15)
        self.assertEqual(tokens.count(), 1)
        time.sleep(2.3)   # the token has expired
        self.submit_form(d)
        d.events.wait_event("attempt.succeeded", count=2, timeout=15)
        self.assertEqual(tokens.count(), 2, "an expired token is replaced")
        reqs = api.snapshot()
        self.assertEqual([r.status for r in reqs], [200, 200],
                         "the expired token must not be sent (the API would answer 401)")
        self.assertEqual([servers.bearer_token_of(r) for r in reqs], tokens.tokens())
        self.assertEqual(d.events.of("attempt.failed"), [])

    def test_api_401_refreshes_the_token_once_within_the_attempt(self):
        d, tokens, api = self.oauth()
        self.submit_form(d)
        d.events.wait_event("attempt.succeeded", timeout=15)
        old = tokens.tokens()[0]
        tokens.revoke(old)
        iid = self.submit_form(d)
        ok = d.events.wait_event("attempt.succeeded", count=2, timeout=15)[1]
        self.assertEqual((ok["payload_id"], ok["attempt"]), (iid, 1), "the refresh happens within attempt 1")
        self.assertEqual(d.events.of("attempt.failed"), [])
        self.assertEqual(tokens.count(), 2, "exactly one refresh")
        mine = [r for r in api.snapshot() if r.instance_id == iid]
        self.assertEqual([(servers.bearer_token_of(r), r.status) for r in mine],
                         [(old, 401), (tokens.tokens()[1], 200)])
        self.assertEqual(d.db.count("attempts", "record = ?", (ok["record_id"],)), 1)

    def test_api_401_twice_fails_the_attempt_after_one_refresh(self):
        never = self.endpoint(default=Reply(401, b'{"error": "insufficient_scope"}',
                                            {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}))
        d, tokens, _ = self.oauth(api=never, retry={"max_attempts": 5, "max_attempts_client_error": 2})
        self.submit_form(d)
        self.assertCancelledAsClientError(d, "forms", http_status=401)
        self.assertEqual(never.count(), 4, "each attempt: the request, one refresh, one retry")
        self.assertIn(tokens.count(), (3, 4), f"one refresh per attempt (+ the first fetch): {tokens.count()}")

    def test_token_endpoint_error_is_quoted_in_the_attempt_error(self):
        d, tokens, api = self.oauth(secret="wrong-secret", retry={"max_attempts": 5, "max_attempts_client_error": 2})
        self.submit_form(d)
        failed = d.events.wait_event("attempt.failed", timeout=15)[0]
        self.assertRegex(failed.get("error", ""), "invalid_client", "the token endpoint's answer, quoted")
        self.assertRegex(failed.get("error", ""), "client authentication failed")
        self.assertNotIn("wrong-secret", failed.get("error", ""))
        rows = d.db.attempts_of(failed["record_id"])
        self.assertIn("invalid_client", rows[0][3])
        self.assertEqual(tokens.count(), 0)
        self.assertEqual(api.count(), 0, "no API request without a token")


# --------------------------------------------------------------------------- Standard Webhooks

class SigningTest(ConnectionTestCase):

    def setUp(self):
        super().setUp()
        missing = servers.node_ready()
        if missing:
            self.fail(missing)
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

    def captured(self, reqs, secret=None) -> list[dict]:
        return [{"label": f"{r.method} {r.target} #{i}", "id": r.headers.get("webhook-id"),
                 "timestamp": r.headers.get("webhook-timestamp"), "signature": r.headers.get("webhook-signature"),
                 "body_b64": base64.b64encode(r.body).decode(), "secret": secret or self.secret,
                 "content_type": r.headers.get("content-type")} for i, r in enumerate(reqs)]

    def verify(self, captured, name="captured.json"):
        return servers.run_webhook_verify(captured, self.tmp / name)

    def test_signatures_verify_with_the_standardwebhooks_library(self):
        ep = self.endpoint([500])     # the first request fails: its retry is signed again
        d = self.daemon([connection("signed", ep.url(), signing_secret_env="WH_SECRET")],
                        [repeater("xml", "signed"), repeater("json", "signed", format="json")],
                        env={"WH_SECRET": self.secret})
        before = time.time()
        for _ in range(2):
            self.submit_form(d, records=2)
        reqs = ep.wait_count(5, 15)
        d.events.wait_event("attempt.succeeded", count=4, timeout=15)
        after = time.time()
        reqs = ep.snapshot()
        self.assertEqual(len(reqs), 5)
        for r in reqs:
            self.assertRegex(r.headers.get("webhook-id", ""), UUID_RE)
            self.assertEqual(r.headers.get("webhook-id"), r.headers.get("idempotency-key"),
                             "webhook-id is the record id")
            self.assertRegex(r.headers.get("webhook-timestamp", ""), r"^\d+$")
            self.assertTrue(before - 1 <= int(r.headers["webhook-timestamp"]) <= after + 1, r.headers)
            self.assertTrue(r.headers.get("webhook-signature", "").startswith("v1,"), r.headers)
        ids = [r.headers["webhook-id"] for r in reqs]
        self.assertEqual(len(set(ids)), 4, "the retry keeps its record's webhook-id")
        proc = self.verify(self.captured(reqs))
        self.assertEqual(proc.returncode, 0, proc.stdout.decode())
        self.assertEqual(proc.stdout.decode().count("ok "), 5, proc.stdout.decode())

    def test_tampering_fails_verification(self):
        ep = self.endpoint()
        d = self.daemon([connection("signed", ep.url(), signing_secret_env="WH_SECRET")],
                        [repeater("xml", "signed")], env={"WH_SECRET": self.secret})
        self.submit_form(d)
        good = self.captured(ep.wait_count(1, 15))
        proc = self.verify(good, "good.json")
        self.assertEqual(proc.returncode, 0, proc.stdout.decode())

        body = base64.b64decode(good[0]["body_b64"]).replace(b"</", b" </", 1)
        tampered = [dict(good[0], body_b64=base64.b64encode(body).decode(), label="tampered body")]
        proc = self.verify(tampered, "tampered.json")
        self.assertEqual(proc.returncode, 1, proc.stdout.decode())
        self.assertIn("FAIL tampered body", proc.stdout.decode())

        other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        proc = self.verify([dict(good[0], secret=other, label="other secret")], "other.json")
        self.assertEqual(proc.returncode, 1, proc.stdout.decode())


# --------------------------------------------------------------------------- rate_limit

class RateLimitTest(ConnectionTestCase):

    def test_five_per_second_spaces_ten_records(self):
        ep, free = self.endpoint(), self.endpoint()
        d = self.daemon([connection("slow", ep.url(), rate_limit="5/s", max_in_flight=4),
                         connection("fast", free.url(), max_in_flight=4)],
                        [repeater("limited", "slow"), repeater("unlimited", "fast")])
        for _ in range(10):
            self.submit_form(d, records=2)
        reqs = ep.wait_count(10, 20)
        times = sorted(r.t for r in reqs)
        span = times[-1] - times[0]
        self.assertGreaterEqual(span, 1.5, f"10 requests at 5/s need ~1.8 s, took {span:.3f} s")
        self.assertLess(span, 6.0, f"rate_limit 5/s took {span:.3f} s for 10 requests")
        for i, t in enumerate(times[1:], 1):
            window = [x for x in times[i:] if x < t + 0.3]
            self.assertLessEqual(len(window), 2, f"more than 2 requests within 300 ms from request {i}: "
                                                 f"{[round(x - times[0], 3) for x in times]}")
        # The other connection has no limit: its ten are not held back by the slow one.
        fast = sorted(r.t for r in free.wait_count(10, 10))
        self.assertLess(fast[-1] - fast[0], 1.0, "an unlimited connection is not rate limited")
        d.events.wait_event("attempt.succeeded", count=20, timeout=10)
        self.assertEqual(d.events.of("attempt.failed"), [], "rate-limited requests wait, they never fail")


if __name__ == "__main__":
    unittest.main()
