"""Flow control (spec §5): the circuit breaker, paced release, adaptive concurrency and ordered
delivery, driven through the real daemon against loopback receivers.

  CircuitTest    a receiver down for longer than a record's whole retry budget, then up:
                 nothing is cancelled, one probe at a time during the outage, the backlog
                 arrives with a rising concurrency, one email on open and one on close, the
                 state in the admin API and metrics; a flood of 4xx never opens the circuit.
  PacingTest     a resumed backlog is released from one request at a time upwards; a healthy
                 receiver gets many requests at once, one whose latency rises with load few.
  OrderingTest   50 cases x 5 updates through a receiver failing 30 % of requests at random:
                 each case's updates arrive in order, the cases interleaved.
"""

from __future__ import annotations

import random
import re
import threading
import time
import unittest

from harness import (DaemonTestCase, Reply, connection, parse_iso_z, repeater, typed_repeater,
                     unique_form)
from smtp_server import SmtpServer

CASE_NS = "http://commcarehq.org/case/transaction/v2"


def case_form(form_id: str, case_id: str, seq: int) -> bytes:
    """A form whose case block creates the case (seq 0) or updates it, setting property seq."""
    create = ("<create><case_type>patient</case_type><case_name>p</case_name><owner_id>u</owner_id></create>"
              if seq == 0 else "")
    block = (f'<case xmlns="{CASE_NS}" case_id="{case_id}" user_id="u" date_modified="2024-01-01T00:00:00Z">'
             f"{create}<update><seq>{seq}</seq></update></case>")
    return (f'<?xml version="1.0"?><data xmlns="http://example.org/visit"><q>{seq}</q>{block}'
            f"<meta><instanceID>{form_id}</instanceID><userID>u</userID></meta></data>").encode()


class CircuitTest(DaemonTestCase):

    def test_outage_cancels_nothing_probes_then_paces(self):
        smtp = SmtpServer()
        self.addCleanup(smtp.stop)
        up = threading.Event()

        def responder(received):
            if not up.is_set():
                return Reply(503, b"down for maintenance")
            # 200 ms: the pacer reads a latency of twice its baseline (and 50 ms more) as
            # queueing, and a loaded CI machine adds tens of milliseconds to a 50 ms answer.
            return Reply(200, b"{}", delay=0.2)

        ep = self.endpoint(responder=responder)
        conn = connection("inbox", ep.url(), max_in_flight=16, notify=["ops@example.org"],
                          circuit={"failures": 3, "cooldown": "300ms", "max_cooldown": "1s"})
        # The whole budget: 3 attempts 100 ms and 200 ms apart; the outage lasts 4 s.
        rep = repeater("forms", "inbox", retry={"initial": "100ms", "multiplier": 2, "max_delay": "400ms",
                                               "max_attempts": 3})
        cfg = self.config([conn], [rep])
        cfg["smtp"] = {"url": smtp.url(), "from": "repeaterd@example.org", "throttle": "1h"}
        d = self.daemon(config=cfg)
        ids = []
        for _ in range(40):
            iid, form = unique_form()
            self.assertSubmitted(d.submit(form), 201, records=1)
            ids.append(iid)

        opened = d.events.wait_event("circuit.opened", timeout=10)[0]
        self.assertEqual(opened["connection"], "inbox")
        self.assertEqual(opened["failures"], 3)
        self.assertIn("503", opened["error"])
        self.assertGreater(opened["backlog"], 0)
        status = d.admin_ok("GET", "/api/v1/status")
        circuit = status["connections"][0]["circuit"]
        self.assertIn(circuit["state"], ("open", "probing"), circuit)
        self.assertIsNotNone(circuit["opened_at"])
        metrics = d.admin_ok("GET", "/metrics").decode()
        self.assertRegex(metrics, r'repeaterd_circuit_open\{connection="inbox"\} 1')

        opened_wall = parse_iso_z(opened["ts"])
        time.sleep(4)
        up.set()
        up_at = time.monotonic()
        closed = d.events.wait_event("circuit.closed", timeout=10)[0]
        d.events.wait_event("attempt.succeeded", timeout=60, count=40)

        # Nothing was cancelled, although the outage outlasted every record's budget.
        self.assertEqual(d.events.of("record.cancelled"), [])
        self.assertEqual(d.db.count("records", "state = 'cancelled'"), 0)
        self.assertEqual(d.db.count("records", "state = 'succeeded'"), 40)
        self.assertGreaterEqual(closed["outage_ms"], 3500, closed)
        self.assertIn("backlog", closed)

        # During the outage only probes went out: one at a time, spaced by the cooldown.
        during = [r for r in ep.snapshot() if opened_wall + 0.05 < r.wall and r.t < up_at]
        self.assertGreaterEqual(len(during), 2, "the circuit must probe during the outage")
        self.assertLessEqual(len(during), 10, f"{len(during)} requests during the outage: not just probes")
        for a, b in zip(during, during[1:]):
            self.assertGreaterEqual(b.t - a.t, 0.25, "probes must wait out the cooldown")
        outage_log = [n for t, n in ep.in_flight_log if up_at - 3.5 < t < up_at]
        self.assertTrue(outage_log and max(outage_log) == 1, outage_log)

        # The backlog after the close: from one request at a time, rising.
        after = [n for t, n in ep.in_flight_log if t >= up_at]
        self.assertLessEqual(max(after[:3]), 2, f"the backlog was released as a flood: {after[:20]}")
        self.assertGreaterEqual(max(after), 6, f"concurrency never rose: {after}")
        first_high = next(i for i, n in enumerate(after) if n >= 4)
        self.assertGreaterEqual(first_high, 3, after[:20])

        # Two emails: the circuit opened, the circuit closed (no per-record failure emails).
        mails = smtp.wait_count(2, 20)
        time.sleep(1.0)
        mails = smtp.snapshot()
        subjects = [m.subject for m in mails]
        self.assertEqual(len(mails), 2, subjects)
        self.assertRegex(subjects[0].lower(), "circuit opened")
        self.assertRegex(subjects[1].lower(), "circuit closed")
        self.assertIn(ep.url(), mails[0].body())

    def test_a_flood_of_client_errors_does_not_open_the_circuit(self):
        ep = self.endpoint(default=Reply(400, b'{"error": "field age is required"}'))
        d = self.daemon([connection("inbox", ep.url(), circuit={"failures": 3, "cooldown": "10s"})],
                        [repeater("forms", "inbox", retry={"initial": "50ms", "max_attempts_client_error": 2})])
        for _ in range(30):
            _, form = unique_form()
            self.assertSubmitted(d.submit(form), 201, records=1)
        d.events.wait_event("record.cancelled", timeout=30, count=30)
        self.assertEqual(d.events.of("circuit.opened"), [])
        self.assertEqual(ep.count(), 60, "each record twice (max_attempts_client_error), none held back")


