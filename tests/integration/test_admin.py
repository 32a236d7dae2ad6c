"""The admin API and repeaterctl (docs/admin-api.md, docs/repeaterctl.md), driven end to end:
bulk requeue after an outage, resend, pause across a restart, an operator's cancel racing an
attempt, the error answers, repeaterctl's exit codes, /metrics, list filters and pages, and the
operations runbook captured from real runs (REPEATERD_WRITE_RUNBOOK=1 writes it into docs/operations.md)."""

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import unittest
import urllib.parse
import uuid

from harness import (HERE, OTHER_TOKEN, SOURCE_DIR, SEED_CASE_ID, DaemonTestCase, Reply, connection, free_port, repeater,
                     typed_repeater, unique_form, wait_until)

STATES = ("pending", "failed", "succeeded", "cancelled")
# Two quick attempts, then cancelled: an outage turns records into cancelled ones in ~0.1 s.
FAST_CANCEL = {"initial": "100ms", "multiplier": 1, "max_delay": "100ms", "max_attempts": 2, "jitter": 0}
# A 4xx cancels at once: the quickest way to a cancelled record with a known reason.
REJECT_ONCE = {"max_attempts_client_error": 1}
QUIET = 1.2        # "nothing more happens" is watched for this long (> 1 s)
# docs/operations.md's runbook is the output test_runbook_output captured, between these markers.
OPERATIONS = SOURCE_DIR / "docs" / "operations.md"
RUNBOOK_BEGIN = "<!-- runbook:begin: written by tests/integration/test_admin.py test_runbook_output " \
                "when REPEATERD_WRITE_RUNBOOK=1 -->"
RUNBOOK_END = "<!-- runbook:end -->"
RECORDS = "/api/v1/records"


def succeeded(record: dict) -> bool:
    return record["state"] == "succeeded"


def q(**params) -> str:
    """A query string; list values repeat the parameter."""
    return urllib.parse.urlencode(params, doseq=True)


