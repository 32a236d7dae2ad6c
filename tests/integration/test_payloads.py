"""What each repeater type and format forwards (spec §4), as golden tests from the seeds'
"Forward Form / Forward Cases / Forward Form Stub / Forward App Schema Changes" examples and the
Kobo JSON sample with its wrapper template; the three filters; and docs/payloads.md.

docs/payloads.md is generated from this file's run: with REPEATERD_UPDATE_DOCS=1 the test
writes it; otherwise it renders it again and fails if the committed file differs, so the page
always shows what the daemon really sends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from harness import (SharedDaemonTest, check_generated_doc, CASE_V2_NS, ISO_MICRO_Z_RE, SEED_APP_ID, SEED_CASE_ID, SEED_INSTANCE_ID,
                     SEED_USER_ID, SEED_XMLNS, SOURCE_DIR, UUID_RE, Daemon, DaemonTestCase, Endpoint,
                     binary, connection, fixture, free_port, make_config, parse_iso_z, seed_form,
                     to_yaml, typed_repeater, unique_form, with_meta)

DOCS_PATH = SOURCE_DIR / "docs" / "payloads.md"

# The seed's case XML ("Forward Cases", RAW BODY (XML)), the golden for case/xml.
SEED_CASE_XML = b"""\
<case case_id="b0916685-7247-4c44-b712-633d3d64e0c0"
    date_modified="2015-04-17T16:04:54.950000Z"
    user_id="d0e472a6b36dfd3ee5059222e12b8c1b"
    xmlns="http://commcarehq.org/case/transaction/v2">
  <create>
    <case_type>mscase</case_type>
    <case_name>Trees</case_name>
    <owner_id>d0e472a6b36dfd3ee5059222e12b8c1b</owner_id>
  </create>
</case>"""

# The keys of the seed's case JSON ("Forward Cases", RAW BODY (JSON)).
SEED_CASE_JSON_KEYS = {"case_id", "closed", "date_closed", "date_modified", "domain", "indices",
                       "properties", "server_date_modified", "server_date_opened", "user_id",
                       "version", "xform_ids"}
SEED_DATE_MODIFIED = "2015-04-17T16:04:54.950000Z"   # "2015-04-17T16:04:54.950-04", wall clock kept

# A later form that closes the seed's case.
CLOSE_FORM_ID = "5c3d1e07-2b1a-4c9e-9d0f-3a41c2e8b6f1"
CLOSE_DATE_MODIFIED = "2015-04-18T09:30:12.500-04"
CLOSE_FORM = f"""<?xml version='1.0' ?>
<data uiVersion="1" version="10" name="Close Trees"
    xmlns:jrm="http://dev.commcarehq.org/jr/xforms"
    xmlns="{SEED_XMLNS}">
  <question1>done</question1>
  <n0:case case_id="{SEED_CASE_ID}" date_modified="{CLOSE_DATE_MODIFIED}" user_id="{SEED_USER_ID}"
      xmlns:n0="{CASE_V2_NS}"><n0:close/></n0:case>
  <n1:meta xmlns:n1="http://openrosa.org/jr/xforms">
    <n1:deviceID>990005013558458</n1:deviceID>
    <n1:timeStart>2015-04-18T09:29:40.001-04</n1:timeStart>
    <n1:timeEnd>{CLOSE_DATE_MODIFIED}</n1:timeEnd>
    <n1:username>danny</n1:username>
    <n1:userID>{SEED_USER_ID}</n1:userID>
    <n1:instanceID>{CLOSE_FORM_ID}</n1:instanceID>
  </n1:meta>
</data>""".encode()

# A child case of the seed's case, posted to /a/demo/cases: properties and an index.
CHILD_CASE_ID = "e3a7c2b0-5f1d-4a8e-9c6b-2d4f8a1e7b93"
CHILD_CASE_XML = f"""<case xmlns="{CASE_V2_NS}" case_id="{CHILD_CASE_ID}"
    date_modified="2015-04-18T10:02:00.000-04" user_id="{SEED_USER_ID}">
  <create>
    <case_type>tree</case_type>
    <case_name>Oak 1</case_name>
    <owner_id>{SEED_USER_ID}</owner_id>
  </create>
  <update>
    <species>Quercus robur</species>
    <height_m>12</height_m>
  </update>
  <index>
    <parent case_type="mscase">{SEED_CASE_ID}</parent>
  </index>
