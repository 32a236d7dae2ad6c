"""systemd (spec §7): the generated unit passes `systemd-analyze verify` and scores an exposure of
at most 2.0 in `systemd-analyze security`, and the daemon speaks the sd_notify protocol: READY=1
once the listeners accept, STATUS= with the queue counts, WATCHDOG=1 at half of WATCHDOG_USEC,
STOPPING=1 on SIGTERM; with the test stall hook (REPEATERD_TEST_STALL_SECONDS) the pings stop for
the stall, long enough for the watchdog to fire, and then resume.

systemd does not run here (no PID 1 manager): the test plays systemd's part with a Unix datagram
socket of its own as NOTIFY_SOCKET. systemd-analyze works offline on the unit file.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import unittest
import uuid
from pathlib import Path

from harness import DaemonTestCase, binary, connection, repeater, unique_form, wait_until

BUILD_DIR = Path(os.environ.get("REPEATERD_BUILD_DIR", binary().parent))
UNIT = BUILD_DIR / "repeaterd.service"
MAX_EXPOSURE = 2.0
WATCHDOG_USEC = 1_000_000
STATUS_RE = re.compile(r"^accepting submissions; (\d+) pending, (\d+) failed, (\d+) in flight$")


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise unittest.SkipTest("systemd-analyze is not installed (apt-get install systemd)")
    return path


class UnitFileTest(unittest.TestCase):
    """The unit cmake generates into the build tree (config/repeaterd.service.in)."""

    def setUp(self):
        if not UNIT.exists():
            self.fail(f"{UNIT} is missing: is REPEATERD_BUILD_DIR ({BUILD_DIR}) a configured build tree?")

    def test_verify(self):
        analyze = systemd_analyze()
        # verify insists that ExecStart='s binary exists; the unit names the installed path, so
        # check a copy that runs this build's binary instead (the rest byte for byte).
        text = UNIT.read_text()
        exec_re = re.compile(r"^(ExecStart(?:Pre)?=[-@:+!]*)\S*/repeaterd(?=\s|$)", re.M)
        self.assertEqual(len(exec_re.findall(text)), 2, "ExecStartPre= and ExecStart= run repeaterd")
        work = Path(self._tmp("verify"))
        copy = work / "repeaterd.service"
        copy.write_text(exec_re.sub(lambda m: m.group(1) + str(binary().resolve()), text))
        p = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
        # verify exits 0 even for settings it cannot parse (it ignores them with a warning, as
        # Type=notify-reload on systemd 252): whatever it says about our unit is a failure. Lines
        # about other units (network-online.target's dependencies) are the host's business.
        ours = [line for line in (p.stdout + p.stderr).splitlines() if "repeaterd" in line]
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(ours, [], "systemd-analyze verify complained about the unit")

    def test_security_exposure(self):
        analyze = systemd_analyze()
        p = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        m = re.search(r"Overall exposure level for repeaterd\.service: (\d+(?:\.\d+)?)", p.stdout)
        self.assertIsNotNone(m, f"no overall exposure in:\n{p.stdout[-2000:]}{p.stderr}")
        exposure = float(m.group(1))
        weak = "\n".join(line for line in p.stdout.splitlines() if line.startswith("✗"))
        self.assertLessEqual(exposure, MAX_EXPOSURE, f"exposure {exposure}; what is left:\n{weak}")

    def _tmp(self, name: str) -> str:
        path = tempfile.mkdtemp(prefix=f"repeaterd-{name}-")
        self.addCleanup(shutil.rmtree, path, True)
        return path


class NotifySocket:
    """systemd's end of the notify protocol: an abstract Unix datagram socket whose messages
    (with the time.monotonic() they arrived) a thread collects."""

    def __init__(self):
        self.name = f"repeaterd-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return "@" + self.name   # NOTIFY_SOCKET's spelling of an abstract socket

    def _run(self):
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self._lock:
                self.messages.append((t, fields))

    def close(self):
        self._closed = True
        self._thread.join(2)
        self.sock.close()

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate, timeout: float, what: str):
        try:
            return wait_until(lambda: predicate(self.snapshot()), timeout, what)
        except AssertionError as e:
            got = "\n".join(f"  {t:.3f} {m}" for t, m in self.snapshot()[-20:])
            raise AssertionError(f"{e}; got:\n{got}") from None

    def times_of(self, key: str, value: str | None = None) -> list[float]:
        return [t for t, m in self.snapshot() if key in m and (value is None or m[key] == value)]

    def statuses(self) -> list[str]:
        return [m["STATUS"] for _, m in self.snapshot() if "STATUS" in m]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


class NotifyTest(DaemonTestCase):

    def notify_daemon(self, extra_env: dict | None = None):
        ns = NotifySocket()
        self.addCleanup(ns.close)
        ep = self.endpoint(default=503)   # a record that fails and waits: stable counts
        d = self.daemon([connection("inbox", ep.url())],
                        [repeater("forms", "inbox", retry={"initial": "1h", "max_delay": "1h"})],
                        start=False,
                        env={"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": str(WATCHDOG_USEC), **(extra_env or {})})
        # sd_watchdog_enabled() ignores WATCHDOG_USEC when WATCHDOG_PID names another process;
        # with no WATCHDOG_PID it is for whoever reads it.
        d.env.pop("WATCHDOG_PID", None)
        return ns, ep, d

    def test_ready_status_watchdog_stopping(self):
        ns, ep, d = self.notify_daemon()
        d.start(wait=False)
        ns.wait_for(lambda ms: any(m.get("READY") == "1" for _, m in ms), 20, "READY=1")
        # READY means the listeners are bound: the ingest port accepts at once.
        with socket.create_connection(("127.0.0.1", d.port), timeout=2):
            pass
        ready = next(m for _, m in ns.snapshot() if m.get("READY") == "1")
        self.assertEqual(ready.get("STATUS"), "accepting submissions", ready)
        self.assertTrue(d.admin_socket.exists(), "READY before the admin socket was bound")

        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=1)
        ep.wait_count(1, 10)

        def counted(ms):
            for _, m in ms:
                s = STATUS_RE.match(m.get("STATUS", ""))
                if s and int(s.group(1)) + int(s.group(2)) == 1:
                    return s
            return None
        # The counts are refreshed every 10 s (and once right after READY).
        s = ns.wait_for(counted, 13, "a STATUS= line counting the submitted record")
        self.assertEqual((s.group(1), s.group(2), s.group(3)), ("0", "1", "0"),
                         "the record failed (503) and waits an hour: 0 pending, 1 failed, 0 in flight")
        for status in ns.statuses():
            self.assertTrue(status == "accepting submissions" or STATUS_RE.match(status), status)

        pings = ns.times_of("WATCHDOG", "1")
        self.assertGreaterEqual(len(pings), 10, f"WATCHDOG=1 every {WATCHDOG_USEC / 2e6} s: {len(pings)} in "
                                                f"{pings[-1] - pings[0] if pings else 0:.1f} s")
        half = WATCHDOG_USEC / 2e6
        self.assertAlmostEqual(statistics.median(gaps(pings)), half, delta=0.15,
                               msg=f"pings at half of WATCHDOG_USEC; gaps {gaps(pings)}")
        self.assertLess(max(gaps(pings)), WATCHDOG_USEC / 1e6, "no gap as long as the watchdog interval")

        self.assertEqual(d.stop(signal.SIGTERM, timeout=25), 0)
        stopping = ns.times_of("STOPPING", "1")
        self.assertEqual(len(stopping), 1, ns.snapshot()[-5:])
        after = [m for t, m in ns.snapshot() if t > stopping[0] and "STATUS" in m]
        self.assertEqual(after, [], "no 'accepting submissions' status once stopping")

    def test_reload_tells_systemd(self):
        """RELOADING=1 with MONOTONIC_USEC, then READY=1: for a valid file and for one refused."""
        ns, ep, d = self.notify_daemon()
        d.start(wait=False)
        ns.wait_for(lambda ms: any(m.get("READY") == "1" for _, m in ms), 20, "READY=1")
        for broken in (False, True):
            if broken:
                d.config_path.write_text(d.config_path.read_text() + "no_such_key: 1\n")
            else:
                d.write_config()
            before = len(ns.snapshot())
            sent = time.monotonic()
            d.proc.send_signal(signal.SIGHUP)
            ns.wait_for(lambda ms: any(m.get("READY") == "1" for _, m in ms[before:]), 10, "READY=1 after the reload")
            new = [m for _, m in ns.snapshot()[before:] if "RELOADING" in m or "READY" in m]
            self.assertEqual(new[0].get("RELOADING"), "1", new)
            usec = int(new[0]["MONOTONIC_USEC"])
            # CLOCK_MONOTONIC, which Python's time.monotonic() reads on Linux.
            self.assertAlmostEqual(usec / 1e6, sent, delta=2.0)
            self.assertEqual(new[1].get("READY"), "1", new)
            if broken:
                self.assertIn("reload failed", new[1].get("STATUS", ""))
        self.assertTrue(d.running())
        d.write_config()

    def test_stall_hook_stops_the_watchdog_pings(self):
        stall = 3
        ns, ep, d = self.notify_daemon({"REPEATERD_TEST_STALL_SECONDS": str(stall)})
        d.start(wait=False)
        ns.wait_for(lambda ms: any(m.get("READY") == "1" for _, m in ms), 20, "READY=1")
        ready_at = ns.times_of("READY", "1")[0]
        limit = WATCHDOG_USEC / 1e6

        def resumed(_):
            pings = [t for t in ns.times_of("WATCHDOG", "1") if t >= ready_at - 0.1]
            g = gaps(pings)
            long = [i for i, x in enumerate(g) if x > limit]
            # the long gap, then pings at the normal pace again
            return (pings, long[0]) if long and len(pings) - (long[0] + 1) >= 3 else None
        pings, i = ns.wait_for(resumed, 1 + stall + 5, "a gap in the pings, then pings again")
        gap = pings[i + 1] - pings[i]
        self.assertGreater(gap, limit, "the gap is longer than WATCHDOG_USEC: systemd would kill the service")
        # The stall, plus up to one ping interval (the last ping may come half an interval before it).
        at = f"pings at {[round(t - ready_at, 2) for t in pings]} s after READY"
        self.assertGreaterEqual(gap, stall - 0.3, at)
        self.assertLessEqual(gap, stall + WATCHDOG_USEC / 2e6 + 0.5, at)
        # The stall comes about 1 s after READY (kTestStallAfter), and only once.
        self.assertAlmostEqual(pings[i] - ready_at, 1.0, delta=0.6, msg=at)
        self.assertLess(max(gaps(pings[i + 1:])), limit, "after the stall the pings keep the pace")
        self.assertIn("REPEATERD_TEST_STALL_SECONDS", d.stderr_text(), "the hook is announced loudly")
        self.assertIn("TEST HOOK", d.stderr_text())
        # The event loop runs again: submissions are answered.
        self.assertSubmitted(d.submit(unique_form()[1]), 201, records=1)
        self.assertEqual(d.stop(signal.SIGTERM, timeout=25), 0)


if __name__ == "__main__":
    unittest.main()
