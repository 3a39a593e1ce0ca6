"""Reading input files of any size in bounded memory: NDJSON line by line, a Bundle entry by entry.

`iter_input_resources` (parse.py) reads a whole file into memory, which is right for a REST body
and wrong for a registry's bulk file. Here a file is a sequence of *records* that a bulk run can
checkpoint and resume at:

- NDJSON: one record per physical line, `index` = the line number - 1 (blank lines are counted but
  yield nothing). The line stays bytes until a worker parses it (`record_resources`); a Bundle on a
  line is expanded there (`line 7 Bundle.entry[0]`), as parse.py does.
- A JSON document: a Bundle yields one record per entry (`Bundle.entry[3]`); any other document is
  one record (`document`). The document is read twice with ijson: first to check that it is
  well-formed JSON and to index every entry's `fullUrl` -> `Type/id` (in a temporary SQLite file,
  so the index does not grow in memory with the Bundle), then entry by entry, with references to
  another entry's fullUrl rewritten to `Type/id` as a FHIR server reads a Bundle. The first pass
  also finds the faults of validation.bundle_rules (duplicate fullUrls, dangling `urn:uuid:`
  references, a PUT naming another id): the entries they refuse are rejected records.

Labels are the ones parse.py gives, so a rejection reads the same on every path. Callers still run
`validate_resource` on every resource.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Final

import ijson  # type: ignore[import-untyped]
import orjson

from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.parse import (
    NDJSON_SUFFIXES,
    _bundle_entry_resource,
    _put_id,
    iter_input_resources,
    load_json,
    rejected,
)
from fhir_app.fhir.validation import bundle_rules

_BOM: Final = b"\xef\xbb\xbf"
# How much of a file's first lines is read to tell NDJSON from a JSON document. A first line longer
# than this is a document written on one line (a Bundle), not a resource per line.
SNIFF_BYTES: Final = 8 * 1024 * 1024
_URN_UUID: Final = "urn:uuid:"
# Signed 64-bit integers: ijson's second pass (C backend, use_float) fails beyond them.
_INTEGER_RANGE: Final = range(-(2**63), 2**63)
# Buffered index rows and cached lookups of the fullUrl index.
_INDEX_BATCH: Final = 2_000
_LOOKUP_CACHE: Final = 65_536


class RecordKind(Enum):
    """What a record's `data` is."""

    LINE = "line"  # an NDJSON line (bytes), still to parse; a Bundle on it is expanded
    RESOURCE = "resource"  # a resource as JSON bytes (a Bundle entry's), references resolved
    REJECTED = "rejected"  # `data` is the InputRejected that explains why there is no resource
    # A transaction Bundle (JSON bytes of the whole document): one record, so that its entries are
    # checked, refused or stored together (R4: a transaction is all or nothing).
    TRANSACTION = "transaction"


@dataclass(frozen=True, slots=True)
class Record:
    """One checkpointable unit of an input file and where it was."""

    index: int  # NDJSON: line number - 1; Bundle: entry index; another document: 0
    label: str  # `line 7`, `Bundle.entry[3]`, `document`
    kind: RecordKind
    data: bytes | InputRejected
    offset: int  # bytes of the file read so far (for progress; approximate for documents)


class InputFormat(Enum):
    """How a file is read."""

    NDJSON = "ndjson"
    DOCUMENT = "document"


def detect_format(path: Path) -> InputFormat:
    """NDJSON by the file name (`.ndjson`, `.jsonl`) or, without one, when one of the first two
    non-blank lines is a resource by itself and a second line follows; else a JSON document.

    This is parse.py's rule (a document that does not parse as a whole, but whose first lines are
    resources) read from the first lines only, so a file of any size is told apart in bounded time.
    """
    if path.name.lower().endswith(NDJSON_SUFFIXES):
        return InputFormat.NDJSON
    lines: list[bytes] = []
    with path.open("rb") as handle:
        budget = SNIFF_BYTES
        while len(lines) < 2 and budget > 0:
            line = handle.readline(budget)
            if not line:
                break
            budget -= len(line)
            if not line.endswith(b"\n") and budget <= 0:
                return InputFormat.DOCUMENT  # a line longer than the budget: one-line document
            if line.strip():
                lines.append(line.removeprefix(_BOM))
    if len(lines) < 2:
        return InputFormat.DOCUMENT
    for line in lines:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and "resourceType" in value:
            return InputFormat.NDJSON
    return InputFormat.DOCUMENT


