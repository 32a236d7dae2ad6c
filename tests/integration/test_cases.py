"""The case store (spec §3): every CommCare HQ fixture in tests/fixtures/commcare submitted
through the real ingest endpoint, then the stored case state asserted field by field; POST
/a/{domain}/cases with XML and JSON; and every 422 rejection, with the database unchanged.

Fixtures without meta/instanceID (v2/basic_*, v2/index_update, multicase parallel/mixed,
exclusion/nested_device_report, posts/namespaces, posts/unicode) get a <meta><instanceID>
injected: repeaterd, like CommCare, needs a form id (without one it answers 400, which
test_ingest_errors covers).
"""

from __future__ import annotations

import json
import unittest
import uuid

from harness import (CASE_V2_NS, DaemonTestCase, connection, fixture, typed_repeater,
                     with_meta)

# The stored state JSON (cases.state) has exactly these keys.
STATE_KEYS = {"case_id", "domain", "case_type", "case_name", "owner_id", "user_id", "external_id",
              "properties", "indices", "attachments", "closed", "date_closed", "date_opened",
              "date_modified", "server_opened_on", "server_modified_on", "xform_ids"}


def uid() -> str:
    return uuid.uuid4().hex


def placeholders(name: str, form_id: str, case_id: str) -> bytes:
    return fixture(name).replace(b"REPLACE_UID", form_id.encode()).replace(b"REPLACE_CASEID", case_id.encode())


