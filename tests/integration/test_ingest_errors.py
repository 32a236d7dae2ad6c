"""Ingest API answers (spec §3): every rejection, duplicates, 503 on a locked database, and
`--check-config` diagnostics. A rejected request must store nothing."""

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from harness import (SharedDaemonTest, OTHER_TOKEN, SOURCE_DIR, TOKEN, Daemon, DaemonTestCase, Endpoint,
                     binary, connection, free_port, make_config, multipart, padded_form, repeater, seed_form,
                     submit, to_yaml, unique_form)

MAX_BODY = 1024 * 1024
MAX_HEADER = 16 * 1024


def read_until_closed(s: socket.socket) -> bytes:
    chunks = []
    try:
        while data := s.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


class IngestErrorsTest(SharedDaemonTest):
    """One daemon for the whole class: these checks are quick and independent."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        if not binary().exists():
            raise unittest.SkipTest(f"repeaterd binary not found at {binary()}")
        cls.tmp = Path(tempfile.mkdtemp(prefix="repeaterd-ingest-"))
        cls.ep = Endpoint()
        cfg = make_config(cls.tmp, free_port(), [connection("inbox", cls.ep.url())],
                          [repeater("forms", "inbox")],
                          listen={"max_body": "1MiB", "max_header": "16KiB", "read_timeout": "2s"})
        cls.d = Daemon(cls.tmp, cfg)
        cls.failed = False
        try:
            cls.d.start()
        except Exception:
            sys.stderr.write(cls.d.stderr_tail())
            cls.d.close()
            cls.ep.close()
            raise

    @classmethod
    def tearDownClass(cls):
        problem = cls.d.close()
        cls.ep.close()
        cls.finish_shared(problem, event_log=False)

    def setUp(self):
        self.before = self.d.db.counts()[:2]


    # -- helpers

    def assertNothingStored(self):
        self.assertEqual(self.d.db.counts()[:2], self.before,
                         "(payloads, records) changed for a rejected request")

    def assertRejected(self, resp, status, reason_re=None, openrosa=True):
        self.assertEqual(resp.status, status, f"body: {resp.body[:500]!r}")
        if openrosa:
            info = resp.openrosa()
            self.assertEqual(info["nature"], "submit_error", info)
            self.assertTrue(info["message"].strip(), "an error needs a reason a person can act on")
            if reason_re:
                self.assertRegex(info["message"], re.compile(reason_re, re.I))
        self.assertNothingStored()
        return resp

    # -- 400

    def test_malformed_xml_400_with_line_and_column(self):
        mismatched = (b"<?xml version='1.0' ?>\n<data xmlns=\"http://x\">\n"
                      b"  <meta><instanceID>m-1</instanceID></meta>\n  <broken></data>\n")
        resp = self.assertRejected(self.d.submit(mismatched), 400, r"line \d+, column \d+")
        self.assertRegex(resp.openrosa()["message"], r"line 4\b")
        self.assertRejected(self.d.submit(b"this is not xml"), 400, r"line 1, column \d+")
        truncated = seed_form()[:400]
        self.assertRejected(self.d.submit(truncated), 400, r"line \d+, column \d+")

    # -- 401 / 403 / 404 / 405

    def test_missing_token_401(self):
        resp = self.assertRejected(self.d.submit(unique_form()[1], token=None), 401)
        self.assertTrue(resp.header("WWW-Authenticate"), "401 must carry WWW-Authenticate")

    def test_unknown_token_401(self):
        resp = self.assertRejected(self.d.submit(unique_form()[1], token="nope"), 401)
        self.assertTrue(resp.header("WWW-Authenticate"))
        resp = self.assertRejected(self.d.submit(unique_form()[1], token="nope", auth="basic"), 401)
        self.assertTrue(resp.header("WWW-Authenticate"))

    def test_token_for_another_domain_403(self):
        self.assertRejected(self.d.submit(unique_form()[1], token=OTHER_TOKEN), 403, r"domain|demo|other")

    def test_unknown_domain_is_refused(self):
        resp = self.d.submit(unique_form()[1], domain="nosuchdomain")
        self.assertIn(resp.status, (403, 404), f"body: {resp.body[:300]!r}")
        self.assertNothingStored()

    def test_unknown_path_404_json(self):
        for method, path in (("POST", "/a/demo/nothing"), ("POST", "/receiver"), ("GET", "/nope")):
            with self.subTest(path=path):
                resp = submit(self.d.port, unique_form()[1], method=method, path=path)
                self.assertRejected(resp, 404, openrosa=False)
                self.assertIn("error", resp.json(), resp.body)

    def test_non_utf8_in_the_target_is_a_400_and_the_connection_serves_on(self):
        # Issue 12's defect: POST /a/demo/apps/%FF stored an app change and then dropped the
        # connection unanswered (the 201's JSON could not be written), so the client retried.
        cases = [("POST", "/a/demo/apps/%FF", "app id", False),
                 ("POST", "/a/%FF/receiver", "project space", True),
                 ("POST", "/a/demo/receiver?app_id=%C3%28", "app id", True),
                 ("GET", "/a/demo/receiver/attachments/%ED%A0%80/x", "form id", False)]
        for method, path, part, openrosa in cases:
            with self.subTest(path=path):
                resp = submit(self.d.port, b"", method=method, path=path, content_type="application/json")
                self.assertRejected(resp, 400, openrosa=openrosa)
                text = resp.openrosa()["message"] if openrosa else resp.json()["error"]
                self.assertIn(f"the {part} in the request target is not UTF-8", text)
        # A path that routes nowhere is answered too, its bytes replaced in the JSON.
        resp = submit(self.d.port, b"", path="/x%FF")
        self.assertRejected(resp, 404, openrosa=False)
        self.assertIn("/x\ufffd ", resp.json()["error"])
        # And the daemon goes on serving.
        iid, form = unique_form()
        self.assertEqual(self.d.submit(form).status, 201)

    def test_wrong_method_405(self):
        for method in ("GET", "PUT", "DELETE"):
            with self.subTest(method=method):
                body = b"" if method in ("GET", "DELETE") else unique_form()[1]
                resp = self.d.submit(body, method=method)
                self.assertRejected(resp, 405)
                self.assertIn("POST", resp.header("Allow") or "", "405 must say Allow: POST")

    # -- 413 / 415 / 431

    def test_body_over_max_body_413(self):
        self.assertRejected(self.d.submit(padded_form(MAX_BODY + 100 * 1024)[1]), 413)
        self.assertRejected(self.d.submit(padded_form(MAX_BODY + 1)[1]), 413)
        # The limit is the limit: a form just under it is accepted.
        iid, fits = padded_form(MAX_BODY - 16)
        resp = self.d.submit(fits)
        self.assertEqual(resp.status, 201, resp.body[:300])
        self.ep.wait_for(lambda rs: any(r.instance_id == iid for r in rs), 10, "the large form")

    def test_non_xml_content_type_415(self):
        # application/json is a JSON submission and multipart/form-data an OpenRosa one
        # (test_submissions); anything else is refused.
        self.assertRejected(self.d.submit(unique_form()[1], content_type="text/plain"), 415)
        self.assertRejected(self.d.submit(unique_form()[1], content_type="application/octet-stream"), 415)

    def test_headers_over_max_header_431(self):
        resp = self.d.submit(unique_form()[1], headers={"X-Padding": "a" * 20000})
        self.assertRejected(resp, 431, openrosa=False)

    # -- hostile input at the edges: each a clear 4xx, nothing stored, the daemon serving on

    def assertServesOn(self):
        self.assertEqual(self.d.submit(unique_form()[1]).status, 201, "the daemon must go on serving")
        self.before = self.d.db.counts()[:2]

    def test_a_multipart_body_of_10000_parts_is_a_400(self):
        _, form = unique_form()
        ctype, body = multipart([("xml_submission_file", "form.xml", "text/xml", form)] +
                                [(f"p{i}", None, None, b"") for i in range(10000)], boundary="b")
        self.assertLess(len(body), MAX_BODY)
        resp = self.assertRejected(self.d.submit(body, content_type=ctype), 400,
                                   r"more than 1000 parts")
        self.assertIn("malformed multipart/form-data: the body has more than 1000 parts", resp.openrosa()["message"])
        self.assertServesOn()

    def test_xml_that_is_not_utf8_declares_entities_or_nests_too_deep_is_a_400(self):
        _, form = unique_form()
        deep = form.replace(b"</question1>", b"</question1>" + b"<g>" * 100000 + b"</g>" * 100000, 1)
        laughs = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                  b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n' + form.split(b"?>", 1)[-1])
        external = (b'<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n' +
                    form.split(b"?>", 1)[-1].replace(b"</question1>", b"&x;</question1>", 1))
        cases = [(form.replace(b"</question1>", b"caf\xe9</question1>", 1), r"not valid UTF-8 at line \d+, column \d+"),
                 (deep, r"nests deeper than 256 levels at line \d+, column \d+"),
                 (laughs, r"declares a DOCTYPE at line 2, column 1"),
                 (external, r"declares a DOCTYPE at line 2, column 1")]
        for body, reason in cases:
            with self.subTest(reason=reason):
                self.assertLess(len(body), MAX_BODY)
                self.assertRejected(self.d.submit(body), 400, reason)
        self.assertServesOn()

    def test_json_that_is_not_utf8_or_nests_too_deep_is_a_400(self):
        deep = b'{"meta": {"instanceID": "x"}, "q": ' + b"[" * 100000 + b"]" * 100000 + b"}"
        for body, reason in [(b'{"meta": {"instanceID": "caf\xe9"}}', "not valid UTF-8 at line 1, column 29"),
                             (deep, "nests deeper than 256 levels at line 1, column 291")]:
            for path in ("/a/demo/receiver", "/a/demo/cases"):
                with self.subTest(reason=reason, path=path):
                    resp = submit(self.d.port, body, path=path, content_type="application/json")
                    self.assertRejected(resp, 400, openrosa=False)
                    self.assertIn(reason, resp.json()["error"])
        self.assertServesOn()

    def test_headers_and_query_at_max_header_are_served_and_one_byte_more_is_a_431(self):
        # max_header counts the request line and every header line with its CRLF, and the
        # blank line: build requests of exactly that size, by a padding header or by the query.
        def request(size: int, pad_in_query: bool) -> bytes:
            _, form = unique_form()

            def build(pad: str) -> bytes:
                query = f"?app_id=a&pad={pad}" if pad_in_query else ""
                extra = "" if pad_in_query else f"X-Pad: {pad}\r\n"
                return (f"POST /a/demo/receiver{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                        f"Content-Type: text/xml\r\nContent-Length: {len(form)}\r\nConnection: close\r\n"
                        f"{extra}\r\n").encode()
            head = build("")
            return build("p" * (size - len(head))) + form

        for pad_in_query in (False, True):
            for size, status in ((MAX_HEADER, 201), (MAX_HEADER + 1, 431)):
                with self.subTest(query=pad_in_query, size=size):
                    with socket.create_connection(("127.0.0.1", self.d.port), timeout=10) as s:
                        s.sendall(request(size, pad_in_query))
                        answer = read_until_closed(s)
                    self.assertTrue(answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300])
                    self.before = self.d.db.counts()[:2]

    # -- accepted variants, duplicates

    def test_basic_auth_and_application_xml_accepted(self):
        iid, form = unique_form()
        resp = self.d.submit(form, auth="basic", content_type="application/xml")
        self.assertEqual(resp.status, 201, resp.body[:300])
        info = resp.openrosa()
        self.assertEqual((info["nature"], info["form_id"], info["records_created"]),
                         ("submit_success", iid, 1))
        resp = self.d.submit(unique_form()[1], content_type="text/xml; charset=utf-8")
        self.assertEqual(resp.status, 201, resp.body[:300])

    def test_duplicate_202_creates_nothing_and_sends_nothing(self):
        iid, form = unique_form()
        first = self.d.submit(form)
        self.assertEqual(first.status, 201, first.body[:300])
        self.ep.wait_for(lambda rs: any(r.instance_id == iid for r in rs), 10, "the first delivery")
        stored = self.d.db.counts()[:2]
        delivered = self.ep.count()

        dup = self.d.submit(form)
        self.assertEqual(dup.status, 202, dup.body[:300])
        info = dup.openrosa()
        self.assertEqual((info["nature"], info["form_id"], info["records_created"]),
                         ("submit_success", iid, 0))
        self.assertEqual(self.d.db.counts()[:2], stored, "a duplicate must not create anything")
        self.ep.assert_quiet(delivered, 0.6)

    def test_same_id_different_bytes_is_not_a_duplicate(self):
        iid, form = unique_form()
        changed = form.replace(b"<question1>Trees</question1>", b"<question1>Rocks</question1>")
        self.assertNotEqual(form, changed)
        self.assertEqual(self.d.submit(form).status, 201)
        resp = self.d.submit(changed)
        self.assertEqual(resp.status, 201, resp.body[:300])
        self.assertEqual(resp.openrosa()["records_created"], 1)
        bodies = self.ep.wait_for(
            lambda rs: (lambda b: b if len(b) >= 2 else None)([r.body for r in rs if r.instance_id == iid]),
            10, "both versions delivered")
        self.assertEqual(set(bodies), {form, changed})


class LockedStorageTest(DaemonTestCase):

    def test_503_with_retry_after_when_storage_cannot_commit(self):
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")])
        self.assertSubmitted(d.submit(unique_form()[1]), 201)
        d.events.wait_event("attempt.succeeded")   # nothing else should want the write lock now
        before = d.db.counts()[:2]

        iid, form = unique_form()
        locker = sqlite3.connect(str(d.db.path), timeout=10, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            t0 = time.monotonic()
            resp = d.submit(form, timeout=30)
            waited = time.monotonic() - t0
        finally:
            locker.execute("ROLLBACK")
            locker.close()

        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertTrue(resp.header("Retry-After"), "503 must carry Retry-After")
        self.assertGreaterEqual(waited, 2.5, "repeaterd should wait out its busy timeout first")
        self.assertEqual(d.db.counts()[:2], before, "nothing may be stored for a 503")
        self.assertEqual(d.db.count("payloads", "payload_id = ?", (iid,)), 0)
        # Once the lock is gone the same submission goes through.
        self.assertSubmitted(d.submit(form), 201, records=1)
        ep.wait_for(lambda rs: any(r.instance_id == iid for r in rs), 10, "delivery after the lock")


BAD_CONFIG = """\
listen:
  address: 127.0.0.1
  port: 8080
  bogus_key: 1
