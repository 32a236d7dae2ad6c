"""Repeat record lifecycle (spec §5): retryable failures, client errors, 413, Retry-After, 3xx."""

import unittest

from harness import (ISO_Z_RE, DaemonTestCase, Reply, connection, free_port, parse_iso_z,
                     repeater, unique_form)

EARLY = 0.01   # timer/clock granularity: an attempt may not start earlier than this


def late_ok(expected: float) -> float:
    """How much later than its due time an attempt may start: loose enough for ASan on 2
    cores, tight enough that a delay off by one multiplier step fails."""
    return max(0.25, expected * 0.5)


class RetryTest(DaemonTestCase):

    def start(self, replies, default=200, retry=None, conn=None, url=None):
        """One endpoint, one repeater, one submitted form; returns (daemon, endpoint, form id)."""
        ep = self.endpoint(replies, default=default)
        d = self.daemon([connection("inbox", url or ep.url(), **(conn or {}))],
                        [repeater("forms", "inbox", retry=retry)])
        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=1)
        return d, ep, iid

    def assertGap(self, earlier, later, expected, below=None):
        """The second request came `expected` seconds after the first (never earlier)."""
        gap = later.t - earlier.t
        below = expected + late_ok(expected) if below is None else below
        self.assertGreaterEqual(gap, expected - EARLY, f"retry came too early ({gap:.3f}s, "
                                                       f"expected {expected}s)")
        self.assertLess(gap, below, f"retry came too late ({gap:.3f}s, expected {expected}s)")
        return gap

    def test_500_then_200_retries_once_after_initial_delay(self):
        d, ep, iid = self.start([500], retry={"initial": "300ms", "multiplier": 2})
        first, second = ep.wait_count(2, 10)[:2]
        ok = d.events.wait_event("attempt.succeeded")[0]
        failed = d.events.of("attempt.failed")
        self.assertEqual(len(failed), 1, failed)
        failed = failed[0]

        self.assertGap(first, second, 0.3, 2.0)
        self.assertEqual(first.headers.get("idempotency-key"), second.headers.get("idempotency-key"))
        self.assertEqual(first.headers.get("idempotency-key"), ok["record_id"])
        self.assertNotEqual(first.headers.get("x-request-id"), second.headers.get("x-request-id"))
        # The payload is fixed at record creation: same bytes, same Received-On on every retry.
        self.assertEqual(first.body, second.body)
        self.assertEqual(first.headers.get("received-on"), second.headers.get("received-on"))

        self.assertEqual((failed["attempt"], failed["http_status"], failed["state"]), (1, 500, "failed"))
        self.assertEqual(failed["payload_id"], iid)
        self.assertTrue(failed.get("error"), "attempt.failed needs an error text")
        self.assertRegex(failed.get("next_attempt_at", ""), ISO_Z_RE)
        due_in = parse_iso_z(failed["next_attempt_at"]) - parse_iso_z(failed["ts"])
        self.assertAlmostEqual(due_in, 0.3, delta=0.1, msg=f"next_attempt_at {due_in:.3f}s after ts")
        self.assertEqual((ok["attempt"], ok["http_status"], ok["state"]), (2, 200, "succeeded"))
        ep.assert_quiet(2, 0.3)

    def test_always_500_cancelled_after_max_attempts_with_growing_delays(self):
        d, ep, _ = self.start([], default=500,
                              retry={"initial": "300ms", "multiplier": 2, "max_attempts": 3})
        cancelled = d.events.wait_event("record.cancelled", timeout=10)[0]
        reqs = ep.snapshot()
        self.assertEqual(len(reqs), 3, "max_attempts is the total number of attempts")
        gap1 = self.assertGap(reqs[0], reqs[1], 0.3)
        gap2 = self.assertGap(reqs[1], reqs[2], 0.6)
        self.assertGreater(gap2 / gap1, 1.5, f"delays {gap1:.3f}s, {gap2:.3f}s do not grow by ~2x")
        self.assertLess(gap2 / gap1, 2.6, f"delays {gap1:.3f}s, {gap2:.3f}s do not grow by ~2x")

        failed = d.events.of("attempt.failed")
        self.assertEqual([e["attempt"] for e in failed], [1, 2, 3])
        self.assertEqual([e["state"] for e in failed], ["failed", "failed", "cancelled"])
        self.assertTrue(all(e.get("http_status") == 500 for e in failed), failed)
        self.assertEqual(cancelled["state"], "cancelled")
        self.assertEqual(cancelled["attempt"], 3)
        self.assertTrue(cancelled.get("error"))
        ep.assert_quiet(3, 1.5)   # longer than the next delay (1.2 s) would have been

    def test_400_uses_the_client_error_budget(self):
        d, ep, _ = self.start([], default=Reply(400, b'{"error": "bad field"}'),
                              retry={"max_attempts": 5, "max_attempts_client_error": 2})
        d.events.wait_event("record.cancelled", timeout=10)
        ep.assert_quiet(2, 0.8)
        failed = d.events.of("attempt.failed")
        self.assertEqual([(e["attempt"], e["http_status"], e["state"]) for e in failed],
                         [(1, 400, "failed"), (2, 400, "cancelled")])

    def test_413_cancels_at_once(self):
        d, ep, _ = self.start([], default=413, retry={"max_attempts": 5, "max_attempts_client_error": 3})
        cancelled = d.events.wait_event("record.cancelled", timeout=10)[0]
        self.assertEqual(cancelled["attempt"], 1)
        ep.assert_quiet(1, 0.6)
        failed = d.events.of("attempt.failed")
        self.assertEqual([(e["attempt"], e["http_status"], e["state"]) for e in failed],
                         [(1, 413, "cancelled")])

    def test_429_retry_after_is_honoured(self):
        d, ep, _ = self.start([Reply(429, headers={"Retry-After": "1"})],
                              retry={"initial": "100ms", "max_delay": "10s"})
        first, second = ep.wait_count(2, 10)[:2]
        self.assertGap(first, second, 1.0)
        d.events.wait_event("attempt.succeeded")

    def test_503_retry_after_is_capped_at_max_delay(self):
        d, ep, _ = self.start([Reply(503, headers={"Retry-After": "30"})],
                              retry={"initial": "100ms", "max_delay": "500ms"})
        first, second = ep.wait_count(2, 10)[:2]
        self.assertGap(first, second, 0.5)
        d.events.wait_event("attempt.succeeded")

    def test_302_is_a_failure_and_not_followed(self):
        ep = self.endpoint()
        # The redirect points back at this endpoint: following it would show up as /elsewhere.
        ep.responder = lambda r: (Reply(302, headers={"Location": ep.url("/elsewhere")})
                                  if r.path == "/inbox" and ep.count() == 0 else Reply(200))
        d = self.daemon([connection("inbox", ep.url("/inbox"))], [repeater("forms", "inbox")])
        self.assertSubmitted(d.submit(unique_form()[1]), 201)
        failed = d.events.wait_event("attempt.failed", timeout=10)[0]
        self.assertEqual(failed["http_status"], 302)
        self.assertEqual(failed["attempt"], 1)
        # Whatever its class, the retry goes to the configured URL again.
        d.events.wait_for(lambda _: d.events.of("attempt.succeeded") or d.events.of("record.cancelled"),
                          10, "the record to settle")
        self.assertEqual([r.path for r in ep.snapshot() if r.path != "/inbox"], [],
                         "the redirect was followed")

    def test_timeout_is_retryable(self):
        d, ep, _ = self.start([Reply(hang=True)], conn={"timeout": "500ms"},
                              retry={"initial": "200ms"})
        first, second = ep.wait_count(2, 10)[:2]
        # timeout (0.5 s) + initial delay (0.2 s), plus connection set-up
        self.assertGap(first, second, 0.7, 0.7 + 0.8)
        failed = d.events.wait_event("attempt.failed")[0]
        self.assertEqual(failed["state"], "failed")
        self.assertIsNone(failed.get("http_status"), "a timeout has no HTTP status")
        self.assertTrue(failed.get("error"))
        d.events.wait_event("attempt.succeeded")

    def test_connection_refused_is_retryable_then_cancelled(self):
        dead_url = f"http://127.0.0.1:{free_port()}/inbox"   # nothing listens there
        d, _, _ = self.start([], url=dead_url, retry={"initial": "100ms", "max_attempts": 3})
        d.events.wait_event("record.cancelled", timeout=10)
        failed = d.events.of("attempt.failed")
        self.assertEqual([e["attempt"] for e in failed], [1, 2, 3])
        self.assertEqual(failed[-1]["state"], "cancelled")
        for e in failed:
            self.assertIsNone(e.get("http_status"))
            self.assertTrue(e.get("error"), e)


if __name__ == "__main__":
    unittest.main()
