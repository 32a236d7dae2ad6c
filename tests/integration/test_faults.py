"""What a bug in forwarding costs (issue 12): an exception inside an attempt's slot costs that
attempt, stored as failed and retried like any failure, never the slot; an exception escaping a
connection's loop restarts the loop after a growing delay. Driven by the daemon's test hooks
REPEATERD_TEST_FAULT_PAYLOAD and REPEATERD_TEST_FAULT_WORKER_PASSES (docs/operations.md)."""

import unittest

from harness import DaemonTestCase, connection, repeater, retry_policy, unique_form


class FaultContainmentTest(DaemonTestCase):

    def test_an_attempt_that_throws_fails_alone_and_frees_its_slot(self):
        ep = self.endpoint()
        bad_id, bad_form = unique_form()
        # One slot: had the throwing attempt kept it, nothing after it would ever be sent.
        d = self.daemon([connection("inbox", ep.url(), max_in_flight=1)],
                        [repeater("forms", "inbox", retry=retry_policy(max_attempts=3))],
                        env={"REPEATERD_TEST_FAULT_PAYLOAD": bad_id})
        self.assertEqual(d.submit(bad_form).status, 201)
        good = [unique_form() for _ in range(5)]
        for _, form in good:
            self.assertEqual(d.submit(form).status, 201)
        ep.wait_for(lambda rs: {iid for iid, _ in good} <= {r.instance_id for r in rs}, 15, "the five good forms")

        # The bad record: three failed attempts (its whole budget), then cancelled with the reason.
        cancelled = d.events.wait_event("record.cancelled", timeout=15, payload_id=bad_id)[0]
        failed = d.events.of("attempt.failed", payload_id=bad_id)
        self.assertEqual([e["attempt"] for e in failed], [1, 2, 3])
        for e in failed:
            self.assertEqual(e["error"], "internal error in repeaterd (the journal has the details): "
                                         "injected fault (REPEATERD_TEST_FAULT_PAYLOAD)")
        self.assertIn("internal error in repeaterd", cancelled["error"])
        attempts = d.db.attempts_of(cancelled["record_id"])
        self.assertEqual([(n, outcome) for n, outcome, _, _ in attempts], [(1, "failed"), (2, "failed"), (3, "failed")])
        self.assertNotIn(bad_id, {r.instance_id for r in ep.snapshot()}, "nothing of it was sent")
        self.assertIn(f"record {cancelled['record_id']}: internal error: injected fault", d.stderr_tail())
        # The slot is free: the next form goes out as usual.
        iid, form = unique_form()
        self.assertEqual(d.submit(form).status, 201)
        ep.wait_for(lambda rs: any(r.instance_id == iid for r in rs), 10, "a form after the faults")

    def test_a_connection_loop_that_throws_is_restarted_with_a_growing_delay(self):
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")],
                        env={"REPEATERD_TEST_FAULT_WORKER_PASSES": "2"})
        iid, form = unique_form()
        self.assertEqual(d.submit(form).status, 201)
        # Two failed passes (restarted after 1 s, then 2 s), then the loop runs and the form goes.
        ep.wait_for(lambda rs: any(r.instance_id == iid for r in rs), 15, "the form after two restarts")
        failures = d.events.of("scheduler.worker_failed", connection="inbox")
        self.assertEqual([(e["restart_in_ms"], e["error"]) for e in failures],
                         [(1000, "injected fault (REPEATERD_TEST_FAULT_WORKER_PASSES)"),
                          (2000, "injected fault (REPEATERD_TEST_FAULT_WORKER_PASSES)")])
        self.assertIn("scheduler[inbox]: the connection's loop failed: injected fault", d.stderr_tail())
        # Running again: another form is sent at once.
        iid, form = unique_form()
        self.assertEqual(d.submit(form).status, 201)
        ep.wait_for(lambda rs: any(r.instance_id == iid for r in rs), 10, "a form after the restarts")


if __name__ == "__main__":
    unittest.main(verbosity=2)
