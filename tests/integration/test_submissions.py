"""The receiver's submission formats (spec §3): OpenRosa multipart with attachments, JSON
(Kobo-style) submissions, device reports, and the 400/415 rejections, each with the database
unchanged."""

from __future__ import annotations

import json
import unittest
import uuid

from harness import (DEVICE_REPORT_NS, SEED_APP_ID, DaemonTestCase, connection, multipart, seed_form,
                     typed_repeater, unique_form)

# A JPEG-looking binary with every byte value, CR/LF runs and near-boundaries inside.
JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        + bytes(range(256)) * 4
        + b"\r\n--\r\n\r\n--" + b"----repeaterd" + b"\r\n" + b"\x00" * 16 + b"--\r\n"
        + b"\xff\xd9")


def device_report(with_case: bool = True) -> bytes:
    case = (b'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="in-a-report" user_id="u" '
            b'date_modified="2014-10-13T09:10:30"><create><case_type>t</case_type><case_name>n</case_name>'
            b'</create></case>') if with_case else b""
    return (b"<?xml version='1.0' encoding='UTF-8' ?>\n"
            b'<device_report xmlns="' + DEVICE_REPORT_NS.encode() + b'">'
            b"<device_id>351780060530179</device_id><report_date>" + str(uuid.uuid4()).encode() +
            b"</report_date><log_subreport><log date=\"2014-10-08T10:43:38.793+02\"><type>user</type>"
            b"<msg>login|ricatla</msg>" + case + b"</log></log_subreport></device_report>")


class SubmissionsTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.ep = self.endpoint()
        self.d = self.daemon([connection("inbox", self.ep.url())],
                             [typed_repeater("forms", "inbox", "form", "xml"),
                              typed_repeater("forms-json", "inbox", "form", "json"),
                              typed_repeater("cases", "inbox", "case", "json")])

    def attachments_of(self, payload_id: str) -> list[tuple]:
        return self.d.db.query("SELECT a.name, a.filename, a.content_type, a.body FROM attachments a "
                               "JOIN payloads p ON p.id = a.payload WHERE p.payload_id = ? ORDER BY a.name",
                               (payload_id,))

    # -- multipart

    def test_multipart_odk_style_with_binary_attachment(self):
        iid, form = unique_form()
        notes = "Notes: ünïcödé, CRLF\r\nand a line\n".encode()
        ctype, body = multipart([("xml_submission_file", "submission.xml", "text/xml", form),
                                 ("photo.jpg", "photo.jpg", "image/jpeg", JPEG),
                                 ("notes.txt", "notes.txt", "text/plain", notes)])
        self.assertIn(JPEG, body)
        resp = self.d.submit(body, content_type=ctype, app_id=SEED_APP_ID)
        info = self.assertSubmitted(resp, 201, records=3)   # form xml, form json, the seed's case
        self.assertEqual(info["form_id"], iid)

        self.assertEqual(self.attachments_of(iid),
                         [("notes.txt", "notes.txt", "text/plain", notes),
                          ("photo.jpg", "photo.jpg", "image/jpeg", JPEG)],
                         "attachments must be stored byte for byte")
        self.assertEqual(self.d.db.query("SELECT payload_type, body(body, encoding) FROM payloads WHERE payload_id = ?", (iid,)),
                         [("form", form)], "the payload is the XForm part alone")

        got = self.ep.wait_count(3, 10)
        xml = [r for r in got if r.headers.get("content-type") == "text/xml"]
        self.assertEqual(len(xml), 1)
        self.assertEqual(xml[0].body, form, "the form is forwarded byte-identical")
        self.assertEqual(xml[0].query, f"app_id={SEED_APP_ID}")
        js = [json.loads(r.body) for r in got if r.headers.get("content-type") == "application/json"]
        self.assertIn(iid, [j.get("id") for j in js])

    def test_multipart_quoted_boundary_and_extra_parameters(self):
        iid, form = unique_form()
        boundary = "odk collect boundary 42"
        _, body = multipart([("xml_submission_file", "x.xml", "text/xml; charset=utf-8", form),
                             ("a.jpg", "a.jpg", "image/jpeg", JPEG[:100])], boundary=boundary)
        ctype = f'multipart/form-data; charset=utf-8; boundary="{boundary}"'
        info = self.assertSubmitted(self.d.submit(body, content_type=ctype), 201, records=3)
        self.assertEqual(info["form_id"], iid)
        self.assertEqual([r[3] for r in self.attachments_of(iid)], [JPEG[:100]])

    def test_malformed_multipart_400(self):
        before = self.d.db.snapshot()
        _, form = unique_form()
        ctype, good = multipart([("xml_submission_file", "x.xml", "text/xml", form)], boundary="BOUNDARY")
        cases = {
            "no boundary parameter": ("multipart/form-data", good),
            "no closing delimiter": (ctype, good[: good.rindex(b"--BOUNDARY--")]),
            "truncated inside a part": (ctype, good[: len(good) // 2]),
            "another boundary in the body": ("multipart/form-data; boundary=OTHER", good),
            "not multipart at all": (ctype, b"just some bytes\r\n"),
            "part without headers' end": (ctype, b"--BOUNDARY\r\nContent-Disposition: form-data; "
                                                 b'name="xml_submission_file"\r\n' + form + b"\r\n--BOUNDARY--\r\n"),
        }
        for what, (ct, body) in cases.items():
            with self.subTest(what=what):
                resp = self.d.submit(body, content_type=ct)
                self.assertRejectedUnchanged(self.d, before, resp, 400, r"multipart|boundary|part")
                self.assertEqual(resp.openrosa()["nature"], "submit_error", "XForm clients get OpenRosa")
        self.ep.assert_quiet(0, 0.2)

    def test_multipart_without_xml_submission_file_400(self):
        before = self.d.db.snapshot()
        _, form = unique_form()
        for parts in ([("photo.jpg", "photo.jpg", "image/jpeg", JPEG)],
                      [("xml_submission", "x.xml", "text/xml", form)]):    # a near miss of the name
            with self.subTest(parts=[p[0] for p in parts]):
                ctype, body = multipart(parts)
                self.assertRejectedUnchanged(self.d, before, self.d.submit(body, content_type=ctype), 400,
                                             r"xml_submission_file")
        self.ep.assert_quiet(0, 0.2)

    def test_multipart_with_bad_xform_400(self):
        before = self.d.db.snapshot()
        ctype, body = multipart([("xml_submission_file", "x.xml", "text/xml", b"<data><broken></data>")])
        self.assertRejectedUnchanged(self.d, before, self.d.submit(body, content_type=ctype), 400,
                                     r"line \d+, column \d+")

    # -- JSON submissions

    def test_json_submission_ids_and_forwarding(self):
        def kobo(**fields):
            return json.dumps({"group1/name": "twenty", "_xform_id_string": "groups", **fields}).encode()
        a, b, c = (str(uuid.uuid4()) for _ in range(3))
        variants = [
            ("meta/instanceID", kobo(**{"meta/instanceID": f"uuid:{a}", "_uuid": a}), f"uuid:{a}"),
            ("meta.instanceID", kobo(meta={"instanceID": b}), b),
            ("_uuid", kobo(_uuid=c), c),
        ]
        for what, body, expected_id in variants:
            with self.subTest(id_from=what):
                info = self.assertJsonAccepted(self.d.submit(body, content_type="application/json"), 201, 1)
                self.assertEqual((info["id"], info["case_ids"]), (expected_id, []))
                self.assertEqual(self.d.db.query("SELECT payload_type, xmlns FROM payloads WHERE payload_id = ?",
                                                 (expected_id,)), [("form", "groups")])
        got = self.ep.wait_count(3, 10)
        self.ep.assert_quiet(3, 0.3)
        # Records of different forms go out concurrently, so the order they arrive in is not
        # the order they were submitted in.
        self.assertEqual(sorted(r.body for r in got), sorted(v[1] for v in variants),
                         "JSON submissions go to form/json repeaters only, as submitted")
        self.assertEqual({r.headers.get("content-type") for r in got}, {"application/json"})

        # The same id and bytes again: a duplicate.
        dup = self.assertJsonAccepted(self.d.submit(variants[2][1], content_type="application/json"), 202, 0)
        self.assertEqual(dup["id"], c)
        self.ep.assert_quiet(3, 0.3)

    def test_json_submission_rejections_400(self):
        before = self.d.db.snapshot()
        cases = {
            "no id": (b'{"group1/name": "twenty", "_xform_id_string": "groups"}', r"id|instanceID|_uuid"),
            "empty ids": (b'{"meta/instanceID": "", "_uuid": "", "meta": {"instanceID": ""}}', r"id|instanceID|_uuid"),
            "not an object": (b'[{"_uuid": "x"}]', r"object"),
            "not JSON": (b'{"_uuid": "x",', r"JSON"),
        }
        for what, (body, reason) in cases.items():
            with self.subTest(what=what):
                self.assertRejectedUnchanged(self.d, before, self.d.submit(body, content_type="application/json"),
                                             400, reason)
        self.ep.assert_quiet(0, 0.2)

    # -- 415

    def test_unsupported_content_types_415(self):
        before = self.d.db.snapshot()
        _, form = unique_form()
        for ctype in ("text/plain", "application/octet-stream", "application/x-www-form-urlencoded",
                      "image/jpeg"):
            with self.subTest(ctype=ctype):
                self.assertRejectedUnchanged(self.d, before, self.d.submit(form, content_type=ctype), 415)

    # -- device reports

    def test_device_report_stored_without_records(self):
        report = device_report()
        resp = self.d.submit(report)
        info = self.assertSubmitted(resp, 201, records=0)
        self.assertTrue(info["message"])
        # Also as OpenRosa multipart, the way CommCare phones send them.
        other = device_report()
        ctype, body = multipart([("xml_submission_file", "log.xml", "text/xml", other)])
        self.assertSubmitted(self.d.submit(body, content_type=ctype), 201, records=0)

        self.assertEqual(sorted(self.d.db.query("SELECT payload_type, body(body, encoding) FROM payloads")),
                         sorted([("device_report", report), ("device_report", other)]))
        self.assertEqual(self.d.db.count("records"), 0)
        self.assertIsNone(self.d.case("in-a-report"), "case blocks in a device report are ignored")
        self.assertEqual(self.d.db.count("cases"), 0)
        self.ep.assert_quiet(0, 0.5)

        # A regular form still goes through the same daemon.
        self.assertSubmitted(self.d.submit(seed_form()), 201, records=3)


if __name__ == "__main__":
    unittest.main()
