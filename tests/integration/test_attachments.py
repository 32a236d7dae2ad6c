"""Form attachments served back to receivers: GET /a/{domain}/receiver/attachments/{form_id}/{name}
answers the exact stored bytes with the stored Content-Type, authenticates like the other ingest
endpoints, and says which form or attachment is unknown."""

from __future__ import annotations

import unittest
from urllib.parse import quote

from harness import OTHER_TOKEN, TOKEN, DaemonTestCase, connection, form_with_id, multipart, seed_form, \
    submit, typed_repeater, unique_form

# Every byte value, CR/LF runs and something that looks like a multipart boundary.
BINARY = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8
          + b"\r\n--\r\n\r\n----repeaterd\r\n" + b"\x00" * 32 + b"--\r\n" + bytes(range(255, -1, -1)) + b"\xff\xd9")
NOTES = "Notes: ünïcödé, CRLF\r\nand a line\n".encode()
VOICE = b"\x00\x00\x00\x20ftypM4A " + bytes(range(256))
SPACED = "voice note 1.m4a"


def url(form_id: str, name: str, domain: str = "demo") -> str:
    return f"/a/{quote(domain, safe='')}/receiver/attachments/{quote(form_id, safe='')}/{quote(name, safe='')}"


class AttachmentsTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.ep = self.endpoint()
        self.d = self.daemon([connection("inbox", self.ep.url())],
                             [typed_repeater("forms", "inbox", "form", "xml")])

    def get(self, path: str, *, token: str | None = TOKEN, method: str = "GET", **kw):
        return submit(self.d.port, b"", path=path, method=method, token=token, content_type=None, **kw)

    def submit_with(self, parts: list[tuple], instance_id: str | None = None,
                    base: bytes | None = None) -> str:
        if instance_id is None:
            instance_id, form = unique_form(base)
        else:
            form = form_with_id(instance_id, base)
        ctype, body = multipart([("xml_submission_file", "submission.xml", "text/xml", form), *parts])
        resp = self.d.submit(body, content_type=ctype)
        self.assertIn(resp.status, (201,), f"body: {resp.body[:500]!r}")
        return instance_id

    def assertServed(self, path: str, body: bytes, content_type: str, **kw) -> None:
        resp = self.get(path, **kw)
        self.assertEqual(resp.status, 200, f"GET {path}: {resp.body[:300]!r}")
        self.assertEqual(resp.header("Content-Type"), content_type)
        self.assertEqual(resp.header("Content-Length"), str(len(body)))
        self.assertEqual(len(resp.body), len(body), f"GET {path}: wrong length")
        self.assertTrue(resp.body == body, f"GET {path}: the bytes differ from those submitted")

    def assertJsonError(self, resp, status: int, *must_contain: str) -> str:
        self.assertEqual(resp.status, status, f"body: {resp.body[:500]!r}")
        self.assertIn("json", (resp.header("Content-Type") or "").lower())
        why = resp.json()["error"]
        for part in must_contain:
            self.assertIn(part, why)
        return why

    # -- 200

    def test_binary_attachment_round_trip(self):
        self.assertEqual(len(set(BINARY)), 256)
        iid = self.submit_with([("photo.jpg", "photo.jpg", "image/jpeg", BINARY),
                                ("notes.txt", "notes.txt", "text/plain; charset=utf-8", NOTES),
                                ("blob", None, None, b"\x00\x01\x02 untyped")])
        self.assertServed(url(iid, "photo.jpg"), BINARY, "image/jpeg")
        self.assertServed(url(iid, "notes.txt"), NOTES, "text/plain; charset=utf-8")
        # A part sent without a Content-Type is served as opaque bytes.
        self.assertServed(url(iid, "blob"), b"\x00\x01\x02 untyped", "application/octet-stream")
        # Basic auth with the token as the password works too.
        self.assertServed(url(iid, "photo.jpg"), BINARY, "image/jpeg", auth="basic")
        resp = self.get(url(iid, "photo.jpg"))
        self.assertEqual(resp.header("X-Content-Type-Options"), "nosniff")
        self.assertIn('filename="photo.jpg"', resp.header("Content-Disposition") or "")

    def test_percent_encoded_names(self):
        unicode_name = "fotó ünï.jpg"
        iid = self.submit_with([(SPACED, SPACED, "audio/mp4", VOICE),
                                (unicode_name, "x.jpg", "image/jpeg", BINARY[:300])])
        self.assertIn("%20", url(iid, SPACED))
        self.assertServed(url(iid, SPACED), VOICE, "audio/mp4")
        self.assertServed(url(iid, unicode_name), BINARY[:300], "image/jpeg")
        # The name is matched decoded and exactly: the encoded spelling is not another name.
        self.assertJsonError(self.get(url(iid, "voice%20note%201.m4a")), 404, iid)

    def test_edited_form_serves_the_newest_payload(self):
        iid = self.submit_with([("photo.jpg", "photo.jpg", "image/jpeg", b"version one"),
                                ("old.txt", "old.txt", "text/plain", b"only in the first")])
        self.assertServed(url(iid, "photo.jpg"), b"version one", "image/jpeg")
        # Same instanceID, other bytes: an edit, stored as a new payload.
        edited = seed_form().replace(b"</data>", b"<edited>yes</edited></data>")
        self.assertNotEqual(edited, seed_form())
        self.submit_with([("photo.jpg", "photo2.jpg", "image/png", BINARY)], instance_id=iid, base=edited)
        self.assertEqual(self.d.db.count("payloads", "payload_id = ?", (iid,)), 2)
        self.assertServed(url(iid, "photo.jpg"), BINARY, "image/png")
        self.assertJsonError(self.get(url(iid, "old.txt")), 404, iid, "old.txt", "photo.jpg")

    # -- errors

    def test_authentication(self):
        iid = self.submit_with([("photo.jpg", "photo.jpg", "image/jpeg", BINARY)])
        path = url(iid, "photo.jpg")
        for token, auth in ((None, "bearer"), ("nope", "bearer"), ("nope", "basic")):
            with self.subTest(token=token, auth=auth):
                resp = self.get(path, token=token, auth=auth)
                self.assertJsonError(resp, 401)
                self.assertTrue(resp.header("WWW-Authenticate"), "401 must carry WWW-Authenticate")
                self.assertNotIn(BINARY[:64], resp.body)
        resp = self.get(path, token=OTHER_TOKEN)
        self.assertJsonError(resp, 403, "demo")
        self.assertNotIn(BINARY[:64], resp.body)
        # The other project space's own token on its own path does not see demo's forms.
        self.assertJsonError(self.get(url(iid, "photo.jpg", domain="other"), token=OTHER_TOKEN), 404, iid)

    def test_unknown_form_or_name_404(self):
        iid = self.submit_with([("photo.jpg", "photo.jpg", "image/jpeg", BINARY),
                                ("notes.txt", "notes.txt", "text/plain", NOTES)])
        why = self.assertJsonError(self.get(url("no-such-form", "photo.jpg")), 404, '"no-such-form"')
        self.assertIn("demo", why)
        why = self.assertJsonError(self.get(url(iid, "nope.png")), 404, iid, '"nope.png"')
        self.assertIn("photo.jpg", why, "the 404 lists the names the form does have")
        self.assertIn("notes.txt", why)
        # A form sent as plain XML has no attachments at all.
        plain_id, plain = unique_form()
        self.assertEqual(self.d.submit(plain).status, 201)
        self.assertJsonError(self.get(url(plain_id, "photo.jpg")), 404, plain_id, "no attachments")

    def test_wrong_method_405(self):
        iid = self.submit_with([("photo.jpg", "photo.jpg", "image/jpeg", BINARY)])
        before = self.d.db.snapshot()
        for method in ("POST", "PUT", "DELETE"):
            with self.subTest(method=method):
                resp = submit(self.d.port, BINARY, path=url(iid, "photo.jpg"), method=method,
                              content_type="image/jpeg")
                self.assertJsonError(resp, 405, "GET")
                self.assertEqual(resp.header("Allow"), "GET")
        self.assertEqual(self.d.db.snapshot(), before, "nothing may be stored through the attachment URL")
        # The submission endpoints stay POST-only.
        for path in ("/a/demo/receiver", "/a/demo/cases", "/a/demo/apps/app-1"):
            with self.subTest(path=path):
                resp = self.get(path)
                self.assertEqual(resp.status, 405, f"body: {resp.body[:300]!r}")
                self.assertEqual(resp.header("Allow"), "POST")
        self.assertServed(url(iid, "photo.jpg"), BINARY, "image/jpeg")


if __name__ == "__main__":
    unittest.main()
