"""What each repeater type and format forwards (spec §3-§4), through the real daemon and a
receiving endpoint, golden against CommCare HQ's own expected outputs where HQ has them:

* the seed page's "Forward Form / Forward Cases / Forward Form Stub / Forward App Schema
  Changes" examples (shared/seeds/000, 001), with their times in UTC as HQ writes them today
  (the 2015 page kept the phone's wall clock: `2015-04-17T16:04:54.950-04` is now
  `2015-04-17T20:04:54.950000Z`) and in HQ's current shapes;
* HQ's code and tests: FormRepeaterJsonPayloadGenerator -> XFormInstanceResource (form JSON),
  xml2json / couchforms test_post (`*-sql.json`), adjust_datetimes and its tests,
  clean_metadata and TransformXformForESTest, CaseRepeaterXMLPayloadGenerator ->
  get_case_element / V2CaseXMLGenerator and test_v2_parsing.testParseWithIndices,
  CommCareCaseAPISerializer, AppStructureGenerator, test_out_of_order_processing;
* the Kobo REST service sample and its wrapper template (seed 002), and an OpenFn job's
  lookups on a forwarded form (seed 002's CommCare -> OpenFn path).

docs/payloads.md is generated from this file's run: with REPEATERD_UPDATE_DOCS=1 the test
writes it; otherwise it renders it again and fails if the committed file differs, so the page
always shows what the daemon really sends. Its last section lists where repeaterd's payloads
still differ from HQ's; each item is checked by a test here.
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
from xml.sax.saxutils import escape, quoteattr

from harness import (SharedDaemonTest, check_generated_doc, CASE_V2_NS, HQ_PARSE_WITH_INDICES_XML, ISO_MICRO_Z_RE, OTHER_TOKEN, SEED_APP_ID,
                     SEED_CASE_ID, SEED_INSTANCE_ID, SEED_USER_ID, SEED_XMLNS, SOURCE_DIR, TOKEN, UUID_RE, Daemon,
                     DaemonTestCase, Endpoint, Reply, binary, connection, fixture, free_port, make_config,
                     multipart, parse_iso_z, seed_form, submit, to_yaml, typed_repeater, unique_form, with_meta)

DOCS_PATH = SOURCE_DIR / "docs" / "payloads.md"
META_NS = "http://openrosa.org/jr/xforms"


def compact_xml(text: str) -> bytes:
    """An indented XML literal as one line (whitespace between tags dropped): case XML as HQ's
    lxml tostring and repeaterd write it, without an XML declaration."""
    return re.sub(r">\s+<", "><", text.strip()).encode()


def compact_json(value, sort_keys: bool = False) -> bytes:
    """JSON as repeaterd writes case JSON and form stubs: no spaces, UTF-8 as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys).encode()


def hq_json(value) -> bytes:
    """JSON as HQ's form API serializer writes it (tastypie: json.dumps(sort_keys=True,
    ensure_ascii=False), default ", " and ": " separators): the form JSON envelope."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False).encode()


# --------------------------------------------------------------------------- the seed, in UTC

SEED_DATE_MODIFIED = "2015-04-17T20:04:54.950000Z"   # the seed's "2015-04-17T16:04:54.950-04"
SEED_TIME_START = "2015-04-17T20:04:42.383000Z"      # the seed's "2015-04-17T16:04:42.383-04"
SEED_APP_VERSION = ('CommCare ODK, version "2.19.8"(350848). App v10. CommCare Version 2.19. '
                    'Build 1000, built on: January-22-2015')

# The seed form as HQ's form API has it: xml2json (convert_xform_to_json: "#type", "@xmlns" where
# the namespace changes), adjust_datetimes (every date+time to UTC ...ffffffZ), and its
# Elasticsearch transform of meta (appVersion to its text; commcare_version and
# app_build_version parsed from it, as TransformXformForESTest; geo_point None without a
# location).
SEED_FORM_JSON = {
    "#type": "data", "@name": "Untitled Form", "@uiVersion": "1", "@version": "10", "@xmlns": SEED_XMLNS,
    "case": {"@case_id": SEED_CASE_ID, "@date_modified": SEED_DATE_MODIFIED, "@user_id": SEED_USER_ID,
             "@xmlns": CASE_V2_NS,
             "create": {"case_name": "Trees", "case_type": "mscase", "owner_id": SEED_USER_ID}},
    "meta": {"@xmlns": META_NS, "appVersion": SEED_APP_VERSION, "app_build_version": 10,
             "commcare_version": "2.19.8", "deviceID": "990005013558458", "geo_point": None,
             "instanceID": SEED_INSTANCE_ID, "timeEnd": SEED_DATE_MODIFIED, "timeStart": SEED_TIME_START,
             "userID": SEED_USER_ID, "username": "danny"},
    "question1": "Trees",
}
# HQ's clean_metadata(form.meta): "@" keys dropped, appVersion and location as text (None when
# absent), timeStart/timeEnd as ...ffffffZ.
SEED_METADATA = {
    "appVersion": SEED_APP_VERSION, "app_build_version": 10, "commcare_version": "2.19.8",
    "deviceID": "990005013558458", "geo_point": None, "instanceID": SEED_INSTANCE_ID, "location": None,
    "timeEnd": SEED_DATE_MODIFIED, "timeStart": SEED_TIME_START, "userID": SEED_USER_ID, "username": "danny",
}
# XFormInstanceResource's fields, sorted (HQ: repeater_generators.FormRepeaterJsonPayloadGenerator).
FORM_JSON_KEYS = ["app_id", "archived", "attachments", "build_id", "domain", "edited_by_user_id", "edited_on",
                  "form", "id", "indexed_on", "initial_processing_complete", "is_phone_submission", "metadata",
                  "problem", "received_on", "resource_uri", "server_modified_on", "submit_ip", "type",
                  "uiversion", "version"]

# The seed's case XML ("Forward Cases", RAW BODY (XML)) as HQ's get_case_element writes it
# today: create (case_type, case_name, owner_id), update with date_opened as a date; attribute
# order and layout as HQ's test_v2_parsing literal, no XML declaration.
SEED_CASE_XML = compact_xml(f"""
<case case_id="{SEED_CASE_ID}" date_modified="{SEED_DATE_MODIFIED}" user_id="{SEED_USER_ID}" xmlns="{CASE_V2_NS}">
  <create>
    <case_type>mscase</case_type>
    <case_name>Trees</case_name>
    <owner_id>{SEED_USER_ID}</owner_id>
  </create>
  <update>
    <date_opened>2015-04-17</date_opened>
  </update>
</case>""")

# The keys of the seed's case JSON ("Forward Cases", RAW BODY (JSON)) plus HQ's current
# `attachments` (CommCareCaseAPISerializer).
SEED_CASE_JSON_KEYS = {"attachments", "case_id", "closed", "date_closed", "date_modified", "domain", "indices",
                       "properties", "server_date_modified", "server_date_opened", "user_id", "version",
                       "xform_ids"}

# A later form that closes the seed's case.
CLOSE_FORM_ID = "5c3d1e07-2b1a-4c9e-9d0f-3a41c2e8b6f1"
CLOSE_DATE_MODIFIED = "2015-04-18T09:30:12.500-04"
CLOSED_ON = "2015-04-18T13:30:12.500000Z"            # CLOSE_DATE_MODIFIED in UTC
CLOSE_FORM = f"""<?xml version='1.0' ?>
<data uiVersion="1" version="10" name="Close Trees"
    xmlns:jrm="http://dev.commcarehq.org/jr/xforms"
    xmlns="{SEED_XMLNS}">
  <question1>done</question1>
  <n0:case case_id="{SEED_CASE_ID}" date_modified="{CLOSE_DATE_MODIFIED}" user_id="{SEED_USER_ID}"
      xmlns:n0="{CASE_V2_NS}"><n0:close/></n0:case>
  <n1:meta xmlns:n1="{META_NS}">
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
CHILD_MODIFIED = "2015-04-18T14:02:00.000000Z"       # 10:02:00.000-04 in UTC

# "Forward App Schema Changes": the seed's example body is a build id.
BUILD_ID = "193b28e58f335f165cb3e2bbe02b3ed8"

# An OpenRosa multipart submission with two attachments (no case block), and the public URL
# under which repeaterd's own listener is reachable (through a proxy, in real life).
PUBLIC_URL = "https://forms.example.org"
ATTACH_FORM_ID = "7f3c9a2e-4b8d-4e61-9f0a-2c5d8e1b3a47"
ATTACH_FORM = f"""<?xml version='1.0' ?>
<data uiVersion="1" version="10" name="Tree photo" xmlns="{SEED_XMLNS}">
  <tree>Oak 1</tree>
  <photo>leaf.jpg</photo>
  <voice>voice note.amr</voice>
  <seen_on>2015-04-18</seen_on>
  <n1:meta xmlns:n1="{META_NS}">
    <n1:timeStart>2015-04-18T10:05:00.000-04</n1:timeStart>
    <n1:timeEnd>2015-04-18T10:06:30.250-04</n1:timeEnd>
    <n1:username>danny</n1:username>
    <n1:userID>{SEED_USER_ID}</n1:userID>
    <n1:instanceID>{ATTACH_FORM_ID}</n1:instanceID>
  </n1:meta>
</data>""".encode()
LEAF_JPG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00leaf" + bytes(range(256))
VOICE_AMR = b"#!AMR\n" + b"\x3c\x91\x17\x16" * 20
ATTACHMENTS = [("leaf.jpg", "image/jpeg", LEAF_JPG), ("voice note.amr", "audio/amr", VOICE_AMR)]