def iter_records(path: Path, *, start: int = 0) -> Iterator[Record]:
    """The records of an input file from record `start` on (a checkpoint's position)."""
    if detect_format(path) is InputFormat.NDJSON:
        yield from _ndjson_records(path, start)
    else:
        yield from _document_records(path, start)


def record_resources(
    kind: RecordKind, label: str, data: bytes | InputRejected
) -> list[tuple[str, JsonObject | InputRejected]]:
    """The resources of one record with their labels (a Bundle on an NDJSON line gives several).

    Runs where the CPU is (a worker process): JSON parsing of NDJSON lines happens here.
    """
    return record_unit(kind, label, data)[0]


def record_unit(
    kind: RecordKind, label: str, data: bytes | InputRejected
) -> tuple[list[tuple[str, JsonObject | InputRejected]], bool]:
    """`record_resources`, and whether they are one transaction: taken in all or none (a
    transaction Bundle document, or one on an NDJSON line)."""
    if isinstance(data, InputRejected) or kind is RecordKind.REJECTED:
        assert isinstance(data, InputRejected)
        return [(label, data)], False
    try:
        document = load_json(data)
    except InputRejected as exc:
        return [(label, exc)], False
    if kind is RecordKind.RESOURCE or (
        isinstance(document, dict) and document.get("resourceType") != "Bundle"
    ):
        return [(label, document)], False
    atomic = isinstance(document, dict) and document.get("type") == "transaction"
    if kind is RecordKind.TRANSACTION:
        # A whole document: its labels are the entries' own (`Bundle.entry[0]`).
        return list(iter_input_resources(data)), atomic
    # A Bundle (or something that is no object) on a line: parse.py's in-memory reading, whose
    # labels (`document`, `Bundle.entry[0]`) are relative to the line.
    return [
        (label if where == "document" else f"{label} {where}", item)
        for where, item in iter_input_resources(data)
    ], atomic


# --------------------------------------------------------------------------------------- NDJSON


def _ndjson_records(path: Path, start: int) -> Iterator[Record]:
    with path.open("rb", buffering=1 << 20) as handle:
        offset = 0
        for index, line in enumerate(handle):
            offset += len(line)
            if index < start:
                continue
            if index == 0:
                line = line.removeprefix(_BOM)
            if line.strip():
                # Without its line break, so that JSON errors point where parse.py's do.
                text = line.rstrip(b"\r\n")
                yield Record(index, f"line {index + 1}", RecordKind.LINE, text, offset)


# ------------------------------------------------------------------------------------ documents


@dataclass(slots=True)
class _DocumentShape:
    """What the first pass learnt about a JSON document."""

    is_object: bool = False
    resource_type: str | None = None
    entry_is_array: bool | None = None  # None: no `entry`
    entries: int = 0
    absolute_references: bool = False  # a reference that may name another entry's fullUrl
    bundle_type: str | None = None
    faults: dict[int, list[Issue]] = field(default_factory=dict)  # bundle_rules, by entry


