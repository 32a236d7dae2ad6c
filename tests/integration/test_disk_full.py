"""Disk full (issue 12; spec §3 "503 when storage cannot commit", §5 at-least-once, §7 event log).

The queue database, then the event log, on a small tmpfs (harness.SmallFilesystem, root only)
that the test fills with a filler file at the moment it chooses and frees by deleting it:

  QueueDiskFullTest     while the database's disk is full, submissions get 503 with Retry-After
                        and a reason naming the full disk, and nothing of them is stored; the
                        outcomes of attempts answered meanwhile are held, not lost, and stored
                        once space is back without sending those records again; everything
                        acknowledged is delivered; the journal says it once and says when it
                        ended; integrity_check passes; no restart is needed.
  EventLogDiskFullTest  while the event log's disk is full, submissions are still acknowledged and
                        forwarded; the lines are dropped whole (no torn line), the journal says
                        it once, and when space returns a log.lines_lost line counts the gap.
"""

from __future__ import annotations

import threading
import time
import unittest

from harness import DaemonTestCase, Reply, connection, repeater, unique_form, wait_until

FULL_REASON = r"disk holding the queue database is full"


class QueueDiskFullTest(DaemonTestCase):

    # Attempts answered while the disk is full. One: the pacer may allow a single request in
    # flight (it halves its limit when a local receiver's latency jumps), and a second held
    # record would then wait behind the first instead of being sent.
    HELD = 1

    def test_queue_disk_full_503_held_outcomes_resume(self):
        fs = self.small_filesystem("q", "8m")
        held_ids: set[str] = set()
        gate, arrived = threading.Event(), threading.Semaphore(0)

        def respond(received):
            # The held forms' requests wait here until the disk is full, then succeed.
            if received.instance_id in held_ids:
                arrived.release()
                gate.wait(60)
            return Reply(200)

        ep = self.endpoint(responder=respond)
        cfg = self.config([connection("inbox", ep.url(), max_in_flight=4, timeout="30s")],
                          [repeater("forms", "inbox", retry={"max_attempts": 50})],
                          storage={"path": str(fs.path / "repeaterd.db")})
        d = self.daemon(config=cfg)

        before = [unique_form() for _ in range(5)]
        for _, form in before:
            self.assertSubmitted(d.submit(form), 201, records=1)
        ep.wait_for(lambda _: {i for i, _ in before} <= ep.instance_ids(answered_2xx=True), 15,
                    "the forms submitted before the disk fills delivered")

        held = [unique_form() for _ in range(self.HELD)]
        held_ids.update(i for i, _ in held)
        for _, form in held:
            self.assertSubmitted(d.submit(form), 201, records=1)
        for _ in held:
            self.assertTrue(arrived.acquire(timeout=15), "the held forms' attempts did not reach the receiver")

        filled = fs.fill()
        self.assertEqual(fs.free_bytes(), 0, f"{fs.path} still has room after a {filled}-byte filler")

        # The next commit needs room the WAL does not have: 503, Retry-After, the cause named,
        # nothing stored. (A commit that still fits the WAL's last page is acknowledged: it must
        # then be delivered like any other.)
        acked = {i for i, _ in before + held}
        rejected: list[tuple[str, bytes]] = []
        for _ in range(20):
            iid, form = unique_form()
            resp = d.submit(form, timeout=30)
            if resp.status == 201:
                acked.add(iid)
                continue
            self.assertEqual(resp.status, 503, resp.body[:300])
            self.assertTrue(resp.header("Retry-After"), "a 503 must carry Retry-After")
            self.assertRegex(self.reason(resp), FULL_REASON)
            self.assertEqual(d.db.count("payloads", "payload_id = ?", (iid,)), 0, "a 503'd submission was stored")
            rejected.append((iid, form))
            if len(rejected) == 3:
                break
        self.assertEqual(len(rejected), 3, "submissions kept being acknowledged on a full disk")

        # The receiver answers the held attempts now: their outcomes cannot be stored yet.
        gate.set()
        ep.wait_for(lambda rs: sum(1 for r in rs if r.instance_id in held_ids and r.status == 200) == self.HELD,
                    15, "the held attempts answered")
        time.sleep(1.5)   # more than one retry of the held outcomes
        self.assertTrue(d.running(), "repeaterd died on a full disk")
        in_flight = {r[0] for r in d.db.query(
            "SELECT p.payload_id FROM attempts a JOIN records r ON r.id = a.record JOIN payloads p ON p.id = r.payload "
            "WHERE a.outcome = 'in_flight'")}
        # (A form acknowledged while the WAL still had room may have been claimed and sent too.)
        self.assertLessEqual(held_ids, in_flight, "the held attempts should be in flight until their outcome is stored")
        self.assertLessEqual(in_flight, acked)
        store_lines = [l for l in d.stderr_text().splitlines() if "store: the disk holding the queue database is full" in l]
        self.assertEqual(len(store_lines), 1, "the store should say once that the disk is full:\n"
                         + "\n".join(store_lines[:5]))

        fs.free()
        freed = time.monotonic()
        # By itself: the held outcomes go in, without sending those records again.
        wait_until(lambda: d.db.count("attempts", "outcome = 'in_flight'") == 0, 15,
                   "the held outcomes stored once space is back")
        states = d.db.query("SELECT p.payload_id, r.state, a.outcome FROM records r JOIN payloads p ON p.id = r.payload "
                            "JOIN attempts a ON a.record = r.id")
        for iid in in_flight:
            self.assertEqual([(s, o) for p, s, o in states if p == iid], [("succeeded", "succeeded")], iid)
            self.assertEqual(sum(1 for r in ep.snapshot() if r.instance_id == iid), 1,
                             f"{iid}: its outcome was held, so it must not be sent again")

        for iid, form in rejected:
            self.assertSubmitted(d.submit(form), 201, records=1)
            acked.add(iid)
        ep.wait_for(lambda _: acked <= ep.instance_ids(answered_2xx=True), 20,
                    "every acknowledged form delivered after the disk was freed")
        self.assertEqual(d.db.integrity(), "ok")
        self.assertEqual(d.db.count("payloads"), len(acked), "one payload per acknowledged form, no more")
        # The journal says it is over once commits have gone through for 2 s.
        time.sleep(max(0.0, freed + 2.2 - time.monotonic()))
        self.assertSubmitted(d.submit(unique_form()[1]), 201, records=1)
        wait_until(lambda: "store: commits succeed again" in d.stderr_text(), 5, "the journal saying commits work")
        store_lines = [l for l in d.stderr_text().splitlines() if "store: the disk holding the queue database is full" in l]
        self.assertEqual(len(store_lines), 1, "the store should say once that the disk is full")
        self.assertTrue(d.running())


