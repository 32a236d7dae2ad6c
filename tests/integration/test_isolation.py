"""Isolation (spec §5): one connection hanging never delays another connection's records."""

import sys
import time
import unittest

from harness import DaemonTestCase, Reply, connection, repeater, unique_form

N = 50
A_TIMEOUT = 30.0


class IsolationTest(DaemonTestCase):

    def deliver_to_b(self, with_hung_a: bool, name: str):
        """Submits N forms; returns (seconds until B had them all, daemon, A's endpoint)."""
        ep_b = self.endpoint()
        conns = [connection("b", ep_b.url(), max_in_flight=4)]
        reps = [repeater("to-b", "b")]
        ep_a = None
        if with_hung_a:
            ep_a = self.endpoint(default=Reply(hang=True))   # accepts, never answers
            conns.append(connection("a", ep_a.url(), timeout=f"{A_TIMEOUT:g}s", max_in_flight=2))
            reps.append(repeater("to-a", "a"))
        d = self.daemon(conns, reps, name=name)

        ids = set()
        t0 = time.monotonic()
        for _ in range(N):
            iid, form = unique_form()
            self.assertSubmitted(d.submit(form), 201, records=len(reps))
            ids.add(iid)
        got = ep_b.wait_for(lambda rs: rs if ids <= {r.instance_id for r in rs} else None,
                            A_TIMEOUT - 5, f"all {N} of B's records")
        last = max(r.t for r in got if r.instance_id in ids)
        return last - t0, d, ep_a

    def test_hung_connection_does_not_delay_another(self):
        alone, _, _ = self.deliver_to_b(False, "b-alone")
        beside, d, ep_a = self.deliver_to_b(True, "b-beside-hung-a")
        sys.stderr.write(f"\n[isolation: {N} records to B took {alone:.3f}s alone, "
                         f"{beside:.3f}s beside a hung connection A]\n")

        self.assertLess(beside, A_TIMEOUT, "B waited for A's timeout")
        # A is still hanging: exactly max_in_flight requests open, none finished.
        ep_a.wait_count(2, 5)
        self.assertEqual(ep_a.count(), 2, "connection A's max_in_flight is 2")
        self.assertEqual(ep_a.max_in_flight_seen, 2)
        self.assertEqual(d.events.of("attempt.succeeded", repeater="to-a"), [])
        self.assertEqual(d.events.of("attempt.failed", repeater="to-a"), [])
        d.events.wait_event("attempt.succeeded", count=N, repeater="to-b")


if __name__ == "__main__":
    unittest.main()
