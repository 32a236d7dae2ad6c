"""Repeated crash (issue 12; spec §5 "Delivery is at least once", §6 durable emails).

One daemon, killed with SIGKILL at a random moment in each of ROUNDS rounds (default 20), then
restarted on the same files. Each round is one phase, the phases shuffled so that each gets a
fifth of the rounds:

  ingest      during a burst of submissions from 8 clients, after a random number of 201s
  forwarding  while a backlog is being sent (a receiver that takes 5-30 ms, a quarter 503s)
  bulk        during an operator's bulk resend of the failed records (admin API)
  purge       during the retention purge (the daemon runs with retention 1s that round)
  email       during an email's SMTP conversation (the server takes 300 ms over DATA)

After every kill, with the daemon down: PRAGMA integrity_check is "ok", every submission answered
201 (or 202) is still in the database or already delivered, and the attempts left in flight are
noted. At the end, with the receiver healthy: every acknowledged submission has been delivered
(answered 2xx) at least once; every further 2xx delivery of a record is an attempt that was in
flight at a kill (its X-Request-Id is one of the noted attempts, which the attempts table now
holds as interrupted); every email the outbox held at a kill or at the end has reached the SMTP
server at least once (by Message-ID), and none is left unsent.

The random seed is printed first; REPEATERD_CRASH_SEED=N replays a run's choices (the moments
are timings, so a replay is close, not exact). REPEATERD_CRASH_ROUNDS=N runs more rounds
(bench/crash_rounds.sh). The figures of the run are printed at the end.
"""

from __future__ import annotations

import collections
import os
import random
import re
import sys
import threading
import time
import unittest

from harness import (DaemonTestCase, Reply, connection, repeater, submit_burst, unique_form, wait_until)
from smtp_server import SmtpServer

ROUNDS = int(os.environ.get("REPEATERD_CRASH_ROUNDS", "20"))
SEED = int(os.environ.get("REPEATERD_CRASH_SEED", "20261207"))
PHASES = ("ingest", "forwarding", "bulk", "purge", "email")
FORMS_PER_ROUND = 24
SMTP_DATA_SECONDS = 0.3
MESSAGE_ID_RE = re.compile(rb"^Message-ID: (<[^>\r\n]+>)", re.M | re.I)