def attach_submission() -> tuple[str, bytes]:
    """(Content-Type, body) of ATTACH_FORM with ATTACHMENTS, as ODK Collect / CommCare send it."""
    return multipart([("xml_submission_file", "xml_submission_file", "text/xml", ATTACH_FORM)] +
                     [(name, name, ctype, body) for name, ctype, body in ATTACHMENTS],
                     boundary="----repeaterd-payloads-doc")


def attachment_url(form_id: str, name: str, base: str = PUBLIC_URL) -> str:
    from urllib.parse import quote
    return f"{base}/a/demo/receiver/attachments/{quote(form_id, safe='')}/{quote(name, safe='')}"


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

# An OpenFn job's lookups on the forwarded form (the `commcare` adaptor's jobs read
# state.data.<path>; the inbox puts the request body in state.data).
OPENFN_LOOKUPS_JS = r"""
const state = { data: JSON.parse(require('fs').readFileSync(0, 'utf8')) };
const lookups = {
  "state.data.metadata.instanceID": (s) => s.data.metadata.instanceID,
  "state.data.form.meta.userID": (s) => s.data.form.meta.userID,
  "state.data.form['#type']": (s) => s.data.form['#type'],
  "state.data.received_on": (s) => s.data.received_on,
};
const out = {};
for (const [path, get] of Object.entries(lookups)) {
  try { out[path] = get(state); } catch (e) { out[path] = { error: String(e) }; }
}
process.stdout.write(JSON.stringify(out));
"""


def node_available() -> bool:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def openfn_lookups(body: bytes) -> tuple[dict, str]:
    """The job's lookups on `body` as state.data: through node as the job would run them, or
    the same property paths in Python when node is not installed. Returns (values, engine)."""
    if node_available():
        run = subprocess.run(["node", "-e", OPENFN_LOOKUPS_JS], input=body, capture_output=True, timeout=30)
        if run.returncode != 0:
            raise AssertionError(f"node failed: {run.stderr.decode(errors='replace')}")
        return json.loads(run.stdout), "node"
    data = json.loads(body)
    return {"state.data.metadata.instanceID": data["metadata"]["instanceID"],
            "state.data.form.meta.userID": data["form"]["meta"]["userID"],
            "state.data.form['#type']": data["form"]["#type"],
            "state.data.received_on": data["received_on"]}, "python"


