"""The sanitiser removes home directories, e-mail addresses, temp paths and
credentials from free text, keeps the rest readable, and stays fast on
hostile input."""

from __future__ import annotations

import time

import pytest

from kit.sanitise import MAX_MESSAGE_CHARS, sanitise, sanitise_data


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        # home directories: the user goes, the rest of the path stays
        ("cannot open /home/alice/docs/a.pdf: bad", "cannot open <home>/docs/a.pdf: bad"),
        ("/home/alice", "<home>"),
        ("file:///home/alice/x.txt", "file://<home>/x.txt"),
        ("/Users/bob/Library/x.md.", "<home>/Library/x.md."),
        ("/Users/Bob Smith/Desktop/x", "<home>/Desktop/x"),
        ("/root/.cache/hf and /root", "<home>/.cache/hf and <home>"),
        ("/home/ünïcödé/文件/x", "<home>/文件/x"),
        ("/home/alice/../bob/x", "<home>/../bob/x"),
        ("'/home/alice/x', \"/home/bob/y\"", "'<home>/x', \"<home>/y\""),
        # Windows, in every spelling an exception or JSON produces
        (r"C:\Users\bob\AppData\Local\Temp\x.tmp", r"<home>\AppData\Local\Temp\x.tmp"),
        (r"c:/users/Ælfrida/x", "<home>/x"),
        (r"C:\\Users\\bob\\docs", r"<home>\\docs"),
        (r"D:\Users\Bob van der Berg\f.docx", r"<home>\f.docx"),
        (r"C:\Documents and Settings\bob\x", r"<home>\x"),
        (r"C:\Windows\Temp\x.log", "<tmp>"),
        (r"%TEMP%\foo.txt", "<tmp>"),
        # temp paths go whole; a sentence's punctuation is kept
        ("/tmp/pytest-of-root/pytest-3/x.pdf failed.", "<tmp> failed."),
        ("(/tmp/abc)", "(<tmp>)"),
        ("/tmp", "<tmp>"),
        ("/var/tmp/a b", "<tmp> b"),
        ("/private/var/folders/xy/abc123/T/tmpk2 gone", "<tmp> gone"),
        ("/var/folders/xy/abc/T/z", "<tmp>"),
        # nested: whichever comes first owns the path
        ("/tmp/home/alice/x", "<tmp>"),
        ("/home/alice/tmp/x", "<home>/tmp/x"),
        # not home or temp: left alone
        ("/srv/home/alice/x", "/srv/home/alice/x"),
        ("/opt/tmp/x", "/opt/tmp/x"),
        ("/rooted/x", "/rooted/x"),
        ("/data/models/all-MiniLM-L6-v2", "/data/models/all-MiniLM-L6-v2"),
        # e-mail addresses
        ("ask alice@example.com.", "ask <email>."),
        ("jürgen@exämple.de", "<email>"),
        ("bob.smith+tag@sub.example.co.uk", "<email>"),
        ("carol@localhost", "<email>"),
        # credentials
        ("postgres://vo:s3cret@db:5432/vo down", "postgres://<redacted>@db:5432/vo down"),
        ("Authorization: Bearer abc.def-ghi== expired", "Authorization: Bearer <redacted> expired"),
        ("password=hunter2 api_key='xyz abc' x", "password=<redacted> api_key=<redacted> x"),
        ("max tokens: 256", "max tokens: 256"),  # a word, not a secret
        # nothing to do
        ("", ""),
        ("chunk size 300 > 256", "chunk size 300 > 256"),
    ],
)
def test_sanitise(raw: str, clean: str) -> None:
    assert sanitise(raw) == clean


def test_none_is_empty() -> None:
    assert sanitise(None) == ""


def test_many_emails_all_go() -> None:
    raw = ", ".join(f"user{i}@host{i}.example.org" for i in range(200))
    clean = sanitise(raw, limit=100_000)
    assert "@" not in clean
    assert clean.count("<email>") == 200


def test_mixed_message_keeps_its_meaning() -> None:
    raw = (
        "extraction failed for /home/alice/Docs/Q3 report.pdf (owner alice@corp.example): "
        "cache at /tmp/vo-abc/x missing"
    )
    clean = sanitise(raw)
    assert clean == (
        "extraction failed for <home>/Docs/Q3 report.pdf (owner <email>): cache at <tmp> missing"
    )
    assert "alice" not in clean


def test_truncates_to_limit_with_a_marker() -> None:
    clean = sanitise("x" * 5000)
    assert len(clean) == MAX_MESSAGE_CHARS and clean.endswith("…")
    assert sanitise("y" * MAX_MESSAGE_CHARS) == "y" * MAX_MESSAGE_CHARS
    assert len(sanitise("z" * 50, limit=10)) == 10


def test_redaction_happens_before_truncation() -> None:
    # An address straddling the cut must not survive as a fragment.
    raw = "x" * 990 + " alice@example.com"
    clean = sanitise(raw)
    assert "alice" not in clean and len(clean) <= MAX_MESSAGE_CHARS


def test_huge_input_cut_inside_an_email_leaks_nothing() -> None:
    # Long addresses shrink to "<email>", so what follows the scan window's
    # cut ends up inside the kept 1000 characters: the cut one must not leak.
    address = "a" * 60 + "@" + "d" * 30 + ".example "
    head = address * (8000 // len(address))
    for cut_at in range(1, 12):  # inside the local part, at the "@", in the domain
        raw = head + "x" * (8000 - len(head) - cut_at - 1) + " alice@example.com and more"
        clean = sanitise(raw)
        assert len(sanitise(head)) < MAX_MESSAGE_CHARS
        assert "al" not in clean and "@" not in clean and "exa" not in clean
    assert clean.endswith("…")


@pytest.mark.parametrize(
    "raw",
    [
        "a" * 200_000,
        "a." * 100_000,
        "@" * 200_000,
        "a@" * 100_000,
        "/" * 200_000,
        "/home/" * 40_000,
        "/Users/" + "a " * 100_000,
        "C:\\Users\\" * 20_000,
        "password=" * 20_000,
    ],
)
def test_hostile_input_is_fast(raw: str) -> None:
    start = time.perf_counter()
    clean = sanitise(raw)
    assert time.perf_counter() - start < 0.5
    assert len(clean) <= MAX_MESSAGE_CHARS


def test_sanitise_data_recurses_and_drops_secret_keys() -> None:
    data = {
        "path": "/home/alice/x",
        "Password": "p",
        "db_token": "t",
        "SigningKey": "k",
        "nested": [{"api_key": 1, "contact": "a@b.example"}, ("/tmp/x", 3)],
        "count": 3,
        "ok": None,
    }
    assert sanitise_data(data) == {
        "path": "<home>/x",
        "nested": [{"contact": "<email>"}, ["<tmp>", 3]],
        "count": 3,
        "ok": None,
    }
    assert data["Password"] == "p"  # input untouched


def test_sanitise_data_cuts_cycles_and_keeps_shared_values() -> None:
    shared = {"path": "/home/alice/notes.txt"}
    looped: dict = {"user": "bob@example.com", "both": [shared, shared]}
    looped["self"] = looped
    looped["both"].append(looped["both"])
    cleaned = sanitise_data(looped)
    assert cleaned["self"] == "<cycle>" and cleaned["both"][2] == "<cycle>"
    # A value met twice but not inside itself is no cycle: both copies are cleaned.
    assert cleaned["both"][0] == cleaned["both"][1] == {"path": "<home>/notes.txt"}
    assert cleaned["user"] == "<email>"