class CrashRoundsTest(DaemonTestCase):

    def test_kill_9_at_random_moments_loses_nothing_acknowledged(self):
        rng = random.Random(SEED)
        sys.stderr.write(f"\n[crash rounds: seed {SEED}, {ROUNDS} rounds; replay with REPEATERD_CRASH_SEED={SEED}]\n")
        self.t0 = time.monotonic()

        # The receiver: 5-30 ms, a quarter of the answers 503 while `flaky` (records fail and
        # retry, and failures make emails).
        ep_rng, ep_lock, flaky = random.Random(SEED + 1), threading.Lock(), threading.Event()
        flaky.set()

        def respond(_):
            with ep_lock:
                r, delay = ep_rng.random(), ep_rng.uniform(0.005, 0.03)
            return Reply(503 if flaky.is_set() and r < 0.25 else 200, delay=delay)

        ep = self.endpoint(responder=respond)
        self.sending = threading.Event()   # an email's DATA has begun

        def data_reply(_envelope):
            self.sending.set()
            time.sleep(SMTP_DATA_SECONDS)   # aiosmtpd's loop: one conversation at a time anyway
            return "250 OK"

        smtp = SmtpServer(data_reply=data_reply)
        self.addCleanup(smtp.close)
        cfg = self.config(
            [connection("inbox", ep.url(), max_in_flight=8, circuit={"failures": 0}, notify=["ops@example.org"])],
            [repeater("forms", "inbox", retry={"initial": "500ms", "multiplier": 2, "max_delay": "2s",
                                               "max_attempts": 1000})],
            listen={"max_connections": 256})
        cfg["smtp"] = {"url": smtp.url(), "from": "repeaterd@example.org", "throttle": "1s",
                       "retry": {"initial": "300ms", "multiplier": 2, "max_delay": "1s"}}
        d = self.daemon(config=cfg, start=False)

        self.acked: set[str] = set()
        self.unacked: list[tuple[str, bytes]] = []
        self.killed_in_flight: set[str] = set()   # X-Request-Id of attempts in flight at a kill
        self.emails_seen: set[bytes] = set()      # Message-IDs of every email seen in the outbox
        self.kill_times: list[float] = []          # time.monotonic() just after each kill
        stats = collections.Counter()
        order = [p for p in PHASES for _ in range(-(-ROUNDS // len(PHASES)))]
        rng.shuffle(order)

        for rnd, phase in enumerate(order[:ROUNDS]):
            d.config["storage"]["retention"] = "1s" if phase == "purge" else "1d"
            old_payloads = self.stored_payloads(d) if phase == "purge" else set()
            old_records = self.records_of_payloads(d, old_payloads)
            d.start()
            started = time.monotonic()
            moment = getattr(self, f"phase_{phase}")(d, rng, stats, started)
            if d.running():
                d.kill9()
            stats[phase] += 1
            self.kill_times.append(time.monotonic())
            self.check_after_kill(d, ep, f"round {rnd} ({phase}, killed {moment}; seed {SEED})")
            if phase == "purge":
                stats["purged"] += old_records - self.records_of_payloads(d, old_payloads)

        # The end: a healthy receiver, the failed records resent now, everything delivered.
        flaky.clear()
        d.config["storage"]["retention"] = "1d"
        d.start()
        self.resubmit(d)
        d.admin_ok("POST", "/api/v1/records/resend?repeater=forms&state=failed")
        try:
            ep.wait_for(lambda _: self.acked <= ep.instance_ids(answered_2xx=True), 90,
                        f"all {len(self.acked)} acknowledged forms delivered")
        except AssertionError as e:
            missing = sorted(self.acked - ep.instance_ids(answered_2xx=True))
            raise AssertionError(f"{e}\n{len(missing)} never delivered, e.g. {missing[:5]}; their records: "
                                 f"{self.records_of(d, missing[:5])}") from None
        dups = self.check_duplicates(d, ep)
        wait_until(lambda: d.db.count("emails", "state <> 'sent'") == 0
                   and d.db.count("notifications", "email IS NULL") == 0, 30, "every email sent")
        self.note_emails(d)
        received = [m.group(1) for m in (MESSAGE_ID_RE.search(mail.data) for mail in smtp.snapshot()) if m]
        self.assertLessEqual(self.emails_seen, set(received), "an email of the outbox never reached the SMTP server")
        self.check_email_copies(smtp)
        self.assertEqual(d.db.integrity(), "ok")
        answered_2xx = sum(1 for r in ep.snapshot() if r.status is not None and 200 <= r.status < 300)
        sys.stderr.write(
            f"[crash rounds: {ROUNDS} rounds ({', '.join(f'{p} {stats[p]}' for p in PHASES)}) in "
            f"{time.monotonic() - self.t0:.1f}s; {len(self.acked)} submissions acknowledged, all delivered; "
            f"{ep.count()} requests, {answered_2xx} answered 2xx; {dups} duplicate deliveries, each an attempt "
            f"in flight at a kill ({len(self.killed_in_flight)} attempts were); {stats['purged']} records purged "
            f"in purge rounds; {len(self.emails_seen)} emails seen in the outbox, all received by SMTP, "
            f"{len(received) - len(set(received))} extra copies, each sent when a kill came "
            f"({stats['email_kills_mid_send']} kills mid-send); integrity_check ok after every kill]\n")

    # -- phases: each returns what the kill interrupted, for the failure message

    def resubmit(self, d) -> None:
        """What a kill left unanswered, submitted again: 201, or 202 when it had been stored."""
        left, self.unacked = self.unacked, []
        burst = submit_burst(d, left, threads=8)
        self.acked |= burst.acked | burst.duplicates
        self.unacked.extend(burst.unacked)
        self.assertEqual(burst.unacked, [], "resubmissions not answered on a running daemon")

    def burst(self, d, n: int, kill_when=None):
        forms = self.unacked + [unique_form() for _ in range(n)]
        self.unacked = []
        b = submit_burst(d, forms, threads=8, kill_when=kill_when)
        self.acked |= b.acked | b.duplicates
        self.unacked.extend(b.unacked)
        return b

    def phase_ingest(self, d, rng, stats, started) -> str:
        kill_at = rng.randint(1, FORMS_PER_ROUND - 1)
        self.burst(d, FORMS_PER_ROUND, kill_when=lambda acked: acked >= kill_at)
        return f"after {kill_at} 201s of a burst"

    def phase_forwarding(self, d, rng, stats, started) -> str:
        self.burst(d, FORMS_PER_ROUND)
        wait = rng.uniform(0.02, 0.5)
        time.sleep(wait)
        return f"{wait:.3f}s into forwarding"

    def phase_bulk(self, d, rng, stats, started) -> str:
        self.burst(d, FORMS_PER_ROUND // 2)
        time.sleep(rng.uniform(0.1, 0.4))   # some attempts fail: there is something to resend
        failed = d.db.count("records", "state = 'failed'")

        def resend():
            try:
                d.admin("POST", "/api/v1/records/resend?repeater=forms&state=failed", timeout=10)
            except OSError:   # the kill cut it short
                pass

        t = threading.Thread(target=resend, daemon=True)
        t.start()
        wait = rng.uniform(0.0, 0.03)
        time.sleep(wait)
        d.kill9()
        t.join(10)
        return f"{wait:.3f}s into a bulk resend of {failed} failed records"

    def phase_purge(self, d, rng, stats, started) -> str:
        self.burst(d, FORMS_PER_ROUND // 3)
        # The purge runs every retention (1s) after the start.
        wait = max(0.0, started + rng.uniform(0.95, 1.3) - time.monotonic())
        time.sleep(wait)
        return f"{time.monotonic() - started:.3f}s after the start (purge every 1s)"

    def phase_email(self, d, rng, stats, started) -> str:
        self.sending.clear()
        self.burst(d, FORMS_PER_ROUND // 2)
        began = self.sending.wait(5)
        wait = rng.uniform(0.0, SMTP_DATA_SECONDS)
        time.sleep(wait)
        stats["email_kills_mid_send"] += 1 if began else 0
        return f"{wait:.3f}s into an email's DATA" if began else "no email began within 5s"

    # -- checks

    def check_after_kill(self, d, ep, where: str) -> None:
        self.assertEqual(d.db.integrity(), "ok", where)
        in_flight = {r[0] for r in d.db.query("SELECT request_id FROM attempts WHERE outcome = 'in_flight'")}
        self.killed_in_flight |= in_flight
        stored = self.stored_payloads(d)
        delivered = ep.instance_ids(answered_2xx=True)
        lost = self.acked - stored - delivered
        self.assertEqual(lost, set(), f"{where}: acknowledged submissions neither stored nor delivered")
        self.note_emails(d)

    def note_emails(self, d) -> None:
        """Every email in the outbox (pending or sent; sent ones go with the retention)."""
        for (message,) in d.db.query("SELECT message FROM emails"):
            m = MESSAGE_ID_RE.search(message if isinstance(message, bytes) else message.encode())
            self.assertIsNotNone(m, f"an email without a Message-ID: {message[:300]!r}")
            self.emails_seen.add(m.group(1))

    def stored_payloads(self, d) -> set[str]:
        if not d.db.path.exists():
            return set()
        return {r[0] for r in d.db.query("SELECT payload_id FROM payloads")}

    def records_of_payloads(self, d, payload_ids: set[str]) -> int:
        if not payload_ids:
            return 0
        return sum(1 for (pid,) in d.db.query("SELECT p.payload_id FROM records r JOIN payloads p ON p.id = r.payload")
                   if pid in payload_ids)

    def check_email_copies(self, smtp) -> None:
        """An email received more than once was so because a kill cut its conversation short (or
        came before its "sent" was stored): every copy but the last is near a kill. The server
        keeps a message when its (slow) DATA answer is ready, up to 0.3 s after the kill."""
        copies: dict[bytes, list[float]] = collections.defaultdict(list)
        for mail in smtp.snapshot():
            if m := MESSAGE_ID_RE.search(mail.data):
                copies[m.group(1)].append(mail.t)
        for message_id, times in copies.items():
            for t in sorted(times)[:-1]:
                self.assertTrue(any(t - 1.0 <= k <= t + 1.0 for k in self.kill_times),
                                f"email {message_id!r} was sent {len(times)} times; a copy at {t:.2f} is near no "
                                f"kill ({[round(k, 2) for k in self.kill_times]})")

    def check_duplicates(self, d, ep) -> int:
        """Every 2xx delivery of a record past its first is an attempt in flight at a kill."""
        by_record: dict[str, list[str]] = collections.defaultdict(list)
        for r in ep.snapshot():
            if r.status is not None and 200 <= r.status < 300:
                by_record[r.headers["idempotency-key"]].append(r.headers["x-request-id"])
        dups = 0
        for record, request_ids in by_record.items():
            unexplained = [q for q in request_ids if q not in self.killed_in_flight]
            self.assertLessEqual(len(unexplained), 1,
                                 f"record {record} delivered {len(request_ids)} times, {len(unexplained)} of them "
                                 f"by attempts that were not in flight at a kill: {d.db.attempts_of(record)}")
            dups += len(request_ids) - 1
        # The attempts noted at the kills are on record as interrupted (unless purged since).
        outcomes = {o for (o,) in d.db.query(
            f"SELECT outcome FROM attempts WHERE request_id IN ({','.join('?' * len(self.killed_in_flight))})",
            tuple(self.killed_in_flight))} if self.killed_in_flight else set()
        self.assertLessEqual(outcomes, {"interrupted"}, "attempts in flight at a kill must become interrupted")
        return dups

    def records_of(self, d, ids: list[str]) -> list[tuple]:
        if not ids:
            return []
        return d.db.query(f"SELECT p.payload_id, r.state, r.attempts, r.next_attempt_at FROM payloads p "
                          f"LEFT JOIN records r ON r.payload = p.id WHERE p.payload_id IN "
                          f"({','.join('?' * len(ids))})", tuple(ids))


if __name__ == "__main__":
    unittest.main()
