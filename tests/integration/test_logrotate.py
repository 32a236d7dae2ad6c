"""config/repeaterd.logrotate against a running daemon under load: Debian's logrotate rotates
the event log three times while forms keep arriving, and not one event line is lost, doubled or
split across files."""

from __future__ import annotations

import grp
import gzip
import json
import os
import pwd
import re
import shutil
import subprocess
import threading
import time
import unittest
from pathlib import Path

from harness import SOURCE_DIR, DaemonTestCase, connection, repeater, unique_form

LOAD_SECONDS = 4.0
ROTATIONS = 3


def logrotate_config(events_dir: Path, pid: int) -> str:
    """The shipped config/repeaterd.logrotate, with three changes for a test that has neither
    /var/log/repeaterd, nor a repeaterd user, nor repeaterd running under systemd:
      - the log path is the test's directory;
      - `su repeaterd repeaterd` becomes the user running the test;
      - the postrotate command (`systemctl kill -s USR1 ... repeaterd.service`) becomes
        `kill -USR1 PID` of the daemon this test started: the same signal to the same process.
    Everything else (daily, rotate, compress, delaycompress, missingok, notifempty,
    sharedscripts) is the shipped file's."""
    text = (SOURCE_DIR / "config" / "repeaterd.logrotate").read_text()
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    replacements = [
        (r"^/var/log/repeaterd/\*\.log \{$", f"{events_dir}/*.log {{"),
        (r"^(\s*)su repeaterd repeaterd$", rf"\g<1>su {user} {group}"),
        (r"^(\s*)systemctl kill -s USR1 .*repeaterd\.service.*$", rf"\g<1>kill -USR1 {pid}"),
    ]
    for pattern, repl in replacements:
        text, n = re.subn(pattern, repl, text, flags=re.M)
        if n != 1:
            raise AssertionError(f"config/repeaterd.logrotate changed shape: {pattern!r} matched {n} times; "
                                 "update logrotate_config() in this test")
    return text


def read_lines(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


class LogrotateTest(DaemonTestCase):

    def test_rotation_under_load_loses_no_event(self):
        logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
        self.assertTrue(Path(logrotate).exists(), "logrotate is not installed (scripts/deps.sh --test)")
        ep = self.endpoint(default=200)
        events_dir = self.tmp / "log"
        d = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")],
                        log={"events_file": str(events_dir / "events.log")})
        conf = self.tmp / "logrotate.conf"
        conf.write_text(logrotate_config(events_dir, d.proc.pid))
        conf.chmod(0o644)   # logrotate ignores a config others may write
        state = self.tmp / "logrotate.state"

        answered: list[tuple[str, int]] = []
        problems: list[str] = []
        stop = threading.Event()

        def submit_forms():
            while not stop.is_set():
                iid, body = unique_form()
                try:
                    answered.append((iid, d.submit(body, timeout=10).status))
                except OSError as e:
                    problems.append(f"{iid}: {e!r}")

        # Two clients, so submissions are committed (and their events written) concurrently.
        clients = [threading.Thread(target=submit_forms, name=f"client-{i}") for i in range(2)]
        for c in clients:
            c.start()
        rotated = []
        try:
            for _ in range(ROTATIONS):
                time.sleep(LOAD_SECONDS / (ROTATIONS + 1))
                run = subprocess.run([logrotate, "-f", "-s", str(state), str(conf)],
                                     capture_output=True, text=True, timeout=30)
                self.assertEqual(run.returncode, 0, f"logrotate failed:\n{run.stdout}{run.stderr}")
                rotated.append(len(answered))
            time.sleep(LOAD_SECONDS / (ROTATIONS + 1))
        finally:
            stop.set()
            for c in clients:
                c.join(20)
        self.assertEqual(problems, [], "submissions failed")
        accepted = [iid for iid, status in answered if status == 201]
        self.assertEqual(len(accepted), len(answered), f"not every submission was answered 201: "
                         f"{sorted({s for _, s in answered})}")
        self.assertGreater(rotated[0], 0, "no submission before the first rotation: the load did not start")
        self.assertGreater(len(accepted), rotated[-1], "no submission after the last rotation")

        # Records were being delivered all along, so attempt events are in the files too. Stop
        # the daemon (it finishes the attempts in flight) so the database and the files agree.
        self.assertEqual(d.stop(), 0, "repeaterd did not stop cleanly")

        # delaycompress: the newest rotated file is plain, the older ones gzip.
        files = sorted(events_dir.iterdir())
        names = [f.name for f in files]
        self.assertEqual(names, ["events.log", "events.log.1", "events.log.2.gz", "events.log.3.gz"],
                         "after three rotations: the live file, one plain and two compressed")

        created: dict[str, list[str]] = {}
        succeeded: dict[str, int] = {}
        files_with_records = 0
        for f in files:
            data = read_lines(f)
            self.assertTrue(data.endswith(b"\n"), f"{f.name} ends in the middle of a line: {data[-200:]!r}")
            in_this_file = 0
            for n, line in enumerate(data.split(b"\n")[:-1], 1):
                try:
                    ev = json.loads(line)
                except ValueError:
                    self.fail(f"{f.name}:{n} is not a complete JSON object: {line[:300]!r}")
                self.assertIsInstance(ev, dict, f"{f.name}:{n}")
                if ev.get("event") == "record.created":
                    created.setdefault(ev["payload_id"], []).append(ev["record_id"])
                    in_this_file += 1
                elif ev.get("event") == "attempt.succeeded":
                    succeeded[ev["record_id"]] = succeeded.get(ev["record_id"], 0) + 1
            files_with_records += in_this_file > 0
        self.assertGreaterEqual(files_with_records, ROTATIONS, "the load was not spread over the rotated files")

        missing = [iid for iid in accepted if iid not in created]
        self.assertEqual(missing, [], f"{len(missing)} of {len(accepted)} accepted forms have no record.created")
        doubled = {iid: ids for iid, ids in created.items() if len(ids) != 1}
        self.assertEqual(doubled, {}, "a form has more than one record.created")
        self.assertEqual(set(created), set(accepted), "record.created for a form that was not accepted")
        stored = {r[0] for r in d.db.query("SELECT id FROM records")}
        self.assertEqual({ids[0] for ids in created.values()}, stored,
                         "record.created events and the records in the database differ")
        delivered = {r[0] for r in d.db.query("SELECT id FROM records WHERE state = 'succeeded'")}
        self.assertGreater(len(delivered), 0, "no record was delivered during the test")
        self.assertEqual({rid: n for rid, n in succeeded.items() if n != 1}, {},
                         "a record has more than one attempt.succeeded")
        self.assertEqual(set(succeeded), delivered,
                         "attempt.succeeded events and the delivered records in the database differ")


if __name__ == "__main__":
    unittest.main()