class PacingTest(DaemonTestCase):

    def backlog_released(self, delay, forms: int, max_in_flight: int):
        """Builds a backlog behind an operator pause, resumes, and returns the receiver's
        in-flight counts after the resume. `delay(in_flight)` is the receiver's latency."""
        ep = self.endpoint(responder=lambda r: Reply(200, b"{}", delay=delay(ep.in_flight)))
        d = self.daemon([connection("inbox", ep.url(), max_in_flight=max_in_flight, timeout="30s")],
                        [repeater("forms", "inbox")])
        d.admin_ok("POST", "/api/v1/repeaters/forms/pause")
        ids = set()
        for _ in range(forms):
            iid, form = unique_form()
            self.assertSubmitted(d.submit(form), 201, records=1)
            ids.add(iid)
        self.assertEqual(ep.count(), 0)
        resumed = time.monotonic()
        d.admin_ok("POST", "/api/v1/repeaters/forms/resume")
        ep.wait_for(lambda rs: {r.instance_id for r in rs if r.status == 200} >= ids, 120, "the backlog")
        return [n for t, n in ep.in_flight_log if t >= resumed]

    def test_healthy_receiver_gets_a_rising_rate(self):
        # 200 ms an answer however many are out: long enough that the Python receiver's own
        # slowdown on two busy cores stays far below a doubling of its latency.
        seen = self.backlog_released(lambda n: 0.2, forms=300, max_in_flight=32)
        self.assertLessEqual(max(seen[:2]), 1, f"a resume must not release a flood: {seen[:20]}")
        self.assertGreaterEqual(max(seen), 20, f"a healthy receiver must get many at once: {max(seen)}")

    def test_receiver_whose_latency_rises_with_load_is_not_flooded(self):
        # 25 ms per request it is already serving: more at once only makes each answer slower.
        seen = self.backlog_released(lambda n: 0.025 * n, forms=150, max_in_flight=64)
        self.assertLessEqual(max(seen), 10, f"a fragile receiver was flooded: up to {max(seen)} at once")


class OrderingTest(DaemonTestCase):

    def test_updates_of_each_case_arrive_in_order_and_cases_interleave(self):
        rng = random.Random(20261203)
        lock = threading.Lock()
        delivered: list[tuple[str, int]] = []
        case_re = re.compile(rb'case_id="([^"]+)"')
        seq_re = re.compile(rb"<seq>(\d+)</seq>")

        def responder(received):
            with lock:
                fail = rng.random() < 0.3
                if not fail:
                    delivered.append((case_re.search(received.body).group(1).decode(),
                                      int(seq_re.search(received.body).group(1))))
            return Reply(503 if fail else 200, b"busy" if fail else b"{}")

        ep = self.endpoint(responder=responder)
        # `ordered` is the default for case repeaters.
        rep = typed_repeater("cases", "inbox", "case",
                             retry={"initial": "50ms", "multiplier": 2, "max_delay": "400ms", "max_attempts": 30})
        d = self.daemon([connection("inbox", ep.url(), max_in_flight=8, circuit={"cooldown": "200ms"})], [rep])
        cases = [f"case-{i:02d}-{unique_form()[0][:8]}" for i in range(50)]
        for seq in range(5):
            for case_id in cases:
                self.assertSubmitted(d.submit(case_form(unique_form()[0], case_id, seq)), 201, records=1)

        def done(_):
            with lock:
                return len(delivered) >= 250
        ep.wait_for(done, 120, "250 case updates delivered")
        self.assertEqual(d.events.of("record.cancelled"), [])
        failures = len(d.events.of("attempt.failed"))
        self.assertGreater(failures, 30, "the receiver must have failed some requests")
        with lock:
            order = list(delivered)
        for case_id in cases:
            seqs = [s for c, s in order if c == case_id]
            self.assertEqual(seqs, [0, 1, 2, 3, 4], f"{case_id} updates arrived out of order")
        # Interleaved, not one case after another: the first 50 deliveries span many cases.
        self.assertGreaterEqual(len({c for c, _ in order[:50]}), 25, order[:50])


if __name__ == "__main__":
    unittest.main()
