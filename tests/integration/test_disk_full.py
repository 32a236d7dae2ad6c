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
  EmailDiskFullTest     an email whose SMTP 250 comes back while the disk is full: its outbox row
                        cannot say "sent", so the outcome is held in memory (said once) and stored
                        when space returns; the email is not sent again meanwhile or after.
  WalCheckpointDiskFullTest
                        a -wal file grown to ~1,800 frames (a reader held checkpoints back), then
                        checkpointed and started over; on a full disk, commits go on into its
                        frames (201), the checkpoint at 1,000 frames cannot grow the database file
                        (said once), then commits that need a bigger -wal file get 503; once space
                        is back a checkpoint succeeds (said), everything acknowledged is delivered.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

from harness import DaemonTestCase, Reply, connection, padded_form, repeater, unique_form, wait_until
from smtp_server import SmtpServer

FULL_REASON = r"disk holding the queue database is full"


def assert_refused_for_full_disk(test: DaemonTestCase, d, resp, iid: str) -> None:
    """A submission refused because the queue's disk is full: 503, Retry-After, the cause named,
    nothing of it stored."""
    test.assertEqual(resp.status, 503, resp.body[:300])
    test.assertTrue(resp.header("Retry-After"), "a 503 must carry Retry-After")
    test.assertRegex(test.reason(resp), FULL_REASON)
    test.assertEqual(d.db.count("payloads", "payload_id = ?", (iid,)), 0, "a 503'd submission was stored")

# A read transaction held by another process (as a backup or an sqlite3 shell would): a
# checkpoint cannot copy frames past its snapshot, so the WAL grows past the threshold.
# (Another process because closing any descriptor of the -shm file drops all of a process's
# POSIX locks on it, and with them a reader's.)
READER = """import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN")
c.execute("SELECT count(*) FROM payloads").fetchall()
print("reading", flush=True)
sys.stdin.read()
c.execute("COMMIT")
"""


def wal_checkpoints(db: Path) -> int:
    """The -wal file header's checkpoint sequence number: SQLite adds one each time it starts
    writing the WAL from its beginning again (after a complete checkpoint)."""
    with open(f"{db}-wal", "rb") as f:
        return int.from_bytes(f.read(32)[12:16], "big")


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
            assert_refused_for_full_disk(self, d, resp, iid)
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


class EmailDiskFullTest(DaemonTestCase):

    def test_email_sent_on_full_disk_held(self):
        fs = self.small_filesystem("e", "8m")
        gate, arrived = threading.Event(), threading.Event()

        def data_reply(envelope):
            # The email's DATA waits here until the disk is full: the server's 250 (sent) then
            # comes back while the outbox row cannot be updated.
            arrived.set()
            gate.wait(60)
            return "250 OK"

        smtp = SmtpServer(data_reply=data_reply)
        self.addCleanup(smtp.close)
        ep = self.endpoint(default=Reply(500, b"database is down"))
        cfg = self.config([connection("crm", ep.url("/in"), notify=["ops@example.org"], circuit={"failures": 0})],
                          [repeater("to-crm", "crm", retry={"initial": "1h", "max_delay": "1h"})],
                          storage={"path": str(fs.path / "repeaterd.db")})
        cfg["smtp"] = {"url": smtp.url(), "from": "repeaterd@example.org", "throttle": "2s",
                       "retry": {"initial": "300ms", "multiplier": 2, "max_delay": "1s"}}
        d = self.daemon(config=cfg)
        self.addCleanup(gate.set)   # runs before the daemon stops: its SMTP session must not hang
        self.assertSubmitted(d.submit(unique_form()[1]), 201, records=1)
        self.assertTrue(arrived.wait(15), "the failure email never reached the SMTP server")
        rows = d.db.query("SELECT id, state FROM emails")
        self.assertEqual(len(rows), 1, rows)
        email_id, state = rows[0]
        self.assertEqual(state, "pending")

        filled = fs.fill()
        self.assertEqual(fs.free_bytes(), 0, f"{fs.path} still has room after a {filled}-byte filler")
        gate.set()
        smtp.wait_count(1, 10)
        held_line = f"notifier: email {email_id} was sent but the outbox cannot take that yet"
        wait_until(lambda: held_line in d.stderr_text(), 10, "the journal saying the sent email is held")
        # More than three held retries (one a second): the email is not sent again meanwhile.
        smtp.assert_quiet(1, 3.5)
        self.assertTrue(d.running(), "repeaterd died on a full disk")
        self.assertEqual(d.db.query("SELECT state, sent_at FROM emails WHERE id = ?", (email_id,)),
                         [("pending", None)], "the outbox row changed on a full disk")
        held = [l for l in d.stderr_text().splitlines() if held_line in l]
        self.assertEqual(len(held), 1, "the journal should say once that the email is held:\n" + "\n".join(held[:5]))
        self.assertRegex(held[0], FULL_REASON)
        stored_line = f"notifier: the outcome of email {email_id} is stored"
        self.assertNotIn(stored_line, d.stderr_text())

        fs.free()
        wait_until(lambda: d.db.query("SELECT state FROM emails WHERE id = ?", (email_id,)) == [("sent",)], 10,
                   "the held outcome stored once space is back")
        wait_until(lambda: stored_line in d.stderr_text(), 5, "the journal saying the outcome is stored")
        smtp.assert_quiet(1, 2.5)
        self.assertEqual(smtp.snapshot()[0].rcpt_tos, ["ops@example.org"])
        self.assertEqual(d.db.query("SELECT state, attempts, sent_at IS NOT NULL FROM emails"), [("sent", 1, 1)])
        self.assertEqual(len(d.events.of("notify.sent", email_id=email_id)), 1, d.events.of("notify.sent"))
        self.assertEqual(sum(1 for l in d.stderr_text().splitlines() if stored_line in l), 1)
        self.assertEqual(sum(1 for l in d.stderr_text().splitlines() if held_line in l), 1)
        self.assertEqual(d.db.integrity(), "ok")
        self.assertTrue(d.running())


