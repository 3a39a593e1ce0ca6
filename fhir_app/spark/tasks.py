"""What the Spark path's executors run, in plain Python (no pyspark here, so it is tested alone).

Each function is the single-machine path's step, taken apart where Spark needs a seam:

- `ndjson_splits`, `count_newlines`, `split_records`: an NDJSON file cut into byte ranges that
  tasks read in parallel, giving exactly the records `fhir_app.fhir.stream.iter_records` gives
  (same line numbers and labels: a split knows how many lines come before it from a first, cheap
  pass that counts newlines). A JSON document (a Bundle) is one split, read by `iter_records`.
- `check_records`: parse, validate and map, as `fhir_app.bulk.check_chunk` does (the same
  `record_unit`, `validate_resource` and `service.mapped`); an accepted input keeps its JSON,
  its patient and its content digest, a refused one its OperationOutcome.
- `current_input`: of every input sent more than once under one `Type/id`, the last one, at the
  version the store would give it (a new version each time the content changed).
- `derive_patients`: the patients of one partition, each derived by `service.derive` from its
  current inputs, with version 1 stamped as `assess` stamps it (`outbound.FirstVersion`), and
  its rows of the lesion table (`analytics.lesions.lesion_rows`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any, Final, NamedTuple

import orjson

from fhir_app.analytics.lesions import lesion_rows
from fhir_app.domain.appearance import AppearanceSettings
from fhir_app.fhir import outbound
from fhir_app.fhir.inputs import InputRejected, JsonObject
from fhir_app.fhir.parse import in_entry, validate_resource
from fhir_app.fhir.stream import RecordKind, iter_records, record_unit
from fhir_app.fhir.validation import bundle_rules
from fhir_app.service import Rejection, derive, grouped, mapped, patient_of

# The namespace of the ids given to inputs without one: the single-machine path's
# (fhir_app.bulk.CONTENT_ID_NAMESPACE), so both paths give such an input the same id.
CONTENT_ID_NAMESPACE: Final = uuid.UUID("6f1d7a52-3c1e-5b7e-9a57-7a0c2f1b8e3d")
# meta elements the server sets: they do not make a new version of an input.
_SERVER_META: Final = frozenset({"versionId", "lastUpdated"})
_BOM: Final = b"\xef\xbb\xbf"
_READ_BLOCK: Final = 1 << 20
_SERVED_FIRST: Final = ("resourceType", "id", "meta")

# Kinds of the elements that flow through the job.
ACCEPTED: Final = "accepted"
REFUSED: Final = "refused"
OUTPUT: Final = "output"
LESION: Final = "lesion"

Order = tuple[int, int, int]  # (source file, record, resource within the record): input order


class Split(NamedTuple):
    """A byte range of one input file that one task reads."""

    source: int  # the file's position among the inputs
    path: str
    name: str  # the file name, the start of every label
    start: int
    end: int
    lines_before: int  # newlines in the file before `start` (-1: a JSON document, read whole)


class Accepted(NamedTuple):
    """An input that passed validation and mapping."""

    order: Order
    resource_type: str
    resource_id: str
    patient: str | None
    digest: str  # what tells a changed resource from the same one sent again
    text: str  # the JSON as received, with its id


class Refused(NamedTuple):
    """An input refused by the contract."""

    order: Order
    outcome: JsonObject


class CurrentInput(NamedTuple):
    """The current version of an input, as the store would hold it after the run."""

    resource_type: str
    resource_id: str
    version_id: int
    text: str


# --------------------------------------------------------------------------------- reading


def ndjson_splits(path: Path, split_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of about `split_bytes` that cover the file (none for an empty file)."""
    size = path.stat().st_size
    step = max(1, split_bytes)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def count_newlines(path: str, start: int, end: int) -> int:
    """Newlines in the bytes [start, end) of a file."""
    count = 0
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            block = handle.read(min(_READ_BLOCK, remaining))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count


def _split_lines(split: Split) -> Iterator[tuple[int, bytes]]:
    """(line index, line) of the lines that start inside the split."""
    with open(split.path, "rb", buffering=_READ_BLOCK) as handle:
        index = split.lines_before
        position = split.start
        if split.start > 0:
            # The line that runs into this split belongs to the one before; this split's first
            # line starts after the next newline (at `start` itself when byte start-1 is one).
            handle.seek(split.start - 1)
            skipped = handle.readline()
            position = split.start - 1 + len(skipped)
            if position > split.start:
                index += 1
        while position < split.end:
            line = handle.readline()
            if not line:
                return
            yield index, line
            position += len(line)
            index += 1


def split_records(split: Split) -> Iterator[tuple[int, str, RecordKind, bytes | InputRejected]]:
    """(record index, label, kind, data) of one split, as `fhir.stream.iter_records` gives them."""
    if split.lines_before < 0:
        for record in iter_records(Path(split.path)):
            yield record.index, record.label, record.kind, record.data
        return
    for index, raw in _split_lines(split):
        line = raw.removeprefix(_BOM) if index == 0 else raw
        if line.strip():
            yield index, f"line {index + 1}", RecordKind.LINE, line.rstrip(b"\r\n")


# --------------------------------------------------------------------------------- checking


def content_id(resource: JsonObject) -> str:
    """The id of an input that came without one: fhir_app.bulk.content_id, to the byte."""
    body = {key: value for key, value in resource.items() if key not in ("id", "meta")}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    return str(uuid.uuid5(CONTENT_ID_NAMESPACE, canonical))