class SeedPayloadsTest(SharedDaemonTest):
    """One daemon (with listen.public_url) and one scenario for the class, run in setUpClass:
    the seed form (from a phone: X-OpenRosa-Version, ?app_id=), a form that closes its case, a
    child case posted to /cases, an app save and build, a multipart form with two attachments,
    and the Kobo JSON sample. The tests read what each endpoint captured."""

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
        cls.port = free_port()
        cfg = make_config(cls.tmp, cls.port, conns, reps, listen={"public_url": PUBLIC_URL})
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
    def _step(cls, key: str, send, waits: list[tuple[str, int]]) -> None:
        """One step of the scenario: send, note the time window around it, wait for its requests
        (each step waits for the last, so every path's requests come in scenario order)."""
        start = time.time()
        cls.captured[key] = send()
        cls.captured[key + "_window"] = (start, time.time())
        for name, n in waits:
            cls._wait(name, n)

    @classmethod
    def _scenario(cls) -> None:
        cls.captured = {"timeouts": []}
        d = cls.d
        phone = {"X-OpenRosa-Version": "1.0"}
        cls._step("seed", lambda: d.submit(seed_form(), app_id=SEED_APP_ID, headers=phone),
                  [("form-xml", 1), ("form-json", 1), ("case-xml", 1), ("case-json", 1), ("form-stub", 1)])
        cls._step("close", lambda: d.submit(CLOSE_FORM, app_id=SEED_APP_ID),
                  [("form-xml", 2), ("form-json", 2), ("case-xml", 2), ("case-json", 2), ("form-stub", 2)])
        cls._step("child", lambda: d.post("/a/demo/cases", CHILD_CASE_XML, content_type="text/xml"),
                  [("case-xml", 3), ("case-json", 3)])
        cls._step("app_saved", lambda: d.post(f"/a/demo/apps/{SEED_APP_ID}", b"", content_type=None),
                  [("app-structure", 1)])
        cls._step("app_built", lambda: d.post(f"/a/demo/apps/{SEED_APP_ID}", {"build_id": BUILD_ID}),
                  [("app-structure", 2)])
        ctype, body = attach_submission()
        cls._step("attach", lambda: d.submit(body, content_type=ctype, headers=phone),
                  [("form-xml", 3), ("form-json", 3), ("form-stub", 3)])
        cls._step("kobo", lambda: d.submit(KOBO_SAMPLE, content_type="application/json"),
                  [("form-json", 4), ("kobo-json", 1)])
        time.sleep(0.3)   # anything that should not have been sent has had its chance

    @classmethod
    def tearDownClass(cls):
        problem = cls.d.close()
        cls.ep.close()
        cls.finish_shared(problem)

    # -- helpers

    def requests(self, name: str, n: int | None = None):
        """Requests captured on a repeater's path, in scenario order; with n, asserts there are
        exactly n."""
        got = [r for r in self.ep.snapshot() if r.path == f"/{name}"]
        if n is not None:
            self.assertEqual(len(got), n, f"{name}: expected {n} request(s), got {len(got)}; "
                                          f"timeouts: {self.captured.get('timeouts')}")
        return got

    def request(self, name: str, i: int):
        got = self.requests(name)
        self.assertGreater(len(got), i, f"{name}: request {i + 1} was not captured; "
                                        f"timeouts: {self.captured.get('timeouts')}")
        return got[i]

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

    def assertFormEnvelope(self, req, expected: dict, window: tuple) -> dict:
        """The whole form JSON body equals `expected` (HQ's envelope; the values only the run
        knows filled in here), written as HQ's serializer writes it, byte for byte."""
        body = self.json_body(req)
        received_on = req.headers.get("received-on", "")
        self.assertInWindow(received_on, window, "Received-On")
        self.assertEqual(list(body), FORM_JSON_KEYS, "HQ's XFormInstanceResource keys, sorted; no `cases`")
        # submit_ip: the client's address as repeaterd saw it (here the loopback).
        self.assertEqual(body["submit_ip"], "127.0.0.1")
        want = {**expected, "received_on": received_on, "indexed_on": received_on,
                "server_modified_on": received_on, "submit_ip": body["submit_ip"]}
        self.assertEqual(body, want)
        self.assertEqual(req.body, hq_json(want), "keys sorted at every level, ', ' and ': ', UTF-8 as is")
        return body

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

        attach = r["attach"]
        self.assertEqual(attach.status, 201, attach.body[:300])
        self.assertEqual((attach.openrosa()["form_id"], attach.openrosa()["records_created"]),
                         (ATTACH_FORM_ID, 3), "no case block: form xml + form json + form stub")

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
        """Seed "Forward Form" (RAW BODY): the XML as received; HQ FormRepeater.get_url adds
        ?app_id= when the form has one (and only then, here)."""
        seed, close, attach = self.requests("form-xml", 3)   # and not the Kobo JSON
        self.assertEqual(seed.body, seed_form(), "the forwarded body must be byte-identical")
        self.assertEqual(close.body, CLOSE_FORM)
        self.assertEqual(attach.body, ATTACH_FORM, "a multipart form: its xml_submission_file part")
        for req, query in ((seed, f"app_id={SEED_APP_ID}"), (close, f"app_id={SEED_APP_ID}"), (attach, "")):
            self.assertCommonHeaders(req)
            self.assertEqual(req.headers.get("content-type"), "text/xml")
            self.assertEqual(req.query, query)
        for req, key in ((seed, "seed"), (close, "close"), (attach, "attach")):
            self.assertInWindow(req.headers.get("received-on", ""), self.captured[key + "_window"], "Received-On")

    # -- form, json

    def test_form_json_of_the_seed(self):
        """HQ FormRepeaterJsonPayloadGenerator -> XFormInstanceResource over the seed form: every
        key and value. A phone submission (X-OpenRosa-Version) with ?app_id=, not edited."""
        seed = self.request("form-json", 0)
        self.assertCommonHeaders(seed)
        self.assertEqual(seed.query, f"app_id={SEED_APP_ID}", "HQ adds ?app_id= for JSON forms too")
        self.assertFormEnvelope(seed, {
            "app_id": SEED_APP_ID, "archived": False, "attachments": {}, "build_id": None, "domain": "demo",
            "edited_by_user_id": None, "edited_on": None, "form": SEED_FORM_JSON, "id": SEED_INSTANCE_ID,
            "initial_processing_complete": True, "is_phone_submission": True, "metadata": SEED_METADATA,
            "problem": None, "resource_uri": "", "type": "data", "uiversion": "1", "version": "10",
        }, self.captured["seed_window"])

    def test_form_json_of_a_form_without_appversion_not_from_a_phone(self):
        """The close form: no X-OpenRosa-Version (is_phone_submission false), no appVersion
        (metadata.appVersion None, no form.meta.appVersion; commcare_version and
        app_build_version None), its offset times in UTC; the case block's empty <close/> ""."""
        close = self.request("form-json", 1)
        self.assertEqual(close.query, f"app_id={SEED_APP_ID}")
        time_start = "2015-04-18T13:29:40.001000Z"
        self.assertFormEnvelope(close, {
            "app_id": SEED_APP_ID, "archived": False, "attachments": {}, "build_id": None, "domain": "demo",
            "edited_by_user_id": None, "edited_on": None, "id": CLOSE_FORM_ID,
            "form": {"#type": "data", "@name": "Close Trees", "@uiVersion": "1", "@version": "10", "@xmlns": SEED_XMLNS,
                     "case": {"@case_id": SEED_CASE_ID, "@date_modified": CLOSED_ON, "@user_id": SEED_USER_ID,
                              "@xmlns": CASE_V2_NS, "close": ""},
                     "meta": {"@xmlns": META_NS, "app_build_version": None, "commcare_version": None,
                              "deviceID": "990005013558458", "geo_point": None, "instanceID": CLOSE_FORM_ID,
                              "timeEnd": CLOSED_ON, "timeStart": time_start, "userID": SEED_USER_ID,
                              "username": "danny"},
                     "question1": "done"},
            "initial_processing_complete": True, "is_phone_submission": False,
            "metadata": {"appVersion": None, "app_build_version": None, "commcare_version": None,
                         "deviceID": "990005013558458", "geo_point": None, "instanceID": CLOSE_FORM_ID,
                         "location": None, "timeEnd": CLOSED_ON, "timeStart": time_start, "userID": SEED_USER_ID,
                         "username": "danny"},
            "problem": None, "resource_uri": "", "type": "data", "uiversion": "1", "version": "10",
        }, self.captured["close_window"])

    def test_form_json_lists_attachments_with_urls_that_serve_them(self):
        """XFormInstanceResource.dehydrate_attachments: {name: {content_type, length, url}}; the
        url is repeaterd's own (listen.public_url + /a/{domain}/receiver/attachments/{form}/{name},
        the name percent-encoded). Fetched with the domain's ingest token it gives the bytes."""
        req = self.request("form-json", 2)
        self.assertEqual(req.query, "", "no ?app_id= when the submission had none")
        body = self.assertFormEnvelope(req, {
            "app_id": None, "archived": False, "build_id": None, "domain": "demo",
            "attachments": {name: {"content_type": ctype, "length": len(data), "url": attachment_url(ATTACH_FORM_ID, name)}
                            for name, ctype, data in ATTACHMENTS},
            "edited_by_user_id": None, "edited_on": None, "id": ATTACH_FORM_ID,
            "form": {"#type": "data", "@name": "Tree photo", "@uiVersion": "1", "@version": "10", "@xmlns": SEED_XMLNS,
                     "meta": {"@xmlns": META_NS, "app_build_version": None, "commcare_version": None,
                              "geo_point": None, "instanceID": ATTACH_FORM_ID, "timeEnd": "2015-04-18T14:06:30.250000Z",
                              "timeStart": "2015-04-18T14:05:00.000000Z", "userID": SEED_USER_ID, "username": "danny"},
                     "photo": "leaf.jpg", "seen_on": "2015-04-18", "tree": "Oak 1", "voice": "voice note.amr"},
            "initial_processing_complete": True, "is_phone_submission": True,
            "metadata": {"appVersion": None, "app_build_version": None, "commcare_version": None, "geo_point": None,
                         "instanceID": ATTACH_FORM_ID, "location": None, "timeEnd": "2015-04-18T14:06:30.250000Z",
                         "timeStart": "2015-04-18T14:05:00.000000Z", "userID": SEED_USER_ID, "username": "danny"},
            "problem": None, "resource_uri": "", "type": "data", "uiversion": "1", "version": "10",
        }, self.captured["attach_window"])
        local = f"http://127.0.0.1:{self.port}"
        for name, ctype, data in ATTACHMENTS:
            path = body["attachments"][name]["url"][len(PUBLIC_URL):]
            with self.subTest(attachment=name):
                got = submit(self.port, b"", method="GET", path=path, content_type=None)
                self.assertEqual(got.status, 200, f"GET {local}{path}: {got.body[:300]!r}")
                self.assertEqual(got.body, data, "the attachment's bytes, as submitted")
                self.assertEqual(got.header("Content-Type"), ctype)
                self.assertEqual(submit(self.port, b"", method="GET", path=path, content_type=None,
                                        token=OTHER_TOKEN).status, 403, "another domain's token")
                self.assertEqual(submit(self.port, b"", method="GET", path=path, content_type=None,
                                        token=None).status, 401, "no token")

    def test_json_submission_goes_as_submitted_and_through_the_template(self):
        """Seed 002 (Kobo REST service post and its wrapper template): a JSON submission is not
        an XForm; JSON form repeaters get its bytes as submitted."""
        plain = self.request("form-json", 3)
        self.assertEqual(plain.body, KOBO_SAMPLE, "without a template: the submission's bytes")
        self.assertEqual(plain.query, "")
        wrapped = self.requests("kobo-json", 1)[0]   # the XForms are filtered out
        self.assertCommonHeaders(wrapped)
        self.assertEqual(self.json_body(wrapped), {"form": "my_form", "body": json.loads(KOBO_SAMPLE)})
        self.assertEqual(wrapped.body, KOBO_TEMPLATE.replace("%SUBMISSION%", KOBO_SAMPLE.decode()).encode(),
                         "the template is applied to the submitted bytes as they are")
        self.assertInWindow(wrapped.headers.get("received-on", ""), self.captured["kobo_window"], "Received-On")
        # Not to XML-only types: form xml, case and stub repeaters got nothing from it.
        for name in ("form-xml", "form-stub"):
            self.requests(name, 3)
        for name in ("case-xml", "case-json"):
            self.requests(name, 3)

    def test_openfn_job_lookups_find_the_forwarded_form(self):
        """Seed 002 ("CommCare to OpenFn"): an OpenFn job reads the forwarded form JSON as
        state.data; the lookups its commcare jobs use must each find their value."""
        req = self.request("form-json", 0)
        values, engine = openfn_lookups(req.body)
        self.assertEqual(values, {
            "state.data.metadata.instanceID": SEED_INSTANCE_ID,
            "state.data.form.meta.userID": SEED_USER_ID,
            "state.data.form['#type']": "data",
            "state.data.received_on": req.headers.get("received-on"),
        }, f"lookups run with {engine}")
        self.assertRegex(values["state.data.received_on"], ISO_MICRO_Z_RE)

    # -- case, xml / json

    def test_case_xml_is_the_seed_case_block(self):
        """Seed "Forward Cases" (RAW BODY (XML)) as HQ's CaseRepeaterXMLPayloadGenerator writes
        it today: owner_id in create, date_opened (a date) in update, UTC date_modified."""
        req = self.request("case-xml", 0)
        self.assertCommonHeaders(req)
        self.assertEqual(req.headers.get("content-type"), "text/xml")
        self.assertEqual(req.query, "", "case records have no ?app_id=")
        self.assertInWindow(req.headers.get("server-modified-on", ""), self.captured["seed_window"],
                            "Server-Modified-On")
        self.assertNotIn("received-on", req.headers)
        self.assertEqual(req.body, SEED_CASE_XML)

    def test_case_json_has_the_seed_keys_and_values(self):
        """Seed "Forward Cases" (RAW BODY (JSON)): its keys, plus HQ CommCareCaseAPISerializer's
        attachments and properties.external_id (None when unset); times in UTC."""
        req = self.request("case-json", 0)
        self.assertCommonHeaders(req)
        modified = req.headers.get("server-modified-on", "")
        self.assertInWindow(modified, self.captured["seed_window"], "Server-Modified-On")
        case = self.json_body(req)
        self.assertEqual(set(case), SEED_CASE_JSON_KEYS)
        expected = {"attachments": {}, "case_id": SEED_CASE_ID, "closed": False, "date_closed": None,
                    "date_modified": SEED_DATE_MODIFIED, "domain": "demo", "indices": {},
                    "properties": {"case_name": "Trees", "case_type": "mscase", "date_opened": SEED_DATE_MODIFIED,
                                   "external_id": None, "owner_id": SEED_USER_ID},
                    "server_date_modified": modified, "server_date_opened": modified,
                    "user_id": SEED_USER_ID, "version": "2.0", "xform_ids": [SEED_INSTANCE_ID]}
        self.assertEqual(case, expected)
        self.assertEqual(req.body, compact_json(expected, sort_keys=True))

    def test_closed_case_is_its_full_state_and_close(self):
        """HQ CommCareCase.to_xml(V2, include_case_on_closed=True): a closed case is create +
        update + <close/>, not a close block alone; the JSON says closed with date_closed."""
        xml_req = self.request("case-xml", 1)
        self.assertEqual(xml_req.headers.get("content-type"), "text/xml")
        self.assertInWindow(xml_req.headers.get("server-modified-on", ""), self.captured["close_window"],
                            "Server-Modified-On")
        self.assertEqual(xml_req.body, compact_xml(f"""
            <case case_id="{SEED_CASE_ID}" date_modified="{CLOSED_ON}" user_id="{SEED_USER_ID}" xmlns="{CASE_V2_NS}">
              <create>
                <case_type>mscase</case_type>
                <case_name>Trees</case_name>
                <owner_id>{SEED_USER_ID}</owner_id>
              </create>
              <update>
                <date_opened>2015-04-17</date_opened>
              </update>
              <close/>
            </case>"""))

        json_req = self.request("case-json", 1)
        case = self.json_body(json_req)
        first = self.json_body(self.request("case-json", 0))
        self.assertEqual(case, {**first, "closed": True, "date_closed": CLOSED_ON, "date_modified": CLOSED_ON,
                                "server_date_modified": json_req.headers.get("server-modified-on"),
                                "xform_ids": [SEED_INSTANCE_ID, CLOSE_FORM_ID]},
                         "closing changes closed, the dates and xform_ids only")

    def test_case_with_properties_and_index(self):
        """HQ V2CaseXMLGenerator: properties sorted by name after date_opened; the index with
        case_type and no relationship attribute for a child index. JSON: HQ get_index_map."""
        xml_req = self.request("case-xml", 2)
        self.assertEqual(xml_req.headers.get("content-type"), "text/xml")
        self.assertEqual(xml_req.body, compact_xml(f"""
            <case case_id="{CHILD_CASE_ID}" date_modified="{CHILD_MODIFIED}" user_id="{SEED_USER_ID}" xmlns="{CASE_V2_NS}">
              <create>
                <case_type>tree</case_type>
                <case_name>Oak 1</case_name>
                <owner_id>{SEED_USER_ID}</owner_id>
              </create>
              <update>
                <date_opened>2015-04-18</date_opened>
                <height_m>12</height_m>
                <species>Quercus robur</species>
              </update>
              <index>
                <parent case_type="mscase">{SEED_CASE_ID}</parent>
              </index>
            </case>"""))

        req = self.request("case-json", 2)
        case = self.json_body(req)
        modified = req.headers.get("server-modified-on")
        self.assertEqual(case, {
            "attachments": {}, "case_id": CHILD_CASE_ID, "closed": False, "date_closed": None,
            "date_modified": CHILD_MODIFIED, "domain": "demo",
            "indices": {"parent": {"case_id": SEED_CASE_ID, "case_type": "mscase", "relationship": "child"}},
            "properties": {"case_name": "Oak 1", "case_type": "tree", "date_opened": CHILD_MODIFIED,
                           "external_id": None, "height_m": "12", "owner_id": SEED_USER_ID,
                           "species": "Quercus robur"},
            "server_date_modified": modified, "server_date_opened": modified, "user_id": SEED_USER_ID,
            "version": "2.0", "xform_ids": [self.captured["child"].json()["id"]]})

    # -- form stub

    def test_form_stub(self):
        """Seed "Forward Form Stub": {received_on, form_id, case_ids}."""
        req = self.request("form-stub", 0)
        self.assertCommonHeaders(req)
        received_on = req.headers.get("received-on", "")
        self.assertInWindow(received_on, self.captured["seed_window"], "Received-On")
        self.assertEqual(req.body, compact_json({"received_on": received_on, "form_id": SEED_INSTANCE_ID,
                                                 "case_ids": [SEED_CASE_ID]}))
        # One received-on per submission, whatever the repeater.
        for name in ("form-xml", "form-json"):
            self.assertEqual(self.request(name, 0).headers.get("received-on"), received_on, name)
        close = self.json_body(self.request("form-stub", 1))
        self.assertEqual((close["form_id"], close["case_ids"]), (CLOSE_FORM_ID, [SEED_CASE_ID]))
        attach = self.json_body(self.request("form-stub", 2))
        self.assertEqual((attach["form_id"], attach["case_ids"]), (ATTACH_FORM_ID, []))

    # -- app structure

    def test_app_structure_sends_app_id_then_build_id(self):
        """HQ AppStructureGenerator: the id as the body, with the generator's default
        Content-Type text/xml; the seed's example body after a build is the build id."""
        saved, built = self.requests("app-structure", 2)
        for req, body in ((saved, SEED_APP_ID), (built, BUILD_ID)):
            self.assertCommonHeaders(req)
            self.assertEqual(req.headers.get("content-type"), "text/xml")
            self.assertEqual(req.body, body.encode())
            self.assertEqual(req.query, "")
            self.assertNotIn("received-on", req.headers)
        # App changes reach nothing else.
        self.requests("form-xml", 3)
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