</case>""".encode()

# "Forward App Schema Changes": the seed's example body is a build id.
BUILD_ID = "193b28e58f335f165cb3e2bbe02b3ed8"

# The Kobo REST service sample post (seed 002), exactly as printed there.
KOBO_SAMPLE = b"""{
  "meta/instanceID": "uuid:19d72997-8316-4e02-8016-4a8ddf6a2aa4",
  "group1/name": "twenty",
  "group1/age": "19",
  "formhub/uuid": "6f5773a110b046cb97e3d71f6c04e7a6",
  "first_q": "hello",
  "final_q": "why not?",
  "_xform_id_string": "groups",
  "_uuid": "19d72997-8316-4e02-8016-4a8ddf6a2aa4",
  "_userform_id": "taylordowns2000_groups",
  "_tags": [],
  "_submitted_by": null,
  "_submission_time": "2016-04-22T06:38:20",
  "_status": "submitted_via_web",
  "_notes": [],
  "_id": 889409,
  "_geolocation": [null, null],
  "_bamboo_dataset_id": "",
  "_attachments": []
}
"""
KOBO_ID = "uuid:19d72997-8316-4e02-8016-4a8ddf6a2aa4"
KOBO_TEMPLATE = '{"form": "my_form", "body": %SUBMISSION%}'   # the seed's wrapper

# One repeater (and endpoint path) per type/format. The Kobo one takes only the Kobo form.
REPEATERS = [
    ("form-xml", "form", "xml", {}),
    ("form-json", "form", "json", {}),
    ("kobo-json", "form", "json", {"template": KOBO_TEMPLATE, "filters": {"form_xmlns": ["groups"]}}),
    ("case-xml", "case", "xml", {}),
    ("case-json", "case", "json", {}),
    ("form-stub", "form_stub", None, {}),
    ("app-structure", "app_structure", None, {}),
]
WAIT = 10   # seconds for any one delivery


def compact_json(value) -> bytes:
    """JSON as repeaterd writes it: no spaces, UTF-8 as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class SeedPayloadsTest(SharedDaemonTest):
    """One daemon and one scenario for the class, run in setUpClass: the seed form, a form that
    closes its case, an app save and build, and the Kobo JSON sample. The tests read what each
    endpoint captured."""

    maxDiff = None
    captured: dict = {}

    @classmethod
    def setUpClass(cls):
        if not binary().exists():
            raise unittest.SkipTest(f"repeaterd binary not found at {binary()}")
        cls.tmp = Path(tempfile.mkdtemp(prefix="repeaterd-payloads-"))
        cls.failed = False
        cls.ep = Endpoint()
        conns, reps = [], []
        cls.config_of = {}
        for name, rtype, fmt, extra in REPEATERS:
            conns.append(connection(name, cls.ep.url(f"/{name}")))
            rep = typed_repeater(name, name, rtype, fmt, **extra)
            reps.append(rep)
            cls.config_of[name] = rep
        cfg = make_config(cls.tmp, free_port(), conns, reps)
        cls.d = Daemon(cls.tmp, cfg)
        try:
            cls.d.start()
            cls._scenario()
        except Exception:
            cls.failed = True
            sys.stderr.write(cls.d.stderr_tail())
            cls.d.close()
            cls.ep.close()
            raise

    @classmethod
    def _wait(cls, name: str, n: int) -> None:
        """Waits for the n-th request on that repeater's path; a timeout is noted, not raised, so
        that each test reports its own missing piece."""
        try:
            cls.ep.wait_for(lambda rs: len([r for r in rs if r.path == f"/{name}"]) >= n, WAIT,
                            f"{n} request(s) to {name}")
        except AssertionError as e:
            cls.captured.setdefault("timeouts", []).append(str(e))

    @classmethod
    def _scenario(cls) -> None:
        run = cls.captured = {"timeouts": []}
        d = cls.d
        form_paths = ("form-xml", "form-json", "case-xml", "case-json", "form-stub")

        run["seed_window"] = (time.time(), None)
        run["seed"] = d.submit(seed_form(), app_id=SEED_APP_ID)
        run["seed_window"] = (run["seed_window"][0], time.time())
        for name in form_paths:
            cls._wait(name, 1)

        run["close_window"] = (time.time(), None)
        run["close"] = d.submit(CLOSE_FORM, app_id=SEED_APP_ID)
        run["close_window"] = (run["close_window"][0], time.time())
        for name in form_paths:
            cls._wait(name, 2)

        run["child"] = d.post("/a/demo/cases", CHILD_CASE_XML, content_type="text/xml")
        cls._wait("case-xml", 3)
        cls._wait("case-json", 3)

        run["app_saved"] = d.post(f"/a/demo/apps/{SEED_APP_ID}", b"", content_type=None)
        cls._wait("app-structure", 1)
        run["app_built"] = d.post(f"/a/demo/apps/{SEED_APP_ID}", {"build_id": BUILD_ID})
        cls._wait("app-structure", 2)

        run["kobo"] = d.submit(KOBO_SAMPLE, content_type="application/json")
        cls._wait("form-json", 3)
        cls._wait("kobo-json", 1)
        time.sleep(0.3)   # anything that should not have been sent has had its chance

    @classmethod
    def tearDownClass(cls):
        problem = cls.d.close()
        cls.ep.close()
        cls.finish_shared(problem)


    # -- helpers

    def requests(self, name: str, n: int | None = None):
        """Requests captured on a repeater's path; with n, asserts there are exactly n."""
        got = [r for r in self.ep.snapshot() if r.path == f"/{name}"]
        if n is not None:
            self.assertEqual(len(got), n, f"{name}: expected {n} request(s), got {len(got)}; "
                                          f"timeouts: {self.captured.get('timeouts')}")
        return got

    def assertInWindow(self, stamp: str, window: tuple, what: str) -> None:
        self.assertRegex(stamp, ISO_MICRO_Z_RE, what)
        self.assertGreaterEqual(parse_iso_z(stamp), window[0] - 0.01, f"{what} {stamp} before the request")
        self.assertLessEqual(parse_iso_z(stamp), window[1] + 0.01, f"{what} {stamp} after the answer")

    def assertCommonHeaders(self, req) -> None:
        self.assertEqual(req.method, "POST")
        self.assertRegex(req.headers.get("x-request-id", ""), UUID_RE)
        self.assertTrue(req.headers.get("idempotency-key"), "Idempotency-Key missing")

    def json_body(self, req):
        self.assertEqual(req.headers.get("content-type"), "application/json", req.headers)
        try:
            return json.loads(req.body)
        except ValueError:
            self.fail(f"body is not JSON: {req.body[:300]!r}")

    # -- the answers

    def test_answers(self):
        r = self.captured
        seed = r["seed"]
        self.assertEqual(seed.status, 201, seed.body[:300])
        info = seed.openrosa()
        self.assertEqual((info["nature"], info["form_id"], info["records_created"]),
                         ("submit_success", SEED_INSTANCE_ID, 5),
                         "seed form: form xml + form json + case xml + case json + form stub")
        close = r["close"]
        self.assertEqual(close.status, 201, close.body[:300])
        self.assertEqual(close.openrosa()["records_created"], 5)

        child = r["child"]
        self.assertEqual(child.status, 201, child.body[:300])
        body = child.json()
        self.assertEqual({k: body.get(k) for k in ("records_created", "case_ids")},
                         {"records_created": 2, "case_ids": [CHILD_CASE_ID]},
                         f"/cases creates records for case repeaters only: {body}")

        for key in ("app_saved", "app_built"):
            resp = r[key]
            self.assertEqual(resp.status, 201, f"{key}: {resp.body[:300]!r}")
            body = resp.json()
            self.assertEqual({k: body.get(k) for k in ("records_created", "case_ids")},
                             {"records_created": 1, "case_ids": []}, f"{key}: {body}")
            self.assertTrue(body.get("message") and body.get("id"), body)

        kobo = r["kobo"]
        self.assertEqual(kobo.status, 201, kobo.body[:300])
        self.assertIn("json", kobo.header("Content-Type") or "")
        body = kobo.json()
        self.assertEqual({k: body.get(k) for k in ("id", "records_created", "case_ids")},
                         {"id": KOBO_ID, "records_created": 2, "case_ids": []},
                         f"a JSON submission goes to form/json repeaters only: {body}")
        self.assertTrue(body.get("message"), body)

    # -- form, xml

    def test_form_xml_is_the_submitted_bytes(self):
        seed, close = self.requests("form-xml", 2)   # and not the Kobo JSON
        self.assertEqual(seed.body, seed_form(), "the forwarded body must be byte-identical")
        self.assertEqual(close.body, CLOSE_FORM)
        for req in (seed, close):
            self.assertCommonHeaders(req)
            self.assertEqual(req.headers.get("content-type"), "text/xml")
            self.assertEqual(req.query, f"app_id={SEED_APP_ID}")
        self.assertInWindow(seed.headers.get("received-on", ""), self.captured["seed_window"], "Received-On")
        self.assertInWindow(close.headers.get("received-on", ""), self.captured["close_window"], "Received-On")

    # -- form, json

    def test_form_json_of_the_seed(self):
        seed = self.requests("form-json")[0]
        self.assertCommonHeaders(seed)
        body = self.json_body(seed)
        received_on = seed.headers.get("received-on", "")
        self.assertInWindow(received_on, self.captured["seed_window"], "Received-On")
        self.assertEqual(seed.query, "", "form json carries the app id in the body, not the query")
        self.assertEqual(set(body), {"id", "domain", "app_id", "xmlns", "received_on", "form"})
        self.assertEqual({k: body[k] for k in ("id", "domain", "app_id", "xmlns", "received_on")},
                         {"id": SEED_INSTANCE_ID, "domain": "demo", "app_id": SEED_APP_ID,
                          "xmlns": SEED_XMLNS, "received_on": received_on})
        form = body["form"]
        self.assertEqual(form["meta"]["instanceID"], SEED_INSTANCE_ID)
        self.assertEqual(form["case"]["@case_id"], SEED_CASE_ID)
        # The whole mapping (spec §4): no prefixes, text-only -> string, attributes "@name", an
        # element's own namespace declaration "@xmlns", text beside children "#text".
        expected = {
            "@uiVersion": "1", "@version": "10", "@name": "Untitled Form", "@xmlns": SEED_XMLNS,
            "question1": "Trees",
            "case": {"@case_id": SEED_CASE_ID, "@date_modified": "2015-04-17T16:04:54.950-04",
                     "@user_id": SEED_USER_ID, "@xmlns": CASE_V2_NS,
                     "create": {"case_name": "Trees", "owner_id": SEED_USER_ID, "case_type": "mscase"}},
            "meta": {"@xmlns": "http://openrosa.org/jr/xforms",
                     "deviceID": "990005013558458",
                     "timeStart": "2015-04-17T16:04:42.383-04",
                     "timeEnd": "2015-04-17T16:04:54.950-04",
                     "username": "danny",
                     "userID": SEED_USER_ID,
                     "instanceID": SEED_INSTANCE_ID,
                     "appVersion": {"@xmlns": "http://commcarehq.org/xforms",
                                    "#text": 'CommCare ODK, version "2.19.8"(350848). App v10. CommCare '
                                             'Version 2.19. Build 1000, built on: January-22-2015'}},
        }
        self.assertEqual(form, expected)
        self.assertEqual(seed.body, compact_json(body), "generated JSON is compact UTF-8")

    def test_json_submission_goes_as_submitted_and_through_the_template(self):
        plain = self.requests("form-json", 3)[2]
        self.assertEqual(plain.body, KOBO_SAMPLE, "without a template: the submission's bytes")
        wrapped = self.requests("kobo-json", 1)[0]   # the seed/close forms are filtered out
        self.assertCommonHeaders(wrapped)
        self.assertEqual(self.json_body(wrapped), {"form": "my_form", "body": json.loads(KOBO_SAMPLE)})
        self.assertEqual(wrapped.body, KOBO_TEMPLATE.replace("%SUBMISSION%", KOBO_SAMPLE.decode()).encode(),
                         "the template is applied to the submitted bytes as they are")
        self.assertRegex(wrapped.headers.get("received-on", ""), ISO_MICRO_Z_RE)
        # Not to XML-only types: form xml, case and stub repeaters got nothing from it.
        for name in ("form-xml", "form-stub"):
            self.requests(name, 2)
        for name in ("case-xml", "case-json"):
            self.requests(name, 3)

    # -- case, xml / json

    def test_case_xml_is_the_seed_case_block(self):
        req = self.requests("case-xml", 3)[0]
        self.assertCommonHeaders(req)
        self.assertEqual(req.headers.get("content-type"), "text/xml")
        self.assertEqual(req.query, "", "case records have no ?app_id=")
        self.assertInWindow(req.headers.get("server-modified-on", ""), self.captured["seed_window"],
                            "Server-Modified-On")
        self.assertNotIn("received-on", req.headers)
        self.assertEqual(xml_shape(req.body), xml_shape(SEED_CASE_XML))

    def test_case_json_has_the_seed_keys_and_values(self):
        req = self.requests("case-json", 3)[0]
        self.assertCommonHeaders(req)
        case = self.json_body(req)
        modified = req.headers.get("server-modified-on", "")
        self.assertInWindow(modified, self.captured["seed_window"], "Server-Modified-On")
        self.assertEqual(set(case), SEED_CASE_JSON_KEYS)
        self.assertEqual({k: case[k] for k in SEED_CASE_JSON_KEYS - {"properties", "server_date_opened"}},
                         {"case_id": SEED_CASE_ID, "closed": False, "date_closed": None,
                          "date_modified": SEED_DATE_MODIFIED, "domain": "demo", "indices": {},
                          "server_date_modified": modified, "user_id": SEED_USER_ID, "version": "2.0",
                          "xform_ids": [SEED_INSTANCE_ID]})
        self.assertEqual(case["server_date_opened"], modified, "a new case was opened when it was modified")
        # The seed's properties: case_name, case_type, date_opened, owner_id (and no others here).
        self.assertEqual(case["properties"], {"case_name": "Trees", "case_type": "mscase",
                                              "date_opened": SEED_DATE_MODIFIED, "owner_id": SEED_USER_ID})

    def test_closed_case_is_a_close_block_and_closed_json(self):
        xml_req = self.requests("case-xml", 3)[1]
        closed_on = "2015-04-18T09:30:12.500000Z"
        self.assertEqual(xml_req.headers.get("content-type"), "text/xml")
        self.assertInWindow(xml_req.headers.get("server-modified-on", ""), self.captured["close_window"],
                            "Server-Modified-On")
        self.assertEqual(xml_shape(xml_req.body),
                         (f"{{{CASE_V2_NS}}}case",
                          {"case_id": SEED_CASE_ID, "date_modified": closed_on, "user_id": SEED_USER_ID},
                          "", [(f"{{{CASE_V2_NS}}}close", {}, "", [])]),
                         "a closed case is sent with just a close block")

        json_req = self.requests("case-json", 3)[1]
        case = self.json_body(json_req)
        first = self.json_body(self.requests("case-json")[0])
        self.assertEqual(set(case), SEED_CASE_JSON_KEYS)
        self.assertEqual({k: case[k] for k in ("case_id", "closed", "date_closed", "date_modified",
                                               "xform_ids", "server_date_opened")},
                         {"case_id": SEED_CASE_ID, "closed": True, "date_closed": closed_on,
                          "date_modified": closed_on, "xform_ids": [SEED_INSTANCE_ID, CLOSE_FORM_ID],
                          "server_date_opened": first["server_date_opened"]})
        self.assertEqual(case["server_date_modified"], json_req.headers.get("server-modified-on"))
        self.assertEqual(case["properties"], first["properties"], "closing changes no property")

    def test_case_with_properties_and_index(self):
        xml_req = self.requests("case-xml", 3)[2]
        self.assertEqual(xml_req.headers.get("content-type"), "text/xml")
        root = ET.fromstring(xml_req.body)
        v2 = f"{{{CASE_V2_NS}}}"
        self.assertEqual((root.tag, root.attrib),
                         (v2 + "case", {"case_id": CHILD_CASE_ID, "date_modified": "2015-04-18T10:02:00.000000Z",
                                        "user_id": SEED_USER_ID}))
        self.assertEqual([c.tag for c in root][:1], [v2 + "create"])
        self.assertEqual({c.tag: (c.text or "") for c in root.find(v2 + "create")},
                         {v2 + "case_type": "tree", v2 + "case_name": "Oak 1", v2 + "owner_id": SEED_USER_ID})
        update = root.find(v2 + "update")
        self.assertIsNotNone(update, xml_req.body)
        self.assertEqual({c.tag: c.text for c in update if c.tag != v2 + "date_opened"},
                         {v2 + "species": "Quercus robur", v2 + "height_m": "12"})
        index = root.find(v2 + "index")
        self.assertIsNotNone(index, xml_req.body)
        parent = index.find(v2 + "parent")
        self.assertEqual((parent.get("case_type"), parent.text), ("mscase", SEED_CASE_ID))
        self.assertIn(parent.get("relationship", "child"), ("child",))

        case = self.json_body(self.requests("case-json", 3)[2])
        self.assertEqual(set(case), SEED_CASE_JSON_KEYS)
        self.assertEqual(case["properties"], {"case_name": "Oak 1", "case_type": "tree", "owner_id": SEED_USER_ID,
                                              "date_opened": "2015-04-18T10:02:00.000000Z",
                                              "species": "Quercus robur", "height_m": "12"})
        self.assertEqual({k: case["indices"]["parent"].get(k) for k in ("case_type", "case_id")},
                         {"case_type": "mscase", "case_id": SEED_CASE_ID})
        self.assertEqual(case["xform_ids"], [self.captured["child"].json()["id"]])
        self.assertFalse(case["closed"])

    # -- form stub

    def test_form_stub(self):
        req = self.requests("form-stub", 2)[0]
        self.assertCommonHeaders(req)
        received_on = req.headers.get("received-on", "")
        self.assertInWindow(received_on, self.captured["seed_window"], "Received-On")
        self.assertEqual(self.json_body(req), {"received_on": received_on, "form_id": SEED_INSTANCE_ID,
                                               "case_ids": [SEED_CASE_ID]})
        # One received-on per submission, whatever the repeater.
        for name in ("form-xml", "form-json"):
            self.assertEqual(self.requests(name)[0].headers.get("received-on"), received_on, name)
        close = self.json_body(self.requests("form-stub")[1])
        self.assertEqual((close["form_id"], close["case_ids"]), (CLOSE_FORM_ID, [SEED_CASE_ID]))

    # -- app structure

    def test_app_structure_sends_app_id_then_build_id(self):
        saved, built = self.requests("app-structure", 2)
        for req, body in ((saved, SEED_APP_ID), (built, BUILD_ID)):
            self.assertCommonHeaders(req)
            self.assertEqual(req.headers.get("content-type"), "text/plain")
            self.assertEqual(req.body, body.encode())
            self.assertEqual(req.query, "")
        # App changes reach nothing else.
        self.requests("form-xml", 2)
        self.requests("case-xml", 3)

    # -- events and records name the case

    def test_case_records_events_name_the_case(self):
        events = self.d.events
        expected = sorted([SEED_CASE_ID, SEED_CASE_ID, CHILD_CASE_ID])
        for name in ("case-xml", "case-json"):
            created = events.of("record.created", repeater=name)
            self.assertEqual({ev.get("payload_type") for ev in created}, {"case"}, created)
            self.assertEqual(sorted(ev.get("payload_id") for ev in created), expected, created)
            done = events.wait_event("attempt.succeeded", count=3, repeater=name)
            self.assertEqual({ev.get("payload_type") for ev in done}, {"case"}, done)
            self.assertEqual(sorted(ev.get("payload_id") for ev in done), expected, done)
        for ev in events.of("record.created", repeater="form-stub"):
            self.assertEqual(ev.get("payload_type"), "form", ev)
        # Idempotency-Key is the record id of the event.
        ids = {ev["record_id"] for ev in events.of("record.created", repeater="case-json")}
        self.assertEqual({r.headers.get("idempotency-key") for r in self.requests("case-json")}, ids)
        # The seed form's payload holds its five records, one per repeater that took it.
        self.assertEqual(sorted(r[0] for r in self.d.db.records_of(SEED_INSTANCE_ID)),
                         ["case-json", "case-xml", "form-json", "form-stub", "form-xml"])

    # -- docs/payloads.md

    def test_docs_payloads_md_is_current(self):
        check_generated_doc(self, DOCS_PATH, render_docs(self), "what repeaterd sends", "test_payloads")