class EventLogDiskFullTest(DaemonTestCase):

    def test_log_disk_full_drops_lines_not_records(self):
        fs = self.small_filesystem("l", "4m")
        ep = self.endpoint()
        cfg = self.config([connection("inbox", ep.url())], [repeater("forms", "inbox")],
                          log={"events_file": str(fs.path / "events.log")})
        d = self.daemon(config=cfg)
        first = [unique_form() for _ in range(3)]
        for _, form in first:
            self.assertSubmitted(d.submit(form), 201, records=1)
        d.events.wait_event("attempt.succeeded", count=3, timeout=15)

        fs.fill()
        during = [unique_form() for _ in range(10)]
        t0 = time.monotonic()
        for _, form in during:
            self.assertSubmitted(d.submit(form), 201, records=1)
        ep.wait_for(lambda _: {i for i, _ in during} <= ep.instance_ids(answered_2xx=True), 15,
                    "forwarding goes on while the event log cannot be written")
        took = time.monotonic() - t0
        self.assertLess(took, 10, "a full event log disk slowed ingest or forwarding")
        time.sleep(0.3)   # the flusher has tried (and failed) to write those lines
        log_lines = [l for l in d.stderr_text().splitlines() if "event log" in l and "cannot write" in l]
        self.assertEqual(len(log_lines), 1, "the journal should say once that event lines are dropped")
        self.assertIn("No space left on device", log_lines[0])

        fs.free()
        after = [unique_form() for _ in range(2)]
        for _, form in after:
            self.assertSubmitted(d.submit(form), 201, records=1)
        for iid, _ in after:
            d.events.wait_event("attempt.succeeded", payload_id=iid, timeout=15)
        # Each of the 20 lines of those forms (record.created, attempt.succeeded) is in the file
        # or counted as lost: a nearly full disk takes a small batch into its last block's
        # slack and refuses a bigger one, so some made it.
        lost = d.events.of("log.lines_lost")
        self.assertTrue(lost, "no log.lines_lost line marks the gap")
        during_ids = {i for i, _ in during}
        written = sum(1 for e in d.events.read() if e.get("payload_id") in during_ids)
        self.assertGreaterEqual(sum(e["lines"] for e in lost) + written, 20, (written, lost))
        self.assertTrue(all("No space left on device" in e["error"] for e in lost), lost)
        self.assertEqual(d.events.bad_lines, [], "a torn line was left in the event log")
        # The journal says it is over once writes have gone through for 2 s.
        time.sleep(2.2)
        self.assertSubmitted(d.submit(unique_form()[1]), 201, records=1)
        wait_until(lambda: "writing again" in d.stderr_text(), 5, "the journal saying the log is written again")
        log_lines = [l for l in d.stderr_text().splitlines() if "event log" in l and "cannot write" in l]
        self.assertEqual(len(log_lines), 1, "the journal should say once that event lines are dropped")
        wait_until(lambda: d.db.count("records", "state = 'succeeded'") == 16, 10, "every record delivered")
        self.assertTrue(d.running())


if __name__ == "__main__":
    unittest.main()
