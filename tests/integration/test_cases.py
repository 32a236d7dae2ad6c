"""The case store (spec §3): every CommCare HQ fixture in tests/fixtures/commcare submitted
through the real ingest endpoint, then the stored case state asserted field by field; POST
/a/{domain}/cases with XML and JSON; the 422 rejections that remain (what HQ refuses too), with
the database unchanged; and golden tests that follow HQ's own case tests (test_v2_parsing,
test_bugs, test_out_of_order_processing), asserting the case state and the case XML/JSON a
receiver gets.

Case processing is as lenient as HQ's: a block for a case not seen yet creates it, blocks for one
case in one form are applied create first, an older form is applied as if it had arrived in
client-time order, a resubmission with different bytes is an edit. Fixtures without
meta/instanceID are accepted with a generated id (test_fixture_without_meta_gets_generated_id);
the other tests inject a <meta><instanceID> only so that they know the form id.
"""

from __future__ import annotations

import json
import unittest
import uuid
import xml.etree.ElementTree as ET

from harness import (CASE_V2_NS, HQ_PARSE_WITH_INDICES_XML, UUID_RE, DaemonTestCase, connection, fixture, typed_repeater,
                     with_meta)

# The stored state JSON (cases.state) has exactly these keys. xform_ids is not among them: the
# store derives it from the case_forms table (one row per case and form).
STATE_KEYS = {"case_id", "domain", "case_type", "case_name", "owner_id", "user_id", "external_id",
              "properties", "indices", "attachments", "closed", "date_closed", "date_opened",
              "date_modified", "server_opened_on", "server_modified_on"}

# A forwarded case JSON body has exactly these keys (spec §4), and its properties these built-ins.
CASE_JSON_KEYS = {"attachments", "case_id", "closed", "date_closed", "date_modified", "domain", "indices",
                  "properties", "server_date_modified", "server_date_opened", "user_id", "version",
                  "xform_ids"}
BUILTIN_PROPERTIES = {"external_id", "owner_id", "case_name", "case_type", "date_opened"}

V2 = f'xmlns="{CASE_V2_NS}"'


def uid() -> str:
    return uuid.uuid4().hex


def placeholders(name: str, form_id: str, case_id: str) -> bytes:
    return fixture(name).replace(b"REPLACE_UID", form_id.encode()).replace(b"REPLACE_CASEID", case_id.encode())


def xform(blocks: str, form_id: str | None, user_id: str | None = "u") -> bytes:
    """A minimal XForm carrying these case blocks, with meta/instanceID (when form_id) and
    meta/userID (when user_id)."""
    meta = (f"<instanceID>{form_id}</instanceID>" if form_id else "") + \
           (f"<userID>{user_id}</userID>" if user_id else "")
    return (f'<?xml version="1.0"?><data xmlns="http://example.org/f"><q>1</q>{blocks}'
            f'<meta>{meta}</meta></data>').encode()


def canonical(xml: bytes | str) -> str:
    """XML in C14N 2.0 with whitespace-only text dropped and text trimmed: equal for documents
    that differ only in attribute order, indentation, or <a/> against <a></a>."""
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8")
    return ET.canonicalize(xml_data=xml, strip_text=True)



# A case's forms: its first form sits in its own row (cases.first_form), later ones in case_forms.
ALL_CASE_FORMS_ROWS = (
    "SELECT json_extract(first_form, '$.form_id') AS form_id, domain, case_id, "
    "json_extract(first_form, '$.server_date') AS server_date, json_extract(first_form, '$.user_id') AS user_id, "
    "json_extract(first_form, '$.blocks') AS blocks FROM cases WHERE first_form IS NOT NULL "
    "UNION ALL SELECT form_id, domain, case_id, server_date, user_id, blocks FROM case_forms")
ALL_CASE_FORMS = "SELECT form_id, server_date FROM (" + ALL_CASE_FORMS_ROWS + ")"

class CaseTestBase(DaemonTestCase):
    """A daemon per test with a form repeater (xml) and a case repeater (json) to one loopback
    endpoint (and, with CASE_XML, a second case repeater in xml), plus the helpers that read
    the case store and what the endpoint got. No tests of its own."""

    CASE_XML = False

    def setUp(self):
        super().setUp()
        self.ep = self.endpoint()
        repeaters = [typed_repeater("forms", "inbox", "form", "xml"),
                     typed_repeater("cases", "inbox", "case", "json")]
        if self.CASE_XML:
            repeaters.append(typed_repeater("casexml", "inbox", "case", "xml"))
        self.d = self.daemon([connection("inbox", self.ep.url())], repeaters)

    # -- helpers

    def form(self, body: bytes, records: int | None = None, status: int = 201) -> dict:
        return self.assertSubmitted(self.d.submit(body), status, records)

    def xform_ids(self, case_id: str) -> list[str]:  # noqa: D102
        """The case's forms, as the store derives them (case_forms, in the order they came)."""
        return [r[0] for r in self.d.db.query(ALL_CASE_FORMS + " WHERE domain = 'demo' AND case_id = ? "
                                              "ORDER BY server_date, form_id", (case_id,))]

    def case(self, case_id: str) -> dict:
        """The stored state, with "xform_ids" added from case_forms."""
        c = self.d.case(case_id)
        self.assertIsNotNone(c, f"case {case_id} is not in the cases table")
        self.assertEqual(set(c) - {"_row", "xform_ids"}, STATE_KEYS, f"stored state keys of {case_id}")
        # The table's columns agree with the state.
        self.assertEqual(c["_row"]["case_type"], c["case_type"])
        self.assertEqual(bool(c["_row"]["closed"]), c["closed"])
        self.assertEqual(c["_row"]["server_modified_on"], c["server_modified_on"])
        self.assertEqual(c["domain"], "demo")
        self.assertEqual(c["case_id"], case_id)
        self.assertEqual(c["xform_ids"], self.xform_ids(case_id), f"the admin API's xform_ids of {case_id}")
        return c

    def assertCase(self, case_id: str, **expected) -> dict:
        c = self.case(case_id)
        self.assertEqual({k: c[k] for k in expected}, expected, f"case {case_id}")
        return c

    def case_bodies(self, case_id: str, n: int) -> list[dict]:
        """The case JSON bodies forwarded for that case (waits for n), oldest state first.
        Records go out concurrently, so arrival order says nothing; each later state of a case
        has one more form in xform_ids."""
        def bodies(rs):
            out = []
            for r in rs:
                if r.headers.get("content-type") == "application/json":
                    b = json.loads(r.body)
                    if b.get("case_id") == case_id:
                        out.append(b)
            return out if len(out) >= n else None
        got = self.ep.wait_for(bodies, 10, f"{n} case record(s) of {case_id}")
        return sorted(got, key=lambda b: len(b["xform_ids"]))

    def forwarded(self, repeater: str, case_id: str, n: int) -> list[tuple[str, bytes]]:
        """(form id, body) of each of the first n records of that repeater for that case, in
        the order the records were created (waits until all n have reached the endpoint). The
        request's Idempotency-Key is its record id; the record names its payload."""
        def got(rs):
            rows = self.d.db.query("SELECT r.id, p.payload_id FROM records r JOIN payloads p ON p.id = r.payload "
                                   "WHERE r.repeater = ? AND r.case_id = ? ORDER BY r.rowid", (repeater, case_id))
            by_record = {r.headers.get("idempotency-key"): r for r in rs}
            if len(rows) < n or any(rid not in by_record for rid, _ in rows[:n]):
                return None
            return [(form_id, by_record[rid]) for rid, form_id in rows[:n]]
        out = self.ep.wait_for(got, 10, f"{n} {repeater} record(s) of {case_id}")
        want = "text/xml" if repeater == "casexml" else "application/json"
        for _, r in out:
            self.assertEqual(r.headers.get("content-type"), want, r.body[:200])
            self.assertTrue(r.headers.get("server-modified-on"), "a case record carries Server-Modified-On")
        return [(form_id, r.body) for form_id, r in out]

    def case_json(self, body: bytes) -> dict:
        """A forwarded case JSON body, its keys checked (spec §4)."""
        b = json.loads(body)
        self.assertEqual(set(b), CASE_JSON_KEYS, b)
        self.assertLessEqual(BUILTIN_PROPERTIES, set(b["properties"]), b["properties"])
        self.assertEqual(b["domain"], "demo")
        return b

    def assertCaseXml(self, body: bytes, expected: str) -> None:
        """The forwarded case XML equals expected modulo attribute order and whitespace; HQ's
        lxml output has no XML declaration."""
        self.assertFalse(body.lstrip().startswith(b"<?xml"), body[:100])
        self.assertEqual(canonical(body), canonical(expected))

    def snapshot(self) -> dict:
        """db.snapshot() plus the case_forms table (what a case is rebuilt from)."""
        s = self.d.db.snapshot()
        s["case_forms"] = self.d.db.query("SELECT domain, case_id, form_id, server_date, user_id, blocks FROM ("
                                          + ALL_CASE_FORMS_ROWS + ") ORDER BY domain, case_id, server_date, form_id")
        return s

    def rejected(self, resp, reason_re: str, before: dict) -> str:
        core = {k: v for k, v in before.items() if k != "case_forms"}
        why = self.assertRejectedUnchanged(self.d, core, resp, 422, reason_re)
        self.assertEqual(self.snapshot()["case_forms"], before["case_forms"],
                         f"case_forms changed for a rejected request ({why})")
        return why