# --------------------------------------------------------------------------- docs rendering

HEADER_NAMES = {"content-type": "Content-Type", "received-on": "Received-On",
                "server-modified-on": "Server-Modified-On", "idempotency-key": "Idempotency-Key",
                "x-request-id": "X-Request-Id"}
# Transport headers every request has; not part of what a repeater type means.
TRANSPORT_HEADERS = {"host", "content-length", "user-agent", "connection", "accept", "accept-encoding", "te"}
HEADER_PLACEHOLDERS = {"received-on": "<received-on>", "server-modified-on": "<server-modified-on>",
                       "idempotency-key": "<record-id>", "x-request-id": "<request-id>"}
# Top-level body keys whose values differ on every run. In form JSON, indexed_on and
# server_modified_on equal received_on for a form that was not edited (the tests check it).
BODY_PLACEHOLDERS = {"received_on": "<received-on>", "indexed_on": "<received-on>",
                     "server_modified_on": "<received-on>", "submit_ip": "<submit-ip>",
                     "server_date_modified": "<server-modified-on>", "server_date_opened": "<server-opened-on>"}


def indent_xml(body: bytes) -> str:
    """Case XML that repeaterd wrote (one line, no mixed content), indented for people. The
    root's start tag is kept as sent; the result, with the indentation removed, is the body."""
    start = body[:body.index(b">") + 1].decode()
    root = ET.fromstring(body)

    def local(tag: str) -> str:
        return tag.split("}", 1)[-1]

    def walk(el, depth: int) -> list[str]:
        pad = "  " * depth
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in el.attrib.items())
        if len(el):
            return ([f"{pad}<{local(el.tag)}{attrs}>"] + [line for c in el for line in walk(c, depth + 1)] +
                    [f"{pad}</{local(el.tag)}>"])
        if el.text:
            return [f"{pad}<{local(el.tag)}{attrs}>{escape(el.text)}</{local(el.tag)}>"]
        return [f"{pad}<{local(el.tag)}{attrs}/>"]

    text = "\n".join([start] + [line for c in root for line in walk(c, 1)] + [f"</{local(root.tag)}>"])
    if compact_xml(text) != body:
        raise AssertionError(f"indent_xml changed the case XML:\n{text}\n!=\n{body!r}")
    return text


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
    if body is not None and req.body in (compact_json(body), hq_json(body)):
        # JSON that repeaterd wrote: indented here for people.
        if isinstance(body, dict):
            for key, placeholder in BODY_PLACEHOLDERS.items():
                if key in body:
                    body[key] = placeholder
        lines.append(json.dumps(body, indent=2, ensure_ascii=False))
    elif ctype == "text/xml" and req.body.startswith(b"<case "):
        lines.append(indent_xml(req.body))
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
connection's `url`: method, query, headers and body. The payloads are CommCare HQ's: a
destination built for HQ's Data Forwarding (an OpenFn `commcare` job, a Kobo-style JSON inbox,
an XML case receiver) reads repeaterd's requests the same way. The last section lists what
still differs from HQ, and why.

Every example is a real request captured from a repeaterd run on the seed examples (CommCare's
"Data Forwarding" page and the Kobo JSON sample); the page is generated by
`tests/integration/test_payloads.py`, which fails whenever repeaterd's output and this page
disagree. To regenerate it after an intended change:

```sh
cd tests/integration && REPEATERD_UPDATE_DOCS=1 python3 -m unittest test_payloads
```

Values that differ on every run are shown as placeholders:

