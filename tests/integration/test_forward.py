"""What a form/xml repeater sends (spec §4): body, headers, query, method; paused repeaters."""

import time
import unittest

from harness import (ISO_MICRO_Z_RE, SEED_APP_ID, SEED_INSTANCE_ID, UUID_RE, DaemonTestCase,
                     connection, parse_iso_z, repeater, seed_form, unique_form)


class ForwardTest(DaemonTestCase):

    def test_seed_form_arrives_byte_identical_with_headers(self):
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url("/inbox"), headers={"X-Source": "repeaterd"})],
                        [repeater("forms", "inbox")])
        form = seed_form()

        before = time.time()
        resp = d.submit(form, app_id=SEED_APP_ID)
        after = time.time()
        info = self.assertSubmitted(resp, 201, records=1)
        self.assertEqual(info["form_id"], SEED_INSTANCE_ID)

        req = ep.wait_count(1, 10)[0]
        created = d.events.wait_event("record.created")[0]
        succeeded = d.events.wait_event("attempt.succeeded")[0]

        self.assertEqual(req.method, "POST")
        self.assertEqual(req.body, form, "the forwarded body must be the submitted bytes")
        self.assertEqual(req.path, "/inbox")
        self.assertEqual(req.query, f"app_id={SEED_APP_ID}")
        self.assertEqual(req.headers.get("content-type"), "text/xml")
        self.assertEqual(req.headers.get("x-source"), "repeaterd", "configured header missing")

        received_on = req.headers.get("received-on", "")
        self.assertRegex(received_on, ISO_MICRO_Z_RE)
        # Received-On is when repeaterd received the form: inside our request's time window.
        self.assertGreaterEqual(parse_iso_z(received_on), before - 0.01)
        self.assertLessEqual(parse_iso_z(received_on), after + 0.01)

        self.assertRegex(req.headers.get("x-request-id", ""), UUID_RE)
        self.assertEqual(req.headers.get("idempotency-key"), created["record_id"])

        # The events describe the same record.
        self.assertRegex(created["record_id"], UUID_RE)
        for key, value in {"repeater": "forms", "connection": "inbox", "domain": "demo",
                           "payload_type": "form", "payload_id": SEED_INSTANCE_ID,
                           "state": "pending"}.items():
            self.assertEqual(created.get(key), value, f"record.created.{key}: {created}")
        for key, value in {"record_id": created["record_id"], "repeater": "forms",
                           "connection": "inbox", "domain": "demo", "payload_type": "form",
                           "payload_id": SEED_INSTANCE_ID, "attempt": 1, "http_status": 200,
                           "state": "succeeded"}.items():
            self.assertEqual(succeeded.get(key), value, f"attempt.succeeded.{key}: {succeeded}")
        self.assertIsInstance(succeeded.get("duration_ms"), (int, float))
        ep.assert_quiet(1, 0.3)

    def test_method_put_and_app_id_param_switch(self):
        post_ep, put_ep = self.endpoint(), self.endpoint()
        d = self.daemon(
            [connection("post-conn", post_ep.url("/post")), connection("put-conn", put_ep.url("/put"))],
            [repeater("as-post", "post-conn"),
             repeater("as-put", "put-conn", method="PUT", include_app_id_param=False)])

        self.assertSubmitted(d.submit(seed_form(), app_id=SEED_APP_ID), 201, records=2)
        post_req = post_ep.wait_count(1, 10)[0]
        put_req = put_ep.wait_count(1, 10)[0]
        self.assertEqual(post_req.method, "POST")
        self.assertEqual(post_req.target, f"/post?app_id={SEED_APP_ID}")
        self.assertEqual(put_req.method, "PUT")
        self.assertEqual(put_req.target, "/put", "include_app_id_param: false must drop ?app_id")
        self.assertEqual(put_req.body, seed_form())

        # Without an app_id in the submission there is nothing to append.
        _, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=2)
        second = post_ep.wait_count(2, 10)[1]
        self.assertEqual(second.target, "/post")
        self.assertEqual(second.body, form)

    def test_paused_repeater_creates_records_but_sends_nothing(self):
        live_ep, paused_ep = self.endpoint(), self.endpoint()
        d = self.daemon(
            [connection("live", live_ep.url()), connection("held", paused_ep.url())],
            [repeater("live-forms", "live"), repeater("held-forms", "held", paused=True)])

        iid, form = unique_form()
        self.assertSubmitted(d.submit(form), 201, records=2)
        created = d.events.wait_event("record.created", count=2)
        self.assertEqual({e["repeater"] for e in created}, {"live-forms", "held-forms"})
        held = [e for e in created if e["repeater"] == "held-forms"][0]
        self.assertEqual(held["state"], "pending")
        self.assertEqual(held["payload_id"], iid)

        # The live repeater's delivery proves the scheduler ran; the paused one stays silent.
        live_ep.wait_count(1, 10)
        paused_ep.assert_quiet(0, 1.0)
        self.assertEqual(d.events.of("attempt.succeeded", repeater="held-forms"), [])
        self.assertEqual(d.events.of("attempt.failed", repeater="held-forms"), [])
        state = d.db.query("SELECT r.state, r.attempts FROM records r WHERE r.id = ?",
                           (held["record_id"],))
        self.assertEqual(state, [("pending", 0)])


if __name__ == "__main__":
    unittest.main()