def iso_micros(t: float) -> str:
    """time.time() as the API writes times: ISO 8601 UTC, microseconds, Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


# --------------------------------------------------------------------------- metrics text

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict:
    """{(name, frozenset of (label, value)): value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError(f"not a metrics sample line: {line!r}")
        labels = frozenset(_LABEL_RE.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def samples(metrics: dict, name: str, **labels) -> dict:
    """The samples of one metric whose labels include these: {labels dict as tuple: value}."""
    want = set(labels.items())
    return {tuple(sorted(k[1])): v for k, v in metrics.items() if k[0] == name and want <= k[1]}


# --------------------------------------------------------------------------- shared helpers

class AdminTestCase(DaemonTestCase):

    def submit_forms(self, d, n: int, **kw) -> list[str]:
        """n distinct forms, each acknowledged 201; returns their instance ids in order."""
        ids = []
        for _ in range(n):
            iid, form = unique_form()
            resp = d.submit(form, **kw)
            self.assertEqual(resp.status, 201, f"submitting form {len(ids) + 1} of {n}: {resp.body[:300]!r}")
            ids.append(iid)
        return ids

    def record_of(self, d, payload_id: str, repeater_name: str | None = None) -> dict:
        """The one record of a payload (of that repeater), as the API lists it."""
        params = {"payload_id": payload_id, **({"repeater": repeater_name} if repeater_name else {})}
        recs = d.admin_ok("GET", f"{RECORDS}?{q(**params)}")["records"]
        self.assertEqual(len(recs), 1, f"expected one record of {payload_id}: {recs}")
        return recs[0]

    def wait_record(self, d, payload_id: str, accept, what: str, timeout: float = 10) -> dict:
        """The payload's one record, once accept(record) holds."""
        return wait_until(lambda: (lambda r: accept(r) and r)(self.record_of(d, payload_id)), timeout, what)

    def show(self, d, record_id: str) -> dict:
        return d.admin_ok("GET", f"{RECORDS}/{record_id}")

    def repeater_status(self, d, name: str) -> dict:
        """A repeater's entry in GET /api/v1/status."""
        reps = {r["name"]: r for r in d.admin_ok("GET", "/api/v1/status")["repeaters"]}
        self.assertIn(name, reps, "the repeater is not in /api/v1/status")
        return reps[name]

    def counts(self, d, name: str) -> dict:
        """A repeater's record counts by state."""
        return self.repeater_status(d, name)["counts"]

    def wait_counts(self, d, name: str, timeout: float, **expected) -> dict:
        """Waits until the repeater's counts include these (state=count)."""
        last = {}

        def reached():
            last.update(self.counts(d, name))
            return all(last.get(s) == n for s, n in expected.items())
        try:
            wait_until(reached, timeout, f"{name} counts {expected}", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}; last counts {last}") from None
        return last

    def repeater_info(self, d, name: str) -> dict:
        reps = {r["name"]: r for r in d.admin_ok("GET", "/api/v1/repeaters")["repeaters"]}
        self.assertIn(name, reps)
        return reps[name]

    def walk(self, d, query: str, limit: int = 50) -> list[dict]:
        """Every record the filter matches, page by page with after=next; checks that each page
        is at most `limit`, ids strictly increase across pages and the last page says next null."""
        out, after = [], None
        for _ in range(10_000):
            params = query + f"&limit={limit}" + (f"&after={after}" if after else "")
            page = d.admin_ok("GET", f"{RECORDS}?{params.lstrip('&')}")
            self.assertLessEqual(len(page["records"]), limit, params)
            out.extend(page["records"])
            after = page["next"]
            if after is None:
                break
            self.assertTrue(page["records"], f"an empty page with a next ({params})")
            self.assertEqual(after, page["records"][-1]["id"], "next is the last id of the page")
        ids = [r["id"] for r in out]
        self.assertEqual(ids, sorted(set(ids)), f"pages of {query!r} not in strict id order or repeat a record")
        return out

    def assertApiError(self, r, status: int, parameter: str | None = None, mentions: str | None = None) -> str:
        """A JSON error with that status and a sentence a person can act on; `parameter` names
        the query parameter at fault (absent when None)."""
        self.assertEqual(r.status, status, f"expected {status}, got {r}")
        self.assertIn("application/json", (r.header("Content-Type") or "").lower(), f"errors are JSON: {r}")
        self.assertIsInstance(r.data, dict, r)
        why = r.data.get("error")
        self.assertIsInstance(why, str, r)
        self.assertGreaterEqual(len(why.split()), 3, f"not a useful sentence: {why!r}")
        if parameter is None:
            self.assertNotIn("parameter", r.data, f"no single parameter is at fault: {r}")
        else:
            self.assertEqual(r.data.get("parameter"), parameter, r)
        if mentions:
            self.assertRegex(why, re.compile(mentions, re.I))
        return why


# --------------------------------------------------------------------------- 1-4: actions

class RecordActionsTest(AdminTestCase):

    def test_dead_endpoint_cancels_then_requeue_delivers_each_once(self):
        n = 200
        ep = self.endpoint(default=Reply(503, b"down for maintenance"))
        # Without a circuit breaker, so that the outage uses up the records' budgets.
        d = self.daemon([connection("inbox", ep.url(), max_in_flight=8, circuit={"failures": 0})],
                        [repeater("forms", "inbox", retry=FAST_CANCEL)])
        iids = self.submit_forms(d, n)
        self.wait_counts(d, "forms", 60, cancelled=n, pending=0, failed=0)
        ids = {r[0] for r in d.db.query("SELECT id FROM records WHERE repeater = 'forms'")}
        self.assertEqual(len(ids), n)

        listed = json.loads(d.ctl("records", "list", "--state", "cancelled", "--repeater", "forms", "--all",
                                  "--json", check=0).stdout)
        self.assertIsNone(listed["next"])
        listed_ids = [r["id"] for r in listed["records"]]
        self.assertEqual(listed_ids, sorted(ids), "--all --json lists exactly the 200 cancelled ids, in id order")
        self.assertEqual({r["state"] for r in listed["records"]}, {"cancelled"})

        requested = ep.count()
        dry = d.ctl("records", "requeue", "--repeater", "forms", "--state", "cancelled", "--dry-run", check=0)
        self.assertRegex(dry.stdout, rf"\b{n}\b", dry)
        self.assertEqual(json.loads(d.ctl("records", "requeue", "--repeater", "forms", "--state", "cancelled",
                                          "--dry-run", "--json", check=0).stdout),
                         {"action": "requeue", "dry_run": True, "matched": n})
        self.assertEqual(d.db.count("records", "state = 'cancelled'"), n, "a dry run changed records")
        self.assertEqual(self.counts(d, "forms")["cancelled"], n)
        self.assertEqual(d.events.of("record.requeued"), [])
        ep.assert_quiet(requested, 0.3)

        ep.set_default(200)   # the receiver is back
        real = d.ctl("records", "requeue", "--repeater", "forms", "--state", "cancelled", check=0)
        self.assertRegex(real.stdout, rf"\b{n}\b", real)
        self.wait_counts(d, "forms", 60, succeeded=n)
        ep.assert_quiet(ep.count(), 0.3)
        keys = [r.headers.get("idempotency-key") for r in ep.snapshot()[requested:]]
        self.assertEqual(sorted(keys), sorted(ids), "each record arrives exactly once after the requeue, "
                                                    "keyed by its record id")
        self.assertEqual(sorted(r.instance_id for r in ep.snapshot()[requested:]), sorted(iids))

        again = d.ctl("records", "requeue", "--repeater", "forms", "--state", "cancelled", "--json", check=0)
        self.assertEqual(json.loads(again.stdout), {"action": "requeue", "dry_run": False, "changed": 0})

        requeued = d.events.of("record.requeued")
        self.assertEqual(sorted(e["record_id"] for e in requeued), sorted(ids))
        self.assertEqual({e.get("by") for e in requeued}, {"operator"})
        cancelled = d.events.of("record.cancelled")
        self.assertEqual(sorted(e["record_id"] for e in cancelled), sorted(ids),
                         "one record.cancelled per record, from the retries")
        self.assertNotIn("operator", {e.get("by") for e in cancelled}, "the scheduler cancelled these")

    def test_resend_sends_again_with_the_same_idempotency_key(self):
        ep = self.endpoint(default=Reply(200, b"thanks", headers={"Set-Cookie": "session=abc", "X-Trace": "t-1"}))
        d = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")])
        iid = self.submit_forms(d, 1)[0]
        first = ep.wait_count(1, 10)[0]
        rid = self.wait_record(d, iid, succeeded, "the record to succeed")["id"]

        out = d.ctl("records", "resend", rid, check=0)
        self.assertIn(rid, out.stdout)
        second = ep.wait_count(2, 10)[1]
        self.assertEqual(first.headers.get("idempotency-key"), rid)
        self.assertEqual(second.headers.get("idempotency-key"), rid, "a resend keeps the Idempotency-Key")
        self.assertEqual(second.body, first.body)

        self.wait_record(d, iid, lambda r: succeeded(r) and r["attempts"] == 2, "the resent record to succeed again")
        shown = json.loads(d.ctl("records", "show", rid, "--json", check=0).stdout)
        self.assertEqual([(a["number"], a["outcome"], a["http_status"]) for a in shown["attempts"]],
                         [(1, "succeeded", 200), (2, "succeeded", 200)])
        self.assertEqual({(a["response_headers"].get("Set-Cookie"), a["response_headers"].get("X-Trace"),
                           a["response_body"]) for a in shown["attempts"]}, {("<redacted>", "t-1", "thanks")})
        resent = d.events.wait_event("record.resent")
        self.assertEqual([(e["record_id"], e.get("by")) for e in resent], [(rid, "operator")])
        ep.assert_quiet(2, 0.3)

    def test_pause_survives_restart_and_resume_delivers_backlog(self):
        ep = self.endpoint(default=Reply(200, delay=0.3))
        d = self.daemon([connection("inbox", ep.url(), max_in_flight=2)],
                        [repeater("forms", "inbox"),
                         repeater("held", "inbox", domain="other", paused=True)])
        before = self.submit_forms(d, 4)
        ep.wait_count(1, 10)
        d.ctl("pause", "forms", check=0)
        seen_at_pause = ep.count()
        in_flight_at_pause = self.repeater_status(d, "forms")["in_flight"]
        after = self.submit_forms(d, 5)    # stored (201), not attempted

        wait_until(lambda: ep.in_flight == 0 and d.db.count("attempts", "outcome = 'in_flight'") == 0, 10,
                   "the attempts in flight at the pause to finish")
        settled = ep.count()
        self.assertLessEqual(settled, seen_at_pause + in_flight_at_pause, "a new attempt began after the pause")
        self.assertLess(settled, len(before), "the pause came too late to hold a queued record back")
        ep.assert_quiet(settled, QUIET)
        self.assertFalse(set(after) & ep.instance_ids(), "a form submitted after the pause was sent")

        info = self.repeater_info(d, "forms")
        self.assertEqual((info["paused"], info["paused_by_operator"], info["paused_in_config"]), (True, True, False))
        self.assertIsNotNone(info["paused_at"])

        self.assertEqual(d.stop(), 0)
        d.start()
        ep.assert_quiet(settled, QUIET)
        status = self.repeater_status(d, "forms")
        self.assertTrue(status["paused"] and status["paused_by_operator"], f"not paused after a restart: {status}")
        self.assertRegex(d.ctl("status", check=0).stdout, r"(?m)^forms\s.*\boperator\s*$")

        resumed = time.monotonic()
        d.ctl("resume", "forms", check=0)
        first = ep.wait_count(settled + 1, 5)[settled]
        self.assertLess(first.t - resumed, 2.0, "resume releases the due records at once")
        ep.wait_for(lambda _: set(before + after) <= ep.instance_ids(answered_2xx=True), 15,
                    "the whole backlog delivered after resume")
        self.wait_counts(d, "forms", 10, succeeded=9)
        self.assertFalse(self.repeater_info(d, "forms")["paused"])
        self.assertEqual([e.get("by") for e in d.events.of("repeater.paused", repeater="forms")], ["operator"])
        self.assertEqual([e.get("by") for e in d.events.of("repeater.resumed", repeater="forms")], ["operator"])

        # paused: true in the config wins over the API.
        r = d.admin("POST", "/api/v1/repeaters/held/resume")
        self.assertApiError(r, 409, mentions=r"config")
        res = d.ctl("resume", "held")
        self.assertEqual(res.returncode, 1, res)
        self.assertRegex(res.stderr, r"^repeaterctl: .*config", res)
        self.assertTrue(self.repeater_info(d, "held")["paused_in_config"])

    def test_operator_cancel_wins_over_attempt_in_flight(self):
        ep = self.endpoint(default=Reply(200, delay=1.5))
        d = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")])
        iid = self.submit_forms(d, 1)[0]
        rid = self.wait_record(d, iid, lambda r: r["in_flight"], "the record's attempt in flight")["id"]
        ep.wait_count(1, 10)
        # A resend while the attempt is out does not apply.
        self.assertApiError(d.admin("POST", f"{RECORDS}/{rid}/resend"), 409, mentions=r"in flight")
        busy = d.ctl("records", "resend", rid)
        self.assertEqual(busy.returncode, 1, busy)
        self.assertRegex(busy.stderr, rf"^repeaterctl: .*{rid}.*in flight")

        r = d.admin("POST", f"{RECORDS}/{rid}/cancel")
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.data["record"]["state"], r.data["record"]["reason"]),
                         ("cancelled", "cancelled by operator"))
        self.assertEqual(ep.count(), 1)
        self.assertEqual(ep.snapshot()[0].status, None, "the cancel came after the attempt had ended")

        ep.wait_for(lambda rs: rs[0].status == 200, 10, "the endpoint to answer 200")
        attempt = d.events.wait_event("attempt.succeeded", record_id=rid)[0]
        self.assertIs(attempt.get("superseded_by_operator"), True, attempt)
        shown = wait_until(lambda: (lambda s: s["attempts"] and s["attempts"][0]["outcome"] != "in_flight" and s)(
            self.show(d, rid)), 10, "the attempt's outcome stored")
        self.assertEqual((shown["record"]["state"], shown["record"]["reason"]), ("cancelled", "cancelled by operator"))
        self.assertEqual([(a["outcome"], a["http_status"]) for a in shown["attempts"]], [("succeeded", 200)])
        self.assertEqual([e.get("by") for e in d.events.of("record.cancelled", record_id=rid)], ["operator"])
        ep.assert_quiet(1, 0.5)