def content_digest(resource: JsonObject) -> str:
    """The store's content hash (fhir_app.store content_hash): the resource as the client sent
    it, keys sorted, without `id` and the server-set meta. Equal digests: the same version."""
    body = {key: value for key, value in resource.items() if key not in ("id", "meta")}
    meta = resource.get("meta")
    if isinstance(meta, dict):
        kept = {key: value for key, value in meta.items() if key not in _SERVER_META}
        if kept:
            body["meta"] = kept
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _accepted(order: Order, raw: JsonObject, received_at: datetime) -> Accepted:
    """Validate and map one input as the single-machine path does; raises InputRejected."""
    validate_resource(raw)
    given = raw.get("id")
    resource_id = given if isinstance(given, str) and given else content_id(raw)
    body = {**raw, "id": resource_id}
    mapped(body, resource_id=resource_id, version_id=1, received_at=received_at)
    return Accepted(
        order,
        str(raw["resourceType"]),
        resource_id,
        patient_of(body),
        content_digest(body),
        orjson.dumps(body).decode(),
    )


def check_records(
    source: int,
    name: str,
    records: Iterable[tuple[int, str, RecordKind, bytes | InputRejected]],
    received_at: datetime,
) -> Iterator[Accepted | Refused]:
    """Every resource of the records, accepted or refused with the single path's label.

    A transaction is all or nothing, as on the single path (fhir_app.bulk.check_chunk): when
    one of its entries is refused, every entry is, the others with an issue naming the refused.
    """
    for record_index, label, kind, data in records:
        resources, atomic = record_unit(kind, label, data)
        checked: list[Accepted | Refused] = []
        refused: list[str] = []
        for item_index, (where, item) in enumerate(resources):
            order = (source, record_index, item_index)
            full_label = f"{name}: {where}"
            try:
                if isinstance(item, InputRejected):
                    raise item
                checked.append(_accepted(order, item, received_at))
            except InputRejected as exc:
                issues = in_entry(where, exc.issues)
                checked.append(Refused(order, Rejection(full_label, issues).outcome()))
                refused.append(where.rpartition(" ")[2])
        if atomic and refused:
            checked = [
                item
                if isinstance(item, Refused)
                else Refused(item.order, _refused_along(name, resources[item.order[2]][0], refused))
                for item in checked
            ]
        yield from checked


def _refused_along(name: str, where: str, refused: Sequence[str]) -> JsonObject:
    """The OperationOutcome of a transaction entry refused because the entries `refused` were."""
    issue = bundle_rules.refused_along(where.rpartition(" ")[2], refused)
    return Rejection(f"{name}: {where}", [issue]).outcome()


def check_split(split: Split, received_at: datetime) -> Iterator[Accepted | Refused]:
    """Read and check one split (a task)."""
    return check_records(split.source, split.name, split_records(split), received_at)


# --------------------------------------------------------------------------------- versions


def current_input(occurrences: Iterable[Accepted]) -> tuple[Accepted, int]:
    """The last of the inputs sent under one `Type/id`, and its version: the store makes a new
    version each time the content differs from the one before, and none when it is the same."""
    ordered = sorted(occurrences, key=lambda item: item.order)
    changes = sum(1 for before, after in pairwise(ordered) if before.digest != after.digest)
    return ordered[-1], 1 + changes


# --------------------------------------------------------------------------------- deriving


@dataclass(frozen=True, slots=True)
class _Row:
    """A current input as `service.grouped` reads it (the store's StoredResource, read-only)."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    patient_id: str | None
    status: str | None
    is_output: bool
    content: dict[str, Any]


def served_order(resource: JsonObject) -> JsonObject:
    """The resource with `resourceType`, `id` and `meta` first, as the store serves it."""
    head: JsonObject = {key: resource[key] for key in _SERVED_FIRST if key in resource}
    return {**head, **resource}


def derive_patient(
    patient: str,
    inputs: Sequence[CurrentInput],
    settings: AppearanceSettings,
    now: datetime,
) -> list[JsonObject]:
    """The outputs of one patient, derived from its current inputs by `service.derive`, each at
    version 1 last updated `now`, by type then id (the single path's order)."""
    rows = [
        _Row(
            resource_type=item.resource_type,
            resource_id=item.resource_id,
            version_id=item.version_id,
            last_updated=now,
            deleted=False,
            patient_id=patient,
            status=None,
            is_output=False,
            content=orjson.loads(item.text),
        )
        for item in sorted(inputs, key=lambda item: (item.resource_type, item.resource_id))
    ]
    patient_inputs = grouped(rows, patient)
    if not patient_inputs.by_level:
        return []
    outputs = derive(patient_inputs, outbound.FirstVersion(now), settings, now)
    return sorted(
        (served_order(resource) for resource in outputs),
        key=lambda resource: (resource["resourceType"], resource["id"]),
    )


def derive_patients(
    inputs: Iterable[tuple[str, CurrentInput]], settings: AppearanceSettings, now: datetime
) -> Iterator[tuple[str, Any, Any]]:
    """The outputs and lesion rows of a partition of inputs sorted by patient (a task):
    (OUTPUT, type, NDJSON line) and (LESION, None, row as a tuple), patient after patient."""
    for patient, group in groupby(inputs, key=lambda pair: pair[0]):
        outputs = derive_patient(patient, [item for _, item in group], settings, now)
        for resource in outputs:
            yield OUTPUT, resource["resourceType"], orjson.dumps(resource)
        for row in lesion_rows(outputs):
            yield LESION, None, astuple(row)
