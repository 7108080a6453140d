"""PII discovery on a sample: kinds with check digits, confidences, and no values in the report."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from privstage.anonymize import scan, suggest_config

ROWS = [
    # name, e-mail, phone, ssn, card, iban, ip, dob, zip, notes, amount
    (
        "Zoë Ångström",
        "zoe@example.org",
        "+44 20 7946 0958",
        "123-45-6789",
        "4111 1111 1111 1111",
        "GB82 WEST 1234 5698 7654 32",
        "192.168.0.1",
        dt.date(1980, 1, 2),
        "94107",
        "Patient reports a mild headache since last Tuesday, no fever",
        12345.67,
    ),
    (
        "Nguyễn Văn An",
        "AN@EXAMPLE.COM",
        "(415) 555-0100",
        "219-09-9999",
        "5500 0000 0000 0004",
        "DE89370400440532013000",
        "2001:db8::1",
        dt.date(1975, 7, 30),
        "02139",
        "Follow-up visit after the fracture; the cast was removed today",
        99.5,
    ),
    (
        "O'Brien Murphy",
        "o.murphy@mail.example.com",
        "415-555-0199",
        "457-55-5462",
        "4012888888881881",
        "FR1420041010050500013M02606",
        "10.0.0.255",
        dt.date(2001, 12, 24),
        "10001",
        "Annual check, blood pressure slightly elevated, recheck in three months",
        1450.0,
    ),
    (
        "Ana Luísa Gonçalves",
        "ana@example.net",
        "+1 415 555 0123",
        "078-05-1120",
        "378282246310005",
        "NL91ABNA0417164300",
        "8.8.8.8",
        dt.date(1999, 3, 3),
        "60601",
        "Vaccination given in the left arm without complications reported",
        60.0,
    ),
]
SCHEMA = (
    "full_name string, contact string, phone_number string, ssn string, card string, iban string, ip string, "
    "birth_date date, zip string, notes string, amount double"
)


@pytest.fixture(scope="module")
def report(spark):
    bad = [("Smith", "x", "1", "000-12-3456", "4111 1111 1111 1112", "GB82 WEST 1234 5698 7654 33", "999.1.1.1",
            None, "ABCDE", "short", 1.0)]  # fmt: skip
    return scan(spark.createDataFrame(ROWS + bad, SCHEMA), sample_rows=1000)


def test_each_column_gets_its_kind(report):
    kinds = {c.column: c.kind for c in report.columns}
    assert kinds == {
        "full_name": "person_name", "contact": "email", "phone_number": "phone", "ssn": "ssn",
        "card": "credit_card", "iban": "iban", "ip": "ip_address", "birth_date": "date_of_birth",
        "zip": "zip_code", "notes": "free_text", "amount": "none",
    }  # fmt: skip


def test_check_digits_and_shares(report):
    by = report.by_column()
    # 4 of 5 values: the invalid Luhn card, the bad IBAN checksum, SSN area 000 and a 999 octet do not count
    for column, kind in [("card", "credit_card"), ("iban", "iban"), ("ssn", "ssn"), ("ip", "ip_address")]:
        assert by[column].shares[kind] == pytest.approx(0.8), column
    assert by["ssn"].shares["phone"] == 0.0  # an SSN is not a phone number
    assert by["amount"].shares["phone"] == 0.0  # nor is a decimal amount
    assert 0.0 < by["zip"].confidence <= 1.0 and report.rows_sampled == 5


def test_the_report_holds_no_values(report):
    text = json.dumps(report.to_dict())
    for row in ROWS:
        for value in row:
            if isinstance(value, str):
                assert value not in text


def test_suggested_config_is_a_reviewed_starting_point(report):
    config = suggest_config(report, reference_date=dt.date(2025, 1, 1), k=5)
    actions = {r.column: r.action for r in config.columns}
    assert actions["full_name"] == actions["ssn"] == actions["notes"] == actions["ip"] == "drop"
    assert actions["contact"] == "pseudonymize" and actions["card"] == actions["iban"] == "mask"
    assert actions["birth_date"] == actions["zip"] == "quasi_identifier"
    assert actions["amount"] == "keep" and config.unlisted == "error" and config.k == 5
