"""The queue database at start (issue 12): one repeaterd per database file, and a file that is
damaged or not writable stops the start with a message naming the file and what to do. Nothing
the refused start touched is changed."""

import os
import pwd
import shutil
import subprocess
import unittest
from pathlib import Path

from harness import DaemonTestCase, binary, connection, repeater, to_yaml, unique_form


class StorageStartTest(DaemonTestCase):

    def refused_start(self, cfg: dict, name: str, user: str | None = None) -> subprocess.CompletedProcess:
        """Runs repeaterd on cfg, which must exit by itself (1) before it serves."""
        path = self.workdir(name) / "repeaterd.yaml"
        path.write_text(to_yaml(cfg) + "\n")
        cmd = [str(binary()), "--config", str(path)]
        if user:
            ids = pwd.getpwnam(user)
            drop = ["setpriv", f"--reuid={ids.pw_uid}", f"--regid={ids.pw_gid}", "--clear-groups"]
            if subprocess.run([*drop, cmd[0], "--version"], capture_output=True, timeout=30).returncode != 0:
                # The checkout is not reachable for that user (under /root): run a copy.
                copy = self.workdir(name) / "repeaterd"
                shutil.copy(cmd[0], copy)
                copy.chmod(0o755)
                cmd[0] = str(copy)
            cmd = [*drop, *cmd]
        run = subprocess.run(cmd, cwd=self.tmp, capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 1, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}")
        return run

    def test_a_second_daemon_on_the_same_database_refuses_to_start(self):
        ep = self.endpoint()
        first = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")])
        db = first.config["storage"]["path"]
        # Its own port and admin socket: only the database is shared.
        second_cfg = self.config([connection("inbox", ep.url())], [repeater("forms", "inbox")], "second",
                                 storage={"path": db})
        second_cfg["admin"] = {"listen": f"unix:{self.workdir('second') / 'admin.sock'}"}
        run = self.refused_start(second_cfg, "second")
        self.assertIn(f"the queue database {db} is in use by another repeaterd process "
                      f"(pid {first.proc.pid}), which holds {db}.lock", run.stderr)
        self.assertIn("stop the other one first, or give this configuration its own storage.path", run.stderr)
        # The first goes on as before.
        iid, form = unique_form()
        self.assertEqual(first.submit(form).status, 201)
        ep.wait_count(1, 10)
        # A holder that dies, kill -9 included, leaves nothing that blocks the next start.
        first.kill9()
        second = self.daemon(config=second_cfg, name="second")
        iid, form = unique_form()
        self.assertEqual(second.submit(form).status, 201)
        ep.wait_for(lambda rs: any(r.instance_id == iid for r in rs), 10, f"form {iid} from the second daemon")

    def test_a_damaged_database_fails_the_start_naming_the_file(self):
        cfg = self.config([], [])
        db = Path(cfg["storage"]["path"])
        damaged = b"SQLite format 3\x00" + bytes(range(256)) * 16
        db.write_bytes(damaged)
        run = self.refused_start(cfg, "damaged")
        self.assertIn(f"cannot open the queue database {db}: file is not a database. The file is damaged or is "
                      "not a repeaterd database; nothing was changed. Restore it from a backup", run.stderr)
        self.assertIn("sqlite3 FILE .recover", run.stderr)
        self.assertEqual(db.read_bytes(), damaged, "a refused start must leave the file as it was")

    def test_a_database_it_cannot_write_fails_the_start_naming_the_file(self):
        cfg = self.config([], [])
        # A database made by a first start, then made read-only to the user repeaterd runs as.
        first = self.daemon(config=cfg)
        iid, form = unique_form()
        self.assertEqual(first.submit(form).status, 201)
        first.stop()
        db = Path(cfg["storage"]["path"])
        before = db.read_bytes()
        user = None
        if os.geteuid() == 0:
            # root writes whatever the mode says: run it as nobody, who may write the directory
            # and the event log but not the database file (root's, 0644).
            if shutil.which("setpriv") is None:
                self.skipTest("setpriv (util-linux) is needed to drop root")
            user = "nobody"
            os.chmod(self.tmp, 0o777)
            os.chmod(self.tmp / "events.log", 0o666)
            (self.tmp / "repeaterd.db.lock").chmod(0o666)
            for leftover in ("repeaterd.db-wal", "repeaterd.db-shm"):
                (self.tmp / leftover).unlink(missing_ok=True)
            os.chmod(self.workdir("readonly"), 0o777)
        else:
            db.chmod(0o444)
        run = self.refused_start(cfg, "readonly", user)
        self.assertIn(f"cannot open the queue database {db}: ", run.stderr)
        self.assertIn("The file, its -wal and -shm files and its directory must be writable by the user "
                      "repeaterd runs as", run.stderr)
        self.assertEqual(db.read_bytes(), before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