| placeholder | what it is |
|---|---|
| `<received-on>` | when repeaterd received the form: UTC, ISO 8601 with microseconds, e.g. `2015-04-17T20:14:34.046462Z`. In form JSON, `indexed_on` and `server_modified_on` have the same value unless the form was edited (then `server_modified_on` and `edited_on` are the edit's time) |
| `<server-modified-on>` | when repeaterd last changed the case (same format) |
| `<server-opened-on>` | when repeaterd first saw the case (same format) |
| `<submit-ip>` | the submitting client's address as repeaterd's listener saw it (see the differences below) |
| `<record-id>` | the repeat record's id; the same on every retry, so a receiver can drop repeats |
| `<request-id>` | a new UUID for every attempt |
| `<cases-submission-id>` | the id repeaterd gave a `POST /a/{domain}/cases` request (the `id` in its answer) |

Every request also carries the connection's `headers`, and `Host`, `Content-Length`
and `User-Agent`, which are left out below. The method is `POST` unless the repeater sets
`method: PUT` or `PATCH`. Any 2xx answer is success.

Times are UTC with microseconds and `Z`, as HQ writes them today: a phone's
`2015-04-17T16:04:54.950-04` is `2015-04-17T20:04:54.950000Z`. (The 2015 "Data Forwarding" page
shows the offset dropped and the phone's wall clock kept; HQ has since fixed that.) A date
without a time (`2015-04-18`) is left as it is.

How bodies are shown: form JSON is written as HQ writes it (keys sorted at every level,
`", "` and `": "` between items); case JSON and form stubs are written as one line without
spaces; case XML is one line without an XML declaration. All three are shown indented here.
UTF-8 is sent as is, not as `\\u` escapes. The form XML and a JSON submission passed on as
submitted are shown exactly as sent.

## Summary

| type | format | body | Content-Type | extra headers | query |
|---|---|---|---|---|---|
| `form` | `xml` (default) | the form XML, byte for byte as submitted | `text/xml` | `Received-On` | `?app_id=` when the form was submitted with one (`include_app_id_param: false` drops it) |
| `form` | `json` | CommCare HQ's form API JSON (`id`, `form`, `metadata`, `attachments`, ...); a JSON submission exactly as submitted | `application/json` | `Received-On` | as for `xml` |
| `case` | `xml` (default) | the case's full current state as a v2 `<case>` block; a closed case ends with `<close/>` | `text/xml` | `Server-Modified-On` | — |
| `case` | `json` | the case's full current state as JSON | `application/json` | `Server-Modified-On` | — |
| `form_stub` | always JSON | `{"received_on", "form_id", "case_ids"}` | `application/json` | `Received-On` | — |
| `app_structure` | always the id | the app id when an app is saved, the build id when it is built | `text/xml` (as HQ sends it, though the body is not XML) | — | — |

A `template` (JSON formats only) wraps the JSON body: `%SUBMISSION%` is replaced by it.
`filters` limit what a repeater takes: `form_xmlns` (form, form_stub), `case_types` (case) and
`exclude_users` (user ids; every type). A case repeater sends one request per case a
submission touched, with that case's state at that moment. Every request's body is made when
the record is created, so every retry sends the same bytes.
"""

FORM_JSON_TEXT = """\
The seed form as JSON: the envelope CommCare HQ's form API returns for a form (HQ's form
repeater sends exactly that), keys sorted at every level.

- `id` is the form's `meta/instanceID`; `domain` the project space; `app_id` the submission's
  `?app_id=` (`null` without one; `build_id` is always `null`); `type` the root element's name;
  `version` and `uiversion` the root's `version` and `uiVersion` attributes.
- `received_on` is when repeaterd received the form, `server_modified_on` when it last changed
  (an edit), `indexed_on` when it was stored; `edited_on` and `edited_by_user_id` are set when
  the submission replaced an earlier form with the same id (an edit), `null` otherwise.
- `is_phone_submission` is `true` when the submission carried an `X-OpenRosa-Version` header,
  as CommCare and ODK Collect send; `submit_ip` is the client's address.
- `archived` (`false`), `initial_processing_complete` (`true`), `problem` (`null`) and
  `resource_uri` (`""`) have the values HQ gives a form that was processed normally.
- `attachments` lists the submission's other parts (see the next example).
- `form` is the XML converted as HQ converts it: element names without their prefix; `#type`
  is the root's name; an element with only text becomes that text, untrimmed (an empty element
  `""`); attributes become `@name`; `@xmlns` appears where an element's namespace differs from
  its parent's; text beside child elements becomes `#text`; repeated sibling elements become an
  array, in document order. Every date-and-time value is converted to UTC
  (`2015-04-17T16:04:54.950-04` becomes `2015-04-17T20:04:54.950000Z`), a date alone is left
  as it is. In `form.meta`, `appVersion` is its text, and `commcare_version`,
  `app_build_version` (both from the `appVersion` text) and `geo_point` (from `location`) are
  added, as HQ's form API does.
- `metadata` is `form.meta` cleaned as HQ cleans it: no `@` keys; `appVersion` and `location`
  as text (`null` when absent); `timeStart` and `timeEnd` as UTC times (left out when not a
  date); `geo_point` as `"lat:<lat>, lon:<lon>"`.