# --------------------------------------------------------------------------- 5: errors

class ErrorAnswersTest(AdminTestCase):

    def test_error_answers_name_what_is_wrong(self):
        ok = self.endpoint()
        d = self.daemon([connection("inbox", ok.url())],
                        [repeater("forms", "inbox"), repeater("held", "inbox", domain="other", paused=True)],
                        listen={"max_body": "2KiB"})
        done_iid = self.submit_forms(d, 1)[0]
        held_iid = self.submit_forms(d, 1, domain="other", token=OTHER_TOKEN)[0]
        done = self.wait_record(d, done_iid, succeeded, "a succeeded record")["id"]
        pending = self.record_of(d, held_iid)["id"]

        # 400: malformed parameters, named.
        self.assertApiError(d.admin("GET", f"{RECORDS}?state=done"), 400, "state", r"done")
        for bad in ("0", "5000", "abc"):
            self.assertApiError(d.admin("GET", f"{RECORDS}?limit={bad}"), 400, "limit", re.escape(bad))
        self.assertApiError(d.admin("GET", f"{RECORDS}?colour=red"), 400, "colour", r"colour")
        self.assertApiError(d.admin("GET", f"{RECORDS}?created_after=yesterday"), 400, "created_after",
                            r"created_after|ISO 8601")
        self.assertApiError(d.admin("POST", f"{RECORDS}/requeue?state=cancelled&dry_run=maybe"), 400, "dry_run")
        self.assertApiError(d.admin("GET", f"{RECORDS}?connection=nosuch"), 400, "connection", r"nosuch")
        self.assertApiError(d.admin("POST", f"{RECORDS}/cancel?state=failed&limit=3"), 400, "limit", r"limit")
        self.assertApiError(d.admin("GET", "/api/v1/status?verbose=1"), 400, "verbose")
        # 400: a bulk action needs a filter.
        for action in ("resend", "cancel", "requeue"):
            self.assertApiError(d.admin("POST", f"{RECORDS}/{action}"), 400, mentions=r"filter")
            self.assertApiError(d.admin("POST", f"{RECORDS}/{action}?dry_run=true"), 400, mentions=r"filter")
        self.assertEqual(self.record_of(d, held_iid)["state"], "pending")

        # 404: unknown record, repeater, path.
        nobody = str(uuid.uuid4())
        for method, path in (("GET", f"{RECORDS}/{nobody}"), ("GET", f"{RECORDS}/{nobody}/body"),
                             ("POST", f"{RECORDS}/{nobody}/resend"), ("POST", f"{RECORDS}/{nobody}/cancel"),
                             ("POST", f"{RECORDS}/{nobody}/requeue")):
            self.assertApiError(d.admin(method, path), 404, mentions=re.escape(nobody))
        for action in ("pause", "resume"):
            self.assertApiError(d.admin("POST", f"/api/v1/repeaters/nosuch/{action}"), 404, mentions=r"nosuch")
        for path in ("/api/v2/status", "/nothing", "/api/v1/records/x/y/z"):
            self.assertApiError(d.admin("GET", path), 404)

        # 409: the action does not apply in the record's state; nothing changes.
        self.assertApiError(d.admin("POST", f"{RECORDS}/{done}/cancel"), 409, mentions=r"succeeded")
        self.assertApiError(d.admin("POST", f"{RECORDS}/{pending}/requeue"), 409, mentions=r"pending|cancelled")
        self.assertApiError(d.admin("POST", "/api/v1/repeaters/forms/resume"), 409, mentions=r"not paused")
        self.assertEqual(self.record_of(d, done_iid)["state"], "succeeded")
        self.assertEqual(self.record_of(d, held_iid)["state"], "pending")

        # 405 with Allow.
        for method, path, allow in (("GET", f"{RECORDS}/{pending}/cancel", "POST"),
                                    ("GET", f"{RECORDS}/cancel", "POST"),
                                    ("GET", "/api/v1/repeaters/forms/pause", "POST"),
                                    ("POST", "/api/v1/status", "GET"), ("DELETE", f"{RECORDS}/{pending}", "GET")):
            r = d.admin(method, path)
            self.assertApiError(r, 405)
            self.assertEqual(r.header("Allow"), allow, f"{method} {path}")

        # 413: a body over listen.max_body, refused before anything happens.
        r = d.admin("POST", "/api/v1/repeaters/forms/pause", b"x" * 4096,
                    headers={"Content-Type": "application/octet-stream"})
        self.assertApiError(r, 413)
        self.assertFalse(self.repeater_info(d, "forms")["paused"], "an oversize request paused the repeater")
        # 431: headers over listen.max_header (16 KiB).
        self.assertApiError(d.admin("GET", "/api/v1/status", headers={"X-Padding": "p" * 20000}), 431)

    def test_admin_token_guards_api_not_probes(self):
        port = free_port()
        d = self.daemon([], [], start=False, env={"ADMIN_TOKEN": "s3cret-admin"})
        d.config["admin"] = {"listen": f"127.0.0.1:{port}", "token_env": "ADMIN_TOKEN"}
        d.start()
        wait_until(lambda: self._answers(d), 10, "the admin listener")
        self.assertApiError(d.admin("GET", "/api/v1/status"), 401, mentions=r"token")
        self.assertApiError(d.admin("GET", "/api/v1/status", token="wrong"), 401, mentions=r"token")
        self.assertApiError(d.admin("GET", "/metrics"), 401)
        self.assertEqual(d.admin("GET", "/api/v1/status", token="s3cret-admin").status, 200)
        self.assertEqual(d.admin("GET", "/metrics", token="s3cret-admin").status, 200)
        self.assertEqual((d.admin("GET", "/healthz").status, d.admin("GET", "/healthz").data), (200, {"status": "ok"}))
        self.assertEqual(d.admin("GET", "/readyz").status, 200)

        # repeaterctl: not even the daemon's token_env variable in its environment.
        env = {"ADMIN_TOKEN": None, "REPEATERD_ADMIN_TOKEN": None}
        good, bad = d.workdir / "token", d.workdir / "wrong-token"
        good.write_text("s3cret-admin\n")
        bad.write_text("not-the-token\n")
        d.ctl("status", "--token-file", str(good), env=env, check=0)
        missing = d.ctl("status", env=env)
        self.assertEqual(missing.returncode, 1, missing)
        self.assertIn("--token-file", missing.stderr)
        wrong = d.ctl("--token-file", str(bad), "status", env=env)
        self.assertEqual(wrong.returncode, 1, wrong)
        for r in (missing, wrong):
            self.assertEqual(r.stdout, "")
            self.assertNotIn("s3cret-admin", r.stderr)
            self.assertNotIn("not-the-token", r.stderr)

    @staticmethod
    def _answers(d) -> bool:
        try:
            return d.admin("GET", "/healthz", timeout=1).status == 200
        except OSError:
            return False

    def test_off_loopback_admin_without_token_refuses_to_start(self):
        d = self.daemon([], [], start=False)
        d.config["admin"] = {"listen": f"0.0.0.0:{free_port()}"}
        d.start(wait=False)
        try:
            rc = d.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.fail("repeaterd started with an admin API on 0.0.0.0 and no token")
        self.assertNotEqual(rc, 0)
        err = d.stderr_text()
        self.assertRegex(err, r"admin")
        self.assertRegex(err, r"token")


