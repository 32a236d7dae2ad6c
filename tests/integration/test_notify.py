"""Error notifications (spec §6; §7 notify.sent / notify.failed; seed 000, "Error notifications").

Real emails from the real binary, received by aiosmtpd on 127.0.0.1 (smtp_server.py) and parsed
with Python's email package (email.policy.default).

  NotifyScenarioTest   one daemon and one run (setUpClass): a CRM endpoint that always answers
                       500 "database is down" (a detailed failure email at once, then the
                       cancellation when the throttle window ends), 200 records cancelled on a
                       second connection within one window (one email at once, then ONE summary),
                       the CRM email not held back by the bulk connection's window, and a
                       connection without notify (a warning at start, no email).
                       docs/notifications.md is generated from these emails.
  NotifyDeliveryTest   SMTP down, then up: queued durably (kill -9 in between), retried with
                       backoff, each email exactly once, notify.failed then notify.sent; STARTTLS
                       required with ca_file and AUTH from password_env; a wrong password
                       (notify.failed without the password); AUTH without TLS from password_file;
                       smtps://; an untrusted certificate; STARTTLS required but not offered;
                       a hung SMTP server never delays forwarding (or shutdown); a success ends a
                       failure streak (a summary with both counts); no smtp section, no email.

docs/notifications.md: with REPEATERD_UPDATE_DOCS=1 the docs test writes it; otherwise it renders
it again from this run and fails if the committed page differs.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import harness
from harness import (SharedDaemonTest, check_generated_doc, OTHER_TOKEN, SEED_APP_ID, SEED_INSTANCE_ID, SOURCE_DIR, Daemon, DaemonTestCase,
                     Endpoint, Reply, binary, free_port, make_config, parse_iso_z,
                     repeater, seed_form, to_yaml, unique_form)
from smtp_server import BlackHole, Mail, SmtpPki, SmtpServer

DOCS_PATH = SOURCE_DIR / "docs" / "notifications.md"

FROM = "repeaterd@example.org"
CRM = "crm-intake"
CRM_NOTIFY = ["ops@example.org", "data-team@example.org"]
CRM_PATH = "/api/v2/forms"
CRM_BODY = b"database is down: primary db-7 refused connections"
CRM_PASSWORD = "crm-basic-Pw-7f3a9c1e"       # the connection's own secret: never in an email
BULK = "bulk-import"
BULK_NOTIFY = ["bulk-alerts@example.org"]
BULK_BODY = b'{"error": "field age is required"}'
BULK_RECORDS = 200
SILENT = "archive-mirror"                    # no notify: a warning at start, never an email
THROTTLE = 3.0                               # seconds; the scenario's smtp.throttle
SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-Pw-4d1e9b77c0"
WRONG_PASSWORD = "wrong-Pw-0a9f3c5e11"

# ISO 8601 in UTC, as an email may print it: T or space, optional fraction, Z / +00:00 / UTC.
ISO_UTC_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]00:?00|\s?UTC)")
MESSAGE_ID_RE = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
STOP_RE = re.compile(r"(?is)(?=.*\bnotify\b)(?=.*\bconnections?\b)(?=.*(reload|restart|sighup))")
MORE_RE = re.compile(r"(?i)and\s+(\d+)\s+more")


# --------------------------------------------------------------------------- helpers

def connection(name: str, url: str, **overrides) -> dict:
    """harness.connection without a circuit breaker unless one is given: these tests are about
    the per-record emails (a failure streak, cancellations), which a connection with a circuit
    replaces for retryable failures by one email when the circuit opens and one when it closes
    (test_flow.py and test_a_circuit_opening_is_emailed_at_once_not_held_by_the_throttle)."""
    overrides.setdefault("circuit", {"failures": 0})
    return harness.connection(name, url, **overrides)


def smtp_section(url: str, **overrides) -> dict:
    """A top-level smtp: section with test-speed retries."""
    section = {"url": url, "from": FROM, "throttle": "2s",
               "retry": {"initial": "300ms", "multiplier": 2, "max_delay": "1s"}}
    section.update(overrides)
    return section


def parse_utc(text: str) -> float:
    """Seconds since the epoch of a time matched by ISO_UTC_RE."""
    t = re.sub(r"\s?UTC$", "+00:00", text.strip()).replace(" ", "T", 1)
    t = t[:-1] + "+00:00" if t.endswith("Z") else t
    t = re.sub(r"([+-]00)(00)$", r"\1:\2", t)
    return dt.datetime.fromisoformat(t).timestamp()


def utc_times(text: str) -> list[float]:
    return [parse_utc(m.group(0)) for m in ISO_UTC_RE.finditer(text)]


def to_set(addresses: list[str]):
    """A Mail filter: sent to exactly these addresses (envelope)."""
    want = {a.lower() for a in addresses}
    return lambda m: {r.lower() for r in m.rcpt_tos} == want


def counts_near(text: str, word: str) -> set[int]:
    """Numbers written next to `word` ("199 cancelled", "199 records were cancelled",
    "Cancelled: 199", "cancelled records: 199"): tolerant of wording, the numbers must be there."""
    found = set()
    for pat in (rf"(\d+)\s+(?:[A-Za-z-]+\s+){{0,2}}{word}", rf"{word}\w*(?:\s+records?)?\s*[:=]?\s*(\d+)\b"):
        found |= {int(n) for n in re.findall(pat, text, re.I)}
    return found


def summary_head(mail: Mail, record_ids: list[str]) -> str:
    """Subject and the body up to the first listed record: where a summary states its counts."""
    body = mail.body()
    cut = min([body.find(r) for r in record_ids if r in body] or [len(body)])
    return mail.subject + "\n" + body[:cut]


def event_index(events: list[dict], event: str, **fields) -> list[int]:
    return [i for i, e in enumerate(events) if e.get("event") == event
            and all(e.get(k) == v for k, v in fields.items())]


class EmailAssertions:
    """Mixed into both test classes: what every notification email must be."""

    def assertRfc5322(self, mail: Mail, to: list[str], connection_name: str, around: float | None = None):
        msg = mail.message()
        self.assertEqual(msg.defects, [], f"message defects: {msg.defects}")
        for name in ("Date", "Message-ID", "From", "To", "Subject", "MIME-Version", "Content-Type"):
            self.assertEqual(len(msg.get_all(name) or []), 1, f"exactly one {name} header:\n{mail.data[:800]!r}")
        date = msg["Date"].datetime
        self.assertIsNotNone(date.tzinfo, f"Date without a zone: {msg['Date']}")
        when = around if around is not None else mail.wall
        self.assertLess(abs(date.timestamp() - when), 120, f"Date {msg['Date']} is not now")
        self.assertRegex(str(msg["Message-ID"]).strip(), MESSAGE_ID_RE)
        self.assertEqual([a.addr_spec for a in msg["From"].addresses], [FROM])
        self.assertEqual(sorted(mail.to()), sorted(a.lower() for a in to), "To must list every notify address")
        self.assertEqual(mail.mail_from, FROM, "envelope sender")
        self.assertEqual(sorted(r.lower() for r in mail.rcpt_tos), sorted(a.lower() for a in to), "envelope recipients")
        self.assertIn(connection_name, mail.subject, "the Subject names the connection")
        self.assertEqual(str(msg["MIME-Version"]).strip(), "1.0")
        self.assertEqual(msg.get_content_type(), "text/plain")
        self.assertEqual((msg.get_content_charset() or "").lower(), "utf-8")
        cte = str(msg.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        self.assertIn(cte, ("quoted-printable", "8bit", "7bit"))
        # On the wire: CRLF line ends, no line longer than RFC 5322's 998 characters.
        for line in mail.data.split(b"\r\n"):
            self.assertNotIn(b"\n", line, "bare LF in the message")
            self.assertLessEqual(len(line), 998, f"line too long: {line[:100]!r}...")

    def assertStopSection(self, body: str):
        self.assertRegex(body, STOP_RE, "the email must say how to stop these emails (connections[].notify, "
                                        "then restart)")

    def assertNoSecrets(self, mail: Mail, *secrets: str):
        for s in secrets:
            self.assertNotIn(s.encode(), mail.data, "a secret is in the email")


# --------------------------------------------------------------------------- one run, many checks

class NotifyScenarioTest(SharedDaemonTest, EmailAssertions):
    """One daemon, one scenario in setUpClass; the tests read what the SMTP server captured."""

    maxDiff = None
    captured: dict = {}

    @classmethod
    def setUpClass(cls):
        if not binary().exists():
            raise unittest.SkipTest(f"repeaterd binary not found at {binary()}")
        # Under /tmp whatever TMPDIR says: the config path is quoted (and line-wrapped) in the
        # emails, so its length must not vary for docs/notifications.md to be reproducible.
        cls.tmp = Path(tempfile.mkdtemp(prefix="repeaterd-notify-", dir="/tmp"))
        cls.failed = False
        cls.smtp = SmtpServer()
        cls.crm_ep = Endpoint(default=Reply(500, CRM_BODY, headers={"Content-Type": "text/plain"}))
        cls.bulk_ep = Endpoint(default=Reply(400, BULK_BODY, headers={"Content-Type": "application/json"}))
        cls.silent_ep = Endpoint(default=Reply(500, b"mirror offline"))
        cls.crm_url = cls.crm_ep.url(CRM_PATH)
        conns = [
            connection(CRM, cls.crm_url, notify=CRM_NOTIFY,
                       auth={"type": "basic", "username": "repeaterd", "password_env": "CRM_PASSWORD"}),
            connection(BULK, cls.bulk_ep.url("/import"), notify=BULK_NOTIFY, max_in_flight=16),
            connection(SILENT, cls.silent_ep.url("/mirror")),
        ]
        cls.retries = {"forms-to-crm": {"initial": "300ms", "max_attempts": 2},
                       "forms-to-bulk": {"max_attempts": 1, "max_attempts_client_error": 1},
                       "forms-to-mirror": {"max_attempts": 1, "max_attempts_client_error": 1}}
        reps = [
            repeater("forms-to-crm", CRM, domain="demo", retry=cls.retries["forms-to-crm"]),
            repeater("forms-to-bulk", BULK, domain="other", retry=cls.retries["forms-to-bulk"]),
            repeater("forms-to-mirror", SILENT, domain="demo", retry=cls.retries["forms-to-mirror"]),
        ]
        cfg = make_config(cls.tmp, free_port(), conns, reps)
        cfg["smtp"] = smtp_section(cls.smtp.url(), throttle=f"{int(THROTTLE)}s")
        cls.cfg = cfg
        cls.d = Daemon(cls.tmp, cfg, env={"CRM_PASSWORD": CRM_PASSWORD})
        try:
            cls.d.start()
            cls._scenario()
        except Exception:
            cls.failed = True
            sys.stderr.write(cls.d.stderr_tail())
            cls._close_all()
            raise

    @classmethod
    def _close_all(cls) -> str | None:
        problem = cls.d.close()
        for s in (cls.smtp, cls.crm_ep, cls.bulk_ep, cls.silent_ep):
            s.close()
        return problem

    @classmethod
    def _wait(cls, what: str, fn) -> None:
        """Runs a bounded wait; a timeout is noted, not raised, so each test reports its own gap."""
        try:
            fn()
        except AssertionError as e:
            cls.captured["timeouts"].append(f"{what}: {e}")

    @classmethod
    def _scenario(cls) -> None:
        run = cls.captured = {"timeouts": []}
        d, smtp = cls.d, cls.smtp
        crm, bulk = to_set(CRM_NOTIFY), to_set(BULK_NOTIFY)
        run["stderr_at_start"] = d.stderr_text()

        # 200 records on the bulk connection, each cancelled at its first attempt (400,
        # max_attempts_client_error 1): 200 events in one throttle window.
        forms = [unique_form() for _ in range(BULK_RECORDS)]
        run["bulk_form_ids"] = [iid for iid, _ in forms]
        with ThreadPoolExecutor(8) as ex:
            run["bulk_statuses"] = list(ex.map(
                lambda f: d.submit(f[1], token=OTHER_TOKEN, domain="other").status, forms))
        cls._wait("the first bulk email", lambda: smtp.wait_count(1, 10, bulk))

        # The seed form on the CRM connection, inside the bulk connection's window.
        run["crm_submitted"] = time.monotonic()
        run["seed"] = d.submit(seed_form(), app_id=SEED_APP_ID)
        cls._wait("the first CRM email", lambda: smtp.wait_count(1, 10, crm))
        cls._wait("the bulk summary", lambda: smtp.wait_count(2, THROTTLE + 10, bulk))
        cls._wait("the CRM cancellation email", lambda: smtp.wait_count(2, THROTTLE + 10, crm))
        cls._wait("every record cancelled", lambda: d.events.wait_event(
            "record.cancelled", count=BULK_RECORDS + 2, timeout=10))
        # Nothing else may come: wait another window and a bit.
        time.sleep(THROTTLE + 1.0)
        run["mails"] = smtp.snapshot()
        run["events"] = list(d.events.read())

    @classmethod
    def tearDownClass(cls):
        cls.finish_shared(cls._close_all())


    # -- helpers

    def mails(self, addresses: list[str], n: int | None = None) -> list[Mail]:
        got = [m for m in self.captured.get("mails", []) if to_set(addresses)(m)]
        if n is not None:
            self.assertEqual(len(got), n, f"expected {n} email(s) to {addresses}, got {len(got)}: "
                                          f"{[m.subject for m in got]}; timeouts: {self.captured.get('timeouts')}")
        return got

    def events(self, event: str, **fields) -> list[dict]:
        return [e for e in self.captured.get("events", []) if e.get("event") == event
                and all(e.get(k) == v for k, v in fields.items())]

    def crm_events(self) -> tuple[dict, dict]:
        """(attempt.failed of attempt 1, record.cancelled) of the seed form's CRM record."""
        failed = [e for e in self.events("attempt.failed", repeater="forms-to-crm") if e.get("attempt") == 1]
        cancelled = self.events("record.cancelled", repeater="forms-to-crm")
        self.assertEqual((len(failed), len(cancelled)), (1, 1), f"CRM record events; timeouts: {self.captured['timeouts']}")
        return failed[0], cancelled[0]

    def bulk_record_ids(self) -> dict[str, str]:
        """record id -> payload id of every bulk record."""
        return {e["record_id"]: e.get("payload_id") for e in self.events("record.cancelled", repeater="forms-to-bulk")}

    # -- 1. the detailed failure email

    def test_1_failure_email_headers(self):
        self.assertEqual(self.captured["seed"].status, 201, self.captured["seed"].body[:300])
        first = self.mails(CRM_NOTIFY, 2)[0]
        self.assertRfc5322(first, CRM_NOTIFY, CRM)

    def test_1_failure_email_names_everything(self):
        failed, _ = self.crm_events()
        first = self.mails(CRM_NOTIFY, 2)[0]
        body = first.body()
        # The error as the remote API gave it: status line and the start of the body.
        self.assertRegex(body, r"500\b", "the HTTP status")
        self.assertIn("Internal Server Error", body, "the status line's reason")
        self.assertIn(CRM_BODY.decode(), body, "the response body excerpt")
        self.assertRegex(body, r"\bdemo\b", "the project space (domain)")
        self.assertIn(self.crm_url, body, "the URL the request went to")
        self.assertIn(SEED_INSTANCE_ID, body, "the form id")
        self.assertIn(failed["record_id"], body, "the record id")
        self.assertRegex(body, r"(?i)attempt\D{0,20}\b1\b", "the attempt number")
        # The next retry time, ISO 8601 UTC, the one the scheduler set.
        due = parse_iso_z(failed["next_attempt_at"])
        times = utc_times(body)
        self.assertTrue(any(abs(t - due) < 1.5 for t in times),
                        f"next retry time {failed['next_attempt_at']} not in the email (times found: "
                        f"{ISO_UTC_RE.findall(body)})")
        self.assertStopSection(body)
        self.assertNoSecrets(first, CRM_PASSWORD)

    # -- 4. the cancellation

    def test_4_cancellation_email(self):
        failed, cancelled = self.crm_events()
        first, second = self.mails(CRM_NOTIFY, 2)
        self.assertRfc5322(second, CRM_NOTIFY, CRM)
        body = second.body()
        self.assertRegex(body, r"(?i)\bcancell?ed\b", "the state: cancelled")
        self.assertIn(cancelled["record_id"], body)
        self.assertIn(SEED_INSTANCE_ID, body)
        self.assertIn(CRM_BODY.decode(), body, "the latest error")
        self.assertRegex(body, r"(?i)attempt\D{0,20}\b2\b", "the attempt number")
        self.assertIn(self.crm_url, body)
        self.assertRegex(body, r"\bdemo\b")
        self.assertStopSection(body)
        self.assertNoSecrets(second, CRM_PASSWORD)
        # One event left in the window: a detailed email, sent when the window ended.
        gap = second.t - first.t
        self.assertGreaterEqual(gap, THROTTLE - 0.2, f"the cancellation email came {gap:.2f}s after the first: "
                                                     f"inside the {THROTTLE}s throttle window")
        self.assertLess(gap, THROTTLE + 2.5, f"the cancellation email came {gap:.2f}s after the first")
        self.assertNotEqual(first.message()["Message-ID"], second.message()["Message-ID"])

    # -- 2. throttle and summary

    def test_2_bulk_one_email_at_once_then_one_summary(self):
        self.assertEqual(set(self.captured["bulk_statuses"]), {201})
        records = self.bulk_record_ids()
        self.assertEqual(len(records), BULK_RECORDS, f"bulk records cancelled; timeouts: {self.captured['timeouts']}")
        first, summary = self.mails(BULK_NOTIFY, 2)    # at most two in a window and a bit
        # The environment must have produced all 200 events inside one window for the counts
        # below to be exact (this checks the test, not repeaterd).
        stamps = [parse_iso_z(e["ts"]) for e in self.events("record.cancelled", repeater="forms-to-bulk")]
        self.assertLess(max(stamps) - first.wall, THROTTLE - 0.3,
                        "TEST SETUP: the 200 bulk records took longer than a throttle window to fail")

        self.assertRfc5322(first, BULK_NOTIFY, BULK)
        self.assertRfc5322(summary, BULK_NOTIFY, BULK)
        gap = summary.t - first.t
        self.assertGreaterEqual(gap, THROTTLE - 0.2, f"summary {gap:.2f}s after the first email: inside the window")
        self.assertLess(gap, THROTTLE + 2.5, f"summary {gap:.2f}s after the first email: long after the window")

        # The first is a detailed email about one record.
        body = first.body()
        in_first = [r for r in records if r in body]
        self.assertEqual(len(in_first), 1, f"the first email of a window must be about the first event alone "
                                           f"(the rest belong in the summary at the window's end); it named "
                                           f"{len(in_first)} records")
        self.assertIn(records[in_first[0]], body, "its form id")
        self.assertIn("400", body)
        self.assertIn(BULK_BODY.decode(), body)
        self.assertRegex(body, r"(?i)\bcancell?ed\b")

        # The summary: counts, 20 records with payload ids and latest errors, "and N more".
        body = summary.body()
        listed = [r for r in records if r in body]
        self.assertEqual(len(listed), 20, f"the summary lists up to 20 records, found {len(listed)}")
        self.assertNotIn(in_first[0], listed, "the record of the first email is not in the summary again")
        for r in listed:
            self.assertIn(records[r], body, f"the form id of listed record {r}")
        self.assertIn(BULK_BODY.decode(), body, "the latest error of the listed records")
        head = summary_head(summary, listed)
        self.assertIn(BULK_RECORDS - 1, counts_near(head, "cancel"),
                      f"'{BULK_RECORDS - 1} cancelled' not stated in the summary's head:\n{head}")
        self.assertNotIn(BULK_RECORDS - 1, counts_near(head, "failed"), "these records were cancelled, not failed")
        more = [int(n) for n in MORE_RE.findall(body)]
        self.assertEqual(more, [BULK_RECORDS - 1 - 20], f"'and N more' (N = {BULK_RECORDS - 21})")
        self.assertStopSection(body)

    def test_2_connections_are_throttled_independently(self):
        bulk_first, bulk_summary = self.mails(BULK_NOTIFY, 2)
        crm_first = self.mails(CRM_NOTIFY, 2)[0]
        latency = crm_first.t - self.captured["crm_submitted"]
        self.assertLess(latency, 2.0, f"the CRM email came {latency:.2f}s after its failure")
        self.assertLess(crm_first.t, bulk_summary.t, "the CRM email waited for the bulk connection's window")

    def test_2_notify_sent_events(self):
        mails = self.captured["mails"]
        sent = self.events("notify.sent")
        self.assertEqual(len(sent), len(mails), f"one notify.sent per email: {sent}")
        self.assertEqual(self.events("notify.failed"), [])
        by_conn = {}
        for e in sent:
            self.assertIn(e.get("connection"), (CRM, BULK), e)
            self.assertIsInstance(e.get("events"), int, e)
            self.assertTrue(e.get("ts"), e)
            by_conn.setdefault(e["connection"], []).append(e["events"])
            rec = e.get("recipients")
            if rec is not None:   # optional: the addresses, or how many
                want = CRM_NOTIFY if e["connection"] == CRM else BULK_NOTIFY
                self.assertIn(rec, (want, len(want), ", ".join(want), sorted(want)), e)
        self.assertEqual(by_conn.get(CRM), [1, 1], "CRM: the failure, then the cancellation")
        self.assertEqual(by_conn.get(BULK), [1, BULK_RECORDS - 1], "bulk: one, then the summary of the rest")

    # -- 6. a connection without notify

    def test_6_connection_without_notify_warns_and_gets_no_email(self):
        stderr = self.captured["stderr_at_start"]
        lines = [l for l in stderr.splitlines() if SILENT in l and "notify" in l.lower()]
        self.assertTrue(lines, f"no start-up warning naming {SILENT!r} and notify:\n{stderr[-3000:]}")
        self.assertTrue(any(re.search(r"(?i)warn", l) for l in lines), f"not a warning: {lines}")
        for name in (CRM, BULK):
            self.assertFalse([l for l in stderr.splitlines() if re.search(rf"\b{name}\b", l) and "notify" in l.lower()],
                             f"{name} has notify addresses: no warning about it")
        # Its record was cancelled, and nobody was emailed about it.
        self.assertEqual(len(self.events("record.cancelled", repeater="forms-to-mirror")), 1)
        for m in self.captured["mails"]:
            self.assertNotIn(SILENT, m.subject)
            self.assertTrue(to_set(CRM_NOTIFY)(m) or to_set(BULK_NOTIFY)(m), m.rcpt_tos)

    def test_secrets_are_in_no_email(self):
        for m in self.captured["mails"]:
            self.assertNoSecrets(m, CRM_PASSWORD)
        ids = [str(m.message()["Message-ID"]) for m in self.captured["mails"]]
        self.assertEqual(len(ids), len(set(ids)), "Message-IDs must be unique")

    # -- 7. docs/notifications.md

    def test_7_docs_notifications_md_is_current(self):
        # The page's summary is the 199 cancellations; a run whose emails split them otherwise
        # (see test_2_*) can neither confirm nor regenerate it.
        split = [e.get("events") for e in self.events("notify.sent", connection=BULK)]
        self.assertEqual(split, [1, BULK_RECORDS - 1],
                         f"the bulk connection's emails reported {split} events, not [1, {BULK_RECORDS - 1}] "
                         f"(see test_2_bulk_one_email_at_once_then_one_summary): docs not checked")
        check_generated_doc(self, DOCS_PATH, render_docs(self), "the emails repeaterd sends",
                            "test_notify.NotifyScenarioTest")


