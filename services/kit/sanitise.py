"""Scrub personal data out of free text before it is stored or leaves a service.

Operation error messages come from exceptions deep in the indexer (file paths,
DSNs, library messages), and they are shown to clients and kept in the audit
log. The design asks for home directories, e-mail addresses and temp paths to be
removed; credentials in URLs and obvious ``key=value`` secrets go too, because
an asyncpg or HTTP error happily prints them. Pure functions, no I/O, so the
audit service can reuse them on both sides of the wire.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_MESSAGE_CHARS = 1000
# Work on a bounded prefix: the regexes are linear, but a 50 MB exception text
# is still not worth scanning when at most MAX_MESSAGE_CHARS survive.
_SCAN_FACTOR = 8

HOME = "<home>"
TEMP = "<tmp>"
EMAIL = "<email>"
REDACTED = "<redacted>"
_ELLIPSIS = "…"

# A path component: anything but separators, whitespace and the characters that
# usually delimit a path inside a message (quotes, brackets, list separators).
_PART = r"[^/\\\s'\"<>|,;:()\[\]{}]+"
# Not in the middle of a word or of another path, so ``/srv/home/x`` and
# ``/opt/tmp/x`` are left alone; a ``/`` before it is allowed for ``file:///``.
_START = r"(?<![\w.~-])"

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)[^/\s@'\"<>]+@")
_BEARER = re.compile(r"(?i)\b(?P<word>bearer)\s+[\w\-.~+/]+=*")
_SECRET_ASSIGN = re.compile(
    r"(?i)\b(?P<key>[\w-]*(?:password|passwd|secret|token|api[_-]?key)[\w-]*)"
    r"(?P<sep>\s*=\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)
# Temp paths go whole: their later components are random names, of no use.
_TEMP_PATH = re.compile(
    _START + r"(?:(?:/private)?/(?:tmp|var/tmp|var/folders)(?:/[^\s'\"<>|,;]*)?"
    r"|[a-zA-Z]:[\\/]+windows[\\/]+temp(?:[\\/][^\s'\"<>|,;]*)?"
    r"|%te?mp%(?:[\\/][^\s'\"<>|,;]*)?)",
    re.IGNORECASE,
)
# A user name: one token, or up to four words ("Bob Smith" on macOS and
# Windows) when a path separator follows them. Bounded, so the scan stays linear.
_USER = r"(?:(?:" + _PART + r" ){1,3}" + _PART + r"(?=[/\\])|" + _PART + r")"
# Home directories lose the user name; the rest of the path stays (it is what
# makes the message useful: "<home>/docs/report.pdf: not a PDF").
_HOME_DIR = re.compile(
    _START + r"(?:/home/" + _USER + r"|/root(?=[/\\\s'\"<>|,;:)\]}]|$)|/Users/" + _USER + r")"
    r"|(?<![\w])[a-zA-Z]:[\\/]+(?:Users|Documents and Settings)[\\/]+" + _USER,
    re.IGNORECASE,
)
# The lookbehind makes every attempt start at a token boundary, which keeps the
# scan linear on long runs of word characters without an "@".
_EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]+@[\w-]+(?:\.[\w-]+)*")
# What a cut may leave at the very end ("alice@exa", "alice.smi", "/home/ali"):
# the last token is incomplete anyway, so it goes whole.
_TRAILING_TOKEN = re.compile(r"\S+$")
_TRAILING_PUNCT = ".:)]}"

_SECRET_KEY = re.compile(r"(?i)password|passwd|secret|token|key")


def _keep_trailing_punct(match: re.Match[str]) -> str:
    """Put back a sentence's full stop or closing bracket that the path swallowed."""
    text = match.group(0)
    stripped = text.rstrip(_TRAILING_PUNCT)
    return TEMP + text[len(stripped) :]


def sanitise(message: str | None, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Return ``message`` without home directories, e-mails, temp paths or
    credentials, at most ``limit`` characters long (an ellipsis marks a cut)."""
    if not message:
        return ""
    text = message[: limit * _SCAN_FACTOR]
    cut_early = len(message) > len(text)
    if cut_early:
        # The prefix may end inside an e-mail or a home path: drop that fragment.
        text = _TRAILING_TOKEN.sub("", text)
    # Credentials first: a DSN's "user:pass@host" would otherwise half-match as
    # an e-mail and leave the user name behind.
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
    text = _BEARER.sub(lambda m: m.group("word") + " " + REDACTED, text)
    text = _SECRET_ASSIGN.sub(lambda m: m.group("key") + m.group("sep") + REDACTED, text)
    # Temp before home: "/tmp/home/x" is a temp path, and the lookbehind stops
    # "/home/x/tmp/y" from matching as temp.
    text = _TEMP_PATH.sub(_keep_trailing_punct, text)
    text = _HOME_DIR.sub(HOME, text)
    text = _EMAIL.sub(EMAIL, text)
    if len(text) <= limit and not cut_early:
        return text
    return text[: max(limit - len(_ELLIPSIS), 0)] + _ELLIPSIS


CYCLE = "<cycle>"


def sanitise_data(value: Any, limit: int = MAX_MESSAGE_CHARS) -> Any:
    """Sanitise every string in a JSON-like value, recursively, and drop the
    entries whose key names a secret (password, secret, token, key). A container
    that contains itself is cut where it comes round again (``<cycle>``) rather
    than recursing for ever."""
    return _sanitise_data(value, limit, frozenset())


def _sanitise_data(value: Any, limit: int, enclosing: frozenset[int]) -> Any:
    if isinstance(value, str):
        return sanitise(value, limit)
    if isinstance(value, Mapping | list | tuple):
        if id(value) in enclosing:
            return CYCLE
        inside = enclosing | {id(value)}
        if isinstance(value, Mapping):
            return {
                key: _sanitise_data(item, limit, inside)
                for key, item in value.items()
                if not (isinstance(key, str) and _SECRET_KEY.search(key))
            }
        return [_sanitise_data(item, limit, inside) for item in value]
    return value