An OpenFn job reads this body as `state.data`: `state.data.metadata.instanceID`,
`state.data.form.meta.userID`, `state.data.form['#type']` and `state.data.received_on` find
the form's id, its user, `"data"` and the time it was received (the test runs these lookups in
node on the real body)."""


def render_differences(t: SeedPayloadsTest) -> str:
    """The section "Differences from CommCare HQ". Each item names the test that checks the
    daemon really behaves so; the values quoted come from this run where they can."""
    seed = json.loads(t.request("form-json", 0).body)
    attach = json.loads(t.request("form-json", 2).body)
    seed_case = json.loads(t.request("case-json", 0).body)
    items = [
        ("Payloads are fixed when the record is created.",
         "Every retry sends the bytes made when the form or case arrived (by design: a receiver sees the same request each time, and `Idempotency-Key` "
         "lets it drop repeats). HQ makes the payload again at every attempt, from the form or "
         "case as it is then. So a case record that is retried after a later form changed the "
         "case still carries the earlier state; the later form has its own record. "
         "(`PayloadFixedAtCreationTest`)"),
        ("Form JSON `attachments` has no `form.xml` entry.",
         "HQ stores the form XML as an attachment and lists it; repeaterd lists only the "
         "submission's other parts. A receiver that wants the XML can add a `form` repeater with "
         f"`format: xml`. (Here: the seed form has `\"attachments\": {json.dumps(seed['attachments'])}`; "
         f"the multipart form lists {', '.join('`' + k + '`' for k in attach['attachments'])}.)"),
        ("Attachment `url`s are repeaterd's own, and only with `listen.public_url`.",
         "HQ links its own form-attachment API; repeaterd links "
         "`{public_url}/a/{domain}/receiver/attachments/{form_id}/{name}`, served by its ingest "
         "listener with the domain's ingest token (Bearer, or Basic with the token as the "
         "password). Without `public_url` the entries have no `url` key, since repeaterd knows no "
         "address a receiver could reach. (`test_form_json_lists_attachments_with_urls_that_serve_them`, "
         "`AttachmentsWithoutPublicUrlTest`)"),
        ("`app_build_version` comes from the `appVersion` text only.",
         "HQ first looks the build up in its application database; repeaterd has no app "
         f"database, so `App v10` in the seed's appVersion gives `{seed['metadata']['app_build_version']}` "
         "and a form without appVersion gives `null` (HQ could still find the build). "
         "`commcare_version` is parsed from the same text, as HQ does."),
        ("`archived`, `resource_uri`, `problem` and `initial_processing_complete` are fixed values.",
         f"`archived` is `{json.dumps(seed['archived'])}`, `resource_uri` `{json.dumps(seed['resource_uri'])}`, "
         f"`problem` `{json.dumps(seed['problem'])}`, `initial_processing_complete` "
         f"`{json.dumps(seed['initial_processing_complete'])}`: read from HQ's serializer code for a "
         "normally processed form, not captured from a live HQ (HQ's `CharField` could write "
         "`archived` as the string `\"False\"`; HQ's own API example shows `false`)."),
        ("No `cases` key in form JSON.",
         "HQ's form API adds it only when asked with `?cases__full=true`, which its repeater "
         "never does; repeaterd never writes it either. Use a `case` repeater for the cases."),
        ("Times everywhere are `...ffffffZ`.",
         "Form JSON matches HQ. In case JSON, HQ's serializer writes Django's formats, by our "
         "reading of its code (`2015-04-17T20:04:54.950000` without `Z` for `date_modified`, "
         f"milliseconds for `properties.date_opened`); repeaterd writes `{seed_case['date_modified']}` for every time, "
         "which the seed page's example also uses."),
        ("Case JSON keeps `version` and `server_date_opened`.",
         f"HQ's current case serializer dropped both; the seed page's example has them "
         f"(`\"version\": {json.dumps(seed_case['version'])}`), and receivers written against it "
         "may read them, so repeaterd keeps them."),
        ("Case JSON `attachments` have `url` and `content_type` `null`.",
         "HQ lists the files it stored for the case, with its own URLs. repeaterd keeps only the "
         "case block's reference to the file (`<attachment><name src=... from=.../>`), so each "
         "entry is `{\"content_type\": null, \"url\": null}`. (`CaseGoldenTest.test_case_attachment`)"),
        ("Case XML writes `<attachment>` from the case block.",
         "HQ writes `<attachment>` only when its MM_CASE_PROPERTIES feature flag is on, with "
         "`src` its own URL and `from=\"remote\"`; repeaterd always writes what the case block said "
         "(`src`, `from`, and `name` when given). (`CaseGoldenTest.test_case_attachment`)"),
        ("Out-of-order forms are always put in the phone's time order.",
         "A form whose case `date_modified` is older than the case's leaves the case as if the "
         "forms had arrived in phone-time order, for any users (as HQ's "
         "`test_out_of_order_processing` expects). HQ does this only for project spaces with its "
         "SORT_OUT_OF_ORDER_FORM_SUBMISSIONS_SQL flag, and orders forms of different users (or "
         "more than 12 hours apart) by server time. (`CaseGoldenTest.test_out_of_order_forms`)"),
        ("An index to a case that does not exist is accepted.",
         "HQ saves such a form as an error (InvalidCaseIndex) and changes no case; repeaterd "
         "stores the index and forwards it, so "
         "a child case that arrives before its parent is not lost. "
         "(`CaseGoldenTest.test_extension_index_and_missing_target`)"),
        ("`?app_id=` is left out when the form has no app id.",
         "HQ's repeater then sends `?app_id=None`; repeaterd sends no query."),
        ("JSON spacing and key order.",
         "Case JSON and form stubs are written without spaces with keys sorted (case JSON) or in "
         "a fixed order (stubs); HQ writes them with Python's default `\", \"` and `\": \"` in "
         "its serializer's field order. A JSON parser sees no difference."),
        ("JSON (Kobo-style) submissions.",
         "HQ takes only XForms. repeaterd also takes JSON submissions and forwards them, as "
         "submitted, to `form` repeaters with `format: json` only (not to `xml`, `form_stub` or "
         "`case` repeaters)."),
        ("After an app build, `app_structure` sends the build id.",
         "HQ's generator sends the record's payload id; repeaterd sends the app id when an app is "
         "saved and the build id when a version is built, as the seed page's example body shows."),
    ]
    same = ("Same as HQ, since receivers sometimes ask: a case block without `user_id` takes the "
            "form's `meta/userID`; a case without `owner_id` is owned by its user (`<owner_id>` "
            "is the `user_id`); a child index has no `relationship` attribute in case XML and "
            "`\"relationship\": \"child\"` in case JSON; a form without `meta/instanceID` gets a "
            "generated id. (`CaseGoldenTest`, `FormDatesTest`, `FormJsonMappingTest`)")
    out = ["## Differences from CommCare HQ", "",
           "Where repeaterd's requests still differ from what CommCare HQ would send for the same "
           "data, and why. The tests in `tests/integration/test_payloads.py` check each against "
           "repeaterd's real output.", ""]
    for title, text in items:
        out.append(f"- **{title}** {text}")
    out += ["", same, ""]
    return "\n".join(out)


def render_docs(t: SeedPayloadsTest) -> str:
    sections = [
        ("form, xml", "form-xml", 0,
         "The seed form, submitted to `/a/demo/receiver?app_id=db9f874f0219444ee7848ddd023e292e`. "
         "The body is the submitted XML, byte for byte (for a multipart submission, its "
         "`xml_submission_file` part); `Received-On` is when repeaterd received it."),
        ("form, json", "form-json", 0, FORM_JSON_TEXT),
        ("form, json: a form with attachments", "form-json", 2,
         "A multipart (OpenRosa) submission: the form in `xml_submission_file`, a photo and a "
         "voice note in the other parts. `attachments` lists each part by name with its "
         "`content_type` and `length` in bytes. With `listen.public_url` configured (here "
         f"`{PUBLIC_URL}`), each also has a `url` where repeaterd serves the file: "
         "`GET {public_url}/a/{domain}/receiver/attachments/{form_id}/{name}` with the domain's "
         "ingest token (`Authorization: Bearer <token>`). Without `public_url` there is no `url`. "
         "No `?app_id=` here: the submission had none. The form was not filled in CommCare, so "
         "`appVersion` is `null` and no build is known."),
        ("form, json: a JSON (Kobo) submission, with a template", "kobo-json", 0,
         "A JSON submission (`Content-Type: application/json` to `/a/demo/receiver`, here the Kobo "
         "REST service sample) goes only to `form` repeaters with `format: json`, as submitted: it "
         "has no XML to convert. This repeater wraps it with the seed's template and takes only "
         "forms whose `_xform_id_string` is `groups`. Without a template the body is the submitted "
         "JSON, byte for byte."),
        ("case, xml", "case-xml", 0,
         "The case the seed form created: its full state as a v2 case block, as HQ writes it. "
         "`<create>` holds `case_type`, `case_name` and `owner_id` (the `user_id` when no owner "
         "was given); `<update>` holds `external_id` when set, `date_opened` as a date, then the "
         "case's properties sorted by name; `<index>` the indices sorted by name, with "
         "`relationship=\"extension\"` only for extension indices. `date_modified` is in UTC "
         "(`2015-04-17T16:04:54.950-04` becomes `2015-04-17T20:04:54.950000Z`); `user_id` is the "
         "user who last changed the case."),
        ("case, xml: a closed case", "case-xml", 1,
         "The same case after a later form closed it: its full state, then `<close/>`."),
        ("case, xml: a case with properties and an index", "case-xml", 2,
         "A case posted to `/a/demo/cases` as a v2 case block (a child of the case above)."),
        ("case, json", "case-json", 0,
         "The case the seed form created, as JSON. `properties` holds `case_name`, `case_type`, "
         "`date_opened`, `owner_id` and `external_id` (`null` when not set) beside the case's own "
         "properties; `indices` maps each index name to `case_type`, `case_id` and "
         "`relationship`; `attachments` maps each case attachment's name to `url` and "
         "`content_type` (see the differences below); `xform_ids` lists every form that touched "
         "the case."),
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
         "After `POST /a/demo/apps/db9f874f0219444ee7848ddd023e292e` with an empty body: the app id, "
         "with `Content-Type: text/xml` as HQ sends it. `format` cannot be set."),
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
        out.append(f"## {title}\n\n{text}\n\n{config}```http\n{render_request(t.request(name, i), ids)}\n```\n")
    out.append(render_differences(t))
    doc = "\n".join(out)
    # Determinism: nothing volatile may be left (record ids, request ids, server times, ports).
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
        self.assertIsNotNone(d.case("by-the-bot"), "an excluded user's case is still stored")
        ep.wait_count(1, 10)
        ep.assert_quiet(1, 0.3)



# --------------------------------------------------------------------------- one daemon per test

def on_path(ep: Endpoint, path: str, n: int, timeout: float = WAIT) -> list:
    """Waits for n requests on path; returns them in arrival order."""
    ep.wait_for(lambda rs: len([r for r in rs if r.path == path]) >= n, timeout, f"{n} request(s) to {path}")
    return [r for r in ep.snapshot() if r.path == path]


def forms_and_cases(test: DaemonTestCase, **kw):
    """A daemon with a form/json repeater (/fj), a case/xml one (/cx) and a case/json one (/cj)."""
    ep = test.endpoint()
    reps = [("fj", "form", "json"), ("cx", "case", "xml"), ("cj", "case", "json")]
    d = test.daemon([connection(n, ep.url(f"/{n}")) for n, _, _ in reps],
                    [typed_repeater(n, n, t, f) for n, t, f in reps], **kw)
    return d, ep


class FormJsonMappingTest(DaemonTestCase):
    """HQ's xml2json (convert_xform_to_json) on forms made to exercise it, golden against
    couchforms test_post's expected `*-sql.json` where HQ has one."""

    def forwarded_form(self, d, ep, body: bytes, n: int) -> dict:
        self.assertSubmitted(d.submit(body), 201, records=1)
        req = ep.wait_count(n, WAIT)[n - 1]
        self.assertEqual(req.headers.get("content-type"), "application/json")
        return json.loads(req.body)

    def test_hq_post_goldens_namespaces_and_unicode(self):
        """couchforms test_post: namespaces.xml -> namespaces-sql.json["form"] and unicode.xml ->
        unicode-sql.json["form"] (commit 160b2d62's namespace), verbatim. Neither has meta: the
        form gets a generated id, and metadata is null (HQ: no meta, no metadata)."""
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [typed_repeater("fj", "inbox", "form", "json")])

        body = self.forwarded_form(d, ep, fixture("couchforms_posts_namespaces.xml"), 1)
        self.assertEqual(body["form"], {
            "#type": "form",
            "@uiVersion": "1",
            "@version": "1",
            "@xmlns": "http://commcarehq.org/test/ns",
            "empty": "no namespace here",
            "flat": {"#text": "flat namespace", "@xmlns": "http://commcarehq.org/test/flatns"},
            "lastempty": "nothing here either",
            "parent": {
                "@xmlns": "http://commcarehq.org/test/parent",
                "childwith": {"#text": "cw", "@xmlns": "http://commcarehq.org/test/child1"},
                "childwithelement": {"@xmlns": "http://commcarehq.org/test/child2", "grandchild": "gc"},
                "childwithout": "cwo",
                "lastchildwithout": "lcwo",
            },
        })
        self.assertRegex(body["id"], UUID_RE, "HQ: str(uuid.uuid4()) for a form without instanceID")
        self.assertEqual((body["metadata"], body["type"], body["version"], body["uiversion"]),
                         (None, "form", "1", "1"))

        body = self.forwarded_form(d, ep, fixture("couchforms_posts_unicode.xml"), 2)
        self.assertEqual(body["form"], {"#type": "unicode", "@xmlns": "http://org.commcarehq/app/unicode",
                                        "datum": "统一码"})
        self.assertEqual((body["version"], body["uiversion"]), ("", ""), "HQ: form_data.get('@version', '')")
        self.assertIn("统一码".encode(), ep.snapshot()[1].body, "UTF-8 as is, not \\u escapes")

    def test_repeats_mixed_text_attributes_and_meta(self):
        """xml2json's rules (dimagi/xml2json lib.py): repeated siblings -> array in document order,
        #text only beside children/attributes and not blank, untrimmed leaf text, "" for an
        empty element, a prefixed element's own namespace as @xmlns; and the meta HQ's form API
        completes (timeStart/timeEnd None when not dates, app versions and geo_point None)."""
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [typed_repeater("fj", "inbox", "form", "json")])
        iid = str(uuid.uuid4())
        mixed = (f'<?xml version="1.0"?><data xmlns="http://example.org/mixed" name="m">'
                 f'<group>before<q>1</q></group><item>a</item><other>x</other><item>b</item>'
                 f'<rep><v>1</v></rep><rep><v>2</v></rep><rep><v>3</v></rep>'
                 f'<blank/><spaces>  two  </spaces><attr unit="cm">12</attr>'
                 f'<p:tagged xmlns:p="http://example.org/p">t</p:tagged>'
                 f'<meta><instanceID>{iid}</instanceID></meta></data>').encode()
        body = self.forwarded_form(d, ep, mixed, 1)
        self.assertEqual(body["form"], {
            "#type": "data", "@name": "m", "@xmlns": "http://example.org/mixed",
            "group": {"#text": "before", "q": "1"},
            "item": ["a", "b"],
            "other": "x",
            "rep": [{"v": "1"}, {"v": "2"}, {"v": "3"}],
            "blank": "",
            "spaces": "  two  ",
            "attr": {"#text": "12", "@unit": "cm"},
            "tagged": {"#text": "t", "@xmlns": "http://example.org/p"},
            "meta": {"app_build_version": None, "commcare_version": None, "geo_point": None,
                     "instanceID": iid, "timeEnd": None, "timeStart": None},
        })
        self.assertEqual(body["metadata"], {"appVersion": None, "app_build_version": None, "commcare_version": None,
                                            "geo_point": None, "instanceID": iid, "location": None},
                         "clean_metadata drops the None timeStart/timeEnd")
        self.assertEqual(ep.snapshot()[0].body, hq_json(body))