# --------------------------------------------------------------------------- delivery

class NotifyDeliveryTest(DaemonTestCase, EmailAssertions):

    @classmethod
    def setUpClass(cls):
        cls.pki = SmtpPki()

    @classmethod
    def tearDownClass(cls):
        cls.pki.close()

    def smtp_server(self, *args, **kw) -> SmtpServer:
        s = SmtpServer(*args, **kw)
        self.addCleanup(s.close)
        return s

    def notify_daemon(self, smtp: dict | None, connections: list[dict], repeaters: list[dict],
                      env: dict | None = None, start: bool = True) -> Daemon:
        cfg = self.config(connections, repeaters)
        if smtp is not None:
            cfg["smtp"] = smtp
        return self.daemon(config=cfg, env=env, start=start)

    def one_failing(self, smtp: dict, env: dict | None = None, name: str = "crm",
                    notify: list[str] | None = None) -> tuple[Daemon, str]:
        """A connection whose endpoint always answers 500, one record on it; returns the daemon
        and the record's form id."""
        ep = self.endpoint(default=Reply(500, CRM_BODY))
        d = self.notify_daemon(smtp, [connection(name, ep.url("/in"), notify=notify or ["ops@example.org"])],
                               [repeater(f"to-{name}", name, retry={"initial": "1h", "max_delay": "1h"})], env=env)
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=1)
        d.events.wait_event("attempt.failed", timeout=10)
        return d, iid

    def assertNotSentAnywhere(self, d: Daemon, *secrets: str):
        """Secrets in no log, event and database cell."""
        logs = d.stderr_text() + d.events.path.read_text(errors="replace")
        cells = d.db.text_cells()
        for s in secrets:
            self.assertNotIn(s, logs, "a secret is in stderr or the event log")
            self.assertFalse([c[:2] for c in cells if s in c[2]], "a secret is in the database")

    # -- 3. SMTP down, then up

    def test_3_smtp_down_then_up_each_email_exactly_once(self):
        port = free_port()   # nothing listens here yet
        names = ["alpha", "beta", "gamma"]
        eps = {n: self.endpoint(default=Reply(500, f"{n} is down".encode())) for n in names}
        conns = [connection(n, eps[n].url(f"/{n}"), notify=[f"{n}-ops@example.org"]) for n in names]
        reps = [repeater(f"to-{n}", n, retry={"initial": "1h", "max_delay": "1h"}) for n in names]
        d = self.notify_daemon(smtp_section(f"smtp://127.0.0.1:{port}", throttle="1s"), conns, reps)
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=3)

        # Queued, refused, retried with backoff: at least three notify.failed per connection.
        d.events.wait_for(lambda _: all(len(d.events.of("notify.failed", connection=n)) >= 3 for n in names),
                          15, "3 x notify.failed for every connection")
        self.assertEqual(d.events.of("notify.sent"), [])
        for n in names:
            failed = d.events.of("notify.failed", connection=n)
            for e in failed:
                self.assertTrue(e.get("error"), f"notify.failed needs an error: {e}")
            stamps = [parse_iso_z(e["ts"]) for e in failed]
            gaps = [b - a for a, b in zip(stamps, stamps[1:])]
            self.assertGreaterEqual(min(gaps), 0.2, f"{n}: retries without backoff: gaps {gaps}")
            self.assertGreater(gaps[1], gaps[0] * 1.3, f"{n}: retry delays do not grow: {gaps}")

        # The emails are in the database: a kill -9 loses none of them.
        d.kill9()
        d.start()
        server = self.smtp_server(port=port)
        mails = server.wait_count(3, 15)
        server.assert_quiet(3, 3.0)   # three more retry periods: nothing is sent twice
        for n in names:
            got = [m for m in mails if to_set([f"{n}-ops@example.org"])(m)]
            self.assertEqual(len(got), 1, f"{n}: {len(got)} emails")
            self.assertRfc5322(got[0], [f"{n}-ops@example.org"], n, around=time.time())
            self.assertIn(f"{n} is down", got[0].body())
            self.assertIn(iid, got[0].body())
        ids = [str(m.message()["Message-ID"]) for m in mails]
        self.assertEqual(len(set(ids)), 3, ids)

        events = d.events.read()
        for n in names:
            failed = event_index(events, "notify.failed", connection=n)
            sent = event_index(events, "notify.sent", connection=n)
            self.assertEqual(len(sent), 1, f"{n}: one notify.sent")
            self.assertLess(failed[0], sent[0], f"{n}: notify.failed then notify.sent")
            self.assertEqual(events[sent[0]].get("events"), 1, events[sent[0]])

    def test_3_a_temporary_refusal_is_retried_and_quoted(self):
        answers = ["451 4.3.0 mailbox store busy, try again later"]
        server = self.smtp_server(data_reply=lambda envelope: answers.pop(0) if answers else "250 OK")
        d, iid = self.one_failing(smtp_section(server.url()))
        failed = d.events.wait_event("notify.failed", connection="crm", timeout=10)[0]
        self.assertIn("451", failed.get("error", ""), f"the server's answer should be quoted: {failed}")
        d.events.wait_event("notify.sent", connection="crm", timeout=10)
        mails = server.wait_count(2, 5)
        self.assertEqual([m.accepted for m in mails], [False, True], [m.reply for m in mails])
        server.assert_quiet(2, 1.5)
        self.assertEqual(mails[0].message()["Message-ID"], mails[1].message()["Message-ID"],
                         "a retry sends the same message again")

    def test_3_a_5xx_is_tried_3_times_then_kept(self):
        """A permanent refusal is tried three times, then kept for the operator; a reload
        queues it again."""
        answer = {"reply": "554 5.7.1 Message rejected as spam"}
        server = self.smtp_server(data_reply=lambda envelope: answer["reply"])
        d, iid = self.one_failing(smtp_section(server.url()))
        permanent = d.events.wait_event("notify.failed", connection="crm", timeout=15, permanent=True)[0]
        failed = d.events.of("notify.failed", connection="crm")
        self.assertEqual([e["permanent"] for e in failed], [False, False, True], failed)
        self.assertEqual([e["attempt"] for e in failed], [1, 2, 3])
        self.assertIn("554 5.7.1 Message rejected as spam", permanent["error"])
        self.assertNotIn("next_try_at", permanent)
        server.assert_quiet(3, 2.5)   # set aside: not tried again (the retry delay is at most 1 s)
        self.assertEqual(d.db.query("SELECT state, refusals, last_error FROM emails"),
                         [("refused", 3, permanent["error"])])
        self.assertIn(f"email {permanent['email_id']} to crm refused for good by the SMTP server", d.stderr_text())
        # The operator fixes the cause and reloads: the email is queued again and goes out.
        answer["reply"] = "250 OK"
        d.write_config()
        d.proc.send_signal(signal.SIGHUP)
        sent = d.events.wait_event("notify.sent", connection="crm", timeout=15)[0]
        self.assertEqual(sent["email_id"], permanent["email_id"])
        self.assertEqual(sent["attempt"], 4)
        mails = server.wait_count(4, 5)
        self.assertEqual([m.accepted for m in mails], [False, False, False, True])
        self.assertIn(iid, mails[-1].body())
        self.assertEqual(d.db.query("SELECT state FROM emails"), [("sent",)])

    def test_3_emails_keep_their_order(self):
        """After an SMTP outage, a connection's emails arrive in the order of their events."""
        port = free_port()   # nothing listens here yet
        # The first form fails (an email for the streak's first failure), the second is refused
        # with 413 and cancelled (an email for every cancellation).
        ep = self.endpoint(replies=[Reply(500, CRM_BODY)], default=Reply(413, b"too large"))
        smtp = smtp_section(f"smtp://127.0.0.1:{port}", throttle="1s",
                            retry={"initial": "300ms", "multiplier": 2, "max_delay": "10s"})
        d = self.notify_daemon(smtp, [connection("crm", ep.url("/in"), notify=["ops@example.org"])],
                               [repeater("to-crm", "crm", retry={"initial": "1h", "max_delay": "1h"})])
        first, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=1)
        # The first failure's email, refused by the absent server and retried with backoff: after
        # five tries its next one is 4.8 s away.
        d.events.wait_event("notify.failed", connection="crm", timeout=15, count=5)
        second, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=1)
        # The cancellation's email is queued after the throttle window (1 s); it is due at once,
        # the first only at its next retry, and it must still wait for the first.
        d.events.wait_for(lambda _: d.db.count("emails") == 2, 10, "a second email queued")
        server = self.smtp_server(port=port)
        mails = server.wait_count(2, 15)
        server.assert_quiet(2, 1.5)
        self.assertIn(first, mails[0].body())
        self.assertNotIn(second, mails[0].body())
        self.assertIn(second, mails[1].body())
        sent = d.events.of("notify.sent", connection="crm")
        self.assertEqual(len(sent), 2)
        self.assertLess(sent[0]["email_id"], sent[1]["email_id"])

    # -- 5. TLS and AUTH

    def test_5_starttls_required_with_ca_file_and_auth_from_env(self):
        server = self.smtp_server(starttls=self.pki, require_starttls=True, users={SMTP_USER: SMTP_PASSWORD})
        smtp = smtp_section(server.url(), starttls="required", tls={"verify": True, "ca_file": str(self.pki.ca_crt)},
                            username=SMTP_USER, password_env="SMTP_PASSWORD")
        d, iid = self.one_failing(smtp, env={"SMTP_PASSWORD": SMTP_PASSWORD})
        mail = server.wait_count(1, 10)[0]
        self.assertTrue(mail.tls, "sent without STARTTLS")
        self.assertEqual(mail.login, SMTP_USER, "sent without AUTH")
        self.assertRfc5322(mail, ["ops@example.org"], "crm")
        self.assertIn(iid, mail.body())
        self.assertNoSecrets(mail, SMTP_PASSWORD)
        d.events.wait_event("notify.sent", connection="crm")
        self.assertNotSentAnywhere(d, SMTP_PASSWORD)

    def test_5_wrong_password_is_notify_failed_without_the_password(self):
        server = self.smtp_server(starttls=self.pki, require_starttls=True, users={SMTP_USER: SMTP_PASSWORD})
        smtp = smtp_section(server.url(), starttls="required", tls={"ca_file": str(self.pki.ca_crt)},
                            username=SMTP_USER, password_env="SMTP_PASSWORD")
        d, _ = self.one_failing(smtp, env={"SMTP_PASSWORD": WRONG_PASSWORD})
        failed = d.events.wait_event("notify.failed", connection="crm", timeout=10)[0]
        error = failed.get("error") or ""
        self.assertRegex(error, r"(?i)535|auth|login|credential", f"the error should say AUTH failed: {error!r}")
        self.assertNotIn(WRONG_PASSWORD, error)
        self.assertNotIn(SMTP_PASSWORD, error)
        self.assertTrue(server.auth_attempts and server.auth_attempts[0].login == SMTP_USER and
                        server.auth_attempts[0].tls, f"AUTH attempts: {server.auth_attempts}")
        self.assertEqual(server.count(), 0)
        self.assertEqual(d.events.of("notify.sent"), [])
        self.assertNotSentAnywhere(d, WRONG_PASSWORD)

    def test_5_auth_without_tls_with_password_file(self):
        server = self.smtp_server(users={SMTP_USER: SMTP_PASSWORD}, auth_require_tls=False)
        pw_file = self.tmp / "smtp-password"
        pw_file.write_text(SMTP_PASSWORD + "\n")
        smtp = smtp_section(server.url(), username=SMTP_USER, password_file=str(pw_file))
        d, iid = self.one_failing(smtp)
        mail = server.wait_count(1, 10)[0]
        self.assertEqual(mail.login, SMTP_USER)
        self.assertFalse(mail.tls)
        self.assertIn(iid, mail.body())
        d.events.wait_event("notify.sent", connection="crm")
        self.assertNotSentAnywhere(d, SMTP_PASSWORD)

    def test_5_smtps_with_ca_file(self):
        server = self.smtp_server(smtps=self.pki, users={SMTP_USER: SMTP_PASSWORD})
        smtp = smtp_section(server.url(), tls={"ca_file": str(self.pki.ca_crt)},
                            username=SMTP_USER, password_env="SMTP_PASSWORD")
        d, iid = self.one_failing(smtp, env={"SMTP_PASSWORD": SMTP_PASSWORD})
        mail = server.wait_count(1, 10)[0]
        self.assertTrue(mail.tls)
        self.assertEqual(mail.login, SMTP_USER)
        self.assertIn(iid, mail.body())

    def test_5_untrusted_certificate_is_notify_failed(self):
        server = self.smtp_server(starttls=self.pki, selfsigned=True)
        smtp = smtp_section(server.url(), starttls="required", tls={"ca_file": str(self.pki.ca_crt)})
        d, _ = self.one_failing(smtp)
        failed = d.events.wait_event("notify.failed", connection="crm", timeout=10)[0]
        self.assertTrue(failed.get("error"), failed)
        server.assert_quiet(0, 0.5)

    def test_5_starttls_required_but_not_offered_sends_nothing_in_clear(self):
        server = self.smtp_server()   # no STARTTLS
        smtp = smtp_section(server.url(), starttls="required")
        d, _ = self.one_failing(smtp)
        failed = d.events.wait_event("notify.failed", connection="crm", timeout=10)[0]
        self.assertTrue(failed.get("error"), failed)
        server.assert_quiet(0, 0.5)

    # -- never slower

    def test_a_hung_smtp_server_never_delays_forwarding(self):
        hole = BlackHole()   # accepts TCP connections, never greets
        self.addCleanup(hole.close)
        bad = self.endpoint(default=Reply(500, CRM_BODY))
        good = self.endpoint()
        d = self.notify_daemon(
            smtp_section(hole.url()),
            [connection("crm", bad.url("/in"), notify=["ops@example.org"]),
             connection("ok", good.url("/in"), notify=["ops@example.org"])],
            [repeater("to-crm", "crm", retry={"initial": "300ms", "multiplier": 2, "max_attempts": 3}),
             repeater("to-ok", "ok")])
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=2)
        reqs = bad.wait_count(3, 10)
        gaps = [b.t - a.t for a, b in zip(reqs, reqs[1:])]
        self.assertLess(gaps[0], 0.3 + 0.5, f"retry delayed by the hung SMTP server: gaps {gaps}")
        self.assertLess(gaps[1], 0.6 + 0.5, f"retry delayed by the hung SMTP server: gaps {gaps}")
        for _ in range(5):
            t0 = time.monotonic()
            iid, form = unique_form()
            self.assertSubmitted(d.submit(form), 201, records=2)
            good.wait_for(lambda rs: iid in {r.instance_id for r in rs}, 5, "delivery to ok")
            self.assertLess(time.monotonic() - t0, 1.0, "forwarding slowed down by the hung SMTP server")
        self.assertEqual(d.events.of("notify.sent"), [])
        d.kill9()   # shutdown with a send in progress is the next test's subject

    def test_sigterm_while_an_smtp_server_never_answers_data(self):
        server = self.smtp_server(stall=True)   # takes the message, then never says 250
        d, _ = self.one_failing(smtp_section(server.url()))
        server.wait_count(1, 10)
        time.sleep(0.3)
        t0 = time.monotonic()
        try:
            rc = d.stop(timeout=10)
        except AssertionError as e:
            self.fail(f"SIGTERM with an email send in progress (the SMTP server took the message but never "
                      f"answered): {e}; the daemon was killed")
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 10)

    # -- streaks and summaries

    def test_a_success_ends_the_streak_and_a_summary_counts_both(self):
        server = self.smtp_server()
        ids = {}
        lock = threading.Lock()
        c_seen = []
        c_body = b"bad gateway: upstream crm-2 timed out"

        def responder(r):
            if r.instance_id == ids.get("a"):
                return Reply(500, CRM_BODY)
            if r.instance_id == ids.get("c"):
                with lock:
                    c_seen.append(1)
                    if len(c_seen) == 1:
                        return Reply(502, c_body)
            return Reply(200)

        ep = self.endpoint(responder=responder)
        d = self.notify_daemon(smtp_section(server.url(), throttle="2s"),
                               [connection("crm", ep.url("/in"), notify=["ops@example.org"])],
                               [repeater("to-crm", "crm", retry={"initial": "400ms", "multiplier": 1,
                                                                 "max_attempts": 3})])
        ids["a"], form_a = unique_form()
        self.assertSubmitted(d.submit(form_a), 201)
        first = server.wait_count(1, 5)[0]
        cancelled_a = d.events.wait_event("record.cancelled", timeout=5)[0]   # 3 x 500
        ids["b"], form_b = unique_form()
        self.assertSubmitted(d.submit(form_b), 201)
        d.events.wait_event("attempt.succeeded", payload_id=ids["b"], timeout=5)   # the streak ends
        ids["c"], form_c = unique_form()
        self.assertSubmitted(d.submit(form_c), 201)
        failed_c = d.events.wait_event("attempt.failed", payload_id=ids["c"], timeout=5)[0]   # a new streak
        self.assertLess(time.monotonic() - first.t, 1.8, "TEST SETUP: too slow for one 2s window")
        mails = server.wait_count(2, 6)
        server.assert_quiet(2, 2.5)    # C's retry succeeded: nothing more to say

        body = first.body()
        self.assertIn(cancelled_a["record_id"], body)
        self.assertIn(CRM_BODY.decode(), body)
        summary = mails[1]
        body = summary.body()
        a_rec, c_rec = cancelled_a["record_id"], failed_c["record_id"]
        for rec, payload, err in ((a_rec, ids["a"], CRM_BODY), (c_rec, ids["c"], c_body)):
            self.assertIn(rec, body)
            self.assertIn(payload, body)
            self.assertIn(err.decode(), body, "each listed record's latest error")
        head = summary_head(summary, [a_rec, c_rec])
        self.assertIn(1, counts_near(head, "failed"), f"'1 failed' not in the summary's head:\n{head}")
        self.assertIn(1, counts_near(head, "cancel"), f"'1 cancelled' not in the summary's head:\n{head}")
        self.assertEqual(MORE_RE.findall(body), [], "no 'and N more' for two records")
        self.assertNotIn(ids["b"], body)
        sent = d.events.of("notify.sent", connection="crm")
        self.assertEqual([e.get("events") for e in sent], [1, 2], sent)

    def test_following_the_stop_instructions_stops_the_emails(self):
        server = self.smtp_server()
        ep = self.endpoint(default=Reply(500, CRM_BODY))
        d = self.notify_daemon(smtp_section(server.url(), throttle="1s"),
                               [connection("crm", ep.url("/in"), notify=CRM_NOTIFY)],
                               [repeater("to-crm", "crm", retry={"max_attempts": 1})])
        self.assertSubmitted(d.submit(unique_form()[1]), 201)
        first = server.wait_count(1, 5)[0]
        self.assertEqual(sorted(first.rcpt_tos), sorted(CRM_NOTIFY))
        self.assertStopSection(first.body())
        # Do what the email says: take the address out of connections[].notify, then restart.
        d.config["connections"][0]["notify"] = [CRM_NOTIFY[1]]
        self.assertEqual(d.stop(), 0)
        time.sleep(1.1)    # the 1s throttle window passes
        d.start()
        self.assertSubmitted(d.submit(unique_form()[1]), 201)
        second = server.wait_count(2, 5)[1]
        self.assertEqual(second.rcpt_tos, [CRM_NOTIFY[1]],
                         f"{CRM_NOTIFY[0]} is still emailed after it was removed from notify and repeaterd "
                         f"was restarted as the email says:\n{d.stderr_tail(5)}")

    # -- circuit changes

    def test_a_circuit_opening_is_emailed_at_once_not_held_by_the_throttle(self):
        server = self.smtp_server()
        refused = {}

        def responder(r):
            if r.instance_id == refused.get("id"):
                return Reply(400, b"field age is required")
            return Reply(503, b"upstream pool exhausted")

        ep = self.endpoint(responder=responder)
        d = self.notify_daemon(smtp_section(server.url(), throttle="1h"),
                               [connection("crm", ep.url("/in"), notify=["ops@example.org"],
                                           circuit={"failures": 3, "cooldown": "1h", "max_cooldown": "1h"})],
                               [repeater("to-crm", "crm", retry={"initial": "1h", "max_delay": "1h",
                                                                 "max_attempts_client_error": 1})])
        # A cancellation is emailed at once and opens a 1h throttle window.
        refused["id"], form = unique_form()
        self.assertSubmitted(d.submit(form), 201)
        first = server.wait_count(1, 10)[0]
        self.assertIn("record cancelled", first.subject)
        # Three 503s in a row open the circuit inside that window: emailed at once all the same.
        for _ in range(3):
            self.assertSubmitted(d.submit(unique_form()[1]), 201)
        second = server.wait_count(2, 15)[1]
        self.assertIn("circuit opened", second.subject)
        self.assertIn(ep.url("/in"), second.subject)
        body = " ".join(second.body().split())
        self.assertIn("after 3 consecutive failures", body)
        self.assertIn("upstream pool exhausted", body)
        self.assertIn("no record is attempted except one probe at a time", body)
        self.assertIn("First probe:", second.body())
        self.assertStopSection(second.body())
        server.assert_quiet(2, 1.5)

    def test_no_smtp_section_no_emails(self):
        ep = self.endpoint(default=Reply(500, CRM_BODY))
        d = self.notify_daemon(None, [connection("crm", ep.url("/in"), notify=["ops@example.org"])],
                               [repeater("to-crm", "crm", retry={"initial": "100ms", "max_attempts": 2})])
        self.assertSubmitted(d.submit(unique_form()[1]), 201)
        d.events.wait_event("record.cancelled", timeout=10)
        time.sleep(0.5)
        self.assertEqual([e for e in d.events.read() if str(e.get("event", "")).startswith("notify.")], [])