ingest_tokens:
  - domain: demo
    token: t
storage:
  path: repeaterd.db
log:
  events_file: events.log
connections:
  - name: c
    url: http://127.0.0.1:9/x
    timeout: 5 parsecs
repeaters:
  - name: r
    domain: demo
    type: form
    connection: nowhere
"""


class CheckConfigTest(unittest.TestCase):

    def setUp(self):
        if not binary().exists():
            self.skipTest(f"repeaterd binary not found at {binary()}")
        self.tmp = Path(tempfile.mkdtemp(prefix="repeaterd-check-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def check(self, path, env=None):
        return subprocess.run([str(binary()), "--check-config", str(path)], cwd=self.tmp,
                              env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=30)

    def test_bad_config_lists_every_error_with_position(self):
        path = self.tmp / "bad.yaml"
        path.write_text(BAD_CONFIG)
        run = self.check(path)
        self.assertEqual(run.returncode, 1, run.stderr)
        diag = re.compile(rf"^{re.escape(str(path))}:(\d+):(\d+): (.+)$")
        found = [(int(m[1]), int(m[2]), m[3]) for m in map(diag.match, run.stderr.splitlines()) if m]
        self.assertTrue(found, f"no FILE:LINE:COL lines in:\n{run.stderr}")
        by_line = {}
        for line, col, msg in found:
            by_line.setdefault(line, []).append((col, msg))
        self.assertIn(4, by_line, f"unknown key bogus_key (line 4) not reported:\n{run.stderr}")
        self.assertIn(3, [c for c, _ in by_line[4]], f"bogus_key is at column 3:\n{run.stderr}")
        self.assertTrue(any("bogus_key" in m for _, m in by_line[4]), run.stderr)
        self.assertIn(15, by_line, f"bad duration (line 15) not reported:\n{run.stderr}")
        self.assertIn(20, by_line, f"unknown connection (line 20) not reported:\n{run.stderr}")
        self.assertTrue(any("nowhere" in m for _, m in by_line[20]), run.stderr)

    def test_good_config_exits_0(self):
        cfg = make_config(self.tmp, 18080, [connection("c", "http://127.0.0.1:9/x")],
                          [repeater("r", "c")])
        path = self.tmp / "good.yaml"
        path.write_text(to_yaml(cfg) + "\n")
        run = self.check(path)
        self.assertEqual(run.returncode, 0, run.stderr)

    def test_example_config_is_valid(self):
        run = self.check(SOURCE_DIR / "config" / "example.yaml", env={"REPEATERD_TOKEN_DEMO": "demo-token"})
        self.assertEqual(run.returncode, 0, run.stderr)


if __name__ == "__main__":
    unittest.main()