class AttachmentsWithoutPublicUrlTest(DaemonTestCase):

    def test_attachments_listed_without_url(self):
        """XFormInstanceResource.dehydrate_attachments without a public address: content_type and
        length only, no url key."""
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [typed_repeater("fj", "inbox", "form", "json")])
        ctype, body = attach_submission()
        self.assertSubmitted(d.submit(body, content_type=ctype), 201, records=1)
        sent = json.loads(ep.wait_count(1, WAIT)[0].body)
        self.assertEqual(sent["attachments"], {name: {"content_type": c, "length": len(data)}
                                               for name, c, data in ATTACHMENTS})
        self.assertFalse(sent["is_phone_submission"], "no X-OpenRosa-Version header")


# A form with every kind of date/time answer, and a case created, updated and closed in one
# block without user_id or owner_id (HQ takes meta/userID, and the user as the owner).
DATES_FORM_ID = "3b8e41c6-0f52-4b7a-a9d3-6c1e2f804d57"
DATES_CASE_ID = "c2f1d6e8-93a4-4b0e-8d7c-5e2a1b9f0c36"
DATES_FORM = f"""<?xml version='1.0' ?>
<data xmlns="http://example.org/forms/dates" uiVersion="1" version="3" name="Dates">
  <dob>2015-04-03</dob>
  <visit>2015-04-17T16:04:54.950-04</visit>
  <no_tz>2013-03-09T06:30:09.007</no_tz>
  <plus3>2013-03-09T06:30:09.007+03</plus3>
  <not_a_datetime>2015-07-14 2015-06-07 </not_a_datetime>
  <n0:case xmlns:n0="{CASE_V2_NS}" case_id="{DATES_CASE_ID}" date_modified="2015-04-17T16:04:54.950-04">
    <n0:create><n0:case_type>visit</n0:case_type><n0:case_name>Visit 1</n0:case_name></n0:create>
    <n0:update>
      <n0:zeta>z</n0:zeta>
      <n0:dob>2015-04-03</n0:dob>
      <n0:external_id>EXT-1</n0:external_id>
      <n0:visit_time>2015-04-17T16:04:54.950-04</n0:visit_time>
      <n0:alpha>a</n0:alpha>
    </n0:update>
    <n0:close/>
  </n0:case>
  <meta xmlns="{META_NS}">
    <timeStart>2015-04-17T16:04:42.383-04</timeStart>
    <timeEnd>2015-04-17</timeEnd>
    <location>42.7 -21 0 0</location>
    <userID>{SEED_USER_ID}</userID>
    <instanceID>{DATES_FORM_ID}</instanceID>
  </meta>
</data>""".encode()


class FormDatesTest(DaemonTestCase):
    """HQ's adjust_datetimes (and test_adjust_datetimes' vectors, timezone processing on),
    clean_metadata's times, TransformXformForESTest's location; and a case created and closed
    in one form."""

    def run_dates_form(self):
        d, ep = forms_and_cases(self)
        self.assertSubmitted(d.submit(DATES_FORM), 201, records=3)
        return (json.loads(on_path(ep, "/fj", 1)[0].body), on_path(ep, "/cx", 1)[0],
                json.loads(on_path(ep, "/cj", 1)[0].body))

    def test_datetimes_to_utc_dates_untouched(self):
        form_json, _, case = self.run_dates_form()
        form = form_json["form"]
        self.assertEqual({k: form[k] for k in ("dob", "visit", "no_tz", "plus3", "not_a_datetime")}, {
            "dob": "2015-04-03",                          # test_date_no_change
            "visit": "2015-04-17T20:04:54.950000Z",       # the seed's offset time, in UTC
            "no_tz": "2013-03-09T06:30:09.007000Z",       # test_no_tz
            "plus3": "2013-03-09T03:30:09.007000Z",       # test_strip_tz, timezones processed
            "not_a_datetime": "2015-07-14 2015-06-07 ",   # test_match_no_parse
        })
        self.assertEqual(form["case"]["@date_modified"], "2015-04-17T20:04:54.950000Z")
        self.assertEqual(form["case"]["update"]["visit_time"], "2015-04-17T20:04:54.950000Z",
                         "adjust_datetimes reaches case properties in the form too")
        self.assertEqual(form["case"]["update"]["dob"], "2015-04-03")
        # form.meta: a date-only timeEnd is a valid date and stays as it is; metadata (clean_metadata)
        # makes it midnight UTC. TransformXformForESTest: '42.7 -21 0 0' -> {'lat': 42.7, 'lon': -21}.
        self.assertEqual({k: form["meta"][k] for k in ("timeStart", "timeEnd", "location", "geo_point")},
                         {"timeStart": "2015-04-17T20:04:42.383000Z", "timeEnd": "2015-04-17",
                          "location": "42.7 -21 0 0", "geo_point": {"lat": 42.7, "lon": -21}})
        self.assertEqual({k: form_json["metadata"][k] for k in ("timeStart", "timeEnd", "location", "geo_point")},
                         {"timeStart": "2015-04-17T20:04:42.383000Z", "timeEnd": "2015-04-17T00:00:00.000000Z",
                          "location": "42.7 -21 0 0", "geo_point": "lat:42.7, lon:-21.0"})
        self.assertEqual((case["date_modified"], case["properties"]["date_opened"], case["properties"]["dob"]),
                         ("2015-04-17T20:04:54.950000Z", "2015-04-17T20:04:54.950000Z", "2015-04-03"))

    def test_case_created_and_closed_in_one_form(self):
        """HQ CommCareCase.to_xml(V2, include_case_on_closed=True) for a case created, updated and
        closed by one block: type, name, owner (the user: the block has no user_id, so the
        form's meta/userID), external_id, date_opened, properties sorted, then <close/>."""
        _, xml_req, case = self.run_dates_form()
        self.assertEqual(xml_req.headers.get("content-type"), "text/xml")
        self.assertEqual(xml_req.body, compact_xml(f"""
            <case case_id="{DATES_CASE_ID}" date_modified="2015-04-17T20:04:54.950000Z" user_id="{SEED_USER_ID}" xmlns="{CASE_V2_NS}">
              <create>
                <case_type>visit</case_type>
                <case_name>Visit 1</case_name>
                <owner_id>{SEED_USER_ID}</owner_id>
              </create>
              <update>
                <external_id>EXT-1</external_id>
                <date_opened>2015-04-17</date_opened>
                <alpha>a</alpha>
                <dob>2015-04-03</dob>
                <visit_time>VISIT_TIME</visit_time>
                <zeta>z</zeta>
              </update>
              <close/>
            </case>""".replace("VISIT_TIME", xml_visit_time(xml_req.body))))
        self.assertEqual({k: case[k] for k in ("case_id", "closed", "date_closed", "user_id", "xform_ids")},
                         {"case_id": DATES_CASE_ID, "closed": True, "date_closed": "2015-04-17T20:04:54.950000Z",
                          "user_id": SEED_USER_ID, "xform_ids": [DATES_FORM_ID]})
        self.assertEqual({k: v for k, v in case["properties"].items() if k != "visit_time"},
                         {"alpha": "a", "case_name": "Visit 1", "case_type": "visit",
                          "date_opened": "2015-04-17T20:04:54.950000Z", "dob": "2015-04-03", "external_id": "EXT-1",
                          "owner_id": SEED_USER_ID, "zeta": "z"})

    def test_case_property_datetimes_in_utc_as_hq(self):
        """HQ runs adjust_datetimes over the form before it updates cases, so a date-and-time
        case property is stored and forwarded in UTC."""
        _, xml_req, case = self.run_dates_form()
        self.assertEqual(xml_visit_time(xml_req.body), "2015-04-17T20:04:54.950000Z")
        self.assertEqual(case["properties"]["visit_time"], "2015-04-17T20:04:54.950000Z")

    def test_submit_ip_is_the_address_alone_as_hq(self):
        """HQ's submit_ip is the client's address, without the port."""
        form_json, _, _ = self.run_dates_form()
        self.assertEqual(form_json["submit_ip"], "127.0.0.1")