# --------------------------------------------------------------------------- 6: repeaterctl

class CtlTest(AdminTestCase):

    def test_ctl_exit_codes_and_body_bytes(self):
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())],
                        [repeater("forms", "inbox"), repeater("held", "inbox", domain="other", paused=True)])
        iid = self.submit_forms(d, 1)[0]
        held = self.submit_forms(d, 1, domain="other", token=OTHER_TOKEN)[0]
        sent = ep.wait_count(1, 10)[0]
        rid = self.wait_record(d, iid, succeeded, "the record to succeed")["id"]

        body = d.ctl("records", "body", rid, raw=True, check=0)
        self.assertEqual(body.stdout, sent.body, "records body writes the bytes the endpoint received")
        self.assertEqual(d.ctl("records", "body", rid, "--json", raw=True, check=0).stdout, sent.body)

        usage = [("frobnicate",), ("--bogus-option", "status"), ("records", "show"),
                 ("records", "requeue"), ("records", "cancel", "--dry-run"),
                 ("records", "cancel", rid, "--state", "failed"), ("--url", "ftp://127.0.0.1:1", "status"),
                 ("records", "list", "--limit")]
        for args in usage:
            r = d.ctl(*args)
            self.assertEqual(r.returncode, 2, f"{shlex.join(args)} is a usage error: {r}")
            self.assertTrue(r.stderr.strip(), f"{shlex.join(args)}: a usage error says what is wrong")
        self.assertEqual(self.record_of(d, held)["state"], "pending", "a usage error acted on records")
        self.assertEqual(d.admin_socket.stat().st_mode & 0o777, 0o660, "the admin socket's mode")

        # Several ids: the one the action does not apply to is reported, the others go ahead.
        held_id = self.record_of(d, held)["id"]
        r = d.ctl("records", "cancel", rid, held_id)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(held_id, r.stdout)
        self.assertRegex(r.stderr, rf"(?m)^repeaterctl: .*{rid}")
        self.assertNotIn(rid, r.stdout)
        self.assertEqual((self.record_of(d, iid)["state"], self.record_of(d, held)["state"]),
                         ("succeeded", "cancelled"))

        # The daemon says no: exit 1, its reason after "repeaterctl: ", nothing on stdout.
        nobody = str(uuid.uuid4())
        for args in (("records", "show", nobody), ("records", "body", nobody), ("records", "cancel", nobody),
                     ("records", "list", "--state", "done"), ("pause", "nosuch")):
            r = d.ctl(*args, raw=True)
            self.assertEqual(r.returncode, 1, f"{shlex.join(args)}: {r}")
            self.assertEqual(r.stdout, b"", f"{shlex.join(args)} wrote to stdout on an error")
            self.assertTrue(r.stderr.startswith("repeaterctl: "), r.stderr)

        self.assertEqual(d.stop(), 0)
        r = d.ctl("status")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("is repeaterd running", r.stderr)