class CaseStoreTest(CaseTestBase):
    """records_created = 1 + the number of cases touched."""

    # -- create / update / close (casexml create.xml, update.xml, close.xml, create_update.xml)

    def test_create_update_close_sequence(self):
        case_id = uid()
        f1, f2, f3 = uid(), uid(), uid()
        self.form(placeholders("casexml_create.xml", f1, case_id), records=2)
        c = self.assertCase(case_id, case_type="test_case_type", case_name="test case name",
                            external_id="someexternal", user_id="someuser", properties={}, indices={},
                            attachments={}, closed=False, date_closed=None,
                            date_modified="2010-06-29T13:42:50.000000Z",
                            date_opened="2010-06-29T13:42:50.000000Z", xform_ids=[f1])
        opened = c["server_opened_on"]
        self.assertIsInstance(opened, int)
        self.assertEqual(c["server_modified_on"], opened)

        self.form(placeholders("casexml_update.xml", f2, case_id), records=2)
        c = self.assertCase(case_id, case_type="a_new_type", case_name="a new name",
                            date_opened="2010-05-12T13:42:50.000000Z", external_id="someexternal",
                            properties={"someprop": "abcd", "somenewprop": "efgh"}, closed=False,
                            date_modified="2010-06-30T13:42:50.000000Z", xform_ids=[f1, f2],
                            server_opened_on=opened)
        self.assertGreaterEqual(c["server_modified_on"], opened)

        self.form(placeholders("casexml_close.xml", f3, case_id), records=2)
        self.assertCase(case_id, case_type="a_new_type", case_name="a new name", closed=True,
                        date_closed="2010-07-01T13:42:50.000000Z", date_modified="2010-07-01T13:42:50.000000Z",
                        properties={"someprop": "abcde", "somenewprop": "efgh", "someclosedprop": "case closed"},
                        xform_ids=[f1, f2, f3], server_opened_on=opened)

        # One case record per form, each with the case as it was at that moment.
        first, second, third = self.case_bodies(case_id, 3)
        self.assertEqual([b["closed"] for b in (first, second, third)], [False, False, True])
        self.assertEqual(first["properties"]["case_type"], "test_case_type")
        self.assertEqual(second["properties"]["someprop"], "abcd")
        self.assertEqual(third["properties"]["someprop"], "abcde")
        self.assertEqual([len(b["xform_ids"]) for b in (first, second, third)], [1, 2, 3])

        other = uid()
        self.form(placeholders("casexml_create_update.xml", uid(), other), records=2)
        self.assertCase(other, case_type="test_case_type", case_name="test case name",
                        external_id="someexternal", properties={"someprop": "abc", "someotherprop": "123"},
                        closed=False)

    def test_v2_basic_create_update_close_noop(self):
        ids = [uid() for _ in range(4)]
        self.form(with_meta(fixture("casexml_v2_basic_create.xml"), ids[0]), records=2)
        c = self.assertCase("foo-case-id", case_type="v2_case_type", case_name="test case name",
                            user_id="bar-user-id", properties={}, closed=False,
                            date_modified="2011-12-06T13:42:50.000000Z", xform_ids=ids[:1])
        self.form(with_meta(fixture("casexml_v2_basic_update.xml"), ids[1]), records=2)
        self.assertCase("foo-case-id", case_type="updated_v2_case_type", case_name="updated case name",
                        properties={"dynamic": "something dynamic"}, closed=False,
                        date_modified="2011-12-07T13:42:50.000000Z", date_opened=c["date_opened"],
                        xform_ids=ids[:2])
        self.form(with_meta(fixture("casexml_v2_basic_close.xml"), ids[2]), records=2)
        closed = self.assertCase("foo-case-id", closed=True, date_closed="2011-12-06T13:42:50.000000Z",
                                 case_type="updated_v2_case_type", properties={"dynamic": "something dynamic"},
                                 xform_ids=ids[:3])
        # A block with no actions still touches the case: the form is linked, the date moves,
        # a record goes out; nothing else changes.
        self.form(with_meta(fixture("casexml_v2_basic_noop.xml"), ids[3]), records=2)
        noop = self.assertCase("foo-case-id", closed=True, date_modified="2011-12-07T13:44:50.000000Z",
                               xform_ids=ids)
        for key in ("case_type", "case_name", "properties", "date_closed", "date_opened", "user_id"):
            self.assertEqual(noop[key], closed[key], key)
        self.assertEqual(len(self.case_bodies("foo-case-id", 4)), 4)

    def test_index_before_create_then_referenced_cases(self):
        """v2/index_update (dated 12-07) before v2/basic_create (dated 12-06): the index block
        creates the case (HQ: a block for a missing case creates it), and the later-arriving,
        older create leaves the case as if the forms had come in client-time order."""
        create_id, index_id = uid(), uid()
        create = with_meta(fixture("casexml_v2_basic_create.xml"), create_id)
        index = with_meta(fixture("casexml_v2_index_update.xml"), index_id)
        self.form(index, records=2)
        self.assertCase("foo-case-id", case_type="", case_name="", user_id="bar-user-id", owner_id="bar-user-id",
                        date_modified="2011-12-07T13:42:50.000000Z", date_opened="2011-12-07T13:42:50.000000Z",
                        xform_ids=[index_id], indices={
                            "foo_ref": {"case_type": "bar", "case_id": "some_referenced_id", "relationship": "child"},
                            "baz_ref": {"case_type": "bop", "case_id": "some_other_referenced_id",
                                        "relationship": "child"}})

        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", [
            {"case_id": "some_referenced_id", "case_type": "bar", "case_name": "referenced"},
            {"case_id": "some_other_referenced_id", "case_type": "bop", "case_name": "other"}]), 201, 2)
        self.assertEqual(info["case_ids"], ["some_referenced_id", "some_other_referenced_id"])
        self.form(create, records=2)
        # The create's type and name; date_modified stays at the later 12-07; the case opened
        # with its first form in client time, the create of 12-06.
        self.assertCase("foo-case-id", case_type="v2_case_type", case_name="test case name",
                        date_modified="2011-12-07T13:42:50.000000Z", date_opened="2011-12-06T13:42:50.000000Z",
                        xform_ids=[index_id, create_id], indices={
                            "foo_ref": {"case_type": "bar", "case_id": "some_referenced_id", "relationship": "child"},
                            "baz_ref": {"case_type": "bop", "case_id": "some_other_referenced_id",
                                        "relationship": "child"}})
        first, second = self.case_bodies("foo-case-id", 2)
        self.assertEqual(first["properties"]["case_type"], "")
        self.assertEqual(second["properties"]["case_type"], "v2_case_type")
        self.assertEqual(second["date_modified"], "2011-12-07T13:42:50.000000Z")
        self.assertEqual(second["indices"]["foo_ref"],
                         {"case_type": "bar", "case_id": "some_referenced_id", "relationship": "child"})

    def test_named_namespace_prefix_and_legacy_meta(self):
        info = self.form(fixture("casexml_v2_named_namespace.xml"), records=2)
        self.assertEqual(info["form_id"], "05f9c90f-8e2e-4e3f-b392-002058c46b00", "legacy Meta/uid")
        self.assertCase("14cc2770-2d1c-49c2-b252-22d6ecce385a", case_type="cc_bihar_pregnancy",
                        case_name="TEST", owner_id="347b31fab217f6f28e0c8d6ff4f0651b",
                        user_id="d5ce3a980b5b69e793445ec0e3b2138e",
                        date_modified="2011-12-27T00:00:00.000000Z",
                        properties={"village": "JGN.GM", "edd": "2012-02-27", "partner_name": "JD.MH",
                                    "next_form": "bp", "next_due": "2012-01-10"},
                        xform_ids=["05f9c90f-8e2e-4e3f-b392-002058c46b00"], closed=False)

    def test_lots_of_subcases(self):
        mother, newborn = "f8b34e0c744f8f45dfa12e28617e5716", "7554c7f4-fc96-4b1d-aec8-8890e96ffc54"
        tasks = [f"763ca815-df9c-4037-9f0e-6edd2af8ba6c{i}" for i in range(1, 10)]
        self.form(fixture("casexml_bugs_lots_of_subcases.xml"), records=1 + 11)
        self.assertEqual(self.d.db.case_ids(), {mother, newborn, *tasks})
        form_id = "e9d6bb33-783d-4978-a2e0-762b42e87b9d"
        m = self.assertCase(mother, case_type="cc_bihar_pregnancy", case_name="Ashish",
                            owner_id="3c5a80e4db53049dfc110c368a0d282b", indices={},
                            user_id="67bffa913b38e7901851d863eded2ba3",
                            date_modified="2012-04-19T00:00:00.000000Z", xform_ids=[form_id])
        self.assertEqual(len(m["properties"]), 20)
        self.assertEqual({k: m["properties"][k] for k in ("add", "edd", "lmp", "husband_name", "tt_1_date")},
                         {"add": "2012-01-30", "edd": "", "lmp": "", "husband_name": "MOHAN",
                          "tt_1_date": "2012-04-30"})
        self.assertCase(newborn, case_type="cc_bihar_newborn", case_name="jayant",
                        properties={"bcg_date": "2012-05-01", "dob": "2011-09-19", "gender": "male",
                                    "opv_1_date": "2012-04-10"},
                        indices={"mother_id": {"case_type": "cc_bihar_pregnancy", "case_id": mother,
                                               "relationship": "child"}})
        names = ["DPT 1", "BCG", "OPV 0", "HEP B 0", "Measles", "VIT A 1", "JE", "TT 1", "ANC 1"]
        for i, (task, name) in enumerate(zip(tasks, names)):
            parent = (newborn, "cc_bihar_newborn") if i < 7 else (mother, "cc_bihar_pregnancy")
            c = self.assertCase(task, case_type="task", case_name=name, closed=False,
                                date_modified="2012-05-28T00:00:00.000000Z",
                                indices={"person_id": {"case_type": parent[1], "case_id": parent[0],
                                                       "relationship": "child"}})
            self.assertEqual(set(c["properties"]), {"date_eligible", "date_expires", "task_id"})
        # 11 case records, one per case.
        self.ep.wait_count(12, 10)
        ids = [json.loads(r.body)["case_id"] for r in self.ep.snapshot()
               if r.headers.get("content-type") == "application/json"]
        self.assertEqual(sorted(ids), sorted([mother, newborn, *tasks]))

    def test_multicase_parallel_cases_v1(self):
        self.form(with_meta(fixture("casexml_multicase_parallel_cases.xml"), uid()), records=1 + 4)
        self.assert_four_shine_clients()

    def test_multicase_mixed_depths_v1(self):
        self.form(with_meta(fixture("casexml_multicase_mixed_cases.xml"), uid()), records=1 + 4)
        self.assert_four_shine_clients()

    def assert_four_shine_clients(self):
        user = "873a1b8c-3a02-11e0-a513-005056aa7fb5"
        expected = {
            "0bd56681dce2b7a5160f75266d1e436e": ("Test Patient", "9a2a9582d11a11df8f35005056977568",
                                                 "2010-10-06T07:23:23.000000Z", "1000", "1959-11-23", ""),
            "0bd56681dce2b7a5140f75266d1d93a6": ("Client, Fake", "9b606de3d11a11df8f35005056977568",
                                                 "2010-10-06T07:23:25.000000Z", "1001", "1947-14-09", "2010-12-07"),
            "0bd56681dce2b7a5140f75266d1d9312": ("Unreal, Person", "9b606de4d11a11df8f35005056977568",
                                                 "2010-10-06T07:23:25.000000Z", "2000", "1960-11-01", ""),
            "0bd56681dce2b7a5140f75266d2064c0": ("Patient, Imaginary", "980247a4d11a11df8f35005056977568",
                                                 "2010-10-06T07:23:19.000000Z", "2020", "1985-01-03", ""),
        }
        self.assertEqual(self.d.db.case_ids(), set(expected))
        for case_id, (name, external, modified, pactid, dob, last_dot) in expected.items():
            c = self.assertCase(case_id, case_type="cc_shine_client", case_name=name, external_id=external,
                                user_id=user, date_modified=modified, closed=False, indices={})
            self.assertEqual(len(c["properties"]), 11, c["properties"])
            # An invalid date (1947-14-09) is a property value like any other: kept verbatim.
            self.assertEqual({k: c["properties"][k] for k in ("pactid", "dob", "last_dot", "type", "Phone1")},
                             {"pactid": pactid, "dob": dob, "last_dot": last_dot, "type": "HP",
                              "Phone1": "555-555-5555"})

    def test_multicase_case_in_repeats_v1(self):
        form_id = "JLP8BS71HFU3VGMIWW610W80T"
        info = self.form(fixture("casexml_multicase_case_in_repeats.xml"), records=1 + 3)
        self.assertEqual(info["form_id"], form_id)
        children = ["32337c03-2b73-497f-ab18-2b587f8c21df", "581b0506-7c94-4af5-ac67-f934566d5418"]
        mom = "CMYOSI95QCED3ZWIP9ZK1QNQ6"
        self.assertEqual(self.d.db.case_ids(), {*children, mom})
        for child, sex in zip(children, ("1", "2")):
            c = self.assertCase(child, case_type="newborn_hiv_child", case_name="ADG", external_id=child,
                                user_id="2XC1EINEJV1NZ7QXHVUMHUQQV", closed=False,
                                date_modified="2011-09-19T22:29:48.096000Z", xform_ids=[form_id])
            self.assertEqual(c["properties"]["sex"], sex)
            self.assertEqual(c["properties"]["result1"], "")
        self.assertCase(mom, case_type="mother", case_name="mom", closed=True,
                        date_closed="2011-09-19T22:31:48.902000Z", date_modified="2011-09-19T22:31:48.902000Z",
                        properties={"delivery_type": "1", "delivery_form_complete": "OK", "nevirapine": "1",
                                    "place": "1", "birth_type": "other", "delivery_date": "2011-09-19"})

    def test_multiple_blocks_for_one_case(self):
        case_id = "MCLPZ69ON942EKNIBR5WF1G2L"
        form_id = "50cd023e-652c-4e8b-82a9-e0e13a9c0ce8"
        body = fixture("casexml_bugs_multiple_case_blocks.xml")
        # (Without a case first, the fixture creates it: HqGoldenTest.test_multiple_case_blocks.)
        xml = (f'<case xmlns="{CASE_V2_NS}" case_id="{case_id}" user_id="admin" '
               f'date_modified="2012-05-01T00:00:00Z"><create><case_type>community</case_type>'
               f'<case_name>TAMERLO</case_name><owner_id>o-1</owner_id></create></case>')
        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", xml, content_type="text/xml"), 201, 1)
        self.assertEqual(info["case_ids"], [case_id])
        # Two blocks, one case: one case record.
        self.form(body, records=2)
        c = self.assertCase(case_id, case_type="community", case_name="TAMERLO", owner_id="o-1",
                            user_id="de7abbf6d898ae2d7dcd2bdc79f2785c",
                            date_modified="2012-05-31T07:06:31.379000Z",
                            properties={"community_code": "1630005", "district_name": "SantaMariaCahabon",
                                        "community_name": "TAMERLO"})
        self.assertEqual(c["xform_ids"][1:], [form_id], "the form is linked once")
        self.assertEqual(len(c["xform_ids"]), 2)

    def test_duplicate_properties_last_wins(self):
        case_id = "061ecbae-d9be-4bb5-bdd4-e62abd5eaf7b"
        self.assertJsonAccepted(self.d.post("/a/demo/cases", {
            "case_id": case_id, "case_type": "pregnancy", "case_name": "M", "owner_id": "o",
            "date_modified": "2012-04-01T00:00:00Z"}), 201, 1)
        body = fixture("casexml_bugs_duplicate_case_properties.xml")
        self.form(body, records=2)
        # date_modified="2012-04-25T14:05:45.250+05:30", in UTC.
        self.assertCase(case_id, properties={"foo": "", "date_next_eb": "2012-05-27"},
                        date_modified="2012-04-25T08:35:45.250000Z")
        # The fixture repeats an empty element; with values the difference shows.
        edited = body.replace(b"<n1:foo />\n\t\t\t<n1:foo />", b"<n1:foo>first</n1:foo><n1:foo>second</n1:foo>")
        self.assertNotEqual(edited, body)
        edited = edited.replace(b"ea9571f2-785a-4159-8937-caf66c25ac4f", uid().encode())
        self.form(edited, records=2)
        self.assertCase(case_id, properties={"foo": "second", "date_next_eb": "2012-05-27"})

    def test_case_inside_device_report_is_ignored(self):
        self.form(with_meta(fixture("casexml_exclusion_nested_device_report.xml"), uid()), records=2)
        self.assertEqual(self.d.db.case_ids(), {"case_in_form"})
        self.assertCase("case_in_form", case_type="form_case_type", case_name="form case", user_id="device_user")

    def test_ordering_create_then_update_in_arrival_order(self):
        """ordering/create_oo then ordering/update_oo, in client-time order (the reverse is
        HqGoldenTest.test_out_of_order_processing)."""
        case_id = "30bc51f6-3247-4966-b4ae-994f572e85fe"
        create, update = fixture("casexml_ordering_create_oo.xml"), fixture("casexml_ordering_update_oo.xml")
        self.form(create, records=2)
        self.form(update, records=2)
        self.assertCase(case_id, case_type="mother", case_name="out of order case",
                        owner_id="60633386bf26b1f622d3adc5a39acf82",
                        properties={"pcreate": "from the create form", "pupdate": "from the update form",
                                    "pboth": "overridden by the update form"},
                        date_modified="2013-10-07T11:10:11.163000Z", date_opened="2013-10-07T10:52:20.387000Z",
                        xform_ids=["c9265a8f-6d79-4caa-93ab-5299d65a6cd9", "0effe64d-7cd7-4346-ae45-5fe3f11022ab"])

    def test_fixture_without_meta_gets_generated_id(self):
        """As posted upstream, v2/basic_create has no meta/instanceID: HQ gives it a generated
        uuid4 (FormProcessorSQL.new_xform), and so does repeaterd: 201, the case is created and
        linked to that id, and the form goes out as received."""
        body = fixture("casexml_v2_basic_create.xml")
        self.assertNotIn(b"instanceID", body)
        info = self.form(body, records=2)
        form_id = info["form_id"]
        self.assertRegex(form_id, UUID_RE)
        self.assertEqual(self.d.db.query("SELECT payload_type, payload_id, body(body, encoding) FROM payloads"),
                         [("form", form_id, body)])
        self.assertCase("foo-case-id", case_type="v2_case_type", case_name="test case name",
                        user_id="bar-user-id", xform_ids=[form_id])
        self.assertEqual(self.case_bodies("foo-case-id", 1)[0]["xform_ids"], [form_id])
        forms = self.ep.wait_for(lambda rs: [r for r in rs if r.headers.get("content-type") == "text/xml"] or None,
                                 10, "the form record")
        self.assertEqual(forms[0].body, body)
        # A second copy is a second form (a new id), not a duplicate: nothing names it.
        again = self.form(body, records=2)
        self.assertRegex(again["form_id"], UUID_RE)
        self.assertNotEqual(again["form_id"], form_id)
        self.assertCase("foo-case-id", xform_ids=[form_id, again["form_id"]])

    def test_blocks_for_unknown_cases_create_them(self):
        """Update, close, index and empty blocks of cases not seen yet create them (HQ's
        get_case_from_case_update), with type and name "" and the block's user as owner; on
        /cases too."""
        blocks = (f'<case {V2} case_id="ghost-1" user_id="u1" date_modified="2020-01-01"><update><p>1</p></update></case>'
                  f'<case {V2} case_id="ghost-2" user_id="u1" date_modified="2020-01-02"><close/></case>'
                  f'<case {V2} case_id="ghost-3" user_id="u1" date_modified="2020-01-03"><index>'
                  f'<parent case_type="t">ghost-1</parent></index></case>'
                  f'<case {V2} case_id="ghost-4" user_id="u1" date_modified="2020-01-04"/>')
        form_id = uid()
        self.form(xform(blocks, form_id), records=1 + 4)
        self.assertEqual(self.d.db.case_ids(), {"ghost-1", "ghost-2", "ghost-3", "ghost-4"})
        for case_id in ("ghost-1", "ghost-2", "ghost-3", "ghost-4"):
            self.assertCase(case_id, case_type="", case_name="", user_id="u1", owner_id="u1", xform_ids=[form_id])
        self.assertCase("ghost-1", properties={"p": "1"}, closed=False, date_opened="2020-01-01T00:00:00.000000Z")
        self.assertCase("ghost-2", closed=True, date_closed="2020-01-02T00:00:00.000000Z", properties={})
        self.assertCase("ghost-3", indices={"parent": {"case_type": "t", "case_id": "ghost-1",
                                                       "relationship": "child"}})
        self.assertCase("ghost-4", properties={}, indices={}, closed=False,
                        date_modified="2020-01-04T00:00:00.000000Z")

        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", [
            {"case_id": "fine-1", "case_type": "t", "case_name": "n"},
            {"case_id": "ghost-5", "properties": {"p": "5"}}]), 201, 2)
        self.assertEqual(info["case_ids"], ["fine-1", "ghost-5"])
        self.assertCase("ghost-5", case_type="", properties={"p": "5"}, xform_ids=[info["id"]])
        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", f'<case {V2} case_id="ghost-6" user_id="u6">'
                                                   f'<update><p>6</p></update></case>', content_type="text/xml"), 201, 1)
        self.assertCase("ghost-6", case_type="", user_id="u6", owner_id="u6", properties={"p": "6"})

    # -- forms without cases (couchforms fixtures)

    def test_device_log_is_stored_as_device_report_without_records(self):
        body = fixture("couchforms_devicelogs_devicelog.xml")
        info = self.form(body, records=0)
        rows = self.d.db.query("SELECT payload_type, body(body, encoding) FROM payloads")
        self.assertEqual(rows, [("device_report", body)])
        self.assertEqual(self.d.db.count("records"), 0)
        self.assertEqual(self.d.db.case_ids(), set())
        self.assertTrue(info["message"])
        self.ep.assert_quiet(0, 0.3)

    def test_posts_duplicate_twice_is_202(self):
        body = fixture("couchforms_posts_duplicate.xml")
        info = self.form(body, records=1)   # the form repeater; its <case> is form data, not a case
        self.assertEqual(info["form_id"], "7H46J37FGH3")
        self.assertEqual(self.d.db.case_ids(), set())
        stored = self.d.db.snapshot()
        dup = self.form(body, records=0, status=202)
        self.assertEqual(dup["form_id"], "7H46J37FGH3")
        self.assertEqual(self.d.db.snapshot(), stored)

    def test_deprecation_original_then_edit(self):
        first = self.form(fixture("couchforms_deprecation_original.xml"), records=1)
        second = self.form(fixture("couchforms_deprecation_edit.xml"), records=1)
        self.assertEqual((first["form_id"], second["form_id"]), ("7H46J37FGH3", "7H46J37FGH3"))
        self.assertEqual(self.d.db.count("payloads", "payload_id = ?", ("7H46J37FGH3",)), 2)
        bodies = self.ep.wait_for(lambda rs: rs if len(rs) >= 2 else None, 10, "both versions")
        self.assertEqual({r.body for r in bodies}, {fixture("couchforms_deprecation_original.xml"),
                                                    fixture("couchforms_deprecation_edit.xml")})

    def test_namespaces_and_unicode_forms_have_no_cases(self):
        for name in ("couchforms_posts_namespaces.xml", "couchforms_posts_unicode.xml"):
            with self.subTest(name=name):
                body = with_meta(fixture(name), uid())
                self.form(body, records=1)
        self.assertEqual(self.d.db.case_ids(), set())
        got = self.ep.wait_count(2, 10)
        self.assertIn("统一码".encode(), got[1].body + got[0].body)

    # -- POST /a/{domain}/cases

    def test_cases_endpoint_xml(self):
        # The root is a <case> itself.
        single = (f'<case xmlns="{CASE_V2_NS}" case_id="hh-1" user_id="u-1" date_modified="2024-03-01T10:00:00.000+03">'
                  f'<create><case_type>household</case_type><case_name>Banda</case_name><owner_id>team-1</owner_id>'
                  f'</create><update><village>Kasungu</village><members>4</members></update></case>')
        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", single, content_type="text/xml"), 201, 1)
        self.assertEqual(info["case_ids"], ["hh-1"])
        self.assertCase("hh-1", case_type="household", case_name="Banda", owner_id="team-1", user_id="u-1",
                        properties={"village": "Kasungu", "members": "4"}, closed=False,
                        date_modified="2024-03-01T07:00:00.000000Z")   # 10:00 at +03, in UTC
        self.assertEqual(len(self.case(info["case_ids"][0])["xform_ids"]), 1)

        # A wrapper with two blocks, one prefixed and nested: update hh-1, create a child of it.
        wrapped = (f'<data xmlns="http://example.org/sync"><n0:case xmlns:n0="{CASE_V2_NS}" case_id="hh-1" '
                   f'user_id="u-2" date_modified="2024-03-02T08:00:00Z"><n0:update><n0:members>5</n0:members>'
                   f'</n0:update></n0:case><group><case xmlns="{CASE_V2_NS}" case_id="p-1" user_id="u-2" '
                   f'date_modified="2024-03-02T08:00:00Z"><create><case_type>person</case_type>'
                   f'<case_name>Chikondi</case_name><owner_id>team-1</owner_id></create><index>'
                   f'<parent case_type="household" relationship="extension">hh-1</parent></index></case>'
                   f'</group></data>')
        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", wrapped, content_type="application/xml"),
                                       201, 2)
        self.assertEqual(info["case_ids"], ["hh-1", "p-1"])
        self.assertCase("hh-1", user_id="u-2", properties={"village": "Kasungu", "members": "5"})
        self.assertCase("p-1", case_type="person", indices={
            "parent": {"case_type": "household", "case_id": "hh-1", "relationship": "extension"}})
        # Case records only: the form repeater got nothing.
        got = self.ep.wait_count(3, 10)
        self.ep.assert_quiet(3, 0.3)
        self.assertEqual({r.headers.get("content-type") for r in got}, {"application/json"})

    def test_cases_endpoint_json(self):
        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", {
            "case_id": "hh-9", "case_type": "household", "case_name": "Phiri", "owner_id": "team-2",
            "user_id": "u-9", "properties": {"village": "Dowa", "members": "3"}}), 201, 1)
        self.assertEqual(info["case_ids"], ["hh-9"])
        self.assertTrue(info["id"])
        self.assertCase("hh-9", case_type="household", case_name="Phiri", owner_id="team-2", user_id="u-9",
                        properties={"village": "Dowa", "members": "3"}, closed=False, indices={})

        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", [
            {"case_id": "p-9", "case_type": "person", "case_name": "Tiyamike", "owner_id": "team-2",
             "indices": {"parent": {"case_type": "household", "case_id": "hh-9", "relationship": "child"}}},
            {"case_id": "hh-9", "properties": {"members": "4"}},
            {"case_id": "hh-9", "closed": True},
        ]), 201, 2)
        self.assertEqual(info["case_ids"], ["p-9", "hh-9"])
        self.assertCase("p-9", case_type="person", case_name="Tiyamike", closed=False,
                        indices={"parent": {"case_type": "household", "case_id": "hh-9", "relationship": "child"}})
        hh = self.assertCase("hh-9", closed=True, properties={"village": "Dowa", "members": "4"},
                             case_name="Phiri")
        self.assertIsNotNone(hh["date_closed"])
        # One record per case, with its final state in this submission.
        last = self.case_bodies("hh-9", 2)[1]
        self.assertEqual((last["closed"], last["properties"]["members"]), (True, "4"))

    def test_cases_endpoint_without_blocks_400(self):
        before = self.d.db.snapshot()
        for body, ctype in ((b'<data xmlns="http://example.org/x"><q>1</q></data>', "text/xml"),
                            (b"[]", "application/json")):
            with self.subTest(ctype=ctype):
                self.assertRejectedUnchanged(self.d, before, self.d.post("/a/demo/cases", body, content_type=ctype),
                                             400, r"case")
        self.assertRejectedUnchanged(self.d, before, self.d.post("/a/demo/cases", b"<x", content_type="text/xml"),
                                     400)
        self.assertRejectedUnchanged(self.d, before, self.d.post("/a/demo/cases", b"hi", content_type="text/plain"),
                                     415)

    # -- 422: what HQ refuses too rejects the whole submission

    def test_invalid_case_blocks_422_store_nothing(self):
        # Something in the store first, so that "unchanged" covers existing rows too.
        self.form(placeholders("casexml_create.xml", uid(), "existing-case"), records=2)
        self.ep.wait_count(2, 10)
        before = self.snapshot()
        self.assertEqual(len(before["case_forms"]), 1)

        def form_with(blocks: str) -> bytes:
            return xform(blocks, uid())

        cases = {
            # HQ: CaseGenerationException("Invalid index, must have a case type attribute.")
            "index without case_type": (
                f'<case {V2} case_id="existing-case" date_modified="2020-01-01"><index>'
                f'<parent>existing-case</parent></index></case>', r"existing-case.*parent.*case_type"),
            "index without case_type, of a new case": (
                f'<case {V2} case_id="new-1" date_modified="2020-01-01"><index>'
                f'<parent>existing-case</parent></index></case>', r"new-1.*parent.*case_type"),
            # HQ knows child and extension only.
            "index with another relationship": (
                f'<case {V2} case_id="existing-case" date_modified="2020-01-01"><index>'
                f'<host case_type="t" relationship="sibling">existing-case</host></index></case>',
                r"existing-case.*host.*sibling"),
            # HQ: IllegalCaseId('case_id must not be empty').
            "empty case_id": (
                f'<case {V2} case_id="" date_modified="2020-01-01"><create><case_type>t</case_type>'
                f'<case_name>n</case_name></create></case>', r"case_id"),
            "a valid create and update, then an invalid block": (
                f'<case {V2} case_id="new-ok" date_modified="2020-01-01"><create><case_type>t</case_type>'
                f'<case_name>n</case_name></create></case>'
                f'<case {V2} case_id="existing-case" date_modified="2020-01-01"><update><p>1</p></update></case>'
                f'<case {V2} case_id="new-2" date_modified="2020-01-01"><index>'
                f'<parent case_type="t" relationship="cousin">new-ok</parent></index></case>',
                r"new-2.*cousin"),
        }
        for what, (blocks, reason) in cases.items():
            with self.subTest(what=what):
                self.rejected(self.d.submit(form_with(blocks)), reason, before)
        with self.subTest(what="malformed XML is 400"):
            self.assertRejectedUnchanged(self.d, {k: v for k, v in before.items() if k != "case_forms"},
                                         self.d.submit(b'<data xmlns="x"><case>'), 400)
        # The same rules on /cases, XML and JSON.
        with self.subTest(what="/cases xml index without case_type"):
            self.rejected(self.d.post("/a/demo/cases", f'<case {V2} case_id="existing-case"><index>'
                                      f'<parent>existing-case</parent></index></case>',
                                      content_type="text/xml"), r"existing-case.*parent.*case_type", before)
        with self.subTest(what="/cases json index without case_type"):
            self.rejected(self.d.post("/a/demo/cases", {
                "case_id": "existing-case", "indices": {"parent": {"case_id": "existing-case"}}}),
                r"existing-case.*parent.*case_type", before)
        with self.subTest(what="/cases json: a valid case, then a bad relationship"):
            self.rejected(self.d.post("/a/demo/cases", [
                {"case_id": "fine-1", "case_type": "t", "case_name": "n"},
                {"case_id": "fine-2", "indices": {"parent": {"case_id": "fine-1", "case_type": "t",
                                                             "relationship": "bad"}}}]), r"fine-2.*bad", before)
        for case_id in ("new-ok", "new-1", "new-2", "fine-1", "fine-2"):
            self.assertIsNone(self.d.case(case_id), case_id)
        self.assertCase("existing-case", properties={}, xform_ids=[before["case_forms"][0][2]])
        self.ep.assert_quiet(2, 0.3)