class _FullUrlIndex:
    """fullUrl -> `Type/id` of a Bundle's entries, kept in a temporary SQLite file.

    A Bundle of a million entries would hold a few hundred MB of strings in a dict; on disk the
    lookups cost microseconds, and the repeated ones (a patient's urn) come from a small cache.
    Later entries win over earlier ones with the same fullUrl, as a dict would.
    """

    def __init__(self, folder: str) -> None:
        # isolation_level=None: autocommit; explicit BEGIN/COMMIT around the batches below.
        self._db = sqlite3.connect(Path(folder) / "full-urls.db", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE target (url TEXT PRIMARY KEY, ref TEXT NOT NULL)")
        # Every entry's fullUrl (with its meta.versionId), and every urn:uuid reference: the
        # Bundle rules are checked on them after the first pass.
        self._db.execute("CREATE TABLE seen (url TEXT NOT NULL, entry INTEGER, version TEXT)")
        self._db.execute("CREATE TABLE urn (url TEXT NOT NULL, entry INTEGER, path TEXT)")
        self._db.execute("CREATE INDEX seen_url ON seen (url)")
        self._pending: list[tuple[str, str]] = []
        self._seen: list[tuple[str, int, str | None]] = []
        self._urns: list[tuple[str, int, str]] = []
        self.lookup: Callable[[str], str | None] = lru_cache(maxsize=_LOOKUP_CACHE)(self._get)

    def add(self, url: str, reference: str) -> None:
        """Record that `url` names `reference` (`Type/id`)."""
        self._pending.append((url, reference))
        if len(self._pending) >= _INDEX_BATCH:
            self.flush()

    def note(self, url: str, entry: int, version: str | None) -> None:
        """Record that entry `entry` has the fullUrl `url` (and this meta.versionId)."""
        self._seen.append((url, entry, version))
        if len(self._seen) >= _INDEX_BATCH:
            self.flush()

    def note_urn(self, url: str, entry: int, path: str) -> None:
        """Record a `urn:uuid:` reference of entry `entry` at FHIRPath `path`."""
        self._urns.append((url, entry, path))
        if len(self._urns) >= _INDEX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows."""
        if self._pending or self._seen or self._urns:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO target VALUES (?, ?)", self._pending)
            self._db.executemany("INSERT INTO seen VALUES (?, ?, ?)", self._seen)
            self._db.executemany("INSERT INTO urn VALUES (?, ?, ?)", self._urns)
            self._db.execute("COMMIT")
            self._pending.clear()
            self._seen.clear()
            self._urns.clear()

    def faults(self, bundle_type: str | None) -> Iterator[tuple[int, Issue]]:
        """The entries that share a fullUrl and the urn:uuid references that name no entry
        (validation.bundle_rules), bounded."""
        limit = bundle_rules.MAX_ISSUES_PER_BUNDLE
        writes = bundle_type in bundle_rules.WRITING_TYPES
        shared = self._db.execute(
            "SELECT url, group_concat(entry), count(*) = count(version)"
            " AND count(DISTINCT version) = count(*) FROM seen GROUP BY url"
            " HAVING count(*) > 1 LIMIT ?",
            (limit,),
        )
        for url, entries, distinct_versions in shared.fetchall():
            if distinct_versions and not writes:
                continue  # R4 bdl-7: versions of one resource
            numbers = sorted(int(n) for n in str(entries).split(","))
            for number in numbers:
                others = [n for n in numbers if n != number]
                yield number, bundle_rules.duplicate_issue(number, str(url), others)
        dangling = self._db.execute(
            "SELECT entry, path, url FROM urn WHERE url NOT IN (SELECT url FROM seen)"
            " ORDER BY entry LIMIT ?",
            (limit,),
        )
        for number, path, url in dangling.fetchall():
            yield int(number), bundle_rules.dangling_issue(str(path), str(url))

    def _get(self, url: str) -> str | None:
        row = self._db.execute("SELECT ref FROM target WHERE url = ?", (url,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Close the database (its folder is removed by the caller)."""
        self._db.close()


def _open_document(path: Path) -> IO[bytes]:
    """The file positioned after a UTF-8 byte order mark, if any."""
    handle = path.open("rb", buffering=1 << 20)
    if handle.read(len(_BOM)) != _BOM:
        handle.seek(0)
    return handle


def _entry_target(
    full_url: str | None,
    resource_type: str | None,
    resource_id: str | None,
    method: str | None,
    url: str | None,
) -> str | None:
    """`Type/id` an entry's fullUrl stands for (parse.py's rule, plus the id of a PUT url)."""
    if full_url is None or resource_type is None:
        return None
    target_id = resource_id or _put_id({"method": method, "url": url})
    if target_id is None and full_url.startswith(_URN_UUID):
        target_id = full_url.removeprefix(_URN_UUID)
    return f"{resource_type}/{target_id}" if target_id else None


def _scan_document(handle: IO[bytes], index: _FullUrlIndex) -> _DocumentShape:
    """First pass: the document's shape, and the fullUrl index of a Bundle's entries.

    Raises InputRejected when the JSON is malformed anywhere, before any entry was taken in.
    """
    shape = _DocumentShape()
    full_url = resource_type = resource_id = method = url = version = None
    try:
        events = ijson.parse(handle)
        for prefix, event, value in events:
            if event == "number" and isinstance(value, int) and value not in _INTEGER_RANGE:
                too_large = f"Malformed JSON: integer {value} exceeds the signed 64-bit range"
                raise rejected("invalid", too_large)
            if prefix == "" and event == "start_map":
                shape.is_object = True
            elif prefix == "resourceType" and event == "string":
                shape.resource_type = value
            elif prefix == "entry":
                if shape.entry_is_array is None:
                    shape.entry_is_array = event == "start_array"
            elif prefix == "entry.item":
                if event == "end_map":
                    number = shape.entries - 1
                    target = _entry_target(full_url, resource_type, resource_id, method, url)
                    if target is not None and full_url is not None:
                        index.add(full_url, target)
                    if full_url is not None:
                        index.note(full_url, number, version)
                    where = f"Bundle.entry[{number}]"
                    if resource_type is not None:
                        mismatch = bundle_rules.put_id_issue(where, resource_id, method, url)
                        if mismatch is not None:
                            shape.faults.setdefault(number, []).append(mismatch)
                elif event not in ("map_key", "end_array"):
                    shape.entries += 1
                    full_url = resource_type = resource_id = method = url = version = None
            elif event == "string":
                if prefix == "type":
                    shape.bundle_type = value
                elif prefix == "entry.item.fullUrl":
                    full_url = value
                elif prefix == "entry.item.resource.resourceType":
                    resource_type = value
                elif prefix == "entry.item.resource.id":
                    resource_id = value
                elif prefix == "entry.item.request.method":
                    method = value
                elif prefix == "entry.item.request.url":
                    url = value
                elif prefix == "entry.item.resource.meta.versionId":
                    version = value
                elif (
                    value.startswith(bundle_rules.URN_UUID)
                    and prefix.startswith("entry.item.resource.")
                    and prefix.endswith(".reference")
                ):
                    # ijson's prefix has no array indexes: the FHIRPath names every item.
                    path = prefix.removeprefix("entry.item.").replace(".item", "")
                    index.note_urn(
                        value, shape.entries - 1, f"Bundle.entry[{shape.entries - 1}].{path}"
                    )
                    shape.absolute_references = True
                elif (
                    not shape.absolute_references and prefix.endswith(".reference") and ":" in value
                ):
                    shape.absolute_references = True
    except ijson.JSONError as exc:
        raise rejected("invalid", f"Malformed JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise rejected("invalid", f"Malformed JSON: not UTF-8 ({exc})") from exc
    index.flush()
    if shape.resource_type == "Bundle":
        for number, issue in index.faults(shape.bundle_type):
            shape.faults.setdefault(number, []).append(issue)
    return shape


def _rewrite(node: Any, lookup: Callable[[str], str | None]) -> None:
    """Rewrite references that name another entry's fullUrl to `Type/id`, in place.

    Only absolute references (with a `:`) can be a fullUrl; relative ones are left untouched.
    """
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and ":" in reference:
            target = lookup(reference)
            if target is not None:
                node["reference"] = target
        for value in node.values():
            if isinstance(value, dict | list):
                _rewrite(value, lookup)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, lookup)


def _document_records(path: Path, start: int) -> Iterator[Record]:
    with tempfile.TemporaryDirectory(prefix="fhir-app-bundle-") as folder:
        index = _FullUrlIndex(folder)
        try:
            with _open_document(path) as handle:
                try:
                    shape = _scan_document(handle, index)
                except InputRejected as exc:
                    if start == 0:
                        yield Record(0, "document", RecordKind.REJECTED, exc, handle.tell())
                    return
            yield from _document_body(path, shape, index, start)
        finally:
            index.close()


def _document_body(
    path: Path, shape: _DocumentShape, index: _FullUrlIndex, start: int
) -> Iterator[Record]:
    """Second pass: the records of a well-formed document."""
    with _open_document(path) as handle:
        if not shape.is_object:
            if start == 0:
                why = rejected("structure", "Expected a JSON object (a FHIR resource or Bundle)")
                yield Record(0, "document", RecordKind.REJECTED, why, handle.tell())
            return
        if shape.resource_type != "Bundle":
            if start == 0:
                # One resource: small by nature, read whole as parse.py does.
                data = handle.read()
                yield Record(0, "document", RecordKind.RESOURCE, data, handle.tell())
            return
        if shape.entry_is_array is False:
            if start == 0:
                why = rejected("structure", "Bundle.entry must be an array", "Bundle.entry")
                yield Record(0, "document", RecordKind.REJECTED, why, handle.tell())
            return
        if shape.bundle_type == "transaction":
            if start == 0:
                # One record: read whole (a transaction is as large as one unit of work, as over
                # REST), so that its entries go in, or are refused, together.
                data = handle.read()
                yield Record(0, "Bundle", RecordKind.TRANSACTION, data, handle.tell())
            return
        lookup = index.lookup if shape.absolute_references else None
        refusals = _refusals(shape)
        entries = ijson.items(handle, "entry.item", use_float=True)
        for number, entry in enumerate(entries):
            if number < start:
                continue
            where = f"Bundle.entry[{number}]"
            refusal = refusals(number)
            if refusal is not None:
                yield Record(number, where, RecordKind.REJECTED, refusal, handle.tell())
                continue
            yield _entry_record(number, where, entry, lookup, handle.tell())


def _refusals(shape: _DocumentShape) -> Callable[[int], InputRejected | None]:
    """Entry number -> why the Bundle rules refuse it (parse.bundle_refusals' rule)."""
    if not shape.faults:
        return lambda number: None
    if bundle_rules.refused_as_whole(shape.bundle_type):
        faulty = [f"Bundle.entry[{number}]" for number in sorted(shape.faults)]

        def refusal(number: int) -> InputRejected:
            if number in shape.faults:
                return InputRejected(shape.faults[number][: bundle_rules.MAX_ISSUES_PER_ENTRY])
            where = f"Bundle.entry[{number}]"
            return InputRejected([bundle_rules.refused_along(where, faulty, shape.bundle_type)])

        return refusal
    by_entry = {number: InputRejected(issues) for number, issues in shape.faults.items()}
    return by_entry.get


def _entry_record(
    number: int,
    where: str,
    entry: Any,
    lookup: Callable[[str], str | None] | None,
    offset: int,
) -> Record:
    malformed = bundle_rules.entry_shell_issues(entry, number)
    if malformed:
        return Record(number, where, RecordKind.REJECTED, InputRejected(malformed), offset)
    found = _bundle_entry_resource(entry, where)
    if isinstance(found, InputRejected):
        return Record(number, where, RecordKind.REJECTED, found, offset)
    if not isinstance(found.get("id"), str):
        request = entry.get("request")
        full_url = entry.get("fullUrl")
        given = _put_id(request)
        if given is None and isinstance(full_url, str) and full_url.startswith(_URN_UUID):
            given = full_url.removeprefix(_URN_UUID)
        if given is not None:
            found["id"] = given
    if lookup is not None:
        _rewrite(found, lookup)
    return Record(number, where, RecordKind.RESOURCE, orjson.dumps(found), offset)