# --------------------------------------------------------------------------- 7: metrics

class MetricsTest(AdminTestCase):

    def test_metrics_pass_promtool_and_match_the_store(self):
        ok, bad = self.endpoint(), self.endpoint(default=400)
        d = self.daemon([connection("ok", ok.url()), connection("bad", bad.url())],
                        [repeater("delivered", "ok"),
                         repeater("rejected", "bad", domain="other", retry=REJECT_ONCE)])
        self.submit_forms(d, 5)
        self.submit_forms(d, 3, domain="other", token=OTHER_TOKEN)
        self.assertEqual(d.submit(unique_form()[1], token="not-a-token").status, 401)
        self.wait_counts(d, "delivered", 10, succeeded=5)
        self.wait_counts(d, "rejected", 10, cancelled=3)

        def scrape():
            r = d.admin("GET", "/metrics")
            self.assertEqual(r.status, 200, r)
            return r, parse_metrics(r.body.decode())

        def counted(scraped):
            # Counters are bumped after the answer is written or the outcome stored: poll.
            m = scraped[1]
            return (sum(samples(m, "repeaterd_attempts_total").values()) >= 8
                    and sum(samples(m, "repeaterd_ingest_requests_total").values()) >= 9)
        r, m = wait_until(lambda: (lambda s: counted(s) and s)(scrape()), 10, "the counters to reach the run's totals")
        self.assertRegex(r.header("Content-Type") or "", r"^text/plain; version=0\.0\.4")

        db_counts = {(rep, st): n for rep, st, n in
                     d.db.query("SELECT repeater, state, count(*) FROM records GROUP BY repeater, state")}
        for rep in ("delivered", "rejected"):
            for st in STATES:
                self.assertEqual(m.get(("repeaterd_records", frozenset({("repeater", rep), ("state", st)}))),
                                 db_counts.get((rep, st), 0), f"repeaterd_records{{repeater={rep},state={st}}}")
        self.assertEqual((db_counts.get(("delivered", "succeeded")), db_counts.get(("rejected", "cancelled"))), (5, 3))

        ok_attempts = samples(m, "repeaterd_attempts_total", connection="ok")
        bad_attempts = samples(m, "repeaterd_attempts_total", connection="bad")
        self.assertEqual(sum(ok_attempts.values()), 5, ok_attempts)
        self.assertEqual(m.get(("repeaterd_attempts_total", frozenset({("connection", "ok"), ("outcome", "success")}))),
                         5, ok_attempts)
        self.assertEqual(sum(bad_attempts.values()), 3, bad_attempts)
        self.assertFalse(any(samples(m, "repeaterd_attempts_total", connection="bad", outcome="success").values()),
                         f"a rejected attempt counted as a success: {bad_attempts}")
        ingest = samples(m, "repeaterd_ingest_requests_total", endpoint="receiver")
        self.assertEqual({dict(k)["status"]: v for k, v in ingest.items() if v}, {"201": 8, "401": 1}, ingest)
        self.assertEqual(samples(m, "repeaterd_build_info"), {(("version", "0.1.0"),): 1.0})

        if shutil.which("promtool") is None:
            self.skipTest("promtool is not installed (Debian: apt-get install prometheus); the values were checked")
        p = subprocess.run(["promtool", "check", "metrics"], input=r.body, capture_output=True, timeout=30)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, b""), "promtool check metrics complains")