# --------------------------------------------------------------------------- docs

DOCS_INTRO = """\
# Error notifications

repeaterd emails a connection's contacts when forwarding to it goes wrong, so that someone
knows when data stops flowing. This page says when it does, what the emails say and how to
configure and stop them. The example emails at the end are real: the page is generated by
`tests/integration/test_notify.py` from the emails a repeaterd run sent, and that test fails
whenever repeaterd's emails and this page disagree. To regenerate it after an intended change:

```sh
cd tests/integration && REPEATERD_UPDATE_DOCS=1 python3 -m unittest test_notify.NotifyScenarioTest
```

## When an email is sent

- **A failure streak starts.** A record fails (an HTTP error status, a timeout, a refused
  connection, a TLS error) while its connection was working, or on the connection's first
  attempt. Further failures of the same streak are not emailed again; the streak ends when the
  connection has a success.
- **A record is cancelled**: it used up its attempts (`max_attempts`, or
  `max_attempts_client_error` for 4xx answers) or the receiver answered 413. Every cancellation
  is reported.
- **A connection's circuit opens or closes.** After `circuit.failures` consecutive retryable
  failures across a connection's records (network errors, timeouts, 5xx, 408, 425, 429) its
  circuit opens: no record is attempted except one probe at a time, and no record's attempt
  budget is used, so nothing is cancelled because of the outage. When a probe succeeds the
  circuit closes and the records that waited are released at a rising rate.

Emails go to the connection's `notify` addresses. A connection without `notify` gets none, and
repeaterd warns about it at every start: every connection should have at least one address, so
that someone is told when forwarding stops working. Without an `smtp` section no email is sent
at all.

## Throttling and summaries

Per connection, at most one email goes out per `throttle` window (default 15 minutes). The
first event is emailed at once and starts the window; everything that happens on that
connection during the window is collected and sent as **one** email when the window ends:

- one event: the same detailed email as the first;
- several: a **summary**: circuit changes first, one line each; then how many records failed
  and how many were cancelled, up to 20 records (record id, form or case id, latest error), and
  "and N more" for the rest.

Circuit emails are sent at once, not held by the throttle: a circuit opens once per outage, and
whoever looks after the connection needs to know at once that it is down or back. Such an email
also carries everything else the connection has waiting (summarised as above) and starts a new
window, like any email.

Each connection has its own window: a flood on one connection never holds back another
connection's email.

## What an email says

Every email names the connection and, for each record: the error as the receiver gave it (the
HTTP status line and the start of the response body, or the network or TLS error), the project
space (domain), the URL the request went to (never its credentials), the form or case id, the
record id, the attempt number and when it will be retried (ISO 8601, UTC) or that it was
cancelled. It ends with how to stop these emails. Emails are plain text (UTF-8) with the
usual headers (`Date`, `Message-ID`, `From`, `To`, `Subject`, `MIME-Version`, `Content-Type`)
and `Auto-Submitted: auto-generated`, so that vacation auto-replies stay quiet.

A circuit email names the connection and its URL. When the circuit opens
(`[repeaterd] <connection>: circuit opened — <url> is failing`): how many failures in a row
opened it, the last error as the receiver gave it, when the first probe goes out (ISO 8601,
UTC), how many records wait, and that meanwhile nothing is attempted but one probe at a time
and no record's attempt budget is used. When it closes
(`[repeaterd] <connection>: circuit closed — <url> is answering again`): how long the outage
lasted (e.g. "12 min 5 s"), how many records wait, and that they are being released at a
rising rate.

## Configuration

```yaml
smtp:
  url: smtp://mail.example.org:587    # smtp:// (STARTTLS when offered) or smtps:// (TLS from the start)
  from: repeaterd@example.org
  username: alerts                    # optional: AUTH
  password_env: SMTP_PASSWORD         # or password_file: PATH (password: inline, with a warning)
  starttls: when_offered              # when_offered (default) | required
  tls: {verify: true, ca_file: /etc/ssl/certs/mail-ca.pem}   # ca_file: extra trust anchors
  throttle: 15m                       # per connection: one email per window; the rest are summarised
  retry: {initial: 10s, multiplier: 2, max_delay: 10m}       # while the SMTP server is unreachable
connections:
  - name: crm-intake
    url: https://crm.example.org/api/v2/forms
    notify: [ops@example.org, data-team@example.org]
```

| key | meaning |
|---|---|
| `smtp.url` | the SMTP server: `smtp://host[:port]` (STARTTLS when the server offers it) or `smtps://host[:port]` (implicit TLS) |
| `smtp.from` | the sender address |
| `smtp.username`, `smtp.password_env` / `password_file` / `password` | AUTH; the password never appears in logs, events or emails |
| `smtp.starttls` | `when_offered` (default) or `required`: with `required`, nothing is sent unless STARTTLS succeeds |
| `smtp.tls.verify`, `smtp.tls.ca_file` | certificate checking (on by default) and extra CA certificates |
| `smtp.throttle` | the per-connection window (default `15m`) |
| `smtp.retry` | how an email is retried while the server is unreachable or refuses it (default `initial: 10s, multiplier: 2, max_delay: 10m`) |
| `connections[].notify` | who is told about that connection's failures, cancellations and circuit changes |

## Delivery

An email is queued in the database in the same transaction as the record's state change, so a
crash or restart loses none. A separate worker sends it; while the SMTP server is down or
refuses it for now (a 4xx answer), it is retried with the `smtp.retry` backoff. Forwarding
never waits for email. A connection's emails go out in the order their events happened: an
email waits while an earlier one of the same connection is still being retried, so after an
outage the first-failure email arrives before the summary that follows it.

An email the SMTP server refuses for good (a 5xx answer: the sender or every recipient refused,
AUTH failed, the message rejected) is tried three times in all, with the same backoff, and then
set aside: `notify.failed` with `permanent: true` and the server's answer in `error`, a line in
the journal, and the email kept in the queue database (`emails.state = 'refused'`, with
`last_error`). It no longer holds back the connection's later emails. What fixes a permanent
refusal is a change of settings (the credentials, `smtp.from`, the addresses), so the emails set
aside are queued again, for three more tries, when repeaterd starts and after every reload.
Every outcome is in the event log:

- `notify.sent`: `connection`, `recipients`, `events` (how many failures, cancellations and
  circuit changes the email reported), `email_id` (the email's id in the queue) and `attempt`
  (which try delivered it);
- `notify.failed`: the same fields, `error` (why the email could not be delivered),
  `permanent` (`true`: the server refused it for good and it was set aside, as above) and, when
  it is tried again, `next_try_at`.

## Stopping these emails

Every email says where its addresses come from. Remove the address from the connection's
`notify` list in the configuration file and restart repeaterd (`systemctl restart repeaterd`);
this version reads its configuration only at start.

## Example emails

Below are emails as a mail client shows them: the headers repeaterd wrote (decoded) and the
text body. They come from this configuration (ports and paths of the test run replaced):

"""

