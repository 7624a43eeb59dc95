"""Every citation of the specification in the repository points at something that exists.

Comments, docstrings and test names cite rows of three documents: ``docs/BEHAVIOUR.md`` (the
behaviour specification), ``docs/API.md`` (the exchange notes) and ``docs/RECOVERY.md`` (the
restart and reconciliation tables). A clone must be able to follow every one of them, so this
test reads the ``*.py`` files (top level, ``simulator/``, ``tests/``, ``bench/``,
``strategies/``), ``docs/*.md`` and ``README.md``, extracts the citations and resolves each
against the headings, table rows, numbered items and labels of the documents. The failure
lists every citation that resolves to nothing, as ``file:line``.

Citation forms (``BEHAVIOUR.md`` may also be written ``docs/BEHAVIOUR.md`` or ``BEHAVIOUR``;
``API.md`` and ``RECOVERY.md`` likewise with a ``docs/`` prefix):

* a section: ``BEHAVIOUR.md 7.5``, ``BEHAVIOUR.md §7.5``, ``BEHAVIOUR.md section 2``,
  ``API.md sections 2, 3, 8``; ranges ``§6.0-§6.2``, ``§3.1-3.2``; lists with ``,``, ``;``,
  ``/`` and ``and``; ``BEHAVIOUR.md preamble``;
* rows and numbered items of a section: ``BEHAVIOUR.md 8 row 13``, ``§8 rows 5-7, 11``,
  ``BEHAVIOUR.md §6.4 step 7``, ``API.md 12 #4``, ``API.md 0 #9-11``, ``API.md §13 items 6-9``,
  ``API.md §13 6-9`` (a number right after a section, without a comma, is an item of it),
  ``API.md 10, checklist 21-24`` (the §13 checklist), ``API.md §11 quirk 16``; a dotted
  number that is not a heading is an item of its parent: ``API.md 11.16`` is item 16 of §11,
  and bare numbers after it stay items (``§11.8-11, 19, 21``);
* a label in a section: ``BEHAVIOUR.md §6.2 "Phased pricing"`` (the section's text holds it);
* a bare section, ``§3.2`` or ``section 2.1``: in the file's home document, the first of
  BEHAVIOUR.md and API.md the file names (BEHAVIOUR.md when it names neither; inside
  docs/BEHAVIOUR.md and docs/API.md, that document);
* an incident: ``incident 21``, ``incidents 14, 15 and 22``, a test ``test_incident_21_*``:
  a row of BEHAVIOUR.md §8;
* a bare numbered row: ``row 35``, ``rows 12/16``, ``Rows 10/10b``, a test ``test_row_27_*``:
  a row of BEHAVIOUR.md §4.2 (transitions) or §8 (incidents);
* an invariant: ``I5``: BEHAVIOUR.md §4.1;
* a RECOVERY row: ``docs/RECOVERY.md row O2``, ``RECOVERY.md X1``, ``RECOVERY.md S1-S6,
  X1-X2``, ``→ RECOVERY P1–P3``, ``rows L1-L4``, ``row E1``, a test ``test_row_o2_*``.

A letter-and-number id (``T1``, ``E1``, ``S6``) counts only after ``row``/``rows``/
``RECOVERY.md`` or in a test name, so test constants (``T0``, ``E1``, ``P85``) and trade ids
(``"T1"``) are never taken for citations; ``row`` needs a number or such an id right after it,
so prose ("one row per trade") is not a citation either. A citation may go on over a line break
after a keyword or a separator (``(rows`` / ``19, 20)``), and a section ending a line may be
followed by an item keyword opening the next (``per §12`` / ``row 4``). This file is not
scanned: its negative examples would be reported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
THIS_FILE = Path(__file__).resolve()
PY_DIRS = ("simulator", "tests", "bench", "strategies")
SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules"}

BEHAVIOUR, API, RECOVERY = "BEHAVIOUR.md", "API.md", "RECOVERY.md"
DOC_FILES = {BEHAVIOUR: DOCS / "BEHAVIOUR.md", API: DOCS / "API.md", RECOVERY: DOCS / "RECOVERY.md"}
# Inside these files a bare "§" means the file itself.
SELF_CONTEXT = {"BEHAVIOUR.md": BEHAVIOUR, "API.md": API}
TRANSITION_SECTION, INCIDENT_SECTION = "4.2", "8"
CHECKLIST_SECTION = "13"


# ---------------------------------------------------------------------------------------------
# The documents: headings, rows, numbered items, labels
# ---------------------------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_SECTION_NUMBER = re.compile(r"^§?(\d+(?:\.\d+)*)\.?(?=\s|$)")
_TABLE_FIRST_CELL = re.compile(r"^\|\s*([^|]*?)\s*\|")
_LIST_ITEM = re.compile(r"^\s*(\d+)\.\s")
_INVARIANT = re.compile(r"^\s*[-*]\s+\**(I\d+)\**\s*:")
_ITEM_ID = re.compile(r"^[A-Za-z]?\d+[a-z]?$")


@dataclass
class DocIndex:
    """What one document offers to citations."""

    sections: set[str] = field(default_factory=set)
    items: dict[str, set[str]] = field(default_factory=dict)    # section -> row / item ids
    text: dict[str, str] = field(default_factory=dict)          # section -> its own text
    invariants: set[str] = field(default_factory=set)
    row_ids: set[str] = field(default_factory=set)              # every table row id, any section

    def has_item(self, section: str, item: str) -> bool:
        return item in self.items.get(section, set())


def index_markdown(text: str) -> DocIndex:
    """Headings give sections ("6.2", "preamble"); rows and numbered items belong to the last one."""
    index = DocIndex()
    current: str | None = None
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if current is not None:
                index.text[current] += line + "\n"
            continue
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2)
            number = _SECTION_NUMBER.match(title)
            if number:
                current = number.group(1)
            elif title.lower().startswith("preamble"):
                current = "preamble"
            else:
                current = None
            if current is not None:
                index.sections.add(current)
                index.text.setdefault(current, "")
                index.text[current] += title + "\n"
            continue
        if current is not None:
            index.text[current] += line + "\n"
        ids: list[str] = []
        cell = _TABLE_FIRST_CELL.match(line)
        if cell:
            value = cell.group(1).strip().strip("`*#").strip()
            if _ITEM_ID.match(value):
                ids.append(value)
        item = _LIST_ITEM.match(line)
        if item:
            ids.append(item.group(1))
        invariant = _INVARIANT.match(line)
        if invariant:
            index.invariants.add(invariant.group(1))
        for value in ids:
            index.row_ids.add(value)
            if current is not None:
                index.items.setdefault(current, set()).add(value)
    return index


def load_indexes() -> dict[str, DocIndex]:
    return {name: index_markdown(path.read_text(encoding="utf-8")) for name, path in DOC_FILES.items()}


# ---------------------------------------------------------------------------------------------
# Citations
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Citation:
    """One id cited at ``path:line``; ``kind`` says how it must resolve."""

    path: str
    line: int
    doc: str
    kind: str          # section | item | label | rows (4.2 or 8) | invariant | recovery
    target: str        # section id, "section#item", "section|label", row id
    text: str          # the cited words, for the report

    def where(self) -> str:
        return f"{self.path}:{self.line}"


_DOC_NAMES = r"\b(?:(?P<b>BEHAVIOUR)(?:\.md)?|(?P<a>API)\.md|(?P<r>RECOVERY)(?:\.md)?)(?!\w)"
_DOC_ANCHOR = re.compile(_DOC_NAMES)
_ANCHOR = re.compile(
    _DOC_NAMES
    + r"|(?P<sign>§)(?=\s?\d)"
    r"|(?P<section>\b[Ss]ections?)(?=\s+\d)"
    r"|(?P<incident>\b[Ii]ncidents?)(?=\s+\d)"
    r"|(?P<row>\b[Rr]ows?)(?=\s+(?:\d|[A-Z]\d))"
    r"|(?P<inv>\bI\d+\b)"
    r"|\btest_incident_(?P<tinc>\d+)_"
    r"|\btest_row_(?P<trow>[a-z]?\d+[a-z]?)_")

_NEWLINE = re.compile(r"\r?\n[ \t]*(?:#[ \t]*)?")
_NUMBER = re.compile(r"(§\s?)?(\d+(?:\.\d+)*)(?![\d.]*\w)")
_RANGE_END = re.compile(r"[ \t]*[-–][ \t]*(§\s?)?(\d+(?:\.\d+)*)(?![\d.]*\w)")
_ITEM = re.compile(r"(\d+[a-z]?)\b")
_DIGITS = re.compile(r"(\d+)\b")
_NUMBER_DOTTED = re.compile(r"\d+\.\d")
_ITEM_RANGE_END = re.compile(r"[ \t]*[-–][ \t]*(\d+)\b")
_RID = re.compile(r"([A-Z])(\d+)\b")
_RID_RANGE_END = re.compile(r"[ \t]*[-–][ \t]*([A-Z])?(\d+)\b")
_SEPARATOR = re.compile(r",|;|/|and\b")
_ITEM_KEYWORD = re.compile(r"(?:rows?|items?|quirks?|steps?|checklist)\b|#(?=\d)", re.IGNORECASE)
_SECTION_WORD = re.compile(r"sections?\b", re.IGNORECASE)
_ROW_WORD = re.compile(r"rows?\b", re.IGNORECASE)
_PREAMBLE = re.compile(r"preamble\b")
_LABEL = re.compile(r'"([^"\n]{2,60})"')
# What may follow a separator for a list to go on: in a document's run, after items or rows.
_RUN_TOKEN = re.compile(r'§|\d|"|sections?\b|rows?\b|items?\b|checklist\b', re.IGNORECASE)
_ITEM_TOKEN = re.compile(r"\d")
_ROW_TOKEN = re.compile(r"\d|[A-Z]\d")


class _Scanner:
    """Reads the citations of one file, left to right."""

    def __init__(self, path: str, text: str, indexes: dict[str, DocIndex]) -> None:
        self.path = path
        self.text = text
        self.indexes = indexes
        self.context = self._home_document(path, text)
        self.found: list[Citation] = []

    @staticmethod
    def _home_document(path: str, text: str) -> str:
        """What a bare ``§`` means in this file: the document itself inside docs/BEHAVIOUR.md and
        docs/API.md, else the first of the two the file names (its module docstring, as a rule)."""
        if path.startswith("docs/") and Path(path).name in SELF_CONTEXT:
            return SELF_CONTEXT[Path(path).name]
        for anchor in _DOC_ANCHOR.finditer(text):
            if anchor.group("b"):
                return BEHAVIOUR
            if anchor.group("a"):
                return API
        return BEHAVIOUR

    # ---- helpers ------------------------------------------------------------------------------

    def _line(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def _skip(self, pos: int, cross: bool) -> int:
        """Spaces; and one line break too (with a comment's ``#``) when ``cross``."""
        pos = self._spaces(pos)
        if cross:
            newline = _NEWLINE.match(self.text, pos)
            if newline:
                pos = self._spaces(newline.end())
        return pos

    def _spaces(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in " \t":
            pos += 1
        return pos

    def _cite(self, start: int, end: int, doc: str, kind: str, target: str) -> None:
        words = " ".join(self.text[start:end].split())
        self.found.append(Citation(self.path, self._line(start), doc, kind, target, words))

    def _separator(self, pos: int, token: re.Pattern[str]) -> int | None:
        """Where the token after a separator at ``pos`` starts, or None (the list ends here)."""
        separator = _SEPARATOR.match(self.text, pos)
        if separator is None:
            return None
        after = self._skip(separator.end(), cross=True)
        return after if token.match(self.text, after) else None

    # ---- the scan -------------------------------------------------------------------------------

    def scan(self) -> list[Citation]:
        pos = 0
        while True:
            match = _ANCHOR.search(self.text, pos)
            if match is None:
                return self.found
            pos = max(self._anchor(match), match.start() + 1)

    def _anchor(self, match: re.Match[str]) -> int:
        """Read the citation that starts at ``match``; returns where the scan goes on."""
        start = match.start()
        if match.group("r"):
            return self._recovery_ids(match.end())
        if match.group("b") or match.group("a"):
            return self._doc_run(match.end(), BEHAVIOUR if match.group("b") else API)
        if match.group("sign") or match.group("section"):
            return self._doc_run(start, self.context)
        if match.group("incident"):
            return self._incidents(match.end())
        if match.group("row"):
            return self._rows(match.end())
        if match.group("inv"):
            self._cite(start, match.end(), BEHAVIOUR, "invariant", match.group("inv"))
        elif match.group("tinc"):
            self._cite(start, match.end(), BEHAVIOUR, "item", f"{INCIDENT_SECTION}#{int(match.group('tinc'))}")
        elif match.group("trow")[0].isalpha():
            self._cite(start, match.end(), RECOVERY, "recovery", match.group("trow").upper())
        else:
            self._cite(start, match.end(), BEHAVIOUR, "rows", match.group("trow"))
        return match.end()

    # ---- a run of one document's sections and items ---------------------------------------------

    def _doc_run(self, pos: int, doc: str) -> int:
        """Sections, items and labels after a document's name (or a bare ``§``); returns the end."""
        current: str | None = None     # the section named last in this run
        items_of: str | None = None    # set while bare numbers are items of a section
        end = pos
        expecting = True               # right after the anchor, a keyword or a separator
        while True:
            at = self._skip(end, cross=expecting)
            if not expecting:
                after = self._separator(at, _RUN_TOKEN)
                if after is not None:
                    if self.text.startswith(";", at):
                        items_of = None
                    end, expecting = after, True
                    continue
                if current is None:
                    return end
                if at == end:
                    # "greeks per §12" / "row 4": an item keyword may open the next line
                    at = self._skip(end, cross=True)
                    keyword = _ITEM_KEYWORD.match(self.text, at)
                    if at == end or keyword is None or keyword.group(0) == "#":
                        return end
                keyword = _ITEM_KEYWORD.match(self.text, at)
                label = _LABEL.match(self.text, at)
                number = _NUMBER.match(self.text, at)
                if keyword:
                    end, items_of = keyword.end(), self._items_section(keyword.group(0), current, doc)
                    if items_of is None:
                        return end
                    expecting = True
                elif label:
                    self._cite(at, label.end(), doc, "label", f"{current}|{label.group(1)}")
                    end = label.end()
                elif number and not number.group(1) and "." not in number.group(2) and items_of is None:
                    end, items_of = self._items(at, current, doc), current    # "§13 6-9"
                else:
                    return end
                continue
            word = _SECTION_WORD.match(self.text, at)
            if word:
                end, items_of = word.end(), None
                continue
            keyword = _ITEM_KEYWORD.match(self.text, at)
            if keyword and (current is not None or keyword.group(0).lower() == "checklist"):
                end, items_of = keyword.end(), self._items_section(keyword.group(0), current, doc)
                if items_of is None:
                    return end
                current = items_of
                continue
            preamble = _PREAMBLE.match(self.text, at) if doc == BEHAVIOUR else None
            if preamble:
                stop = preamble.end()
                self._cite(at, stop, doc, "section", "preamble")
                end, expecting, current, items_of = stop, False, "preamble", None
                continue
            label = _LABEL.match(self.text, at)
            if label and current is not None:
                self._cite(at, label.end(), doc, "label", f"{current}|{label.group(1)}")
                end, expecting = label.end(), False
                continue
            if items_of is not None and _ITEM.match(self.text, at) and not _NUMBER_DOTTED.match(self.text, at):
                end, expecting = self._items(at, items_of, doc), False
                continue
            number = _NUMBER.match(self.text, at)
            if number is None:
                return end
            stop, last = number.end(), None
            tail = _RANGE_END.match(self.text, stop)
            if tail:
                stop, last = tail.end(), tail.group(2)
            current, items_of = self._sections(at, stop, doc, number.group(2), last)
            end, expecting = stop, False

    @staticmethod
    def _items_section(keyword: str, current: str | None, doc: str) -> str | None:
        if keyword.lower() == "checklist":
            return CHECKLIST_SECTION if doc == API else None
        return current

    def _sections(self, start: int, stop: int, doc: str, first: str, last: str | None) -> tuple[str, str | None]:
        """Cite ``first`` (to ``last``). Returns the section now current and, when the numbers
        are items of a parent without subsections (``11.16``), that parent."""
        names = [first]
        if last is not None:
            if "." in first and "." not in last:
                last = first.rsplit(".", 1)[0] + "." + last
            head_a, _, tail_a = first.rpartition(".")
            head_b, _, tail_b = last.rpartition(".")
            if head_a == head_b and int(tail_a) <= int(tail_b):
                names = [f"{head_a}.{n}" if head_a else str(n) for n in range(int(tail_a), int(tail_b) + 1)]
            else:
                names = [first, last]
        index = self.indexes[doc]
        parent: str | None = None
        for name in names:
            head, _, tail = name.rpartition(".")
            if name not in index.sections and head and index.has_item(head, tail):
                self._cite(start, stop, doc, "item", f"{head}#{tail}")
                parent = head
            else:
                self._cite(start, stop, doc, "section", name)
        return (parent, parent) if parent is not None else (names[-1], None)

    def _items(self, pos: int, section: str, doc: str) -> int:
        """Item numbers of ``section`` (``5-7, 11, 37``, ``7a``); returns where the list ends."""
        end = pos
        while True:
            item = _ITEM.match(self.text, pos)
            if item is None:
                return end
            stop, values = item.end(), [item.group(1)]
            tail = _ITEM_RANGE_END.match(self.text, stop)
            if tail and item.group(1).isdigit():
                values = [str(n) for n in range(int(item.group(1)), int(tail.group(1)) + 1)]
                stop = tail.end()
            for value in values:
                self._cite(pos, stop, doc, "item", f"{section}#{value}")
            end = stop
            after = self._separator(self._skip(end, cross=False), _ITEM_TOKEN)
            if after is None or self.text.startswith(";", self._skip(end, cross=False)):
                return end
            pos = after

    # ---- incidents, bare rows, RECOVERY ids ------------------------------------------------------

    def _incidents(self, pos: int) -> int:
        """``incident 21``, ``incidents 14, 15 and 22``: rows of BEHAVIOUR.md §8."""
        end = pos
        at = self._skip(pos, cross=True)
        while True:
            item = _DIGITS.match(self.text, at)
            if item is None:
                return end
            stop, values = item.end(), [int(item.group(1))]
            tail = _ITEM_RANGE_END.match(self.text, stop)
            if tail:
                stop, values = tail.end(), list(range(values[0], int(tail.group(1)) + 1))
            for value in values:
                self._cite(at, stop, BEHAVIOUR, "item", f"{INCIDENT_SECTION}#{value}")
            end = stop
            after = self._separator(self._skip(end, cross=False), _ITEM_TOKEN)
            if after is None or self.text.startswith(";", self._skip(end, cross=False)):
                return end
            at = after

    def _rows(self, pos: int) -> int:
        """``row 35``, ``rows 12/16``, ``Rows 10/10b`` (BEHAVIOUR.md §4.2 or §8); ``rows L1-L4, O2``
        (RECOVERY.md)."""
        end = pos
        at = self._skip(pos, cross=True)
        while True:
            rid = _RID.match(self.text, at)
            item = _ITEM.match(self.text, at)
            if rid:
                end = self._recovery_range(at, rid)
            elif item:
                stop, values = item.end(), [item.group(1)]
                tail = _ITEM_RANGE_END.match(self.text, stop)
                if tail and item.group(1).isdigit():
                    stop, values = tail.end(), [str(n) for n in range(int(item.group(1)), int(tail.group(1)) + 1)]
                for value in values:
                    self._cite(at, stop, BEHAVIOUR, "rows", value)
                end = stop
            else:
                return end
            after = self._separator(self._skip(end, cross=False), _ROW_TOKEN)
            if after is None or self.text.startswith(";", self._skip(end, cross=False)):
                return end
            at = after

    def _recovery_ids(self, pos: int) -> int:
        """After ``RECOVERY.md``: an optional ``,`` and ``row(s)``, then ids (``O2``, ``S1-S6, X1``)."""
        at = self._skip(pos, cross=False)
        if self.text.startswith(",", at):
            at = self._skip(at + 1, cross=True)
        word = _ROW_WORD.match(self.text, at)
        if word:
            at = self._skip(word.end(), cross=True)
        if not _RID.match(self.text, at):
            return pos
        return self._rows(at)

    def _recovery_range(self, at: int, rid: re.Match[str]) -> int:
        letter, first, stop = rid.group(1), int(rid.group(2)), rid.end()
        values = [f"{letter}{first}"]
        tail = _RID_RANGE_END.match(self.text, stop)
        if tail and tail.group(1) in (None, letter):
            values = [f"{letter}{n}" for n in range(first, int(tail.group(2)) + 1)]
            stop = tail.end()
        for value in values:
            self._cite(at, stop, RECOVERY, "recovery", value)
        return stop


def citations_in(path: str, text: str, indexes: dict[str, DocIndex]) -> list[Citation]:
    return _Scanner(path, text, indexes).scan()


def resolves(citation: Citation, indexes: dict[str, DocIndex]) -> bool:
    index = indexes[citation.doc]
    if citation.kind == "section":
        return citation.target in index.sections
    if citation.kind == "item":
        section, _, item = citation.target.partition("#")
        return index.has_item(section, item)
    if citation.kind == "label":
        section, _, label = citation.target.partition("|")
        return section in index.sections and label.lower() in index.text.get(section, "").lower()
    if citation.kind == "rows":
        return index.has_item(TRANSITION_SECTION, citation.target) or index.has_item(INCIDENT_SECTION,
                                                                                     citation.target)
    if citation.kind == "invariant":
        return citation.target in index.invariants
    if citation.kind == "recovery":
        return citation.target in index.row_ids
    raise AssertionError(f"unknown citation kind {citation.kind}")


# ---------------------------------------------------------------------------------------------
# The repository
# ---------------------------------------------------------------------------------------------


def scanned_files() -> list[Path]:
    files = sorted(ROOT.glob("*.py"))
    for folder in PY_DIRS:
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if not SKIP_DIRS.intersection(p.parts))
    files += sorted(DOCS.glob("*.md"))
    files.append(ROOT / "README.md")
    return [p for p in files if p.resolve() != THIS_FILE and p.is_file()]


def repository_citations(indexes: dict[str, DocIndex]) -> list[Citation]:
    found: list[Citation] = []
    for path in scanned_files():
        relative = path.relative_to(ROOT).as_posix()
        found += citations_in(relative, path.read_text(encoding="utf-8"), indexes)
    return found


def unresolved_report(citations: list[Citation], indexes: dict[str, DocIndex]) -> list[str]:
    return [f"{c.where()}: {c.text!r} -> {c.doc} {c.kind} {c.target}" for c in citations
            if not resolves(c, indexes)]


@pytest.fixture(scope="module")
def indexes() -> dict[str, DocIndex]:
    return load_indexes()


@pytest.fixture(scope="module")
def citations(indexes) -> list[Citation]:
    return repository_citations(indexes)


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def test_every_citation_in_the_repository_resolves(citations, indexes):
    missing = unresolved_report(citations, indexes)
    assert not missing, (f"{len(missing)} of {len(citations)} citations point at nothing in docs/ "
                         f"(add the row or fix the citation):\n" + "\n".join(missing))


def test_the_scan_finds_the_citations_the_code_is_known_to_make(citations):
    # A scanner that silently stopped matching would pass the test above with nothing to check.
    assert len(citations) > 500
    kinds = {c.kind for c in citations}
    assert kinds >= {"section", "item", "label", "rows", "invariant", "recovery"}
    docs = {c.doc for c in citations}
    assert docs == {BEHAVIOUR, API, RECOVERY}


def test_deleting_a_row_makes_its_citations_fail(citations, indexes):
    """The check is real: without §8 row 13, the repository's citations of it are reported."""
    text = DOC_FILES[BEHAVIOUR].read_text(encoding="utf-8")
    row = re.compile(r"^\| 13 \|.*\n", re.MULTILINE)
    assert row.search(text), "§8 row 13 must exist"
    damaged = dict(indexes)
    damaged[BEHAVIOUR] = index_markdown(row.sub("", text))
    missing = unresolved_report(citations, damaged)
    assert any("account_manager.py" in line and "8#13" in line for line in missing), missing
    assert all("8#13" in line or "rows 13" in line for line in missing), missing


def test_deleting_a_recovery_row_or_a_heading_makes_its_citations_fail(citations, indexes):
    recovery = DOC_FILES[RECOVERY].read_text(encoding="utf-8")
    damaged = dict(indexes)
    damaged[RECOVERY] = index_markdown(re.sub(r"^\| E1 \|.*\n", "", recovery, flags=re.MULTILINE))
    damaged[API] = index_markdown(re.sub(r"^### 7\.2 .*\n", "", DOC_FILES[API].read_text(encoding="utf-8"),
                                         flags=re.MULTILINE))
    missing = unresolved_report(citations, damaged)
    assert any("recovery E1" in line for line in missing)
    assert any("API.md section 7.2" in line for line in missing)


SAMPLES = [
    # (text, expected (doc, kind, target) in order)
    ("(BEHAVIOUR.md 8 row 13)", [(BEHAVIOUR, "section", "8"), (BEHAVIOUR, "item", "8#13")]),
    ("(docs/BEHAVIOUR.md §6.0-§6.2, §8; API.md §8, §9, §11)",
     [(BEHAVIOUR, "section", "6.0"), (BEHAVIOUR, "section", "6.1"), (BEHAVIOUR, "section", "6.2"),
      (BEHAVIOUR, "section", "8"), (API, "section", "8"), (API, "section", "9"), (API, "section", "11")]),
    ("BEHAVIOUR.md section 8, rows 13-15, 22.",
     [(BEHAVIOUR, "section", "8")] + [(BEHAVIOUR, "item", f"8#{n}") for n in (13, 14, 15, 22)]),
    ("(API.md §11.8-11, 19, 21)", [(API, "item", f"11#{n}") for n in (8, 9, 10, 11, 19, 21)]),
    ("(API.md 12 #4; or per_contract)", [(API, "section", "12"), (API, "item", "12#4")]),
    ("(API.md §13 6-9, 17-18)", [(API, "section", "13")] + [(API, "item", f"13#{n}") for n in (6, 7, 8, 9, 17, 18)]),
    ("(API.md 10, checklist 21-24)", [(API, "section", "10")] + [(API, "item", f"13#{n}") for n in range(21, 25)]),
    ("(API.md 4, 5; 13 item 6)", [(API, "section", "4"), (API, "section", "5"), (API, "section", "13"),
                                  (API, "item", "13#6")]),
    ('(API.md 3.3 "Client class")', [(API, "section", "3.3"), (API, "label", "3.3|Client class")]),
    ("BEHAVIOUR.md §6.4 step 7", [(BEHAVIOUR, "section", "6.4"), (BEHAVIOUR, "item", "6.4#7")]),
    ("(BEHAVIOUR.md preamble)", [(BEHAVIOUR, "section", "preamble")]),
    ("incidents 16, 18, 38 and 39 of BEHAVIOUR.md 8",
     [(BEHAVIOUR, "item", f"8#{n}") for n in (16, 18, 38, 39)] + [(BEHAVIOUR, "section", "8")]),
    ("(row 12/16), else FAILED (row 7/16). Rows 10/10b:",
     [(BEHAVIOUR, "rows", n) for n in ("12", "16", "7", "16", "10", "10b")]),
    ("(docs/RECOVERY.md rows L1-L4, O2)", [(RECOVERY, "recovery", f"L{n}") for n in range(1, 5)]
     + [(RECOVERY, "recovery", "O2")]),
    ("(docs/RECOVERY.md S1-S6, X1-X2)", [(RECOVERY, "recovery", f"S{n}") for n in range(1, 7)]
     + [(RECOVERY, "recovery", "X1"), (RECOVERY, "recovery", "X2")]),
    ("# I5: persist first", [(BEHAVIOUR, "invariant", "I5")]),
    ("A trade (rows\n    19, 20, 36).", [(BEHAVIOUR, "rows", n) for n in ("19", "20", "36")]),
    ("def test_incident_07_x(): ...\ndef test_row_o8_y(): ...",
     [(BEHAVIOUR, "item", "8#7"), (RECOVERY, "recovery", "O8")]),
    ("API.md 2.2: then §2.4 and section 3.3", [(API, "section", "2.2"), (API, "section", "2.4"),
                                                (API, "section", "3.3")]),
    ("API.md 13 item 15 (§12 row 7b); greeks per §12\n    row 4.",
     [(API, "section", "13"), (API, "item", "13#15"), (API, "section", "12"), (API, "item", "12#7b"),
      (API, "section", "12"), (API, "item", "12#4")]),
    ("BEHAVIOUR.md 2 first; API.md section 5 later; then (section 2.2)",
     [(BEHAVIOUR, "section", "2"), (API, "section", "5"), (BEHAVIOUR, "section", "2.2")]),
    ('f"BEHAVIOUR.md 8 row {row} ({INCIDENTS[row]})"', [(BEHAVIOUR, "section", "8")]),
    ("(→ RECOVERY P1–P3) and RECOVERY.md, rows L2 and L4",
     [(RECOVERY, "recovery", f"P{n}") for n in (1, 2, 3)] + [(RECOVERY, "recovery", "L2"),
                                                             (RECOVERY, "recovery", "L4")]),
    ('(BEHAVIOUR.md §6.2 "Phased pricing", "Floors and caps"; §1.3)',
     [(BEHAVIOUR, "section", "6.2"), (BEHAVIOUR, "label", "6.2|Phased pricing"),
      (BEHAVIOUR, "label", "6.2|Floors and caps"), (BEHAVIOUR, "section", "1.3")]),
    ("(API.md §11 #4-7, §12 #2-3, §13 21-24)",
     [(API, "section", "11")] + [(API, "item", f"11#{n}") for n in range(4, 8)]
     + [(API, "section", "12"), (API, "item", "12#2"), (API, "item", "12#3"), (API, "section", "13")]
     + [(API, "item", f"13#{n}") for n in range(21, 25)]),
]

NOT_CITATIONS = [
    "one row per trade; every row of the table",
    "SELECT * FROM orders  -- row count",
    "schema step 2 of the migration",
    "T0 = 1_772_528_400.0  # E1 is 26 h away; P85 and T1",
    '{"trade_id": "T1", "state": "OPEN"}',
    "shared/coincall/BEHAVIOUR.md, because a fresh clone",
    "the RECOVERY of a trade, API.md.",
]


@pytest.mark.parametrize("text, expected", SAMPLES, ids=[s[0][:40] for s in SAMPLES])
def test_citation_forms_are_read_as_documented(text, expected, indexes):
    found = [(c.doc, c.kind, c.target) for c in citations_in("example.py", text, indexes)]
    assert found == expected


@pytest.mark.parametrize("text", NOT_CITATIONS)
def test_prose_and_test_constants_are_not_citations(text, indexes):
    assert citations_in("example.py", text, indexes) == []


# ---------------------------------------------------------------------------------------------
# The documents keep the whole numbering of the specification they restate
# ---------------------------------------------------------------------------------------------

BEHAVIOUR_SECTIONS = {"preamble", "1", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "2", "2.1", "2.2",
                      "2.3", "2.4", "3", "3.1", "3.2", "3.3", "3.4", "4", "4.1", "4.2", "4.3", "4.4", "4.5",
                      "4.6", "4.7", "5", "6", "6.0", "6.1", "6.2", "6.3", "6.4", "6.5", "7", "7.1", "7.2",
                      "7.3", "7.4", "7.5", "7.6", "7.7", "7.8", "8"}
API_SECTIONS = {"0", "1", "2", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3", "3.1", "3.2", "3.3", "3.4", "4",
                "5", "6", "6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "7", "7.1", "7.2", "8", "8.1", "8.2", "8.3",
                "8.4", "8.5", "8.6", "8.7", "9", "10", "10.1", "10.2", "10.3", "10.4", "10.5", "10.6", "11",
                "12", "13", "14", "14.1", "14.2", "14.3", "14.4", "14.5", "14.6", "14.7", "14.8", "14.9"}


def _numbers(low: int, high: int) -> set[str]:
    return {str(n) for n in range(low, high + 1)}


def test_behaviour_keeps_every_section_row_step_and_invariant(indexes):
    index = indexes[BEHAVIOUR]
    assert index.sections == BEHAVIOUR_SECTIONS
    assert index.items[INCIDENT_SECTION] == _numbers(1, 45)
    assert index.items[TRANSITION_SECTION] == _numbers(1, 18) | {"10b", "16b"}
    assert index.items["5"] == _numbers(1, 11)
    assert index.items["6.4"] == _numbers(1, 7)
    assert index.items["3.4"] == _numbers(1, 5)
    assert index.invariants == {"I1", "I2", "I3", "I4", "I5"}


def test_api_keeps_every_section_and_numbered_item(indexes):
    index = indexes[API]
    assert index.sections == API_SECTIONS
    assert index.items["0"] == _numbers(1, 20)
    assert index.items["2.3"] == _numbers(1, 6)
    assert index.items["11"] == _numbers(1, 23)
    assert index.items["12"] == _numbers(1, 14) - {"7"} | {"7a", "7b", "7c", "7d", "7e"}
    assert index.items["13"] == _numbers(1, 27)


def test_recovery_rows_are_indexed(indexes):
    rows = indexes[RECOVERY].row_ids
    expected = ({f"T{n}" for n in range(1, 12)} | {f"S{n}" for n in range(1, 7)} | {"X1", "X2"}
                | {f"O{n}" for n in range(1, 9)} | {"Q1", "Q2", "Q3"} | {f"L{n}" for n in range(1, 5)}
                | {"E1", "R1", "R2", "R3", "P1", "P2", "P3"})
    assert expected <= rows