def xml_shape(body: bytes):
    """(tag, attributes, text, children) with whitespace-only text dropped: what matters of a
    case block, independent of indentation."""
    def walk(el):
        return (el.tag, dict(el.attrib), (el.text or "").strip(), [walk(c) for c in el])
    return walk(ET.fromstring(body))


# --------------------------------------------------------------------------- docs rendering

HEADER_NAMES = {"content-type": "Content-Type", "received-on": "Received-On",
                "server-modified-on": "Server-Modified-On", "idempotency-key": "Idempotency-Key",
                "x-request-id": "X-Request-Id"}
# Transport headers every request has; not part of what a repeater type means.
TRANSPORT_HEADERS = {"host", "content-length", "user-agent", "connection", "accept", "accept-encoding", "te"}
HEADER_PLACEHOLDERS = {"received-on": "<received-on>", "server-modified-on": "<server-modified-on>",
                       "idempotency-key": "<record-id>", "x-request-id": "<request-id>"}
BODY_PLACEHOLDERS = {"received_on": "<received-on>", "server_date_modified": "<server-modified-on>",
                     "server_date_opened": "<server-opened-on>"}


def render_request(req, ids: dict) -> str:
    """The request as an operator would see it, volatile values replaced by placeholders
    (ids: more volatile values -> their placeholders)."""
    lines = [f"{req.method} {req.target} HTTP/1.1"]
    names = [n for n in HEADER_NAMES if n in req.headers]
    names += sorted(n for n in req.headers if n not in HEADER_NAMES and n not in TRANSPORT_HEADERS)
    for n in names:
        value = HEADER_PLACEHOLDERS.get(n, req.headers[n])
        lines.append(f"{HEADER_NAMES.get(n, n.title())}: {value}")
    lines.append("")
    ctype = req.headers.get("content-type", "")
    body = json.loads(req.body) if ctype == "application/json" else None
    if body is not None and req.body == compact_json(body):
        # JSON that repeaterd wrote: indented here for people.
        if isinstance(body, dict):
            for key, placeholder in BODY_PLACEHOLDERS.items():
                if key in body:
                    body[key] = placeholder
        lines.append(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        lines.append(req.body.decode("utf-8").rstrip("\n"))
    text = "\n".join(lines)
    for value, placeholder in ids.items():
        text = text.replace(value, placeholder)
    return text


def config_snippet(rep: dict) -> str:
    shown = {k: rep[k] for k in ("name", "type", "format", "template", "filters") if k in rep}
    text = to_yaml([shown])
    if "template" in shown and "'" not in shown["template"]:
        # Written the way an operator would: single quotes keep the JSON readable.
        text = text.replace(json.dumps(shown["template"]), f"'{shown['template']}'")
    return text


DOCS_INTRO = """\
# What destinations receive

This page shows, for every repeater `type` and `format`, the HTTP request repeaterd sends to the
connection's `url`: method, query, headers and body. Every example is a real request captured
from a repeaterd run on the seed examples (CommCare's "Data Forwarding" page and the Kobo JSON
sample); the page is generated by `tests/integration/test_payloads.py`, which fails whenever
repeaterd's output and this page disagree. To regenerate it after an intended change:

```sh
cd tests/integration && REPEATERD_UPDATE_DOCS=1 python3 -m unittest test_payloads
```

Values that differ on every run are shown as placeholders:

| placeholder | what it is |
|---|---|
| `<received-on>` | when repeaterd received the form: UTC, ISO 8601 with microseconds, e.g. `2015-04-17T20:14:34.046462Z` |
| `<server-modified-on>` | when repeaterd last changed the case (same format) |
| `<server-opened-on>` | when repeaterd first saw the case (same format) |
| `<record-id>` | the repeat record's id; the same on every retry, so a receiver can drop repeats |
| `<request-id>` | a new UUID for every attempt |
| `<cases-submission-id>` | the id repeaterd gave a `POST /a/{domain}/cases` request (the `id` in its answer) |

Every request also carries the connection's `headers`, and `Host`, `Content-Length`
and `User-Agent`, which are left out below. The method is `POST` unless the repeater sets
`method: PUT` or `PATCH`. Any 2xx answer is success.

JSON that repeaterd writes is shown indented; on the wire it is one line without spaces (UTF-8,
not `\\u` escapes). Everything else (XML, text, a JSON submission passed on as submitted) is
shown exactly as sent.

## Summary

| type | format | body | Content-Type | extra headers | query |
|---|---|---|---|---|---|
| `form` | `xml` (default) | the form XML, byte for byte as submitted | `text/xml` | `Received-On` | `?app_id=` when the form was submitted with one (`include_app_id_param: false` drops it) |
| `form` | `json` | the form as JSON; a JSON submission exactly as submitted | `application/json` | `Received-On` | — |
| `case` | `xml` (default) | the case's full current state as a v2 `<case>` block; a closed case as just a close block | `text/xml` | `Server-Modified-On` | — |
| `case` | `json` | the case's full current state as JSON | `application/json` | `Server-Modified-On` | — |
| `form_stub` | always JSON | `{"received_on", "form_id", "case_ids"}` | `application/json` | `Received-On` | — |
| `app_structure` | always text | the app id when an app is saved, the build id when it is built | `text/plain` | — | — |

A `template` (JSON formats only) wraps the JSON body: `%SUBMISSION%` is replaced by it.
`filters` limit what a repeater takes: `form_xmlns` (form, form_stub), `case_types` (case) and
`exclude_users` (user ids; every type). A case repeater sends one request per case a
submission touched, with that case's state at that moment.
"""


def render_docs(t: SeedPayloadsTest) -> str:
    def req(name, i):
        got = t.requests(name)
        t.assertGreater(len(got), i, f"{name}: request {i + 1} was not captured; timeouts: {t.captured.get('timeouts')}")
        return got[i]

    sections = [
        ("form, xml", "form-xml", 0,
         "The seed form, submitted to `/a/demo/receiver?app_id=db9f874f0219444ee7848ddd023e292e`. "
         "The body is the submitted XML, byte for byte; `Received-On` is when repeaterd received it."),
        ("form, json", "form-json", 0,
         "The same form as JSON: `id` (the form's `meta/instanceID`), `domain`, `app_id`, `xmlns`, "
         "`received_on` and `form`, the XML converted as CommCare does: element names without their "
         "prefix; an element with only text becomes a string; attributes become `@name`; an element "
         "that declares its own namespace gets `@xmlns`; text beside child elements becomes `#text`; "
         "repeated sibling elements become an array, in document order."),
        ("form, json: a JSON (Kobo) submission, with a template", "kobo-json", 0,
         "A JSON submission (`Content-Type: application/json` to `/a/demo/receiver`, here the Kobo "
         "REST service sample) goes only to `form` repeaters with `format: json`, as submitted. This "
         "repeater wraps it with the seed's template and takes only forms whose `_xform_id_string` "
         "is `groups`. Without a template the body is the submitted JSON, byte for byte."),
        ("case, xml", "case-xml", 0,
         "The case the seed form created: its full state as a v2 case block. Dates keep the phone's "
         "wall-clock digits (`2015-04-17T16:04:54.950-04` becomes `2015-04-17T16:04:54.950000Z`). "
         "Properties set by update blocks come in an `<update>` block, indices in `<index>`."),
        ("case, xml: a closed case", "case-xml", 1,
         "The same case after a later form closed it: just a close block."),
        ("case, xml: a case with properties and an index", "case-xml", 2,
         "A case posted to `/a/demo/cases` as a v2 case block (a child of the case above): its "
         "properties come in `<update>` (with `date_opened` when it differs from `date_modified`), "
         "its indices in `<index>` with their relationship (`child` unless the block said `extension`)."),
        ("case, json", "case-json", 0,
         "The case the seed form created, as JSON. `properties` holds `case_name`, `case_type`, "
         "`date_opened` and `owner_id` beside the case's own properties; `xform_ids` lists every form "
         "that touched the case."),
        ("case, json: a closed case", "case-json", 1,
         "The same case after a later form closed it."),
        ("case, json: a case with properties and an index", "case-json", 2,
         "The child case posted to `/a/demo/cases`. `<cases-submission-id>` stands for the id "
         "repeaterd gave that request (its answer's `id`): a case changed through `/cases` lists it "
         "in `xform_ids` as CommCare lists its system forms."),
        ("form_stub", "form-stub", 0,
         "The seed form's stub: when it was received, its id and the ids of the cases it touched. "
         "`format` cannot be set (always JSON)."),
        ("app_structure: an app was saved", "app-structure", 0,
         "After `POST /a/demo/apps/db9f874f0219444ee7848ddd023e292e` with an empty body: the app id. "
         "`format` cannot be set (always text)."),
        ("app_structure: a version was built", "app-structure", 1,
         "After the same request with the body `{\"build_id\": \"193b28e58f335f165cb3e2bbe02b3ed8\"}`: "
         "the build id."),
    ]
    ids = {}
    child = t.captured.get("child")
    if child is not None and child.status == 201:
        ids[child.json()["id"]] = "<cases-submission-id>"
    out = [DOCS_INTRO]
    shown = set()
    for title, name, i, text in sections:
        config = "" if name in shown else f"```yaml\n{config_snippet(t.config_of[name])}\n```\n\n"
        shown.add(name)
        out.append(f"## {title}\n\n{text}\n\n{config}```http\n{render_request(req(name, i), ids)}\n```\n")
    doc = "\n".join(out)
    # Determinism: nothing volatile may be left (record ids, request ids, server times).
    for value in ids:
        t.assertNotIn(value, doc)
    for r in t.ep.snapshot():
        for h in ("idempotency-key", "x-request-id", "received-on", "server-modified-on"):
            value = r.headers.get(h)
            t.assertFalse(value and value in doc, f"volatile {h} value {value!r} leaked into the docs")
    return doc


# --------------------------------------------------------------------------- filters

SEED_XMLNS_B = SEED_XMLNS.encode()


class FiltersTest(DaemonTestCase):

    def test_form_xmlns_case_types_and_exclude_users_each_exclude(self):
        ep = self.endpoint()
        other_ns = "http://example.org/forms/household"
        spec = [
            ("f-seed-ns", "form", "xml", {"form_xmlns": [SEED_XMLNS]}),
            ("f-other-ns", "form", "xml", {"form_xmlns": [other_ns]}),
            ("stub-other-ns", "form_stub", None, {"form_xmlns": [other_ns]}),
            ("c-mscase", "case", "xml", {"case_types": ["mscase"]}),
            ("c-household", "case", "json", {"case_types": ["household"]}),
            ("f-no-danny", "form", "json", {"exclude_users": [SEED_USER_ID]}),
            ("c-no-danny", "case", "xml", {"exclude_users": [SEED_USER_ID]}),
            ("stub-no-danny", "form_stub", None, {"exclude_users": [SEED_USER_ID]}),
        ]
        d = self.daemon([connection("inbox", ep.url("/"))],
                        [typed_repeater(n, "inbox", t, f, filters=flt) for n, t, f, flt in spec])

        # The seed: its xmlns, an mscase, submitted (and the case modified) by danny.
        self.assertSubmitted(d.submit(seed_form()), 201, records=2)
        self.assertEqual(sorted(r[0] for r in d.db.records_of(SEED_INSTANCE_ID)), ["c-mscase", "f-seed-ns"])

        # Everything the seed's filters matched now differs: xmlns, case type, user.
        iid, form = unique_form()
        form = (form.replace(SEED_XMLNS_B, other_ns.encode())
                .replace(SEED_USER_ID.encode(), b"someone-else")
                .replace(SEED_CASE_ID.encode(), b"9d5b8f3e-household-case")
                .replace(b"<n0:case_type>mscase</n0:case_type>", b"<n0:case_type>household</n0:case_type>"))
        self.assertSubmitted(d.submit(form), 201, records=6)
        self.assertEqual(sorted(r[0] for r in d.db.records_of(iid)),
                         ["c-household", "c-no-danny", "f-no-danny", "f-other-ns", "stub-no-danny",
                          "stub-other-ns"])

        ep.wait_count(8, 10)
        ep.assert_quiet(8, 0.3)
        paths = sorted(r.path for r in ep.snapshot())
        self.assertEqual(paths, ["/"] * 8)   # one connection; the DB says which repeater sent what

    def test_exclude_users_on_case_json_posts(self):
        """POST /cases: the case's user_id is the submitting user for exclude_users."""
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())],
                        [typed_repeater("cases", "inbox", "case", "json", filters={"exclude_users": ["bot-user"]})])
        info = self.assertJsonAccepted(d.post("/a/demo/cases", {
            "case_id": "by-a-person", "case_type": "household", "case_name": "A", "user_id": "nurse-1"}), 201, 1)
        self.assertEqual(info["case_ids"], ["by-a-person"])
        info = self.assertJsonAccepted(d.post("/a/demo/cases", {
            "case_id": "by-the-bot", "case_type": "household", "case_name": "B", "user_id": "bot-user"}), 201, 0)
        self.assertEqual(info["case_ids"], ["by-the-bot"])
        self.assertIsNotNone(d.db.case("by-the-bot"), "an excluded user's case is still stored")
        ep.wait_count(1, 10)
        ep.assert_quiet(1, 0.3)