class HqGoldenTest(CaseTestBase):
    """CommCare HQ's own case tests, replayed through the daemon: the stored case and what an
    XML and a JSON case receiver get. Repeaters: forms (xml), cases (json), casexml (xml), so
    records_created = 1 + 2 x the number of cases touched."""

    CASE_XML = True

    # test_out_of_order_processing.py (e714a43), test_out_of_order_processing.
    def test_out_of_order_processing(self):
        case_id = "30bc51f6-3247-4966-b4ae-994f572e85fe"
        user = "60633386bf26b1f622d3adc5a39acf82"
        create_id, update_id = "c9265a8f-6d79-4caa-93ab-5299d65a6cd9", "0effe64d-7cd7-4346-ae45-5fe3f11022ab"
        self.form(fixture("casexml_ordering_update_oo.xml"), records=3)
        # The update alone creates the case (no type, no name yet).
        self.assertCase(case_id, case_type="", case_name="", owner_id=user, user_id=user,
                        properties={"pupdate": "from the update form", "pboth": "overridden by the update form"},
                        date_modified="2013-10-07T11:10:11.163000Z", xform_ids=[update_id])
        self.form(fixture("casexml_ordering_create_oo.xml"), records=3)
        props = {"pcreate": "from the create form", "pupdate": "from the update form",
                 "pboth": "overridden by the update form"}
        self.assertCase(case_id, case_type="mother", case_name="out of order case", owner_id=user, user_id=user,
                        properties=props, closed=False, date_modified="2013-10-07T11:10:11.163000Z",
                        date_opened="2013-10-07T10:52:20.387000Z", xform_ids=[update_id, create_id])

        (f1, xml1), (f2, xml2) = self.forwarded("casexml", case_id, 2)
        self.assertEqual((f1, f2), (update_id, create_id))
        self.assertCaseXml(xml1, f'''<case {V2} case_id="{case_id}" date_modified="2013-10-07T11:10:11.163000Z"
            user_id="{user}"><create><case_type/><case_name/><owner_id>{user}</owner_id></create>
            <update><date_opened>2013-10-07</date_opened><pboth>overridden by the update form</pboth>
            <pupdate>from the update form</pupdate></update></case>''')
        self.assertCaseXml(xml2, f'''<case {V2} case_id="{case_id}" date_modified="2013-10-07T11:10:11.163000Z"
            user_id="{user}"><create><case_type>mother</case_type><case_name>out of order case</case_name>
            <owner_id>{user}</owner_id></create><update><date_opened>2013-10-07</date_opened>
            <pboth>overridden by the update form</pboth><pcreate>from the create form</pcreate>
            <pupdate>from the update form</pupdate></update></case>''')

        (_, j1), (_, j2) = self.forwarded("cases", case_id, 2)
        second = self.case_json(j2)
        self.assertEqual(self.case_json(j1)["xform_ids"], [update_id])
        self.assertEqual(second["properties"], {**props, "case_name": "out of order case", "case_type": "mother",
                                                "owner_id": user, "external_id": None,
                                                "date_opened": "2013-10-07T10:52:20.387000Z"})
        self.assertEqual((second["date_modified"], second["user_id"], second["closed"], second["xform_ids"]),
                         ("2013-10-07T11:10:11.163000Z", user, False, [update_id, create_id]))

    # test_bugs.py (6d849a65), CaseBugTest.testMultipleCaseBlocks.
    def test_multiple_case_blocks(self):
        case_id = "MCLPZ69ON942EKNIBR5WF1G2L"
        form_id = "50cd023e-652c-4e8b-82a9-e0e13a9c0ce8"
        user = "de7abbf6d898ae2d7dcd2bdc79f2785c"
        # Two blocks, one case, no <create>: the update creates it; one record per repeater.
        self.form(fixture("casexml_bugs_multiple_case_blocks.xml"), records=3)
        props = {"community_code": "1630005", "district_name": "SantaMariaCahabon", "community_name": "TAMERLO"}
        self.assertCase(case_id, properties=props, xform_ids=[form_id], case_type="", case_name="",
                        user_id=user, owner_id=user, date_modified="2012-05-31T07:06:31.379000Z", closed=False)
        [(_, body)] = self.forwarded("cases", case_id, 1)
        b = self.case_json(body)
        self.assertEqual(b["xform_ids"], [form_id])
        self.assertEqual({k: b["properties"][k] for k in props}, props)
        [(_, xml)] = self.forwarded("casexml", case_id, 1)
        self.assertCaseXml(xml, f'''<case {V2} case_id="{case_id}" date_modified="2012-05-31T07:06:31.379000Z"
            user_id="{user}"><create><case_type/><case_name/><owner_id>{user}</owner_id></create>
            <update><date_opened>2012-05-31</date_opened><community_code>1630005</community_code>
            <community_name>TAMERLO</community_name><district_name>SantaMariaCahabon</district_name>
            </update></case>''')
        self.ep.wait_count(3, 10)
        self.ep.assert_quiet(3, 0.3)

    # test_bugs.py (016b26f), test_case_block_ordering: updates before creates in one form.
    def test_case_block_ordering(self):
        case1, case2, form_id = uid(), uid(), uid()

        def block(case_id: str, action: str, p: str) -> str:
            create = "<create><case_type>t</case_type><case_name>n</case_name></create>" if action == "create" else ""
            return (f'<case {V2} case_id="{case_id}" user_id="u" date_modified="2020-05-05T05:05:05Z">'
                    f'{create}<update><p>{p}</p></update></case>')
        blocks = block(case1, "update", "2") + block(case2, "update", "2") + \
            block(case1, "create", "1") + block(case2, "create", "1")
        self.form(xform(blocks, form_id), records=1 + 2 * 2)
        for case_id in (case1, case2):
            with self.subTest(case=case_id):
                self.assertCase(case_id, properties={"p": "2"}, case_type="t", case_name="n", xform_ids=[form_id])
                [(_, body)] = self.forwarded("cases", case_id, 1)
                self.assertEqual(self.case_json(body)["properties"]["p"], "2")
                [(_, xml)] = self.forwarded("casexml", case_id, 1)
                self.assertEqual(ET.fromstring(xml).findtext(f"{{{CASE_V2_NS}}}update/{{{CASE_V2_NS}}}p"), "2")

    # test_v2_parsing.py (78dbc61f), testParseWithIndices.
    def test_parse_with_indices(self):
        create_id, index_id = uid(), uid()
        self.form(with_meta(fixture("casexml_v2_basic_create.xml"), create_id), records=3)
        # The referenced cases, as the test's CaseBlock(create=True, user_id="bar-user-id").
        refs = "".join(f'<case {V2} case_id="{ref}" user_id="bar-user-id" date_modified="2011-12-06T13:42:50Z">'
                       f'<create><case_type>{t}</case_type><case_name/></create></case>'
                       for ref, t in (("some_referenced_id", "bar"), ("some_other_referenced_id", "bop")))
        self.assertJsonAccepted(self.d.post("/a/demo/cases", f"<data>{refs}</data>", content_type="text/xml"), 201, 4)
        self.form(with_meta(fixture("casexml_v2_index_update.xml"), index_id), records=3)
        self.assertCase("foo-case-id", indices={
            "foo_ref": {"case_type": "bar", "case_id": "some_referenced_id", "relationship": "child"},
            "baz_ref": {"case_type": "bop", "case_id": "some_other_referenced_id", "relationship": "child"}},
            xform_ids=[create_id, index_id])
        (_, _), (form_id, xml) = self.forwarded("casexml", "foo-case-id", 2)
        self.assertEqual(form_id, index_id)
        self.assertCaseXml(xml, HQ_PARSE_WITH_INDICES_XML)
        (_, _), (_, body) = self.forwarded("cases", "foo-case-id", 2)
        b = self.case_json(body)
        self.assertEqual(b["indices"], {
            "foo_ref": {"case_type": "bar", "case_id": "some_referenced_id", "relationship": "child"},
            "baz_ref": {"case_type": "bop", "case_id": "some_other_referenced_id", "relationship": "child"}})
        self.assertEqual((b["user_id"], b["properties"]["owner_id"], b["properties"]["date_opened"]),
                         ("bar-user-id", "bar-user-id", "2011-12-06T13:42:50.000000Z"))

    # HQ's CommCareCase.to_xml(V2, include_case_on_closed=True) for a closed case: the full
    # state (get_case_element with create, update, close) and a trailing <close/>.
    def test_closed_case_is_full_state_plus_close(self):
        form_id = uid()
        blocks = (f'<case {V2} case_id="hh-7" user_id="u-7" date_modified="2021-02-03T04:05:06.789Z">'
                  f'<create><case_type>household</case_type><case_name>Mwale</case_name></create></case>'
                  f'<case {V2} case_id="p-7" user_id="u-7" date_modified="2021-02-03T04:05:06.789Z">'
                  f'<create><case_type>person</case_type><case_name>Chisomo</case_name><owner_id>team-7</owner_id>'
                  f'</create><update><zeta>z</zeta><external_id>ext-7</external_id><alpha>a</alpha><empty/></update>'
                  f'<index><zz_parent case_type="household">hh-7</zz_parent>'
                  f'<aa_host case_type="household" relationship="extension">hh-7</aa_host></index><close/></case>')
        self.form(xform(blocks, form_id), records=1 + 2 * 2)
        self.assertCase("p-7", closed=True, date_closed="2021-02-03T04:05:06.789000Z", case_type="person",
                        case_name="Chisomo", owner_id="team-7", external_id="ext-7",
                        properties={"zeta": "z", "alpha": "a", "empty": ""})
        [(_, xml)] = self.forwarded("casexml", "p-7", 1)
        # external_id first, date_opened as a date, then properties by name; indices by name,
        # relationship only for the extension; <close/> last.
        self.assertCaseXml(xml, f'''<case {V2} case_id="p-7" date_modified="2021-02-03T04:05:06.789000Z"
            user_id="u-7"><create><case_type>person</case_type><case_name>Chisomo</case_name>
            <owner_id>team-7</owner_id></create><update><external_id>ext-7</external_id>
            <date_opened>2021-02-03</date_opened><alpha>a</alpha><empty/><zeta>z</zeta></update>
            <index><aa_host case_type="household" relationship="extension">hh-7</aa_host>
            <zz_parent case_type="household">hh-7</zz_parent></index><close/></case>''')
        self.assertEqual([c.tag.split("}")[1] for c in ET.fromstring(xml)],
                         ["create", "update", "index", "close"])
        [(_, body)] = self.forwarded("cases", "p-7", 1)
        b = self.case_json(body)
        self.assertEqual((b["closed"], b["date_closed"]), (True, "2021-02-03T04:05:06.789000Z"))
        self.assertEqual(b["properties"], {"zeta": "z", "alpha": "a", "empty": "", "external_id": "ext-7",
                                           "owner_id": "team-7", "case_name": "Chisomo", "case_type": "person",
                                           "date_opened": "2021-02-03T04:05:06.789000Z"})
        self.assertEqual(b["indices"], {
            "zz_parent": {"case_type": "household", "case_id": "hh-7", "relationship": "child"},
            "aa_host": {"case_type": "household", "case_id": "hh-7", "relationship": "extension"}})
        # The open parent: no <close/>, owner defaults to the user.
        [(_, xml)] = self.forwarded("casexml", "hh-7", 1)
        self.assertCaseXml(xml, f'''<case {V2} case_id="hh-7" date_modified="2021-02-03T04:05:06.789000Z"
            user_id="u-7"><create><case_type>household</case_type><case_name>Mwale</case_name>
            <owner_id>u-7</owner_id></create><update><date_opened>2021-02-03</date_opened></update></case>''')

    # A case one form opened and nothing touched since is stored without its state (it is that
    # form's blocks applied, kept as the case's first form); the daemon rebuilds it when it is
    # read, and stores it once a second form touches the case or an edit takes the form away.
    def test_a_case_one_form_opened_is_rebuilt_from_that_form(self):
        opener, later, gone = uid(), uid(), uid()
        self.form(xform(f'<case {V2} case_id="solo" date_modified="2021-03-04T05:06:07.890-02">'
                        f'<create><case_type>person</case_type><case_name>Banda</case_name>'
                        f'<owner_id>team-1</owner_id></create><update><age>7</age><date_opened>2021-03-01'
                        f'</date_opened></update><index><mother case_type="person">m-1</mother></index></case>',
                        opener), records=3)
        self.assertEqual(self.d.db.case_row("solo")["state"], "")
        first = self.assertCase("solo", case_type="person", case_name="Banda", owner_id="team-1", user_id="u",
                                properties={"age": "7"}, date_opened="2021-03-01T00:00:00.000000Z",
                                date_modified="2021-03-04T07:06:07.890000Z", xform_ids=[opener],
                                indices={"mother": {"case_type": "person", "case_id": "m-1",
                                                    "relationship": "child"}})
        self.assertEqual(first["server_opened_on"], first["server_modified_on"])
        # repeaterctl shows it as the API does; a case not stored is an error naming it.
        shown = json.loads(self.d.ctl("cases", "show", "demo", "solo", check=0).stdout)["case"]
        self.assertEqual({**self.d.db.CASE_DEFAULTS, **shown}, {k: v for k, v in first.items() if k != "_row"})
        missing = self.d.ctl("cases", "show", "demo", "no/such case", check=1)
        self.assertIn("no case no/such case in domain demo", missing.stderr)
        # What was forwarded for it is what the daemon now reads back.
        [(_, body)] = self.forwarded("cases", "solo", 1)
        self.assertEqual(self.case_json(body)["properties"]["age"], "7")

        self.form(xform(f'<case {V2} case_id="solo" date_modified="2021-03-05T00:00:00Z"><update><age>8</age>'
                        f'</update></case>', later), records=3)
        self.assertNotEqual(self.d.db.case_row("solo")["state"], "")
        self.assertCase("solo", case_name="Banda", properties={"age": "8"}, xform_ids=[opener, later],
                        server_opened_on=first["server_opened_on"], indices=first["indices"])

        # An edit that no longer touches the case it opened leaves that case as it was, stored.
        self.form(xform(f'<case {V2} case_id="left" date_modified="2021-03-06T00:00:00Z"><create>'
                        f'<case_type>t</case_type><case_name>kept</case_name></create></case>', gone), records=3)
        self.assertEqual(self.d.db.case_row("left")["state"], "")
        self.form(xform(f'<case {V2} case_id="other" date_modified="2021-03-07T00:00:00Z"><create>'
                        f'<case_type>t</case_type><case_name>new</case_name></create></case>', gone), records=3)
        self.assertEqual(json.loads(self.d.db.case_row("left")["state"])["case_name"], "kept")
        self.assertCase("left", case_name="kept", case_type="t", xform_ids=[])

    # HQ's form edits (corehq/form_processor/parsers/form.py _handle_duplicate, apply_deprecation;
    # test_bugs.py 016b26f test_missing_transactions): same instanceID and different bytes
    # replace the form, and every case either version touched is rebuilt from the forms that
    # stand; identical bytes are a duplicate.
    def test_edit_rebuilds_cases(self):
        base_id, form_id = uid(), uid()
        self.form(xform(f'<case {V2} case_id="c0" date_modified="2020-01-01T00:00:00Z"><create>'
                        f'<case_type>t</case_type><case_name>c</case_name></create></case>', base_id), records=3)
        original = xform(f'<case {V2} case_id="A" date_modified="2020-01-02T00:00:00Z"><create><case_type>t</case_type>'
                         f'<case_name>a</case_name></create><update><p>1</p><q>x</q></update></case>'
                         f'<case {V2} case_id="c0" date_modified="2020-01-02T00:00:00Z"><update><r>1</r></update>'
                         f'</case>', form_id)
        self.form(original, records=1 + 2 * 2)
        self.assertCase("A", case_name="a", properties={"p": "1", "q": "x"}, xform_ids=[form_id])
        self.assertCase("c0", properties={"r": "1"}, xform_ids=[base_id, form_id],
                        date_modified="2020-01-02T00:00:00.000000Z")

        # The edit: A renamed, p changed, q gone; c0 no longer touched; B new (with type t1).
        edit = xform(f'<case {V2} case_id="A" date_modified="2020-01-03T00:00:00Z"><create><case_type>t</case_type>'
                     f'<case_name>a2</case_name></create><update><p>2</p></update></case>'
                     f'<case {V2} case_id="B" date_modified="2020-01-03T00:00:00Z"><create><case_type>t1</case_type>'
                     f'<case_name>b</case_name></create></case>', form_id)
        info = self.form(edit, records=1 + 2 * 3)
        self.assertEqual(info["form_id"], form_id)
        self.assertCase("A", case_name="a2", properties={"p": "2"}, xform_ids=[form_id],
                        date_modified="2020-01-03T00:00:00.000000Z")
        self.assertCase("B", case_type="t1", case_name="b", xform_ids=[form_id])
        # c0 is rebuilt from the one form left: r is gone and its date is its create's again.
        self.assertCase("c0", properties={}, xform_ids=[base_id], date_modified="2020-01-01T00:00:00.000000Z")
        self.assertEqual(self.d.db.count("payloads", "payload_id = ?", (form_id,)), 2)

        # The records of the edit carry the rebuilt state.
        *_, (f, body) = self.forwarded("cases", "c0", 3)
        b = self.case_json(body)
        self.assertEqual((f, b["xform_ids"], b["date_modified"]), (form_id, [base_id], "2020-01-01T00:00:00.000000Z"))
        self.assertNotIn("r", b["properties"])
        *_, (_, body) = self.forwarded("cases", "A", 2)
        b = self.case_json(body)
        self.assertEqual((b["properties"]["case_name"], b["properties"]["p"], b["xform_ids"]), ("a2", "2", [form_id]))
        self.assertNotIn("q", b["properties"])
        *_, (_, xml) = self.forwarded("casexml", "A", 2)
        self.assertCaseXml(xml, f'''<case {V2} case_id="A" date_modified="2020-01-03T00:00:00.000000Z" user_id="u">
            <create><case_type>t</case_type><case_name>a2</case_name><owner_id>u</owner_id></create>
            <update><date_opened>2020-01-03</date_opened><p>2</p></update></case>''')
        self.forwarded("casexml", "B", 1)
        # The form repeater forwarded both versions, as received.
        got = self.ep.wait_count(3 + 5 + 7, 10)
        forms = [r.body for r in got if r.body.startswith(b"<?xml")]
        self.assertEqual(len(forms), 3)
        self.assertIn(edit, forms)
        self.assertIn(original, forms)

        # Identical bytes again: a duplicate.
        stored = self.snapshot()
        dup = self.form(edit, records=0, status=202)
        self.assertEqual(dup["form_id"], form_id)
        self.assertEqual(self.snapshot(), stored)
        self.ep.assert_quiet(3 + 5 + 7, 0.3)

    # test_bugs.py (016b26f) test_date/integer/decimal_in_various_properties build cases with a
    # CaseBlock that may leave case_type empty; HQ's case_type is never required ('' default).
    def test_create_without_case_type(self):
        form_id = uid()
        blocks = (f'<case {V2} case_id="typeless" user_id="u-t" date_modified="2015-04-17T16:04:54.950-04">'
                  f'<create><case_name>no type</case_name></create><update><b>2</b><a>1</a></update></case>')
        self.form(xform(blocks, form_id), records=3)
        c = self.assertCase("typeless", case_type="", case_name="no type", owner_id="u-t", user_id="u-t",
                            properties={"a": "1", "b": "2"},
                            date_modified="2015-04-17T20:04:54.950000Z", date_opened="2015-04-17T20:04:54.950000Z")
        self.assertEqual(c["_row"]["case_type"], "")
        [(_, body)] = self.forwarded("cases", "typeless", 1)
        b = self.case_json(body)
        self.assertEqual((b["properties"]["case_type"], b["date_modified"]), ("", "2015-04-17T20:04:54.950000Z"))
        [(_, xml)] = self.forwarded("casexml", "typeless", 1)
        self.assertCaseXml(xml, f'''<case {V2} case_id="typeless" date_modified="2015-04-17T20:04:54.950000Z"
            user_id="u-t"><create><case_type/><case_name>no type</case_name><owner_id>u-t</owner_id></create>
            <update><date_opened>2015-04-17</date_opened><a>1</a><b>2</b></update></case>''')

    # SqlCaseUpdateStrategy._apply_case_update: a block without user_id takes the form's
    # meta/userID, and owner_id defaults to the user_id.
    def test_block_without_user_id_takes_meta_user(self):
        form_id = uid()
        blocks = (f'<case {V2} case_id="no-user" date_modified="2020-06-01T00:00:00Z"><create>'
                  f'<case_type>t</case_type><case_name>n</case_name></create></case>'
                  f'<case {V2} case_id="own-user" user_id="block-user" date_modified="2020-06-01T00:00:00Z"><create>'
                  f'<case_type>t</case_type><case_name>n</case_name></create></case>')
        self.form(xform(blocks, form_id, user_id="meta-user"), records=1 + 2 * 2)
        self.assertCase("no-user", user_id="meta-user", owner_id="meta-user")
        self.assertCase("own-user", user_id="block-user", owner_id="block-user")
        [(_, body)] = self.forwarded("cases", "no-user", 1)
        b = self.case_json(body)
        self.assertEqual((b["user_id"], b["properties"]["owner_id"]), ("meta-user", "meta-user"))
        [(_, xml)] = self.forwarded("casexml", "no-user", 1)
        root = ET.fromstring(xml)
        self.assertEqual((root.get("user_id"), root.findtext(f"{{{CASE_V2_NS}}}create/{{{CASE_V2_NS}}}owner_id")),
                         ("meta-user", "meta-user"))


if __name__ == "__main__":
    unittest.main()