class CaseStoreTest(DaemonTestCase):
    """Each test has its own daemon with a form repeater (xml) and a case repeater (json), both
    to one loopback endpoint, so records_created = 1 + the number of cases touched."""

    def setUp(self):
        super().setUp()
        self.ep = self.endpoint()
        self.d = self.daemon([connection("inbox", self.ep.url())],
                             [typed_repeater("forms", "inbox", "form", "xml"),
                              typed_repeater("cases", "inbox", "case", "json")])

    # -- helpers

    def form(self, body: bytes, records: int | None = None, status: int = 201) -> dict:
        return self.assertSubmitted(self.d.submit(body), status, records)

    def case(self, case_id: str) -> dict:
        c = self.d.db.case(case_id)
        self.assertIsNotNone(c, f"case {case_id} is not in the cases table")
        self.assertEqual(set(c) - {"_row"}, STATE_KEYS, f"stored state keys of {case_id}")
        # The table's columns agree with the state.
        self.assertEqual(c["_row"]["case_type"], c["case_type"])
        self.assertEqual(bool(c["_row"]["closed"]), c["closed"])
        self.assertEqual(c["_row"]["server_modified_on"], c["server_modified_on"])
        self.assertEqual(c["domain"], "demo")
        self.assertEqual(c["case_id"], case_id)
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

    def rejected(self, resp, reason_re: str, before: dict) -> str:
        return self.assertRejectedUnchanged(self.d, before, resp, 422, reason_re)

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

    def test_index_update_after_referenced_cases_exist(self):
        create = with_meta(fixture("casexml_v2_basic_create.xml"), uid())
        index = with_meta(fixture("casexml_v2_index_update.xml"), uid())
        before = self.d.db.snapshot()
        self.rejected(self.d.submit(index), r"foo-case-id", before)   # the case does not exist yet

        info = self.assertJsonAccepted(self.d.post("/a/demo/cases", [
            {"case_id": "some_referenced_id", "case_type": "bar", "case_name": "referenced"},
            {"case_id": "some_other_referenced_id", "case_type": "bop", "case_name": "other"}]), 201, 2)
        self.assertEqual(info["case_ids"], ["some_referenced_id", "some_other_referenced_id"])
        self.form(create, records=2)
        self.form(index, records=2)
        self.assertCase("foo-case-id", case_type="v2_case_type", indices={
            "foo_ref": {"case_type": "bar", "case_id": "some_referenced_id", "relationship": "child"},
            "baz_ref": {"case_type": "bop", "case_id": "some_other_referenced_id", "relationship": "child"}})
        body = self.case_bodies("foo-case-id", 2)[1]
        self.assertEqual(body["indices"]["foo_ref"],
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
        before = self.d.db.snapshot()
        self.rejected(self.d.submit(body), case_id, before)   # updates a case nobody created

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
            "case_id": case_id, "case_type": "pregnancy", "case_name": "M", "owner_id": "o"}), 201, 1)
        body = fixture("casexml_bugs_duplicate_case_properties.xml")
        self.form(body, records=2)
        self.assertCase(case_id, properties={"foo": "", "date_next_eb": "2012-05-27"},
                        date_modified="2012-04-25T14:05:45.250000Z")
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

    def test_ordering_update_before_create_is_refused_then_applies(self):
        case_id = "30bc51f6-3247-4966-b4ae-994f572e85fe"
        create, update = fixture("casexml_ordering_create_oo.xml"), fixture("casexml_ordering_update_oo.xml")
        before = self.d.db.snapshot()
        self.rejected(self.d.submit(update), case_id, before)
        self.form(create, records=2)
        self.form(update, records=2)
        self.assertCase(case_id, case_type="mother", case_name="out of order case",
                        owner_id="60633386bf26b1f622d3adc5a39acf82",
                        properties={"pcreate": "from the create form", "pupdate": "from the update form",
                                    "pboth": "overridden by the update form"},
                        date_modified="2013-10-07T11:10:11.163000Z",
                        xform_ids=["c9265a8f-6d79-4caa-93ab-5299d65a6cd9", "0effe64d-7cd7-4346-ae45-5fe3f11022ab"])

    def test_fixture_without_meta_is_refused_400(self):
        """As posted upstream, v2/basic_create has no meta/instanceID: 400, and its case is not
        created (the other tests inject a meta)."""
        before = self.d.db.snapshot()
        self.assertRejectedUnchanged(self.d, before, self.d.submit(fixture("casexml_v2_basic_create.xml")),
                                     400, r"instanceID")
        self.assertIsNone(self.d.db.case("foo-case-id"))

    # -- forms without cases (couchforms fixtures)

    def test_device_log_is_stored_as_device_report_without_records(self):
        body = fixture("couchforms_devicelogs_devicelog.xml")
        info = self.form(body, records=0)
        rows = self.d.db.query("SELECT payload_type, body FROM payloads")
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
                        date_modified="2024-03-01T10:00:00.000000Z")
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

    # -- 422: invalid blocks reject the whole submission

    def test_invalid_case_blocks_422_store_nothing(self):
        # Something in the store first, so that "unchanged" covers existing rows too.
        self.form(placeholders("casexml_create.xml", uid(), "existing-case"), records=2)
        self.ep.wait_count(2, 10)
        before = self.d.db.snapshot()

        def form_with(blocks: str) -> bytes:
            return (f'<?xml version="1.0"?><data xmlns="http://example.org/f"><q>1</q>{blocks}'
                    f'<meta><instanceID>{uid()}</instanceID><userID>u</userID></meta></data>').encode()

        v2 = f'xmlns="{CASE_V2_NS}"'
        cases = {
            "v2 block without case_id": (
                f'<case {v2} user_id="u" date_modified="2020-01-01"><create><case_type>t</case_type>'
                f'<case_name>n</case_name></create></case>', r"case_id"),
            "update of a case that does not exist": (
                f'<case {v2} case_id="ghost-1" date_modified="2020-01-01"><update><p>1</p></update></case>',
                r"ghost-1"),
            "close of a case that does not exist": (
                f'<case {v2} case_id="ghost-2" date_modified="2020-01-01"><close/></case>', r"ghost-2"),
            "index without case_type": (
                f'<case {v2} case_id="existing-case" date_modified="2020-01-01"><index>'
                f'<parent>existing-case</parent></index></case>', r"existing-case|parent|case_type"),
            "a valid create, then an invalid block": (
                f'<case {v2} case_id="new-ok" date_modified="2020-01-01"><create><case_type>t</case_type>'
                f'<case_name>n</case_name></create></case>'
                f'<case {v2} case_id="ghost-3" date_modified="2020-01-01"><update><p>1</p></update></case>',
                r"ghost-3"),
            "update before the create in the same form": (
                f'<case {v2} case_id="late" date_modified="2020-01-01"><update><p>1</p></update></case>'
                f'<case {v2} case_id="late" date_modified="2020-01-01"><create><case_type>t</case_type>'
                f'<case_name>n</case_name></create></case>', r"late"),
        }
        for what, (blocks, reason) in cases.items():
            with self.subTest(what=what):
                self.rejected(self.d.submit(form_with(blocks)), reason, before)
        # The same rules on /cases, XML and JSON.
        with self.subTest(what="/cases xml update of a missing case"):
            self.rejected(self.d.post("/a/demo/cases", f'<case {v2} case_id="ghost-4"><update><p>1</p></update></case>',
                                      content_type="text/xml"), r"ghost-4", before)
        with self.subTest(what="/cases json update of a missing case"):
            self.rejected(self.d.post("/a/demo/cases", [
                {"case_id": "fine-1", "case_type": "t", "case_name": "n"},
                {"case_id": "ghost-5", "properties": {"p": "1"}}]), r"ghost-5", before)
        with self.subTest(what="/cases json index without case_type"):
            self.rejected(self.d.post("/a/demo/cases", {
                "case_id": "existing-case", "indices": {"parent": {"case_id": "existing-case"}}}),
                r"existing-case|parent|case_type", before)
        self.assertIsNone(self.d.db.case("new-ok"))
        self.assertIsNone(self.d.db.case("fine-1"))
        self.ep.assert_quiet(2, 0.3)


if __name__ == "__main__":
    unittest.main()