# --------------------------------------------------------------------------- form as JSON

class FormJsonMappingTest(DaemonTestCase):
    """The XML-to-JSON rules of spec §4 on forms made to exercise them."""

    def forwarded_form(self, d, ep, body: bytes, n: int) -> dict:
        self.assertSubmitted(d.submit(body), 201, records=1)
        req = ep.wait_count(n, 10)[n - 1]
        self.assertEqual(req.headers.get("content-type"), "application/json")
        return json.loads(req.body)["form"]

    def test_namespaces_repeats_mixed_text_and_unicode(self):
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [typed_repeater("fj", "inbox", "form", "json")])

        iid = str(uuid.uuid4())
        form = self.forwarded_form(d, ep, with_meta(fixture("couchforms_posts_namespaces.xml"), iid), 1)
        self.assertEqual(form, {
            "@version": "1", "@uiVersion": "1", "@xmlns": "http://commcarehq.org/test/ns",
            "empty": "no namespace here",
            "flat": {"@xmlns": "http://commcarehq.org/test/flatns", "#text": "flat namespace"},
            "parent": {"@xmlns": "http://commcarehq.org/test/parent",
                       "childwithout": "cwo",
                       "childwith": {"@xmlns": "http://commcarehq.org/test/child1", "#text": "cw"},
                       "childwithelement": {"@xmlns": "http://commcarehq.org/test/child2", "grandchild": "gc"},
                       "lastchildwithout": "lcwo"},
            "lastempty": "nothing here either",
            "meta": {"instanceID": iid},
        })

        iid = str(uuid.uuid4())
        mixed = (f'<?xml version="1.0"?><data xmlns="http://example.org/mixed" name="m">'
                 f'<group>before<q>1</q></group><item>a</item><other>x</other><item>b</item>'
                 f'<rep><v>1</v></rep><rep><v>2</v></rep><rep><v>3</v></rep>'
                 f'<blank/><attr unit="cm">12</attr><p:tagged xmlns:p="http://example.org/p">t</p:tagged>'
                 f'<meta><instanceID>{iid}</instanceID></meta></data>').encode()
        form = self.forwarded_form(d, ep, mixed, 2)
        self.assertEqual(form, {
            "@name": "m", "@xmlns": "http://example.org/mixed",
            "group": {"#text": "before", "q": "1"},
            "item": ["a", "b"],
            "other": "x",
            "rep": [{"v": "1"}, {"v": "2"}, {"v": "3"}],
            "blank": "",
            "attr": {"@unit": "cm", "#text": "12"},
            "tagged": {"@xmlns": "http://example.org/p", "#text": "t"},
            "meta": {"instanceID": iid},
        })

        iid = str(uuid.uuid4())
        form = self.forwarded_form(d, ep, with_meta(fixture("couchforms_posts_unicode.xml"), iid), 3)
        self.assertEqual(form["datum"], "统一码")
        raw = ep.snapshot()[2].body
        self.assertIn("统一码".encode(), raw, "UTF-8 as is, not \\u escapes")