class WalCheckpointDiskFullTest(DaemonTestCase):

    def test_wal_checkpoint_full_disk(self):
        fs = self.small_filesystem("w", "32m")
        ep = self.endpoint()
        db = fs.path / "repeaterd.db"
        wal = Path(f"{db}-wal")
        cfg = self.config([connection("inbox", ep.url())], [repeater("forms", "inbox")], storage={"path": str(db)})
        d = self.daemon(config=cfg)
        frame = d.db.query("PRAGMA page_size")[0][0] + 24   # a WAL frame: a page and its header
        frames = lambda: (wal.stat().st_size - 32) // frame
        acked: set[str] = set()

        def submit_ok() -> None:
            iid, form = padded_form(200_000, noise=True)
            self.assertSubmitted(d.submit(form), 201, records=1)
            acked.add(iid)

        def delivered() -> None:
            ep.wait_for(lambda _: acked <= ep.instance_ids(answered_2xx=True), 20, "every acknowledged form delivered")

        # 1. A -wal file of ~1,800 frames: a reader holds the checkpoints back while it grows.
        reader = subprocess.Popen([sys.executable, "-c", READER, str(db)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (reader.kill(), reader.wait(10), reader.stdout.close()))
        self.assertEqual(reader.stdout.readline().strip(), "reading")
        for _ in range(80):
            if frames() >= 1800:
                break
            submit_ok()
        self.assertGreaterEqual(frames(), 1800, "the WAL did not grow")
        delivered()
        # Then a complete checkpoint (the database file takes it all), and SQLite writes the WAL
        # from its start again, in the same file: no journal_size_limit, so it is not shrunk.
        # (The outcomes of the last deliveries may be what commits next.)
        size, db_size, restarts = wal.stat().st_size, db.stat().st_size, wal_checkpoints(db)
        reader.stdin.close()
        self.assertEqual(reader.wait(10), 0)
        for _ in range(10):
            if wal_checkpoints(db) > restarts:
                break
            submit_ok()
            delivered()
        self.assertGreater(wal_checkpoints(db), restarts, "SQLite did not start the WAL over after a checkpoint")
        self.assertGreater(db.stat().st_size, db_size, "the checkpoint did not copy the WAL into the database")
        self.assertGreaterEqual(wal.stat().st_size, size, "the -wal file should be reused, not shrunk")
        size = wal.stat().st_size

        # 2. The disk fills. Commits go on into the -wal file's frames until it is full; the
        # checkpoint at 1,000 frames needs a bigger database file and fails (said once).
        filled = fs.fill()
        self.assertEqual(fs.free_bytes(), 0, f"{fs.path} still has room after a {filled}-byte filler")
        db_size, wal_blocks = db.stat().st_size, wal.stat().st_blocks
        warn = "store: a WAL checkpoint (the -wal file holds"
        warned = lambda: [l for l in d.stderr_text().splitlines() if warn in l]
        before_warn, after_warn, rejected = 0, 0, []
        for _ in range(100):
            iid, form = padded_form(200_000, noise=True)
            resp = d.submit(form, timeout=30)
            if resp.status == 201:
                acked.add(iid)
                if warned():
                    after_warn += 1
                else:
                    before_warn += 1
                continue
            self.assertTrue(warned(), "a commit was refused before the WAL had reached the checkpoint threshold")
            assert_refused_for_full_disk(self, d, resp, iid)
            rejected.append((iid, form))
            if len(rejected) == 3:
                break
        self.assertEqual(len(rejected), 3, "submissions kept being acknowledged on a full disk")
        self.assertGreater(before_warn, 0, "no commit went into the -wal file's free frames")
        self.assertGreater(after_warn, 0, "no commit was acknowledged after the failed checkpoint")
        self.assertEqual(len(warned()), 1, "the checkpoint failure should be said once:\n" + "\n".join(warned()[:5]))
        self.assertRegex(warned()[0], r"holds (\d{4,}) frame\(s\)\) could not write into")
        self.assertRegex(warned()[0], r"database or disk is full")
        # (A commit that needed more frames wrote into the slack of the file's last block first.)
        self.assertEqual(wal.stat().st_blocks, wal_blocks, "the -wal file cannot have grown on a full disk")
        self.assertEqual(db.stat().st_size, db_size)
        self.assertNotIn("WAL checkpoints succeed again", d.stderr_text())
        self.assertTrue(d.running(), "repeaterd died on a full disk")

        # 3. Space is back: the clients' retries go in, the next checkpoint succeeds and says so.
        fs.free()
        for iid, form in rejected:
            self.assertSubmitted(d.submit(form), 201, records=1)
            acked.add(iid)
        # A failing checkpoint is tried again at most once a second, at a commit: keep submitting.
        def checkpointed() -> bool:
            if "store: WAL checkpoints succeed again" in d.stderr_text():
                return True
            iid, form = unique_form()
            self.assertSubmitted(d.submit(form), 201, records=1)
            acked.add(iid)
            return False
        wait_until(checkpointed, 10, "the journal saying checkpoints succeed again", interval=0.25)
        self.assertGreater(db.stat().st_size, db_size, "the checkpoint did not grow the database file")
        delivered()
        self.assertEqual(d.db.integrity(), "ok")
        self.assertEqual(d.db.count("payloads"), len(acked), "one payload per acknowledged form, no more")
        self.assertEqual(len(warned()), 1, "the checkpoint failure should be said once")
        self.assertTrue(d.running())


if __name__ == "__main__":
    unittest.main()
