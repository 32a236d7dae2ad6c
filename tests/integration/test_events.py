"""Event log (spec §7): line format and the periodic queue.summary with correct counts."""

import statistics
import unittest

from harness import ISO_Z_RE, OTHER_TOKEN, DaemonTestCase, connection, parse_iso_z, repeater, unique_form

EVERY = 0.3
FORMS = 3
STATES = ("pending", "failed", "succeeded", "cancelled")


def summary_of(event: dict) -> dict:
    """repeater name -> its row in a queue.summary event."""
    return {row["repeater"]: row for row in event.get("repeaters", [])}


class EventsTest(DaemonTestCase):

    def test_queue_summary_counts_and_period(self):
        ok, failing, rejecting, held = (self.endpoint(), self.endpoint(default=500),
                                        self.endpoint(default=400), self.endpoint())
        d = self.daemon(
            [connection("ok", ok.url()), connection("failing", failing.url()),
             connection("rejecting", rejecting.url()), connection("held", held.url())],
            [repeater("r-ok", "ok"),
             # Another domain, so it gets a single record: a few failures in a row could open
             # the connection's circuit and hold records back as pending.
             repeater("r-failing", "failing", domain="other",
                      retry={"initial": "60s", "max_delay": "60s", "max_attempts": 5}),
             repeater("r-rejecting", "rejecting", retry={"max_attempts_client_error": 1}),
             repeater("r-held", "held", paused=True)],
            log={"queue_summary_every": f"{int(EVERY * 1000)}ms"})
        for _ in range(FORMS):
            self.assertSubmitted(d.submit(unique_form()[1]), 201, records=3)
        self.assertSubmitted(d.submit(unique_form()[1], domain="other", token=OTHER_TOKEN), 201, records=1)

        expected = {
            "r-ok": {"pending": 0, "failed": 0, "succeeded": FORMS, "cancelled": 0},
            "r-failing": {"pending": 0, "failed": 1, "succeeded": 0, "cancelled": 0},
            "r-rejecting": {"pending": 0, "failed": 0, "succeeded": 0, "cancelled": FORMS},
            "r-held": {"pending": FORMS, "failed": 0, "succeeded": 0, "cancelled": 0},
        }

        def settled(summary):
            rows = summary_of(summary)
            return all(name in rows and {s: rows[name].get(s) for s in STATES} == counts
                       for name, counts in expected.items())

        def first_settled(_):
            for i, e in enumerate(d.events.of("queue.summary")):
                if settled(e):
                    return i + 1
            return None

        start = d.events.wait_for(first_settled, 10, "a queue.summary with the settled counts") - 1
        summaries = d.events.wait_for(
            lambda _: (lambda s: s if len(s) >= start + 5 else None)(d.events.of("queue.summary")),
            10, "four more summaries")[start:start + 5]

        for s in summaries:
            self.assertTrue(settled(s), f"counts changed without activity: {s}")
            for name, row in summary_of(s).items():
                self.assertEqual(row.get("connection"), name.removeprefix("r-"), row)
                self.assertIn("oldest_due_age_ms", row, row)

        gaps = [parse_iso_z(b["ts"]) - parse_iso_z(a["ts"]) for a, b in zip(summaries, summaries[1:])]
        for gap in gaps:
            self.assertGreater(gap, EVERY * 0.6, f"summaries too close: {gaps}")
            self.assertLess(gap, EVERY * 2.5, f"summaries too far apart: {gaps}")
        self.assertAlmostEqual(statistics.mean(gaps), EVERY, delta=EVERY * 0.35, msg=f"gaps {gaps}")

        # The paused repeater's records are due and waiting: their age keeps growing.
        ages = [summary_of(s)["r-held"]["oldest_due_age_ms"] for s in summaries]
        self.assertTrue(all(isinstance(a, (int, float)) and a > 0 for a in ages), ages)
        self.assertGreater(ages[-1] - ages[0], EVERY * 1000 * 2, ages)
        # Nothing of r-ok is due.
        self.assertIn(summary_of(summaries[-1])["r-ok"]["oldest_due_age_ms"], (0, None))

    def test_every_line_is_json_with_ts_and_event(self):
        ep = self.endpoint([500])
        d = self.daemon([connection("inbox", ep.url())],
                        [repeater("forms", "inbox", retry={"initial": "100ms"})],
                        log={"queue_summary_every": "200ms"})
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201)
        d.events.wait_event("attempt.succeeded")
        d.events.wait_event("queue.summary")
        self.assertEqual(d.events.bad_lines, [], "every line must be one JSON object")
        for e in d.events.read():
            self.assertRegex(e.get("ts", ""), ISO_Z_RE, e)
            self.assertIsInstance(e.get("event"), str, e)
        kinds = [e["event"] for e in d.events.read() if e["event"] != "queue.summary"]
        self.assertEqual(kinds, ["record.created", "attempt.failed", "attempt.succeeded"])
        record_ids = {e["record_id"] for e in d.events.read() if "record_id" in e}
        self.assertEqual(len(record_ids), 1)
        for e in d.events.read():
            if e["event"] != "queue.summary":
                self.assertEqual((e["payload_id"], e["domain"], e["payload_type"]), (iid, "demo", "form"))


if __name__ == "__main__":
    unittest.main()
