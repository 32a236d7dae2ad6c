"""Secrets never leak (spec §2 secrets, §8): one daemon uses every kind of secret - Basic and
Digest passwords, a bearer token, an API key, an OAuth client secret and the access tokens its
token endpoint issues, a Standard Webhooks signing secret, the ingest token - through env, file
and inline sources; some connections work and some fail (wrong passwords, token endpoint
errors, revoked tokens). Then no secret value (nor its Basic/base64 encodings) may be found in
the daemon's stderr, the event log, any text or blob cell of any table of the database, or any
other file the daemon wrote. `--check-config` on configs with inline secrets prints none."""

import base64
import secrets
import subprocess
import unittest

import servers
from harness import DaemonTestCase, Reply, binary, connection, repeater, to_yaml, unique_form, make_config, free_port


def s(prefix: str) -> str:
    """A distinctive secret value that can only come from this test."""
    return f"{prefix}-{secrets.token_hex(12)}"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class SecretsTest(DaemonTestCase):

    def secret_variants(self, name: str, value: str, user: str | None = None) -> dict[str, str]:
        """The value and the encodings of it a careless log line would show."""
        out = {name: value}
        if user is not None:
            out[f"{name} as Basic"] = b64(f"{user}:{value}")
        return out

    def find_leaks(self, haystacks: dict[str, str], needles: dict[str, str]) -> list[str]:
        return [f"{what} found in {where}" for where, text in haystacks.items()
                for what, needle in needles.items() if needle and needle in text]

    def test_no_secret_reaches_stderr_events_or_database(self):
        sec = {k: s(k) for k in ("basic-pw", "basic-wrong-pw", "digest-pw", "digest-wrong-pw", "bearer",
                                 "bearer-refused", "api-key", "api-key-refused", "client-secret",
                                 "client-secret-wrong", "ingest", "inline-bearer", "file-pw")}
        signing_raw = secrets.token_bytes(32)
        signing = "whsec_" + base64.b64encode(signing_raw).decode()
        env = {"BASIC_PW": sec["basic-pw"], "BASIC_WRONG_PW": sec["basic-wrong-pw"],
               "DIGEST_PW": sec["digest-pw"], "DIGEST_WRONG_PW": sec["digest-wrong-pw"],
               "BEARER": sec["bearer"], "BEARER_REFUSED": sec["bearer-refused"], "API_KEY": sec["api-key"],
               "API_KEY_REFUSED": sec["api-key-refused"], "CLIENT_SECRET": sec["client-secret"],
               "CLIENT_SECRET_WRONG": sec["client-secret-wrong"], "INGEST": sec["ingest"],
               "SIGNING": signing}
        pw_file = self.tmp / "secret-password"
        pw_file.write_text(sec["file-pw"] + "\n")

        def wants(check):
            """An endpoint answering 200 when check(headers) holds, else 401."""
            ep = self.endpoint(responder=lambda r: Reply(200) if check(r.headers) else
                               Reply(401, b'{"error": "unauthorized"}', {"WWW-Authenticate": 'Basic realm="x"'}))
            return ep

        basic_ep = wants(lambda h: h.get("authorization") == "Basic " + b64(f"alice:{sec['basic-pw']}"))
        file_ep = wants(lambda h: h.get("authorization") == "Basic " + b64(f"carol:{sec['file-pw']}"))
        bearer_ep = wants(lambda h: h.get("authorization") == f"Bearer {sec['bearer']}")
        inline_ep = wants(lambda h: h.get("authorization") == f"Bearer {sec['inline-bearer']}")
        key_ep = wants(lambda h: h.get("x-api-key") == sec["api-key"])
        signed_ep = self.endpoint()
        digest = servers.DigestServer({"dave": sec["digest-pw"]})
        self.addCleanup(digest.close)
        tokens = servers.TokenServer("repeaterd", sec["client-secret"], expires_in=3600, scope="forms.write")
        self.addCleanup(tokens.close)
        api = servers.bearer_api(tokens)
        self._endpoints.append(api)
        self.addCleanup(api.close)
        broken_tokens = servers.TokenServer("repeaterd", sec["client-secret"])
        self.addCleanup(broken_tokens.close)
        broken_tokens.fail_with = (503, {"error": "temporarily_unavailable", "error_description": "maintenance"})

        def oauth(url, secret_env):
            return {"type": "oauth2_client_credentials", "token_url": url, "client_id": "repeaterd",
                    "client_secret_env": secret_env, "scope": "forms.write"}

        conns = {  # name -> (connection, expected to succeed)
            "basic-ok": (connection("basic-ok", basic_ep.url(), auth={"type": "basic", "username": "alice",
                                                                     "password_env": "BASIC_PW"}), True),
            "basic-wrong": (connection("basic-wrong", basic_ep.url(), auth={"type": "basic", "username": "alice",
                                                                           "password_env": "BASIC_WRONG_PW"}), False),
            "basic-file": (connection("basic-file", file_ep.url(), auth={"type": "basic", "username": "carol",
                                                                        "password_file": str(pw_file)}), True),
            "digest-ok": (connection("digest-ok", digest.url("/in"), auth={"type": "digest", "username": "dave",
                                                                          "password_env": "DIGEST_PW"}), True),
            "digest-wrong": (connection("digest-wrong", digest.url("/in"), auth={
                "type": "digest", "username": "dave", "password_env": "DIGEST_WRONG_PW"}), False),
            "bearer-ok": (connection("bearer-ok", bearer_ep.url(), auth={"type": "bearer", "token_env": "BEARER"}), True),
            "bearer-refused": (connection("bearer-refused", bearer_ep.url(), auth={
                "type": "bearer", "token_env": "BEARER_REFUSED"}), False),
            "bearer-inline": (connection("bearer-inline", inline_ep.url(), auth={
                "type": "bearer", "token": sec["inline-bearer"]}), True),
            "key-ok": (connection("key-ok", key_ep.url(), auth={"type": "api_key", "header": "X-API-Key",
                                                               "key_env": "API_KEY"}), True),
            "key-refused": (connection("key-refused", key_ep.url(), auth={"type": "api_key", "header": "X-API-Key",
                                                                         "key_env": "API_KEY_REFUSED"}), False),
            "oauth-ok": (connection("oauth-ok", api.url("/forms"), auth=oauth(tokens.token_url, "CLIENT_SECRET")), True),
            "oauth-wrong": (connection("oauth-wrong", api.url("/forms"),
                                       auth=oauth(tokens.token_url, "CLIENT_SECRET_WRONG")), False),
            "oauth-down": (connection("oauth-down", api.url("/forms"),
                                      auth=oauth(broken_tokens.token_url, "CLIENT_SECRET")), False),
            "signed": (connection("signed", signed_ep.url(), signing_secret_env="SIGNING"), True),
        }
        retry = {"max_attempts": 2, "max_attempts_client_error": 2, "initial": "100ms"}
        d = self.daemon([c for c, _ in conns.values()], [repeater(f"r-{n}", n, retry=retry) for n in conns],
                        tokens=[{"domain": "demo", "token_env": "INGEST"}], env=env)

        # Round one; then the API revokes the access token (a 401, then a refresh); round two.
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form, token=sec["ingest"]), 201, records=len(conns))
        d.events.wait_event("attempt.succeeded", repeater="r-oauth-ok", timeout=15)
        for t in tokens.tokens():
            tokens.revoke(t)
        iid2, form2 = unique_form()
        self.assertSubmitted(d.submit(form2, token=sec["ingest"], auth="basic"), 201, records=len(conns))
        # A refused ingest request carries a secret-looking token too; it must not be echoed.
        self.assertEqual(d.submit(unique_form()[1], token=sec["bearer-refused"]).status, 401)

        # Everything settles: the good ones succeed twice, the bad ones end cancelled.
        def settled():
            rows = d.db.query("SELECT repeater, state FROM records")
            return len(rows) == 2 * len(conns) and all(st in ("succeeded", "cancelled") for _, st in rows)
        d.events.wait_for(lambda _: settled(), timeout=30, what="every record succeeded or cancelled")
        states = {}
        for rep, st in d.db.query("SELECT repeater, state FROM records"):
            states.setdefault(rep, set()).add(st)
        for name, (_, ok) in conns.items():
            self.assertEqual(states.get(f"r-{name}"), {"succeeded" if ok else "cancelled"},
                             f"connection {name} should {'work' if ok else 'fail'}")
        issued = tokens.tokens()
        self.assertGreaterEqual(len(issued), 2, "the revoked token was replaced")

        needles = {}
        for name, value in sec.items():
            needles.update(self.secret_variants(name, value))
        needles.update(self.secret_variants("basic-pw", sec["basic-pw"], "alice"))
        needles.update(self.secret_variants("basic-wrong-pw", sec["basic-wrong-pw"], "alice"))
        needles.update(self.secret_variants("file-pw", sec["file-pw"], "carol"))
        needles.update(self.secret_variants("client-secret", sec["client-secret"], "repeaterd"))
        needles.update(self.secret_variants("client-secret-wrong", sec["client-secret-wrong"], "repeaterd"))
        needles["ingest as Basic"] = b64(f"user:{sec['ingest']}")
        needles["signing secret"] = signing
        needles["signing key (base64)"] = signing[len("whsec_"):]
        needles["signing key (hex)"] = signing_raw.hex()
        for i, t in enumerate(issued):
            needles[f"access token #{i + 1}"] = t

        # Sanity: the needles are real - the servers saw them.
        self.assertTrue(any(servers.bearer_token_of(r) in issued for r in api.snapshot()))

        d.stop()
        haystacks = {"stderr": d.stderr_text(), "event log": d.events.path.read_text(errors="replace")}
        for table, column, text in d.db.text_cells():
            key = f"db {table}.{column}"
            haystacks[key] = haystacks.get(key, "") + "\n" + text
        # Every other file the daemon wrote (the database and its WAL byte for byte, ...), but not
        # the files the test itself wrote the secrets into.
        own = {d.config_path.name, pw_file.name}
        for path in self.tmp.rglob("*"):
            if path.is_file() and path.name not in own:
                haystacks[f"file {path.relative_to(self.tmp)}"] = path.read_bytes().decode("latin-1")
        self.assertGreater(len(haystacks), 4)
        self.assertIn("db attempts.error", haystacks, "failed attempts must have left their errors")
        leaks = self.find_leaks(haystacks, needles)
        self.assertEqual(leaks, [], "secrets leaked")

        # And the failures are still explained (without the secret).
        errors = haystacks["db attempts.error"]
        self.assertIn("temporarily_unavailable", errors, "the token endpoint's answer is quoted")
        self.assertIn("invalid_client", errors)

    def test_check_config_prints_no_inline_secret(self):
        sec = {k: s(k) for k in ("basic", "digest", "bearer", "key", "client", "ingest", "header", "smtp")}
        bad_signing = "whsec_" + s("notbase64") + "!!"
        good_signing = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

        def conns(extra: dict | None = None) -> list[dict]:
            out = [
                connection("basic", "https://127.0.0.1:9/a", auth={"type": "basic", "username": "u",
                                                                   "password": sec["basic"]}),
                connection("digest", "https://127.0.0.1:9/b", auth={"type": "digest", "username": "u",
                                                                    "password": sec["digest"]}),
                connection("bearer", "https://127.0.0.1:9/c", auth={"type": "bearer", "token": sec["bearer"]},
                           headers={"X-Extra-Token": sec["header"]}),
                connection("key", "https://127.0.0.1:9/d", auth={"type": "api_key", "header": "X-API-Key",
                                                                 "key": sec["key"]}),
                connection("oauth", "https://127.0.0.1:9/e", signing_secret=good_signing,
                           auth={"type": "oauth2_client_credentials", "token_url": "https://127.0.0.1:9/token",
                                 "client_id": "repeaterd", "client_secret": sec["client"]}),
            ]
            if extra:
                out.append(extra)
            return out

        work = self.workdir()
        reps = [repeater(f"r-{n}", n) for n in ("basic", "digest", "bearer", "key", "oauth")]
        tokens = [{"domain": "demo", "token": sec["ingest"]}]

        def check(name: str, cfg: dict) -> subprocess.CompletedProcess:
            path = work / f"{name}.yaml"
            path.write_text(to_yaml(cfg) + "\n")
            return subprocess.run([str(binary()), "--check-config", str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=30, cwd=work)

        needles = dict(sec)
        needles["signing secret"] = good_signing
        needles["bad signing secret"] = bad_signing[len("whsec_"):-2]

        # Valid (inline secrets are warnings): exit 0, warnings that name the keys, no values.
        valid = make_config(work, free_port(), conns(), reps, tokens=tokens)
        proc = check("valid", valid)
        out = proc.stdout.decode(errors="replace")
        self.assertEqual(proc.returncode, 0, out)
        self.assertRegex(out, r"(?i)password.*(_env|_file)", "inline secrets are accepted with a warning")
        self.assertEqual(self.find_leaks({"--check-config (valid)": out}, needles), [])

        # Invalid: a malformed signing secret, a secret in a malformed mapping, an unknown key.
        broken = conns({"name": "broken", "url": "https://127.0.0.1:9/f", "signing_secret": bad_signing,
                        "auth": {"type": "bearer", "token": sec["bearer"], "password": sec["basic"]}})
        broken[1]["auth"]["password"] = {"nested": sec["smtp"]}   # a secret of the wrong shape
        invalid = make_config(work, free_port(), broken, reps, tokens=tokens)
        invalid["bogus_key"] = 1
        proc = check("invalid", invalid)
        out = proc.stdout.decode(errors="replace")
        self.assertEqual(proc.returncode, 1, out)
        self.assertRegex(out, r"invalid\.yaml:\d+:\d+: ", "errors come as FILE:LINE:COL: message")
        self.assertRegex(out, r"(?i)signing_secret", "the malformed signing secret is reported")
        self.assertEqual(self.find_leaks({"--check-config (invalid)": out}, needles), [])


if __name__ == "__main__":
    unittest.main()
