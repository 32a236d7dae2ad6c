"""Live reload (SIGHUP and POST /api/v1/reload): new, changed and removed connections and
repeaters apply without a restart, nothing in flight or queued is lost or sent twice, and an
invalid file changes nothing."""

from __future__ import annotations

import re
import signal
import threading
import time
import unittest

from harness import DaemonTestCase, Reply, connection, repeater, unique_form, wait_until

FAST = {"initial": "200ms", "multiplier": 1, "max_delay": "200ms", "max_attempts": 100, "jitter": 0}


class ReloadTest(DaemonTestCase):

    def reload(self, d, via: str = "signal") -> None:
        """Reloads d's config file (rewritten from d.config) and waits for the config.reloaded event."""
        before = len(d.events.of("config.reloaded"))
        d.write_config()
        if via == "signal":
            d.proc.send_signal(signal.SIGHUP)
        else:
            r = d.admin("POST", "/api/v1/reload")
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.data["reloaded"])
        d.events.wait_for(lambda ev: len([e for e in ev if e["event"] == "config.reloaded"]) > before, timeout=10,
                          what="config.reloaded")

    def delivered_ids(self, d, repeater_name: str) -> set[str]:
        return {e["record_id"] for e in d.events.of("attempt.succeeded", repeater=repeater_name)}

    def test_added_connection_and_repeater_work_at_once(self):
        a = self.endpoint()
        d = self.daemon([connection("a", a.url())], [repeater("ra", "a")])
        b = self.endpoint()
        d.config["connections"].append(connection("b", b.url()))
        d.config["repeaters"].append(repeater("rb", "b"))
        self.reload(d)
        changed = d.events.of("config.reloaded")[-1]["changed"]
        self.assertIn("connection b added", changed)
        self.assertIn("repeater rb added", changed)
        form_id, body = unique_form()
        self.assertSubmitted(d.submit(body), records=2)
        b.wait_count(1, timeout=10)
        self.assertEqual(b.instance_ids(), {form_id})
        a.wait_count(1, timeout=10)
        # The same again through repeaterctl, removing what was added.
        d.config["connections"].pop()
        d.config["repeaters"].pop()
        d.write_config()
        rc, out, err = d.ctl("reload")
        self.assertEqual(rc, 0, err)
        self.assertIn("connection b removed", out)
        self.assertIn("repeater rb removed", out)
        self.assertSubmitted(d.submit(unique_form()[1]), records=1)
        a.wait_count(2, timeout=10)
        self.assertEqual(d.starts, 1)

    def test_url_change_under_load(self):
        """1,000 records flow while the URL changes: each delivered exactly once."""
        old = self.endpoint(default=Reply(200, delay=0.005))
        new = self.endpoint()
        d = self.daemon([connection("c", old.url(), max_in_flight=8)], [repeater("r", "c", retry=FAST)])
        total = 1000
        accepted: list[str] = []
        errors: list[str] = []

        def submit_all():
            for i in range(total):
                form_id, body = unique_form()
                resp = d.submit(body)
                if resp.status == 201:
                    accepted.append(form_id)
                else:
                    errors.append(f"{resp.status} {resp.body[:200]!r}")

        t = threading.Thread(target=submit_all)
        t.start()
        wait_until(lambda: len(accepted) >= total // 3, timeout=60, what="a third of the forms submitted")
        d.config["connections"][0]["url"] = new.url()
        self.reload(d)
        reloaded_at = time.time()
        self.assertIn("connection c changed", d.events.of("config.reloaded")[-1]["changed"])
        t.join(120)
        self.assertFalse(t.is_alive())
        self.assertEqual(errors, [])
        self.assertEqual(len(accepted), total)
        wait_until(lambda: len(self.delivered_ids(d, "r")) >= total, timeout=120,
                   what=f"{total} records delivered")
        got = [r.instance_id for r in old.snapshot() + new.snapshot() if 200 <= r.status < 300]
        self.assertEqual(sorted(set(got)), sorted(accepted))
        self.assertEqual(len(got), len(set(got)), "a form was delivered twice")
        self.assertGreater(new.count(), 0)
        self.assertEqual(d.db.count("records", "state != 'succeeded'"), 0)
        self.assertEqual(d.db.count("attempts", "outcome = 'interrupted'"), 0)
        # Only attempts already in flight at the reload went to the old URL after it (they finish
        # on the settings they started with; the old worker claims nothing more).
        late = [r for r in old.snapshot() if r.wall > reloaded_at + 1.0]
        self.assertEqual(late, [])

    def test_invalid_file_changes_nothing(self):
        """Rejected with FILE:LINE:COL on stderr, in an event and from the API; everything keeps working."""
        ep = self.endpoint()
        d = self.daemon([connection("c", ep.url())], [repeater("r", "c")])
        good = d.config_path.read_text()
        d.config_path.write_text(good + "repeaters_typo: []\nconnections_extra: 1\n")
        d.proc.send_signal(signal.SIGHUP)
        failed = d.events.wait_event("config.reload_failed", timeout=10)[0]
        self.assertTrue(failed["errors"])
        for e in failed["errors"]:
            self.assertRegex(e, r"repeaterd\.yaml:\d+:\d+: ")
        wait_until(lambda: re.search(r"repeaterd\.yaml:\d+:1: unknown key \"repeaters_typo\"", d.stderr_text()),
                   timeout=5, what="the error on stderr")
        # The API reports the same and says it kept running.
        r = d.admin("POST", "/api/v1/reload")
        self.assertEqual(r.status, 422, r)
        self.assertFalse(r.data["reloaded"])
        self.assertTrue(any("repeaters_typo" in e for e in r.data["errors"]))
        # repeaterctl says the same, with each error, and exits 1.
        rc, out, err = d.ctl("reload")
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"(?m)^  .*repeaterd\.yaml:\d+:1: unknown key \"repeaters_typo\"")
        # Still forwarding on the old config.
        form_id, body = unique_form()
        self.assertSubmitted(d.submit(body), records=1)
        ep.wait_count(1, timeout=10)
        self.assertTrue(d.running())
        d.config_path.write_text(good)

    def test_removed_repeater_keeps_records(self):
        """A removed repeater's records stay queued and reported; when it returns they go."""
        dead = self.endpoint(default=503)
        ok = self.endpoint()
        d = self.daemon([connection("dead", dead.url()), connection("ok", ok.url())],
                        [repeater("gone", "dead", retry=FAST), repeater("stays", "ok")],
                        log={"queue_summary_every": "500ms"})
        for _ in range(5):
            self.assertSubmitted(d.submit(unique_form()[1]), records=2)
        dead.wait_count(5, timeout=10)
        d.config["repeaters"] = [r for r in d.config["repeaters"] if r["name"] != "gone"]
        self.reload(d)
        self.assertIn("repeater gone removed", d.events.of("config.reloaded")[-1]["changed"])
        seen = dead.count()
        time.sleep(1.0)
        self.assertLessEqual(dead.count(), seen + 1)  # at most the attempt that was in flight
        self.assertEqual(d.db.count("records", "repeater = 'gone'"), 5)
        self.assertEqual(d.db.count("records", "repeater = 'gone' AND state IN ('pending', 'failed')"), 5)
        status = d.admin_ok("GET", "/api/v1/status")
        gone = [r for r in status["repeaters"] if r["name"] == "gone"][0]
        self.assertFalse(gone["configured"])
        self.assertEqual(gone["counts"]["pending"] + gone["counts"]["failed"], 5)
        summary = d.events.wait_for(
            lambda ev: [e for e in ev if e["event"] == "queue.summary"
                        and any(r["repeater"] == "gone" and r.get("configured") is False for r in e["repeaters"])],
            timeout=5, what="queue.summary reporting the removed repeater")
        self.assertTrue(summary)
        # It comes back (to a receiver that works now): its records go.
        dead.set_default(200)
        d.config["repeaters"].append(repeater("gone", "dead", retry=FAST))
        self.reload(d)
        wait_until(lambda: d.db.count("records", "repeater = 'gone' AND state = 'succeeded'") == 5, timeout=15,
                   what="the removed repeater's records delivered after it returned")


if __name__ == "__main__":
    unittest.main()