def xml_visit_time(body: bytes) -> str:
    el = ET.fromstring(body).find(f"{{{CASE_V2_NS}}}update/{{{CASE_V2_NS}}}visit_time")
    return el.text if el is not None else "<missing>"


class CaseGoldenTest(DaemonTestCase):
    """Case XML and JSON against HQ's casexml tests and generator code."""

    def test_index_update_as_hq_test_v2_parsing(self):
        """test_v2_parsing.testParseWithIndices: basic_create, the two referenced cases, then
        index_update; get_case_xml(case, [create, update], V2) must equal HQ's literal (indices
        sorted, no relationship attribute for child indices, owner defaulting to the user)."""
        d, ep = forms_and_cases(self)
        self.assertSubmitted(d.submit(fixture("casexml_v2_basic_create.xml")), 201, records=3)
        on_path(ep, "/cx", 1)
        for ref in ("some_referenced_id", "some_other_referenced_id"):
            self.assertJsonAccepted(d.post("/a/demo/cases", f'<case xmlns="{CASE_V2_NS}" case_id="{ref}" '
                                           f'user_id="bar-user-id"><create><case_type/><case_name/></create></case>',
                                           content_type="text/xml"), 201, 2)
        on_path(ep, "/cx", 3)
        self.assertSubmitted(d.submit(fixture("casexml_v2_index_update.xml")), 201, records=3)
        xml_req = on_path(ep, "/cx", 4)[3]
        self.assertEqual(xml_req.body, compact_xml(HQ_PARSE_WITH_INDICES_XML))
        case = json.loads(on_path(ep, "/cj", 4)[3].body)
        self.assertEqual(case["indices"], {   # HQ get_index_map
            "baz_ref": {"case_id": "some_other_referenced_id", "case_type": "bop", "relationship": "child"},
            "foo_ref": {"case_id": "some_referenced_id", "case_type": "bar", "relationship": "child"}})
        self.assertEqual((case["date_modified"], case["properties"]["date_opened"], len(case["xform_ids"])),
                         ("2011-12-07T13:42:50.000000Z", "2011-12-06T13:42:50.000000Z", 2))

    def test_extension_index_and_missing_target(self):
        """V2CaseXMLGenerator.get_index_element: relationship="extension" only for extension
        indices. The host does not exist: HQ would refuse (InvalidCaseIndex), repeaterd keeps it."""
        d, ep = forms_and_cases(self)
        self.assertJsonAccepted(d.post("/a/demo/cases", f"""<case xmlns="{CASE_V2_NS}" case_id="ext-case"
            user_id="u-1" date_modified="2011-12-07T13:00:00Z"><create><case_type>t</case_type>
            <case_name>e</case_name><owner_id>team-1</owner_id></create>
            <index><host case_type="household" relationship="extension">no-such-host</host>
            <a_parent case_type="person" relationship="child">no-such-parent</a_parent></index></case>""",
                                       content_type="text/xml"), 201, 2)
        root = ET.fromstring(on_path(ep, "/cx", 1)[0].body)
        index = root.find(f"{{{CASE_V2_NS}}}index")
        self.assertEqual([(c.tag.split("}")[1], dict(c.attrib), c.text) for c in index], [
            ("a_parent", {"case_type": "person"}, "no-such-parent"),
            ("host", {"case_type": "household", "relationship": "extension"}, "no-such-host")])
        self.assertEqual(root.find(f"{{{CASE_V2_NS}}}create/{{{CASE_V2_NS}}}owner_id").text, "team-1")
        case = json.loads(on_path(ep, "/cj", 1)[0].body)
        self.assertEqual(case["indices"], {
            "a_parent": {"case_id": "no-such-parent", "case_type": "person", "relationship": "child"},
            "host": {"case_id": "no-such-host", "case_type": "household", "relationship": "extension"}})

    def test_case_attachment(self):
        """A case block's <attachment>: case XML writes it from the block (HQ: only with its
        MM_CASE_PROPERTIES flag, and its own URLs); case JSON lists it with url and content_type
        null (HQ: the stored file's)."""
        d, ep = forms_and_cases(self)
        form = f"""<?xml version='1.0' ?>
<data xmlns="http://example.org/forms/photo-case">
  <n0:case xmlns:n0="{CASE_V2_NS}" case_id="photo-case" date_modified="2015-04-17T16:04:54.950-04" user_id="{SEED_USER_ID}">
    <n0:create><n0:case_type>tree</n0:case_type><n0:case_name>Oak 2</n0:case_name></n0:create>
    <n0:attachment><n0:leaf_photo src="leaf.jpg" from="local"/></n0:attachment>
  </n0:case>
  <meta xmlns="{META_NS}"><userID>{SEED_USER_ID}</userID><instanceID>{uuid.uuid4()}</instanceID></meta>
</data>""".encode()
        ctype, body = multipart([("xml_submission_file", "xml_submission_file", "text/xml", form),
                                 ("leaf.jpg", "leaf.jpg", "image/jpeg", LEAF_JPG)])
        self.assertSubmitted(d.submit(body, content_type=ctype), 201, records=3)
        self.assertEqual(on_path(ep, "/cx", 1)[0].body, compact_xml(f"""
            <case case_id="photo-case" date_modified="2015-04-17T20:04:54.950000Z" user_id="{SEED_USER_ID}" xmlns="{CASE_V2_NS}">
              <create>
                <case_type>tree</case_type>
                <case_name>Oak 2</case_name>
                <owner_id>{SEED_USER_ID}</owner_id>
              </create>
              <update>
                <date_opened>2015-04-17</date_opened>
              </update>
              <attachment>
                <leaf_photo src="leaf.jpg" from="local"/>
              </attachment>
            </case>"""))
        case = json.loads(on_path(ep, "/cj", 1)[0].body)
        self.assertEqual(case["attachments"], {"leaf_photo": {"content_type": None, "url": None}})
        form_json = json.loads(on_path(ep, "/fj", 1)[0].body)
        self.assertEqual(form_json["attachments"], {"leaf.jpg": {"content_type": "image/jpeg", "length": len(LEAF_JPG)}})

    def test_out_of_order_forms(self):
        """test_out_of_order_processing: update_oo.xml arrives before create_oo.xml; the later
        (phone time) update form's values win."""
        d, ep = forms_and_cases(self)
        self.assertSubmitted(d.submit(fixture("casexml_ordering_update_oo.xml")), 201, records=3)
        on_path(ep, "/cj", 1)
        self.assertSubmitted(d.submit(fixture("casexml_ordering_create_oo.xml")), 201, records=3)
        case = json.loads(on_path(ep, "/cj", 2)[1].body)
        self.assertEqual({k: case["properties"].get(k) for k in ("pupdate", "pcreate", "pboth", "case_name", "case_type")},
                         {"pupdate": "from the update form", "pcreate": "from the create form",
                          "pboth": "overridden by the update form", "case_name": "out of order case",
                          "case_type": "mother"})
        self.assertEqual(case["date_modified"], "2013-10-07T11:10:11.163000Z")


class PayloadFixedAtCreationTest(DaemonTestCase):

    def test_a_retry_sends_the_bytes_made_at_creation(self):
        """spec §5: a record's payload is fixed when it is created. The first case record fails
        once; a second form changes the case before the retry; the retry still carries the first
        form's state (HQ would send the case as it is at the retry)."""
        ep = self.endpoint(replies=[Reply(500, b"busy")])
        d = self.daemon([connection("inbox", ep.url("/cj"))],
                        [typed_repeater("cj", "inbox", "case", "json", retry={"initial": "1s", "jitter": 0})])
        case_id = str(uuid.uuid4())

        def form(value: str, modified: str) -> bytes:
            return f"""<?xml version='1.0' ?><data xmlns="http://example.org/forms/fixed">
<case xmlns="{CASE_V2_NS}" case_id="{case_id}" user_id="{SEED_USER_ID}" date_modified="{modified}">
<create><case_type>tree</case_type><case_name>Oak</case_name></create><update><height_m>{value}</height_m></update></case>
<meta xmlns="{META_NS}"><instanceID>{uuid.uuid4()}</instanceID></meta></data>""".encode()

        self.assertSubmitted(d.submit(form("3", "2015-04-17T10:00:00Z")), 201, records=1)
        ep.wait_for(lambda rs: rs and rs[0].status is not None, WAIT, "the first attempt answered")
        first = on_path(ep, "/cj", 1)[0]
        self.assertEqual(first.status, 500)
        self.assertSubmitted(d.submit(form("4", "2015-04-18T10:00:00Z")), 201, records=1)
        reqs = on_path(ep, "/cj", 3, timeout=15)
        key = first.headers["idempotency-key"]
        retry = [r for r in reqs[1:] if r.headers["idempotency-key"] == key]
        later = [r for r in reqs[1:] if r.headers["idempotency-key"] != key]
        self.assertEqual((len(retry), len(later)), (1, 1), [r.headers for r in reqs])
        self.assertEqual(retry[0].body, first.body, "the retry sends the same bytes")
        self.assertEqual(json.loads(retry[0].body)["properties"]["height_m"], "3")
        self.assertEqual(json.loads(later[0].body)["properties"]["height_m"], "4")



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