# --------------------------------------------------------------------------- 8: filters and pages

class ListFiltersTest(AdminTestCase):

    DEMO, OTHER = 100, 100    # demo forms make 2 records each, other forms 1: 300 records

    def test_filters_walk_every_page_exactly_once(self):
        ok, bad = self.endpoint(), self.endpoint(default=Reply(400, b"no such field"))
        d = self.daemon([connection("ok", ok.url(), max_in_flight=8), connection("bad", bad.url(), max_in_flight=8)],
                        [repeater("fa", "ok"), repeater("fb", "bad", retry=REJECT_ONCE),
                         typed_repeater("fc", "ok", "case", "json", domain="other", paused=True)])
        first = self.submit_forms(d, self.DEMO // 2)
        time.sleep(0.05)
        split = time.time()
        time.sleep(0.05)
        self.submit_forms(d, self.DEMO - self.DEMO // 2)
        case_ids = []
        for _ in range(self.OTHER):
            iid, form = unique_form()
            case_ids.append(str(uuid.uuid4()))
            self.assertEqual(d.submit(form.replace(SEED_CASE_ID.encode(), case_ids[-1].encode()), domain="other",
                                      token=OTHER_TOKEN).status, 201)
        self.wait_counts(d, "fa", 30, succeeded=self.DEMO)
        self.wait_counts(d, "fb", 30, cancelled=self.DEMO)

        rows = [dict(zip(("id", "repeater", "state", "domain", "payload_id", "case_id", "reason", "created"), row))
                for row in d.db.query("SELECT r.id, r.repeater, r.state, p.domain, p.payload_id, r.case_id, r.reason, "
                                      "r.created_at FROM records r JOIN payloads p ON p.id = r.payload")]
        self.assertEqual(len(rows), 2 * self.DEMO + self.OTHER)
        split_us = split * 1e6
        self.assertTrue(any(r["created"] < split_us for r in rows) and any(r["created"] > split_us for r in rows),
                        "the store's created_at is not on this machine's clock")
        cases = {r["case_id"] for r in rows if r["case_id"]}
        self.assertEqual(cases, set(case_ids))
        at = iso_micros(split)
        filters = {
            q(repeater="fa"): lambda r: r["repeater"] == "fa",
            q(repeater="fa,fc"): lambda r: r["repeater"] in ("fa", "fc"),
            q(repeater=["fa", "fb"]): lambda r: r["repeater"] in ("fa", "fb"),
            q(connection="ok"): lambda r: r["repeater"] in ("fa", "fc"),
            q(state="cancelled"): lambda r: r["state"] == "cancelled",
            q(state="succeeded,pending"): lambda r: r["state"] in ("succeeded", "pending"),
            q(domain="other"): lambda r: r["domain"] == "other",
            q(payload_id=first[7]): lambda r: r["payload_id"] == first[7],
            q(case_id=case_ids[3]): lambda r: r["case_id"] == case_ids[3],
            q(error_contains="HTTP 400"): lambda r: "HTTP 400" in r["reason"],
            q(created_after=at): lambda r: r["created"] > split_us,
            q(created_before=at): lambda r: r["created"] < split_us,
            q(repeater="fb", state="cancelled", created_after=at): lambda r: (
                r["repeater"] == "fb" and r["created"] > split_us),
        }
        for query, match in filters.items():
            with self.subTest(filter=query):
                expected = sorted(r["id"] for r in rows if match(r))
                self.assertTrue(expected, f"the filter {query} matches nothing: a useless check")
                got = self.walk(d, query)
                self.assertEqual([r["id"] for r in got], expected)
                dry = d.admin_ok("POST", f"{RECORDS}/resend?{query}&dry_run=true")
                self.assertEqual(dry, {"action": "resend", "dry_run": True, "matched": len(got)})
        self.assertEqual(self.walk(d, q(error_contains="no record says this")), [])

        default = d.admin_ok("GET", RECORDS)
        self.assertEqual(len(default["records"]), 100, "the default page is 100")
        self.assertEqual(default["next"], default["records"][-1]["id"])
        everything = self.walk(d, "", limit=1000)
        self.assertEqual([r["id"] for r in everything], sorted(r["id"] for r in rows))


# --------------------------------------------------------------------------- 9: runbook

class RunbookTest(AdminTestCase):

    def test_runbook_output(self):
        openfn = self.endpoint(default=Reply(503, b"upstream is down for maintenance"))
        dhis2 = self.endpoint(default=Reply(200, delay=0.05))
        d = self.daemon([connection("openfn", openfn.url(), circuit={"failures": 0}),
                         connection("dhis2", dhis2.url(), max_in_flight=1)],
                        [repeater("forms-to-openfn", "openfn", retry=FAST_CANCEL),
                         repeater("forms-to-dhis2", "dhis2")])
        tmp = str(d.workdir)
        transcript: list[str] = []

        def show(command: str, output: str) -> None:
            transcript.append(f"$ {command}\n{output}".replace(tmp, "/var/lib/repeaterd"))

        def ctl(*args: str) -> str:
            r = d.ctl(*args, config=False, env={"REPEATERD_CONFIG": str(d.config_path)}, check=0)
            show("repeaterctl " + shlex.join(args), r.stdout + r.stderr)
            return r.stdout + r.stderr

        def section(title: str, note: str) -> None:
            transcript.append(f"\n### {title}\n\n{note}\n\n```")

        def end() -> None:
            transcript.append("```")

        # 1. A receiver was down: find and resend what failed.
        section("A receiver was down: find and resend what failed",
                "openfn answered 503 for a while; its records ran out of attempts and were cancelled.")
        self.submit_forms(d, 5)
        self.wait_counts(d, "forms-to-openfn", 20, cancelled=5)
        self.wait_counts(d, "forms-to-dhis2", 20, succeeded=5)
        out = ctl("status")
        self.assertRegex(out, r"(?m)^forms-to-openfn\s+openfn\s+0\s+0\s+0\s+5\b")
        self.assertIn("503", out)
        out = ctl("records", "list", "--repeater", "forms-to-openfn", "--state", "failed,cancelled")
        ids = re.findall(r"(?m)^([0-9a-f-]{36})\s", out)
        self.assertEqual(len(ids), 5, out)
        out = ctl("records", "show", ids[0])
        self.assertRegex(out, r"attempt 2 .*HTTP 503")
        out = ctl("records", "requeue", "--repeater", "forms-to-openfn", "--state", "cancelled", "--dry-run")
        self.assertRegex(out, r"\b5\b")
        openfn.set_default(200)
        transcript.append("# (openfn is back up)")
        out = ctl("records", "requeue", "--repeater", "forms-to-openfn", "--state", "cancelled")
        self.assertRegex(out, r"\b5\b")
        self.wait_counts(d, "forms-to-openfn", 20, succeeded=5)
        out = ctl("records", "list", "--repeater", "forms-to-openfn", "--limit", "5")
        self.assertEqual(len(re.findall(r"\bsucceeded\b", out)), 5, out)
        out = ctl("records", "requeue", "--repeater", "forms-to-openfn", "--state", "cancelled")
        self.assertRegex(out, r"\b0\b")
        end()

        # 2. Pause a repeater during a migration.
        section("Pause a repeater during a migration",
                "dhis2 is being migrated: hold its records, keep accepting submissions, then let them go.")
        ctl("pause", "forms-to-dhis2")
        delivered = dhis2.count()
        self.submit_forms(d, 3)
        self.wait_counts(d, "forms-to-openfn", 20, succeeded=8)
        out = ctl("repeaters")
        self.assertRegex(out, r"(?m)^forms-to-dhis2\s.*\boperator\b")
        out = ctl("status")
        self.assertRegex(out, r"(?m)^forms-to-dhis2\s+dhis2\s+3\s+0\s+5\s+0\s.*\boperator\s*$")
        self.assertEqual(dhis2.count(), delivered)
        ctl("resume", "forms-to-dhis2")
        self.wait_counts(d, "forms-to-dhis2", 20, succeeded=8)
        out = ctl("status")
        self.assertRegex(out, r"(?m)^forms-to-dhis2\s+dhis2\s+0\s+0\s+8\s+0\s.*\bno\s*$")
        end()

        # 3. Watch the queue.
        section("Watch the queue",
                "dhis2 answers slowly (one at a time) while a batch comes in: how big is the backlog, "
                "how old is it, is it moving?")
        dhis2.set_default(Reply(200, delay=0.4))
        self.submit_forms(d, 6)
        wait_until(lambda: self.counts(d, "forms-to-dhis2")["pending"] >= 4, 10, "a dhis2 backlog")
        out = ctl("status")
        self.assertRegex(out, r"(?m)^forms-to-dhis2\s+dhis2\s+[1-6]\s")
        out = ctl("records", "list", "--repeater", "forms-to-dhis2", "--state", "pending", "--limit", "2")
        self.assertRegex(out, r"(?m)^next page: repeaterctl records list .*--after [0-9a-f-]{36}")
        watch = "grep -E '^repeaterd_(records|in_flight|oldest_due_age_seconds)[{]'"
        if shutil.which("curl"):
            scrape = f"curl -sS --unix-socket {shlex.quote(str(d.admin_socket))} http://localhost/metrics"
            p = subprocess.run(f"{scrape} | {watch}", shell=True, capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            show(f"{scrape} | {watch}", p.stdout.decode())
            self.assertIn('repeaterd_records{repeater="forms-to-dhis2",state="pending"}', p.stdout.decode())
        else:
            transcript.append("# (curl is not installed here: the metrics step was left out)")
        self.wait_counts(d, "forms-to-dhis2", 20, succeeded=14)
        ctl("status")
        end()

        text = ("Captured by the test suite against the real repeaterd and repeaterctl; the receivers are "
                "local test endpoints and the test's temp dir is shown as /var/lib/repeaterd. repeaterctl "
                "found the daemon through `REPEATERD_CONFIG`.\n" + "\n".join(transcript) + "\n")
        doc = OPERATIONS.read_text()
        self.assertIn(RUNBOOK_BEGIN, doc)
        self.assertIn(RUNBOOK_END, doc)
        if os.environ.get("REPEATERD_WRITE_RUNBOOK") == "1":
            begin = doc.index(RUNBOOK_BEGIN) + len(RUNBOOK_BEGIN)
            OPERATIONS.write_text(doc[:begin] + "\n" + text + doc[doc.index(RUNBOOK_END):])

if __name__ == "__main__":
    unittest.main()