PLACEHOLDERS_TABLE = """\
Values that differ on every run are shown as placeholders:

| placeholder | what it is |
|---|---|
| `<date>` | when the email was written (RFC 5322 date) |
| `<message-id>` | the email's unique Message-ID |
| `<record-id>` | a repeat record's id |
| `<form-id>` | a form's `meta/instanceID` |
| `<time>` | a point in time, ISO 8601 UTC (e.g. the next retry) |
| `<port>` | a port of the test run (receiving endpoint, SMTP server) |
| `<config-file>` | the path of repeaterd's configuration file |
"""


def render_mail(mail: Mail, subst: list[tuple[str, str]]) -> str:
    msg = mail.message()
    lines = []
    for name, value in msg.items():
        if name.lower() == "date":
            value = "<date>"
        elif name.lower() == "message-id":
            value = "<message-id>"
        else:
            value = " ".join(str(value).split())
        lines.append(f"{name}: {value}")
    lines.append("")
    lines.append(mail.body().rstrip("\n"))
    text = "\n".join(lines)
    for old, new in subst:
        text = text.replace(old, new)
    text = ISO_UTC_RE.sub("<time>", text)
    return text


def render_docs(t: NotifyScenarioTest) -> str:
    crm_first, crm_second = t.mails(CRM_NOTIFY, 2)
    bulk_first, bulk_summary = t.mails(BULK_NOTIFY, 2)
    subst: list[tuple[str, str]] = []
    for e in t.captured["events"]:
        for key, placeholder in (("record_id", "<record-id>"),):
            if e.get(key):
                subst.append((e[key], placeholder))
    subst += [(iid, "<form-id>") for iid in t.captured["bulk_form_ids"]]
    for port in (t.crm_ep.port, t.bulk_ep.port, t.silent_ep.port, t.smtp.port):
        subst.append((f"127.0.0.1:{port}", "127.0.0.1:<port>"))
    subst.append((str(t.d.config_path), "<config-file>"))
    subst = sorted(set(subst), key=lambda p: -len(p[0]))

    shown = {"smtp": t.cfg["smtp"],
             "connections": [{k: c[k] for k in ("name", "url", "auth", "notify") if k in c}
                             for c in t.cfg["connections"]],
             "repeaters": [{k: r[k] for k in ("name", "domain", "connection") if k in r}
                           | {"retry": t.retries[r["name"]]} for r in t.cfg["repeaters"]]}
    config = to_yaml(shown)
    for old, new in subst:
        config = config.replace(old, new)

    sections = [
        ("A failure", crm_first,
         f"The `{CRM}` connection's receiver answered `500` with the body "
         f"`{CRM_BODY.decode()}` to the seed form. The record will be retried; this first failure is "
         f"emailed at once and starts the connection's throttle window."),
        ("A cancellation", crm_second,
         "The retry failed too and, after `max_attempts: 2`, the record was cancelled. That happened "
         "inside the throttle window, so it was sent when the window ended; being the window's only "
         "event, it is a detailed email."),
        ("A summary", bulk_summary,
         f"{BULK_RECORDS} forms for the `{BULK}` connection were all cancelled within seconds "
         f"(`400`, `max_attempts_client_error: 1`). The first cancellation was emailed at once like the "
         f"one above; the other {BULK_RECORDS - 1} were collected during the window and sent as this one "
         f"summary."),
    ]
    out = [DOCS_INTRO.rstrip("\n") + "\n", f"```yaml\n{config}\n```\n", PLACEHOLDERS_TABLE]
    for title, mail, text in sections:
        out.append(f"### {title}\n\n{text}\n\n```text\n{render_mail(mail, subst)}\n```\n")
    doc = "\n".join(out)
    # Determinism: nothing volatile may be left.
    for old, _ in subst:
        t.assertNotIn(old, doc, "a volatile value leaked into the docs")
    for m in (crm_first, crm_second, bulk_summary):
        t.assertNotIn(str(m.message()["Message-ID"]).strip(), doc)
    return doc


if __name__ == "__main__":
    unittest.main()