# --------------------------------------------------------------------------- config rules

class PayloadConfigTest(unittest.TestCase):

    def setUp(self):
        if not binary().exists():
            self.skipTest(f"repeaterd binary not found at {binary()}")
        self.tmp = Path(tempfile.mkdtemp(prefix="repeaterd-payload-config-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def check(self, reps: list[dict]) -> subprocess.CompletedProcess:
        cfg = make_config(self.tmp, 18080, [connection("c", "http://127.0.0.1:9/x")], reps)
        path = self.tmp / "c.yaml"
        path.write_text(to_yaml(cfg) + "\n")
        return subprocess.run([str(binary()), "--check-config", str(path)], capture_output=True,
                              text=True, timeout=30)

    def test_every_type_and_format_is_valid(self):
        run = self.check([typed_repeater(n, "c", t, f) for n, t, f, _ in REPEATERS])
        self.assertEqual(run.returncode, 0, run.stderr)

    def test_fixed_formats_and_misplaced_templates_are_errors(self):
        bad = [
            ({**typed_repeater("s", "c", "form_stub"), "format": "json"}, r"format"),
            ({**typed_repeater("a", "c", "app_structure"), "format": "xml"}, r"format"),
            (typed_repeater("x", "c", "form", "xml", template='{"b": %SUBMISSION%}'), r"template"),
            (typed_repeater("y", "c", "case", "yaml"), r"format|yaml"),
            (typed_repeater("z", "c", "form", "json", template='{"no": "placeholder"}'), r"SUBMISSION"),
        ]
        for rep, reason in bad:
            with self.subTest(rep=rep):
                run = self.check([rep])
                self.assertEqual(run.returncode, 1, f"accepted:\n{to_yaml(rep)}\n{run.stderr}")
                self.assertRegex(run.stderr, re.compile(rf":\d+:\d+: .*({reason})", re.I))


if __name__ == "__main__":
    unittest.main()
