"""Payload capture: the exchange's answers, exactly as received, with every secret taken out.

Why (issue 14): the simulator was written from the documentation, and nobody here can reach
Coincall. A user who runs ``python main.py doctor --capture DIR`` (or the daemon with
``CAPTURE_DIR`` for a bounded window) gets one JSON file per answer in a folder they can read
and share. ``tests/conformance/test_fidelity.py`` turns such a folder into a check: the client's
adapter must parse every answer, and the simulator's answer to the same request must have the
same fields with the same JSON types.

What is removed before anything touches the disk:

* the request's API key and signature (``ObservedResponse.secrets``), and any secret the
  redactor was given, wherever they appear (header values, query values, body strings, keys);
* every value under a key that names a person, an account or a credential (``userId``,
  ``accountId``, ``uid``, ``email``, ``phone``, ``apiKey``, ``name``, ...; compared without case,
  dashes or underscores), replaced by a **stable placeholder of the same JSON type**: one
  account id is the same fake number in every file of the capture, so relations survive and
  the fidelity check still sees an int where the exchange sent one;
* any other occurrence of a value so replaced (an account id repeated under an innocent key);
* every response header that carries a credential, a cookie or an identity; the remaining
  headers are kept (rate-limit headers are what ``doctor`` looks for).

Files are written atomically, mode 0600, in a directory of mode 0700. The writer stops after
``until`` (clock time) or ``max_files``, whichever comes first, so a forgotten setting cannot
fill a disk.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from atomic_file import write_text_atomically
from clock import Clock

if TYPE_CHECKING:  # pragma: no cover - annotations only: the client hands these values in
    from coincall_client import ObservedResponse

logger = logging.getLogger(__name__)

CAPTURE_FORMAT = 1
MANIFEST_FILE = "manifest.json"
DEFAULT_MAX_FILES = 2000
REDACTED = "<redacted>"

# Keys whose values identify a person, an account or a credential. Compared after
# ``_normal_key`` (lower case, no "-" or "_"), so "userId", "user_id" and "USERID" are one.
SENSITIVE_KEYS: frozenset[str] = frozenset({
    "userid", "accountid", "uid", "parentuid", "subuid", "masteruid", "makeruserid", "takeruserid",
    "email", "mail", "phone", "mobile", "telephone",
    "apikey", "apikeyname", "keyname", "key", "secret", "apisecret", "secretkey", "passphrase",
    "sign", "signature", "token", "accesstoken", "refreshtoken", "authorization", "cookie", "setcookie",
    "name", "username", "nickname", "realname", "fullname", "uuid", "ip", "ips", "ipwhitelist",
})
# Header names (normalised) whose value is kept as is: they describe the answer, not the caller.
KEPT_HEADERS: frozenset[str] = frozenset({
    "contenttype", "contentlength", "date", "server", "connection", "retryafter", "vary", "cachecontrol",
    "contentencoding", "transferencoding",
})
# A header whose normalised name contains one of these is dropped whole.
SENSITIVE_HEADER_PARTS: tuple[str, ...] = ("key", "secret", "sign", "token", "cookie", "auth", "session",
                                           "user", "account", "uid", "email", "ip")
RATE_LIMIT_HEADER_PARTS: tuple[str, ...] = ("ratelimit", "limit", "remaining", "retryafter")

_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_SLUG = re.compile(r"[^A-Za-z0-9]+")
# Integers below this are flags and counts, never account identifiers.
_SMALLEST_ID = 10_000
# Fake ids start here: far from any real one, and of the usual 16-19 digits.
_FAKE_ID_BASE = 9_000_000_000_000_000


def _id_number(text: str) -> int | None:
    """The integer a text spells exactly (``"1695796692000001"``; no sign, no leading zero, at
    least ``_SMALLEST_ID``), or None: such a text and that JSON number are one identifier."""
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    number = int(text)
    return number if number >= _SMALLEST_ID else None


def _normal_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def is_sensitive_key(name: str) -> bool:
    return _normal_key(name) in SENSITIVE_KEYS


def is_rate_limit_header(name: str) -> bool:
    normal = _normal_key(name)
    return any(part in normal for part in RATE_LIMIT_HEADER_PARTS) and normal not in ("contentlength",)


class Redactor:
    """Replaces secrets and identifiers with stable placeholders of the same JSON type.

    One redactor serves a whole capture, so a value maps to the same placeholder in every
    file. ``add_secret`` registers a value that must vanish wherever it appears (also as a
    part of a longer text); key-based redaction registers what it replaced the same way.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._numbers: dict[int, int] = {}
        self._texts: dict[str, str] = {}
        for secret in secrets:
            self.add_secret(secret)

    def __repr__(self) -> str:   # never the secrets themselves
        return f"Redactor(secrets={len(self._secrets)}, identifiers={len(self._numbers) + len(self._texts)})"

    def add_secret(self, value: str) -> None:
        """Never write ``value`` (an API key, secret, signature): it becomes ``<secret-N>``."""
        text = str(value)
        if len(text) < 4:   # too short to scrub as a substring without mangling ordinary text
            return
        with self._lock:
            if text not in self._secrets:
                self._secrets[text] = f"<secret-{len(self._secrets) + 1}>"

    # ---- single values --------------------------------------------------------------

    def placeholder(self, value: Any) -> Any:
        """The stable stand-in for an identifying ``value``, of the same JSON type."""
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int) and abs(value) < _SMALLEST_ID:
            return value   # 0, 1, a flag: not an identifier, and replacing it everywhere would wreck the data
        with self._lock:
            if isinstance(value, int):
                return self._id_placeholder(value)
            if isinstance(value, float):
                return 0.0
            text = str(value)
            number = _id_number(text)
            if number is not None:
                # An id sent as text ("userId": "1695796692000001") is the same id where it
                # appears as a JSON number: both forms map to one fake id, registered together.
                return str(self._id_placeholder(number))
            if text not in self._texts:
                n = len(self._texts) + 1
                if text.isdigit():
                    self._texts[text] = str(_FAKE_ID_BASE + 500_000 + n)
                elif _EMAIL_LIKE.fullmatch(text):
                    self._texts[text] = f"user{n}@redacted.invalid"
                else:
                    self._texts[text] = f"<redacted-{n}>"
            return self._texts[text]

    def _id_placeholder(self, value: int) -> int:
        """The fake id of ``value`` (the lock is held), registered as a number and as its text."""
        if value not in self._numbers:
            self._numbers[value] = _FAKE_ID_BASE + len(self._numbers) + 1
            self._texts[str(value)] = str(self._numbers[value])
        return self._numbers[value]

    def scrub_text(self, text: str) -> str:
        """``text`` with every registered secret and identifier replaced where it occurs."""
        with self._lock:
            pairs = list(self._secrets.items()) + [(k, v) for k, v in self._texts.items() if len(k) >= 4] \
                + [(str(k), str(v)) for k, v in self._numbers.items() if len(str(k)) >= 8]
        for original, replacement in sorted(pairs, key=lambda pair: -len(pair[0])):
            if original in text:
                text = text.replace(original, replacement)
        return _EMAIL_LIKE.sub(lambda match: str(self.placeholder(match.group(0))), text)

    # ---- structures -----------------------------------------------------------------

    def data(self, value: Any) -> Any:
        """A JSON value with sensitive keys replaced, then every known value scrubbed (two passes:
        an identifier seen under a sensitive key late in the document also goes from earlier)."""
        first = self._by_key(value)
        return self._by_value(first)

    def _by_key(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            result: dict[str, Any] = {}
            for key, item in value.items():
                if not is_sensitive_key(str(key)) or isinstance(item, Mapping):
                    result[str(key)] = self._by_key(item)
                elif isinstance(item, list):
                    result[str(key)] = [self._by_key(x) if isinstance(x, (Mapping, list)) else self.placeholder(x)
                                        for x in item]
                else:
                    result[str(key)] = self.placeholder(item)
            return result
        if isinstance(value, list):
            return [self._by_key(item) for item in value]
        return value

    def _by_value(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {self.scrub_text(str(key)): self._by_value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._by_value(item) for item in value]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            with self._lock:
                return self._numbers.get(value, value)
        if isinstance(value, str):
            return self.scrub_text(value)
        return value

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Response headers without the ones that identify or authenticate; values scrubbed."""
        kept: dict[str, str] = {}
        for name, value in headers.items():
            normal = _normal_key(name)
            if normal not in KEPT_HEADERS and any(part in normal for part in SENSITIVE_HEADER_PARTS):
                continue
            kept[name] = self.scrub_text(str(value))
        return kept


def _decode_body(body: bytes) -> tuple[Any, str]:
    """(value, kind): parsed JSON ("json") or the text ("text"); ints stay exact."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("utf-8", errors="replace"), "text"
    try:
        return json.loads(text), "json"
    except ValueError:
        return text, "text"


def capture_record(response: ObservedResponse, redactor: Redactor, seq: int) -> dict[str, Any]:
    """The redacted JSON document of one observed answer (what one capture file holds)."""
    for secret in response.secrets:
        redactor.add_secret(secret)
    body, kind = _decode_body(response.body)
    params = redactor.data(dict(response.params))
    return {
        "capture_format": CAPTURE_FORMAT,
        "seq": seq,
        "method": response.method,
        "path": redactor.scrub_text(response.path),
        "route": response.route,
        "query": params if response.encoding == "query" else {},
        "body_params": params if response.encoding != "query" else {},
        "encoding": response.encoding,
        "status": response.status,
        "headers": redactor.headers(response.headers),
        "body_kind": kind,
        "body": redactor.data(body) if kind == "json" else redactor.scrub_text(str(body)),
        "elapsed_ms": round(response.elapsed_seconds * 1000.0, 3),
        "received_at_ms": response.received_at_ms,
    }


def capture_file_name(seq: int, method: str, path: str) -> str:
    slug = _SLUG.sub("-", path).strip("-")[:80] or "root"
    return f"{seq:05d}-{method.upper()}-{slug}.json"


@dataclass
class CaptureWriter:
    """A ``ResponseObserver`` that writes each answer, redacted, into ``directory``.

    ``until``: clock time after which nothing more is written (None: no time bound);
    ``max_files``: the hard bound on files. A failed write is logged once and ends the
    capture (never the request).
    """

    directory: Path
    clock: Clock
    redactor: Redactor = field(default_factory=Redactor)
    until: float | None = None
    max_files: int = DEFAULT_MAX_FILES
    environment: str = ""
    written: int = 0
    _closed: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if self.max_files < 1:
            raise ValueError("max_files must be at least 1")

    @property
    def active(self) -> bool:
        if self._closed or self.written >= self.max_files:
            return False
        return self.until is None or self.clock.now() <= self.until

    def open(self) -> CaptureWriter:
        """Create the directory (0700) and write the manifest; returns self."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        manifest = {"capture_format": CAPTURE_FORMAT, "environment": self.environment,
                    "started_at_ms": self.clock.now_ms(), "until": self.until, "max_files": self.max_files,
                    "note": "exchange answers with keys, signatures and account identifiers replaced "
                            "(docs/DOCTOR.md, 'Sharing a capture')"}
        write_text_atomically(self.directory / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        return self

    def observe(self, response: ObservedResponse) -> None:
        with self._lock:
            if not self.active:
                return
            self.written += 1
            seq = self.written
        try:
            record = capture_record(response, self.redactor, seq)
            write_text_atomically(self.directory / capture_file_name(seq, response.method, response.path),
                                  json.dumps(record, indent=2, sort_keys=True) + "\n")
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("payload capture stopped: could not write to %s (%s)", self.directory, exc)
            self._closed = True

    def close(self) -> None:
        self._closed = True


def load_capture(directory: str | Path) -> list[dict[str, Any]]:
    """Every capture record of ``directory`` in order (the manifest and other files skipped)."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        if path.name == MANIFEST_FILE:
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and document.get("capture_format") == CAPTURE_FORMAT:
            document["_file"] = path.name
            records.append(document)
    return records
