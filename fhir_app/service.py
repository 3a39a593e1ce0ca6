"""The use cases: ingest -> derive -> persist -> emit, one transaction each.

`assess` is the stateless path (nothing stored). `FhirService` is the persistent one: every write
of an input re-derives the patients it touches inside the same unit of work, so a rejected
transaction leaves the database exactly as it was.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import orjson

from fhir_app.derivation import PatientInputs, group_by_patient
from fhir_app.domain.appearance import AppearanceSettings
from fhir_app.domain.levels import VertebralLevel
from fhir_app.fhir import conceptmap, inbound, outbound
from fhir_app.fhir.bundle import BundleEntry, EntryTarget, assign_ids, bundle_entries
from fhir_app.fhir.inputs import (
    InputRejected,
    Issue,
    JsonObject,
    MappedObservation,
    MappedPatient,
    MappedStudy,
)
from fhir_app.fhir.outcome import operation_outcome
from fhir_app.fhir.parse import control_character_issues, entry_path, in_entry, validate_resource
from fhir_app.fhir.patch import apply_json_patch, binary_json_patch
from fhir_app.fhir.report import presented
from fhir_app.fhir.search import IndexRows, SearchError, SearchQuery, criteria_query, index_rows
from fhir_app.fhir.search.dates import in_utc
from fhir_app.searching import SearchResult, index_query, run_search
from fhir_app.store import CommitOutcomeUnknown, TransientStoreError, content_hash
from fhir_app.store import StoredResource as StoredRow
from fhir_app.store.bulk import CurrentState, InputRow, NewVersion, OutputRow, served_content

try:
    PROCESSOR_VERSION = version("fhir-app")
except PackageNotFoundError:  # running from a source tree that was never installed
    PROCESSOR_VERSION = "0.0.0"

LEVEL_KINDS = ("sins", "cls", "risk")
INPUT_TYPES = frozenset({"Observation", "Condition", "ImagingStudy", "Patient"})
OUTPUT_TYPES = frozenset({"Observation", "RiskAssessment", "DiagnosticReport", "Provenance"})


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def mapped(
    raw: JsonObject, *, resource_id: str, version_id: int, received_at: datetime
) -> MappedObservation | MappedStudy | MappedPatient | None:
    """Map an input resource to what derivation needs.

    The ConceptMaps apply first (CONTRACT.md 3a), to a copy: inbound reads standard codes as the
    contract's, and the caller keeps `raw` as received.
    """
    raw = conceptmap.translate(raw)
    rtype = raw.get("resourceType")
    if rtype == "Observation":
        return inbound.map_observation(
            raw, resource_id=resource_id, version=version_id, received_at=received_at
        )
    if rtype == "Condition":
        return inbound.map_condition(
            raw, resource_id=resource_id, version=version_id, received_at=received_at
        )
    if rtype == "ImagingStudy":
        return inbound.map_study(raw, resource_id=resource_id, version=version_id)
    if rtype == "Patient":
        return inbound.map_patient(raw, resource_id=resource_id, version=version_id)
    return None


def derive(
    patient: PatientInputs,
    versioner: outbound.Versioner,
    settings: AppearanceSettings,
    now: datetime,
    withdrawals: Sequence[JsonObject] = (),
) -> list[JsonObject]:
    """Derive and emit every output of one patient (and withdraw what lost every finding)."""
    summary = patient.summary(settings)
    inputs: dict[VertebralLevel, list[MappedObservation]] = dict(patient.by_level)
    contributing = [obs for level in inputs.values() for obs in level] + patient.patient_wide
    return outbound.emit_patient(
        patient.patient,
        summary,
        inputs,
        patient.patient_wide,
        patient.studies_of(contributing),
        versioner,
        now,
        PROCESSOR_VERSION,
        withdrawals=withdrawals,
    )


# --------------------------------------------------------------------------- stateless assess


def rejection_status(issues: Sequence[Issue]) -> int:
    """400 when an input is not FHIR R4 JSON (an `invalid` issue, e.g. a control character in a
    string, or a `structure` one: null, an empty value, a JSON type other than the element's,
    an unknown element), 422 when it was read and breaks a rule (CONTRACT 3b), as
    outcome.HTTP_STATUS_BY_ISSUE_CODE says."""
    return 400 if any(issue.code in ("invalid", "structure") for issue in issues) else 422


@dataclass(slots=True)
class Rejection:
    """An input refused by the contract, with where it was and why."""

    label: str
    issues: list[Issue]

    def outcome(self) -> JsonObject:
        """The OperationOutcome of this rejection, naming where the input was."""
        issues = [
            Issue(i.severity, i.code, f"{self.label}: {i.diagnostics}", i.expression)
            for i in self.issues
        ]
        return operation_outcome(issues)


@dataclass(slots=True)
class AssessResult:
    """Outputs derived without storing anything, and the inputs that were refused."""

    outputs: list[JsonObject] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    accepted: int = 0

    def bundle(self) -> JsonObject:
        """The outputs as a `collection` Bundle."""
        return {
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": utcnow().isoformat(),
            "entry": [
                {
                    "fullUrl": f"urn:fhir-app:{r['resourceType']}/{r['id']}",
                    "resource": r,
                }
                for r in self.outputs
            ],
        }


def assess(
    items: Iterable[tuple[str, JsonObject | InputRejected]],
    settings: AppearanceSettings | None = None,
    now: datetime | None = None,
    *,
    max_outputs: int | None = None,
) -> AssessResult:
    """Validate, map and derive a set of inputs in memory: the heart of `$assess`.

    With `max_outputs`, inputs that would derive more resources than that are refused (413
    `too-costly`) after mapping and before any output is built.
    """
    settings = settings or AppearanceSettings()
    now = now or utcnow()
    result = AssessResult()
    observations: list[MappedObservation] = []
    studies: list[MappedStudy] = []
    patients: list[MappedPatient] = []
    counter = 0
    for label, item in items:
        if isinstance(item, InputRejected):
            result.rejections.append(Rejection(label, in_entry(label, item.issues)))
            continue
        counter += 1
        try:
            validate_resource(item)
            rid = item.get("id") if isinstance(item.get("id"), str) else f"input-{counter}"
            assert isinstance(rid, str)
            m = mapped(item, resource_id=rid, version_id=1, received_at=now)
        except InputRejected as exc:
            result.rejections.append(Rejection(label, in_entry(label, exc.issues)))
            continue
        result.accepted += 1
        if isinstance(m, MappedObservation):
            observations.append(m)
        elif isinstance(m, MappedStudy):
            studies.append(m)
        elif isinstance(m, MappedPatient):
            patients.append(m)
    first = outbound.FirstVersion(now)
    grouped_patients = group_by_patient(observations, studies, patients)
    if max_outputs is not None:
        expected = sum(outputs_of(patient) for patient in grouped_patients.values())
        if expected > max_outputs:
            raise ServiceError.of(
                413,
                "too-costly",
                f"These inputs would derive {expected} resources; one $assess derives at most "
                f"{max_outputs} (setting FHIR_APP_MAX_ASSESS_OUTPUTS); send fewer patients",
            )
    for _, patient in sorted(grouped_patients.items()):
        if patient.by_level:
            result.outputs.extend(derive(patient, first, settings, now))
    return result


def outputs_of(patient: PatientInputs) -> int:
    """How many resources deriving `patient` emits (outbound.emit_patient): per level the SINS
    and classification Observations and the RiskAssessment, then the NOMS inputs, the report and
    the Provenance."""
    if not patient.by_level:
        return 0
    return len(LEVEL_KINDS) * len(patient.by_level) + len(outbound.PATIENT_KINDS) + 1


# --------------------------------------------------------------------------- persistent service


class StoredResource(Protocol):
    """What the service reads back from the store (see fhir_app.store), read-only."""

    @property
    def resource_type(self) -> str: ...

    @property
    def resource_id(self) -> str: ...

    @property
    def version_id(self) -> int: ...

    @property
    def last_updated(self) -> datetime: ...

    @property
    def deleted(self) -> bool: ...

    @property
    def patient_id(self) -> str | None: ...

    @property
    def status(self) -> str | None: ...

    @property
    def is_output(self) -> bool: ...

    @property
    def content(self) -> dict[str, Any]: ...


def patient_of(resource: JsonObject) -> str | None:
    """The Patient id a resource is about (subject or patient reference)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            parts = str(ref["reference"]).split("/")
            if len(parts) >= 2 and parts[-2] == "Patient":
                return parts[-1]
    return None


def search_index(resource: JsonObject) -> IndexRows:
    """The search index rows of a resource, as every write path (REST, bulk, derived outputs)
    stores them: read from the table of search parameters (fhir_app.fhir.search)."""
    return index_rows(resource)


Clock = Callable[[], datetime]
# Answers a GET or HEAD entry of a transaction or batch: `{"resource": ..., "response": ...}`,
# or raises ServiceError for that entry. The REST interface provides it (reads and searches).
EntryReader = Callable[[BundleEntry], JsonObject]
T = TypeVar("T")
# Attempts of a unit of work that loses races before its commit (then 503 + Retry-After).
RACE_ATTEMPTS = 4


def iter_stored_inputs(
    rows: Iterable[StoredResource],
) -> Iterator[MappedObservation | MappedStudy | MappedPatient]:
    """Map the stored inputs of a patient again (they were validated when received)."""
    for row in rows:
        m = mapped(
            row.content,
            resource_id=row.resource_id,
            version_id=row.version_id,
            received_at=row.last_updated,
        )
        if m is not None:
            yield m


class OutputState(Protocol):
    """What deciding withdrawals needs to know of a stored output (read-only)."""

    @property
    def resource_type(self) -> str: ...

    @property
    def resource_id(self) -> str: ...

    @property
    def deleted(self) -> bool: ...

    @property
    def content(self) -> dict[str, Any]: ...


def withdrawn_outputs(
    patient: str, inputs: PatientInputs, previous: Iterable[OutputState]
) -> list[JsonObject]:
    """Outputs of levels that lost every finding (or the report, when no level is left)."""
    expected = {outbound.output_id(k, patient, lvl) for lvl in inputs.by_level for k in LEVEL_KINDS}
    if inputs.by_level:
        expected.update(outbound.output_id(k, patient, None) for k in outbound.PATIENT_KINDS)
    return [
        row.content
        for row in previous
        if not row.deleted
        and row.resource_type != "Provenance"
        and row.resource_id not in expected
        and row.content.get("status") != "entered-in-error"
    ]


def grouped(rows: Sequence[StoredResource], patient: str) -> PatientInputs:
    """The counting inputs of one patient from its stored rows."""
    observations: list[MappedObservation] = []
    studies: list[MappedStudy] = []
    patients: list[MappedPatient] = []
    for m in iter_stored_inputs(rows):
        if isinstance(m, MappedObservation):
            observations.append(m)
        elif isinstance(m, MappedStudy):
            studies.append(m)
        else:
            patients.append(m)
    return group_by_patient(observations, studies, patients).get(patient, PatientInputs(patient))


def unavailable(fault: TransientStoreError) -> Issue:
    """The issue a client is told for a database fault (answered 503 with Retry-After)."""
    if isinstance(fault, CommitOutcomeUnknown):
        text = (
            "The connection to the database failed while the changes were being committed; "
            "they may or may not have been stored. Read the resources back, or send the "
            "request again if repeating it is safe (an update, a conditional create)"
        )
    else:
        text = "The database is unavailable or busy and nothing was stored; send the request again"
    return Issue("error", "transient", text)


class ServiceError(Exception):
    """A refused interaction: the HTTP status and the OperationOutcome issues that explain it."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.status = status
        self.issues = issues

    @classmethod
    def of(cls, status: int, code: str, text: str, *expression: str) -> ServiceError:
        """A one-issue error."""
        return cls(status, [Issue("error", code, text, tuple(expression))])


@dataclass(slots=True)
class WriteResult:
    """The outcome of one create, update or delete."""

    status: int  # 200 updated/unchanged, 201 created, 204 deleted
    resource: JsonObject | None
    resource_type: str
    resource_id: str
    version_id: int | None
    last_updated: datetime | None

    @property
    def location(self) -> str | None:
        """`Type/id/_history/n` of the version written."""
        if self.version_id is None:
            return None
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id}"


@dataclass(frozen=True, slots=True)
class HistoryCursor:
    """Where a page of history ends: the (lastUpdated, type, id, version) of its last entry.

    History pages are newest first; the next page holds the versions strictly older than this
    key (keyset paging), so versions written while a client pages never shift what it reads.
    In links it travels as one opaque, URL-safe token (`_page`).
    """

    last_updated: datetime
    resource_type: str
    resource_id: str
    version_id: int

    @property
    def key(self) -> tuple[datetime, str, str, int]:
        """The keyset position, in the store's history order."""
        return (self.last_updated, self.resource_type, self.resource_id, self.version_id)

    @classmethod
    def after(cls, row: StoredResource) -> HistoryCursor:
        """The position of `row`: the next page starts with the version before it."""
        return cls(row.last_updated, row.resource_type, row.resource_id, row.version_id)

    def token(self) -> str:
        """The cursor as URL-safe text."""
        text = "|".join(
            (
                self.last_updated.astimezone(UTC).isoformat(),
                self.resource_type,
                self.resource_id,
                str(self.version_id),
            )
        )
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, token: str) -> HistoryCursor:
        """A cursor from `token`; 400 for text that no history page wrote."""
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            moment, rtype, rid, vid = text.split("|")
            when = datetime.fromisoformat(moment)
            if when.tzinfo is None or not vid.isdigit():
                raise ValueError(token)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ServiceError.of(
                400, "invalid", f"_page={token!r} is not a page of this history", "_page"
            ) from exc
        return cls(when, rtype, rid, int(vid))


class PlannedVersions:
    """outbound.Versioner against a patient's outputs as read under its derivation lock.

    The one write rule of the REST and bulk paths: a new version only when what was derived
    changed; a changed final output becomes `amended` (CONTRACT section 4c). The new versions are
    collected as NewVersions and written in one batched, set-based write.
    """

    def __init__(self, current: dict[tuple[str, str], OutputRow], now: datetime, patient: str):
        self.current = current
        self.now = now
        self.patient = patient
        self.written: list[NewVersion] = []

    def _amended(self, resource: JsonObject) -> JsonObject:
        """The output as `amended`; a report's page, which states the status, rendered again
        (amended is rare, so the cost is fine)."""
        amended = {**resource, "status": "amended"}
        if "presentedForm" not in resource:
            return amended
        outputs = [row.content for row in self.current.values() if not row.deleted]
        return presented.restated(outputs, amended, PROCESSOR_VERSION)

    def stamp(self, resource: JsonObject) -> JsonObject:
        """The output as it will be stored: the current version when unchanged."""
        key = (str(resource["resourceType"]), str(resource["id"]))
        current = self.current.get(key)
        candidate = resource
        if current is not None and not current.deleted:
            if outbound.comparable(current.content) == outbound.comparable(resource):
                return dict(current.content)
            was_final = current.content.get("status") in ("final", "amended")
            if resource.get("status") == "final" and was_final:
                candidate = self._amended(resource)
                if outbound.comparable(current.content) == outbound.comparable(candidate):
                    return dict(current.content)
        digest = content_hash(candidate)
        if current is not None and not current.deleted and current.content_hash == digest:
            return dict(current.content)
        version_id = 1 if current is None else current.version_id + 1
        moment = self.now if current is None else max(self.now, current.last_updated)
        served = served_content(key[0], key[1], version_id, moment, candidate)
        status = candidate.get("status")
        self.written.append(
            NewVersion(
                resource_type=key[0],
                resource_id=key[1],
                version_id=version_id,
                last_updated=moment,
                patient_id=patient_of(candidate) or self.patient,
                status=status if isinstance(status, str) else None,
                is_output=True,
                content=orjson.dumps(served).decode(),
                content_hash=digest,
                index=search_index(candidate),
            )
        )
        self.current[key] = OutputRow(
            self.patient, key[0], key[1], version_id, False, moment, digest, served
        )
        return served


def stored_of_patients(
    bulk: Any, patients: Sequence[str]
) -> list[tuple[str, list[InputRow], list[OutputRow]]]:
    """(patient, current inputs, current outputs) of each patient, in the order given, read in one
    batch through a unit of work's `bulk` repository (what `derive_patient` takes)."""
    inputs: dict[str, list[InputRow]] = {p: [] for p in patients}
    outputs: dict[str, list[OutputRow]] = {p: [] for p in patients}
    for row in bulk.inputs_of_patients(patients):
        inputs[row.patient_id].append(row)
    for output in bulk.outputs_of_patients(patients):
        outputs[output.patient_id].append(output)
    return [(p, inputs[p], outputs[p]) for p in patients]


def derive_patient(
    patient: str,
    inputs: Sequence[InputRow],
    outputs: Sequence[OutputRow],
    settings: AppearanceSettings,
    now: datetime,
) -> list[NewVersion]:
    """The new output versions of one patient, as FhirService derives it after a write."""
    rows = [
        StoredRow(
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            version_id=row.version_id,
            last_updated=row.last_updated,
            deleted=False,
            patient_id=patient,
            status=None,
            is_output=False,
            content=orjson.loads(row.text),
        )
        for row in sorted(inputs, key=lambda r: (r.resource_type, r.last_updated, r.resource_id))
    ]
    patient_inputs = grouped(rows, patient)
    current = sorted(outputs, key=lambda r: (r.resource_type, r.last_updated, r.resource_id))
    withdrawals = withdrawn_outputs(patient, patient_inputs, current)
    by_key = {(row.resource_type, row.resource_id): row for row in current}
    versioner = PlannedVersions(by_key, now, patient)
    if patient_inputs.by_level or withdrawals:
        derive(patient_inputs, versioner, settings, now, withdrawals)
    return versioner.written


class UnitOfWork(Protocol):
    """The store's unit of work as the service uses it."""

    resources: Any
    bulk: Any
    audit: Any
    search: Any

    def lock_patient_derivations(self, patient_ids: Iterable[str]) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...


class InputWrites:
    """The input writes of one unit of work, stored in one set-based write at the end.

    The rule of the bulk ingest path, for the REST path: versions are decided from current states
    read in one statement, locked until commit (so a concurrent writer of the same resource waits
    for this transaction); an input whose content equals its current version gets no new version.
    Two transactions creating the same new resource at once collide on the version's primary key
    when the later one stores: a TransientStoreError, and the service runs the unit of work again.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.resources = uow.resources
        self.bulk = uow.bulk
        self.states: dict[tuple[str, str], CurrentState | None] = {}
        self.had_row: set[tuple[str, str]] = set()
        self.pending: list[NewVersion] = []

    def lock_patient_derivations(self, patient_ids: Iterable[str]) -> None:
        """The unit of work's per-patient derivation lock, after the pending writes are stored."""
        self.flush()
        self.uow.lock_patient_derivations(patient_ids)

    def prefetch(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read (and lock) the current states of these resources in one statement."""
        missing = sorted({key for key in keys if key not in self.states})
        if not missing:
            return
        found = self.uow.bulk.current_states(missing, lock=True)
        for key in missing:
            self.states[key] = found.get(key)
        self.had_row.update(found)

    def state(self, rtype: str, rid: str) -> CurrentState | None:
        """The current state of a resource, this unit of work's pending writes included."""
        key = (rtype, rid)
        if key not in self.states:
            self.prefetch([key])
        return self.states[key]

    def write(
        self, rtype: str, rid: str, raw: JsonObject, now: datetime
    ) -> tuple[StoredResource, bool]:
        """Plan `raw` as the next version of an input; (the version as served, changed)."""
        state = self.state(rtype, rid)
        digest = content_hash(raw)
        if state is not None and not state.deleted and state.content_hash == digest:
            self.flush()
            unchanged: StoredResource | None = self.uow.resources.current(rtype, rid)
            if unchanged is None:  # pragma: no cover - the state was just read
                raise ServiceError.of(500, "exception", f"{rtype}/{rid} vanished")
            return unchanged, False
        version_id = 1 if state is None else state.version_id + 1
        # Versions must not go back in time when clocks of two writers disagree.
        moment = now if state is None else max(now, state.last_updated)
        served = served_content(rtype, rid, version_id, moment, raw)
        patient = patient_of(raw)
        status = raw.get("status")
        self.pending.append(
            NewVersion(
                resource_type=rtype,
                resource_id=rid,
                version_id=version_id,
                last_updated=moment,
                patient_id=patient,
                status=status if isinstance(status, str) else None,
                is_output=False,
                content=orjson.dumps(served).decode(),
                content_hash=digest,
                index=search_index(raw),
                raw=orjson.dumps(raw).decode(),
            )
        )
        self.states[(rtype, rid)] = CurrentState(
            version_id=version_id,
            deleted=False,
            patient_id=patient,
            is_output=False,
            last_updated=moment,
            content_hash=digest,
        )
        stored = StoredRow(
            resource_type=rtype,
            resource_id=rid,
            version_id=version_id,
            last_updated=moment,
            deleted=False,
            patient_id=patient,
            status=status if isinstance(status, str) else None,
            is_output=False,
            content=served,
        )
        return stored, True

    def forget(self, rtype: str, rid: str) -> None:
        """Read this resource's state again next time (it was changed by another statement)."""
        self.flush()
        self.states.pop((rtype, rid), None)
        self.had_row.discard((rtype, rid))

    def flush(self) -> None:
        """Store the pending versions (before anything reads the tables they go to)."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        self.uow.bulk.write_versions(pending, existing=self.had_row)
        self.had_row.update((v.resource_type, v.resource_id) for v in pending)


class FhirService:
    """The persistent use cases behind the REST API and `fhir-app process`."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        settings: AppearanceSettings | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.uow_factory = uow_factory
        self.settings = settings or AppearanceSettings()
        self.clock = clock

    # ---- writes ------------------------------------------------------------------------------

    def create(
        self, rtype: str, raw: JsonObject, *, if_none_exist: str | None = None
    ) -> WriteResult:
        """Create an input with a server-assigned id (conditional when `if_none_exist`)."""

        def work(uow: InputWrites) -> WriteResult:
            affected: set[str] = set()
            result = self._create(uow, rtype, raw, if_none_exist, affected)
            self._rederive(uow, affected)
            return result

        return self._in_unit_of_work(work)

    def update(
        self, rtype: str, rid: str, raw: JsonObject, *, if_match: str | None = None
    ) -> WriteResult:
        """Create or update an input at a client-chosen id; the resource carries that id."""
        self._check_update_id(rid, raw)

        def work(uow: InputWrites) -> WriteResult:
            affected: set[str] = set()
            result = self._update(uow, rtype, rid, raw, if_match, affected)
            self._rederive(uow, affected)
            return result

        return self._in_unit_of_work(work)

    def delete(self, rtype: str, rid: str) -> WriteResult:
        """Delete an input; the outputs are derived again without it."""

        def work(uow: InputWrites) -> WriteResult:
            affected: set[str] = set()
            result = self._delete(uow, rtype, rid, affected)
            self._rederive(uow, affected)
            return result

        return self._in_unit_of_work(work)

    def _in_unit_of_work(self, work: Callable[[InputWrites], T]) -> T:
        """Run `work` in a unit of work and commit it; run it again from the start when it lost a
        race before its commit (a deadlock, a serialization failure, a resource created by another
        transaction first). Nothing of a lost attempt was stored, so running it again is safe; a
        fault at the commit itself is not retried (its outcome is unknown) but reported as a
        TransientStoreError, which the API answers with 503 and Retry-After."""
        for attempt in range(1, RACE_ATTEMPTS + 1):
            with self.uow_factory() as uow:
                writes = InputWrites(uow)
                try:
                    result = work(writes)
                    writes.flush()
                except TransientStoreError:
                    if attempt == RACE_ATTEMPTS:
                        raise
                    continue
                uow.commit()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_input_type(self, rtype: str, raw: JsonObject) -> None:
        if raw.get("resourceType") != rtype:
            raise ServiceError.of(
                400,
                "invalid",
                f"resourceType {raw.get('resourceType')!r} does not match the endpoint {rtype}",
                "resourceType",
            )
        if rtype not in INPUT_TYPES:
            raise ServiceError.of(
                405,
                "not-supported",
                f"{rtype} resources are derived by fhir-app and cannot be written",
            )

    @staticmethod
    def _check_update_id(rid: str, raw: JsonObject) -> None:
        """400 unless the resource of an update names the id of its URL: FHIR R4 http.html#update
        "If no id element is provided, or the id disagrees with the id in the URL, the server
        SHALL respond with an HTTP 400 error code" (a conditional update is not held to it)."""
        body_id = raw.get("id")
        if body_id is None:
            raise ServiceError.of(
                400, "required", f"the resource has no id; an update of {rid!r} carries it", "id"
            )
        if body_id != rid:
            raise ServiceError.of(
                400, "invalid", f"resource id {body_id!r} does not match the URL id {rid!r}", "id"
            )

    def _validated(self, raw: JsonObject, rid: str, version_id: int, now: datetime) -> None:
        try:
            validate_resource(raw)
            mapped(raw, resource_id=rid, version_id=version_id, received_at=now)
        except InputRejected as exc:
            raise ServiceError(rejection_status(exc.issues), exc.issues) from exc

    def _create(
        self,
        uow: InputWrites,
        rtype: str,
        raw: JsonObject,
        if_none_exist: str | None,
        affected: set[str],
        rid: str | None = None,
    ) -> WriteResult:
        self._check_input_type(rtype, raw)
        repo = uow.resources
        rid = rid or repo.next_id()
        if if_none_exist:
            existing = self._conditional_match(uow, rtype, if_none_exist)
            if existing is not None:
                return self._result(200, existing)
            owner = repo.claim_conditional(rtype, normalise_criteria(if_none_exist), rid)
            if owner != rid:
                uow.forget(rtype, owner)
                row = repo.current(rtype, owner)
                if row is not None and not row.deleted:
                    return self._result(200, row)
        raw = {**raw, "id": rid}
        return self._write(uow, rtype, rid, raw, affected, created=True, current=None)

    def _update(
        self,
        uow: InputWrites,
        rtype: str,
        rid: str,
        raw: JsonObject,
        if_match: str | None,
        affected: set[str],
        *,
        conditional: bool = False,
    ) -> WriteResult:
        self._check_input_type(rtype, raw)
        body_id = raw.get("id")
        if body_id is not None and body_id != rid:
            raise ServiceError.of(
                400, "invalid", f"resource id {body_id!r} does not match the URL id {rid!r}", "id"
            )
        current = uow.state(rtype, rid)
        if current is not None and current.is_output:
            if conditional:  # the criteria matched an output: the request's URL is no output's
                raise ServiceError.of(
                    409,
                    "conflict",
                    f"the conditional update matched {rtype}/{rid}, which is derived by fhir-app "
                    "and cannot be written",
                )
            # Read-only like the output types: 405 (the API adds `Allow: GET, HEAD`).
            raise ServiceError.of(
                405, "not-supported", f"{rtype}/{rid} is derived by fhir-app and cannot be written"
            )
        if if_match is not None:
            expected = parse_etag(if_match)
            if current is None or current.deleted or current.version_id != expected:
                have = "none" if current is None or current.deleted else current.version_id
                raise ServiceError.of(
                    412,
                    "conflict",
                    f"If-Match {if_match} does not match the current version ({have})",
                )
        created = current is None or current.deleted
        return self._write(
            uow, rtype, rid, {**raw, "id": rid}, affected, created=created, current=current
        )

    def _write(
        self,
        uow: InputWrites,
        rtype: str,
        rid: str,
        raw: JsonObject,
        affected: set[str],
        *,
        created: bool,
        current: CurrentState | None,
    ) -> WriteResult:
        """Validate and store one input; `current` is its current version, read by the caller."""
        now = self.clock()
        next_version = 1 if current is None else current.version_id + 1
        self._validated(raw, rid, next_version, now)
        stored, changed = uow.write(rtype, rid, raw, now)
        if changed:
            if current is not None and current.patient_id:
                affected.add(current.patient_id)
            if stored.patient_id:
                affected.add(stored.patient_id)
        return self._result(201 if created and changed else 200, stored)

    def _delete(self, uow: InputWrites, rtype: str, rid: str, affected: set[str]) -> WriteResult:
        uow.forget(rtype, rid)
        current = uow.resources.current(rtype, rid)
        if current is not None and current.is_output:
            raise ServiceError.of(
                405, "not-supported", f"{rtype}/{rid} is derived by fhir-app and cannot be deleted"
            )
        if rtype not in INPUT_TYPES:
            raise ServiceError.of(405, "not-supported", f"{rtype} cannot be deleted")
        deleted = uow.resources.delete(rtype, rid, now=self.clock())
        if deleted is not None and current is not None and current.patient_id:
            affected.add(current.patient_id)
        return WriteResult(204, None, rtype, rid, None, None)

    def _conditional_match(
        self,
        uow: InputWrites | UnitOfWork,
        rtype: str,
        criteria: str,
        what: str = "If-None-Exist",
    ) -> StoredResource | None:
        if isinstance(uow, InputWrites):
            uow.flush()  # the search reads the tables the pending writes go to
        params = parse_criteria(criteria, what)
        rows, total = self._search(uow, rtype, params, count=2, offset=0)
        if total > 1:
            raise ServiceError.of(
                412, "multiple-matches", f"{what} {criteria!r} matches {total} resources"
            )
        return rows[0] if rows else None

    def _conditional_update_id(
        self, uow: InputWrites | UnitOfWork, entry: BundleEntry, target: EntryTarget
    ) -> str:
        """The id a conditional update `PUT Type?criteria` writes (FHIR R4 http.html#cond-update):
        the one resource that matches; with no match, the resource's own id, else a new one.
        Several matches are 412; a resource id other than the match's is 400."""
        assert target.criteria is not None
        given = entry.resource.get("id") if entry.resource is not None else None
        rid, _matched = self._conditional_update_target(
            uow, target.resource_type, target.criteria, given
        )
        return rid

    def _conditional_update_target(
        self, uow: InputWrites | UnitOfWork, rtype: str, criteria: str, given: object
    ) -> tuple[str, bool]:
        """The id `PUT rtype?criteria` writes, given the id in the resource (if any), and
        whether it is the id of a match."""
        found = self._conditional_match(uow, rtype, criteria, f"PUT {rtype}?")
        if found is None:
            rid = given if isinstance(given, str) and given else uow.resources.next_id()
            return rid, False
        if given is not None and given != found.resource_id:
            raise ServiceError.of(
                400,
                "invalid",
                f"the resource id {given!r} is not the id of the resource the conditional "
                f"update matched ({found.resource_id!r})",
                "id",
            )
        return found.resource_id, True

    @staticmethod
    def _result(status: int, row: StoredResource) -> WriteResult:
        return WriteResult(
            status,
            dict(row.content),
            row.resource_type,
            row.resource_id,
            row.version_id,
            row.last_updated,
        )

    # ---- conditional writes, patch, history, $everything, $validate (issue 12) ------------------

    def update_conditional(
        self, rtype: str, criteria: str, raw: JsonObject, *, if_match: str | None = None
    ) -> WriteResult:
        """`PUT rtype?criteria` (FHIR R4 http.html#cond-update): no match creates (at the
        resource's id, else a new one), one match is updated, several are 412."""

        def work(uow: InputWrites) -> WriteResult:
            affected: set[str] = set()
            self._check_input_type(rtype, raw)
            rid, matched = self._conditional_update_target(uow, rtype, criteria, raw.get("id"))
            if not matched and raw.get("id") is None:
                # Two clients creating for the same criteria at once must create one resource:
                # the claim of conditional creates decides (the same criteria, the same claim).
                owner = uow.resources.claim_conditional(rtype, normalise_criteria(criteria), rid)
                if owner != rid:
                    uow.forget(rtype, owner)
                    row = uow.resources.current(rtype, owner)
                    if row is not None and not row.deleted:
                        rid = owner
            result = self._update(
                uow, rtype, rid, {**raw, "id": rid}, if_match, affected, conditional=True
            )
            self._rederive(uow, affected)
            return result

        return self._in_unit_of_work(work)

    def delete_conditional(self, rtype: str, criteria: str) -> WriteResult:
        """`DELETE rtype?criteria` (FHIR R4 http.html#3.1.0.7.1), single deletes only: no match
        deletes nothing (204), one match is deleted, several are 412."""

        def work(uow: InputWrites) -> WriteResult:
            affected: set[str] = set()
            result = self._delete_matching(uow, rtype, criteria, affected)
            self._rederive(uow, affected)
            return result

        return self._in_unit_of_work(work)

    def _delete_matching(
        self, uow: InputWrites, rtype: str, criteria: str, affected: set[str]
    ) -> WriteResult:
        if rtype not in INPUT_TYPES:
            raise ServiceError.of(405, "not-supported", f"{rtype} resources cannot be deleted")
        found = self._conditional_match(uow, rtype, criteria, f"DELETE {rtype}?")
        if found is None:
            return WriteResult(204, None, rtype, "", None, None)
        return self._delete(uow, rtype, found.resource_id, affected)

    def patch(
        self,
        rtype: str,
        rid: str,
        change: Callable[[JsonObject], JsonObject],
        *,
        if_match: str | None = None,
    ) -> WriteResult:
        """Apply `change` (a JSON Patch or Merge Patch, fhir/patch.py) to the current version of
        an input and store the result like any update: validated, a new version, the patient's
        outputs derived again. 404/410 when there is no current version; 412 on an If-Match that
        names another version."""

        def work(uow: InputWrites) -> WriteResult:
            affected: set[str] = set()
            result = self._patch(uow, rtype, rid, change, if_match, affected)
            self._rederive(uow, affected)
            return result

        return self._in_unit_of_work(work)

    def _patch(
        self,
        uow: InputWrites,
        rtype: str,
        rid: str,
        change: Callable[[JsonObject], JsonObject],
        if_match: str | None,
        affected: set[str],
    ) -> WriteResult:
        # Lock the resource before reading the version the patch applies to: a concurrent
        # update waits, and no change is lost under the patched copy.
        uow.state(rtype, rid)
        uow.flush()
        current = uow.resources.current(rtype, rid)
        if current is None:
            raise ServiceError.of(404, "not-found", f"{rtype}/{rid} is not known")
        if current.is_output:
            raise ServiceError.of(
                405, "not-supported", f"{rtype}/{rid} is derived by fhir-app and cannot be written"
            )
        if current.deleted:
            raise ServiceError.of(410, "deleted", f"{rtype}/{rid} was deleted")
        try:
            patched = change(dict(current.content))
        except InputRejected as exc:
            raise ServiceError(rejection_status(exc.issues), exc.issues) from exc
        return self._update(uow, rtype, rid, patched, if_match, affected)

    def history_page(
        self,
        rtype: str | None,
        rid: str | None = None,
        *,
        since: datetime | None = None,
        before: HistoryCursor | None = None,
        count: int,
        types: Sequence[str] | None = None,
        patient: str | None = None,
    ) -> list[StoredResource]:
        """One page of versions, newest first (FHIR R4 http.html#history): of one resource
        (`rid`), of a type (`rtype`), or of the whole system (`rtype` None, limited to `types`
        when given). `since`: versions stored at or after it; `before`: the keyset position of the
        last entry of the previous page, so a page never moves under concurrent writes (new
        versions are newer than any page already read). `patient`: only that patient's versions.
        Deletions are versions too."""
        chosen = [rtype] if rtype is not None else (list(types) if types is not None else None)
        with self.uow_factory() as uow:
            rows: list[StoredResource] = uow.resources.history_page(
                chosen,
                resource_id=rid,
                since=since,
                before=before.key if before is not None else None,
                limit=count,
                patient=patient,
            )
        return rows

    def history_total(
        self,
        rtype: str | None,
        rid: str | None = None,
        *,
        since: datetime | None = None,
        types: Sequence[str] | None = None,
        patient: str | None = None,
    ) -> int:
        """How many versions `history_page` lists over all its pages (`_count=0`)."""
        chosen = [rtype] if rtype is not None else (list(types) if types is not None else None)
        with self.uow_factory() as uow:
            total: int = uow.resources.history_count(
                chosen, resource_id=rid, since=since, patient=patient
            )
        return total

    def everything_total(
        self,
        patient: str,
        *,
        since: datetime | None = None,
        types: Sequence[str] | None = None,
    ) -> int:
        """How many resources `everything` lists over all its pages (`_count=0`)."""
        with self.uow_factory() as uow:
            total: int = uow.resources.compartment_count(patient, since=since, types=types)
        return total

    def everything(
        self,
        patient: str,
        *,
        since: datetime | None = None,
        after: tuple[str, str] | None = None,
        count: int,
        types: Sequence[str] | None = None,
    ) -> list[StoredResource]:
        """One page of `Patient/{id}/$everything`: the patient's current inputs (the Patient
        itself included) and outputs, ordered by (type, id) and continued after the (type, id)
        pair `after`; `since`: only those stored at or after it; `types`: only these types."""
        with self.uow_factory() as uow:
            rows: list[StoredResource] = uow.resources.compartment_page(
                patient, since=since, after=after, limit=count, types=types
            )
        return rows

    def validate(self, rtype: str, raw: JsonObject, rid: str | None = None) -> list[Issue]:
        """`$validate` (FHIR R4 resource-operation-validate): the issues a create or update of
        `raw` would be refused with, R4 rules and contract rules alike; nothing is stored. An
        empty list: the write would be accepted."""
        try:
            self._check_input_type(rtype, raw)
            if rid is not None:
                self._check_update_id(rid, raw)
            self._validated(raw, rid or "validated", 1, self.clock())
        except ServiceError as exc:
            return exc.issues
        return []

    # ---- derivation --------------------------------------------------------------------------

    def _rederive(self, uow: InputWrites, patients: Iterable[str]) -> list[NewVersion]:
        """Derive the outputs of each patient again; returns the output versions written.

        The patients' derivation locks are taken first (this transaction's own input writes are
        done by now), then their inputs and outputs are read in one batch, derived, and the new
        output versions written in set-based statements: the same rule and the same write as the
        bulk path (`derive_patient`, `write_versions`).
        """
        ordered = sorted(set(patients))
        if not ordered:
            return []
        uow.lock_patient_derivations(ordered)
        now = self.clock()
        versions: list[NewVersion] = []
        existing: list[tuple[str, str]] = []
        for patient, inputs, outputs in stored_of_patients(uow.bulk, ordered):
            versions.extend(derive_patient(patient, inputs, outputs, self.settings, now))
            existing.extend((row.resource_type, row.resource_id) for row in outputs)
        uow.bulk.write_versions(versions, existing=existing)
        return versions

    # ---- transactions and batches ------------------------------------------------------------

    def transaction(self, bundle: JsonObject, reader: EntryReader | None = None) -> JsonObject:
        """Process a transaction Bundle atomically: every write succeeds, or nothing is stored.

        GET and HEAD entries are answered by `reader` (the REST interface's reads and searches)
        after the writes are committed, as FHIR R4 http.html#trules orders them (reads last),
        each with its own status: a read that finds nothing does not undo the writes.
        """
        pristine = orjson.dumps(bundle)  # each attempt starts from the Bundle as received

        def work(uow: InputWrites) -> list[JsonObject]:
            responses: list[JsonObject] = []
            entries = bundle_entries(orjson.loads(pristine))
            unreadable = [issue for entry in entries for issue in entry.problems]
            if unreadable:
                raise ServiceError(400, unreadable)  # the Bundle cannot be read as asked
            refusals: dict[int, ServiceError] = {}
            matches = self._conditional_matches(uow, entries, refusals)
            for entry in entries:
                if entry.index in refusals:
                    raise _named(entry, refusals[entry.index])
            overlaps = overlapping_writes(self._write_identities(uow, entries, matches))
            if overlaps:
                raise ServiceError(400, overlaps)
            assign_ids(entries, uow.resources.next_id, matches)
            uow.prefetch(entry_targets(entries))
            affected: set[str] = set()
            for entry in entries:
                if entry.reads:
                    responses.append({})  # answered after the commit
                    continue
                try:
                    result = self._entry(uow, entry, affected)
                except ServiceError as exc:
                    raise _named(entry, exc) from exc
                responses.append(entry_response(result))
            self._rederive(uow, affected)
            return responses

        responses = self._in_unit_of_work(work)
        for entry in bundle_entries(orjson.loads(pristine)):
            if entry.reads:
                responses[entry.index] = read_entry_response(entry, reader)
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}

    def batch(self, bundle: JsonObject, reader: EntryReader | None = None) -> JsonObject:
        """Process a batch Bundle: each entry in its own transaction, answered per entry; GET and
        HEAD entries are answered by `reader` (the REST interface's reads and searches)."""
        entries = bundle_entries(bundle)
        refusals: dict[int, ServiceError] = {
            entry.index: ServiceError(400, entry.problems) for entry in entries if entry.problems
        }
        matches: dict[int, str] = {}
        if any(entry.if_none_exist or "?" in (entry.url or "") for entry in entries):
            with self.uow_factory() as uow:
                matches = self._conditional_matches(uow, entries, refusals)
        assign_ids(entries, lambda: str(uuid.uuid4()), matches)
        responses: list[JsonObject] = []
        for entry in entries:

            def work(uow: InputWrites, entry: BundleEntry = entry) -> WriteResult:
                affected: set[str] = set()
                result = self._entry(uow, entry, affected)
                self._rederive(uow, affected)
                return result

            try:
                if entry.index in refusals:
                    raise refusals[entry.index]
                if entry.reads:
                    responses.append(read_entry_response(entry, reader))
                    continue
                responses.append(entry_response(self._in_unit_of_work(work)))
            except ServiceError as exc:
                responses.append(
                    {
                        "response": {
                            "status": str(exc.status),
                            "outcome": operation_outcome(exc.issues),
                        }
                    }
                )
            except TransientStoreError as exc:
                # The entries before were committed: a 503 for the whole batch would tell the
                # client that they were not, and sending it again would repeat their creates.
                responses.append(
                    {
                        "response": {
                            "status": "503",
                            "outcome": operation_outcome([unavailable(exc)]),
                        }
                    }
                )
        return {"resourceType": "Bundle", "type": "batch-response", "entry": responses}

    def _conditional_matches(
        self,
        uow: InputWrites | UnitOfWork,
        entries: list[BundleEntry],
        refusals: dict[int, ServiceError],
    ) -> dict[int, str]:
        """The id each conditional entry writes, by entry index, decided before any entry is
        processed so that references among the entries can point there: the existing resource
        a conditional create matched, and the target of each conditional update. A conditional
        update that cannot be decided is put in `refusals`."""
        matches: dict[int, str] = {}
        for entry in entries:
            target = entry.target
            if target is None or entry.resource is None or entry.index in refusals:
                continue
            if entry.method == "POST" and entry.if_none_exist:
                try:
                    found = self._conditional_match(uow, target.resource_type, entry.if_none_exist)
                except ServiceError:
                    continue  # refused again, with the entry named, when the entry is processed
                if found is not None:
                    matches[entry.index] = found.resource_id
            elif entry.method == "PUT" and target.criteria is not None:
                try:
                    self._check_entry_type(target.resource_type)
                    matches[entry.index] = self._conditional_update_id(uow, entry, target)
                except ServiceError as exc:
                    refusals[entry.index] = exc
        return matches

    def _write_identities(
        self, uow: InputWrites, entries: list[BundleEntry], matches: dict[int, str]
    ) -> dict[int, tuple[str, str]]:
        """The resource (type, id) each writing entry of a transaction writes, resolved before
        any is processed (R4 http.html#trules): a `Type/id` url, the resource a conditional
        create or update matched, and the one a conditional delete matches. A POST that creates
        writes a new resource and is left out."""
        found: dict[int, tuple[str, str]] = {}
        for entry in entries:
            target = entry.target
            if target is None or entry.reads or entry.problems:
                continue
            if entry.index in matches:
                found[entry.index] = (target.resource_type, matches[entry.index])
            elif entry.method in ("PUT", "PATCH", "DELETE") and target.resource_id is not None:
                found[entry.index] = (target.resource_type, target.resource_id)
            elif entry.method == "DELETE" and target.criteria is not None:
                try:
                    what = f"DELETE {target.resource_type}?"
                    match = self._conditional_match(
                        uow, target.resource_type, target.criteria, what
                    )
                except ServiceError as exc:
                    raise _named(entry, exc) from exc
                if match is not None:
                    found[entry.index] = (target.resource_type, match.resource_id)
        return found

    @staticmethod
    def _check_entry_type(rtype: str) -> None:
        if rtype not in INPUT_TYPES | OUTPUT_TYPES:
            raise ServiceError.of(
                400,
                "not-supported",
                f"resource type {rtype!r} is not supported here; inputs are "
                f"{', '.join(sorted(INPUT_TYPES))}",
            )

    def _entry(self, uow: InputWrites, entry: BundleEntry, affected: set[str]) -> WriteResult:
        target = entry.target
        if entry.problems:
            raise ServiceError(400, entry.problems)
        if target is None and entry.method is None:
            raise ServiceError.of(
                400,
                "required",
                f"{entry.label}.request is missing: a transaction or batch entry says what to do",
                f"{entry.label}.request",
            )
        if target is None:
            raise ServiceError.of(
                400, "not-supported", f"Bundle entry method {entry.method!r} is not supported"
            )
        self._check_entry_type(target.resource_type)
        resource = entry.resource
        if entry.method in ("POST", "PUT") and resource is None:
            raise ServiceError.of(400, "required", f"a {entry.method} entry needs a resource")
        if entry.method == "POST":
            assert resource is not None
            # assign_ids gave the entry its id and pointed the Bundle's references at it.
            rid = resource.get("id")
            return self._create(
                uow,
                target.resource_type,
                resource,
                entry.if_none_exist,
                affected,
                rid=rid if isinstance(rid, str) else None,
            )
        if entry.method == "PUT":
            assert resource is not None
            rid = target.resource_id
            if target.criteria is not None:
                # _conditional_matches chose the id; an earlier entry of this Bundle may have
                # written a match since, and the reference rewriting cannot follow it.
                rid = str(resource.get("id"))
                found = self._conditional_match(
                    uow, target.resource_type, target.criteria, f"PUT {target.resource_type}?"
                )
                if found is not None and found.resource_id != rid:
                    raise ServiceError.of(
                        409,
                        "conflict",
                        f"the conditional update now matches {found.resource_id!r}, written "
                        "by another entry or client since the Bundle was read",
                    )
            assert rid is not None
            return self._update(
                uow,
                target.resource_type,
                rid,
                resource,
                entry.if_match,
                affected,
                conditional=target.criteria is not None,
            )
        if entry.method == "PATCH":
            assert target.resource_id is not None
            try:
                operations = binary_json_patch(resource)
            except InputRejected as exc:
                raise ServiceError(400, exc.issues) from exc
            return self._patch(
                uow,
                target.resource_type,
                target.resource_id,
                lambda current: apply_json_patch(current, operations),
                entry.if_match,
                affected,
            )
        if target.criteria is not None:
            return self._delete_matching(uow, target.resource_type, target.criteria, affected)
        assert target.resource_id is not None
        return self._delete(uow, target.resource_type, target.resource_id, affected)

    # ---- reads -------------------------------------------------------------------------------

    def read(self, rtype: str, rid: str, version_id: int | None = None) -> StoredResource:
        """The current version (or one version) of a resource; 404 or 410 when absent/deleted."""
        with self.uow_factory() as uow:
            repo = uow.resources
            row: StoredResource | None = (
                repo.current(rtype, rid)
                if version_id is None
                else repo.version(rtype, rid, version_id)
            )
        if row is None:
            what = f"{rtype}/{rid}" + (f"/_history/{version_id}" if version_id else "")
            raise ServiceError.of(404, "not-found", f"{what} is not known")
        if row.deleted:
            raise ServiceError.of(410, "deleted", f"{rtype}/{rid} was deleted")
        return row

    def history(self, rtype: str, rid: str) -> list[StoredResource]:
        """Every version of a resource, newest first."""
        with self.uow_factory() as uow:
            rows: list[StoredResource] = uow.resources.history(rtype, rid)
        if not rows:
            raise ServiceError.of(404, "not-found", f"{rtype}/{rid} is not known")
        return rows

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a checked search (fhir_app.fhir.search.parse_search) in one unit of work: the
        page of matches, the total and the `_include` / `_revinclude` resources."""
        with self.uow_factory() as uow:
            return run_search(uow.search, query)

    def matches(
        self, rtype: str, params: Sequence[tuple[str, str]], *, count: int
    ) -> tuple[list[StoredResource], int]:
        """The first `count` resources that conditional criteria match, and how many match."""
        with self.uow_factory() as uow:
            return self._search(uow, rtype, params, count=count, offset=0)

    def _search(
        self,
        uow: InputWrites | UnitOfWork,
        rtype: str,
        params: Sequence[tuple[str, str]],
        *,
        count: int,
        offset: int,
    ) -> tuple[list[StoredResource], int]:
        """Conditional criteria (If-None-Exist, conditional update and delete) as a strict
        search: every parameter must be declared for the type (400 otherwise)."""
        readable_parameters(params)
        try:
            query = replace(criteria_query(rtype, params, count=count), offset=offset)
        except SearchError as exc:
            raise ServiceError(exc.status, exc.issues) from exc
        store = uow.uow if isinstance(uow, InputWrites) else uow
        rows, total = store.search.find(index_query(query))
        found: list[StoredResource] = rows
        return found, len(rows) if total is None else total


def _named(entry: BundleEntry, exc: ServiceError) -> ServiceError:
    """`exc` with every issue naming the transaction entry it is about."""
    return ServiceError(
        exc.status,
        [
            Issue(
                i.severity,
                i.code,
                i.diagnostics
                if i.diagnostics.startswith(entry.label)
                else f"{entry.label}: {i.diagnostics}",
                tuple(entry_path(entry.label, e) for e in i.expression) or (entry.expression,),
            )
            for i in exc.issues
        ],
    )


def overlapping_writes(identities: dict[int, tuple[str, str]]) -> list[Issue]:
    """The issues of a transaction whose entries write one resource more than once (by entry
    index, the (type, id) each writes): R4 http.html#trules, such a transaction SHALL fail.
    A batch may (its entries are independent)."""
    by_resource: dict[tuple[str, str], list[int]] = {}
    for index, identity in sorted(identities.items()):
        by_resource.setdefault(identity, []).append(index)
    issues = []
    for (rtype, rid), indexes in by_resource.items():
        if len(indexes) < 2:
            continue
        named = ", ".join(f"Bundle.entry[{i}]" for i in indexes)
        issues.append(
            Issue(
                "error",
                "invalid",
                f"{named} all write {rtype}/{rid}; a transaction writes each resource at most "
                "once (FHIR R4 http.html#trules)",
                tuple(f"Bundle.entry[{i}].request" for i in indexes),
            )
        )
    return issues


def entry_targets(entries: Sequence[BundleEntry]) -> list[tuple[str, str]]:
    """(type, id) of every resource the entries write at a known id, to read their current
    states (and lock them) in one statement: the id of a `Type/id` url, or the id assign_ids
    gave a POST or a conditional update."""
    targets: list[tuple[str, str]] = []
    for entry in entries:
        target = entry.target
        if target is None or entry.problems:
            continue
        if entry.method in ("PUT", "PATCH", "DELETE") and target.resource_id is not None:
            targets.append((target.resource_type, target.resource_id))
        elif entry.method in ("POST", "PUT") and entry.resource is not None:
            rid = entry.resource.get("id")
            rtype = entry.resource.get("resourceType")
            if isinstance(rid, str) and isinstance(rtype, str):
                targets.append((rtype, rid))
    return targets


def read_entry_response(entry: BundleEntry, reader: EntryReader | None) -> JsonObject:
    """The answer to a GET or HEAD entry: what `reader` answers, or its refusal as the entry's
    OperationOutcome (an unknown type, a missing resource: that entry alone)."""
    try:
        if reader is None:
            raise ServiceError.of(
                400, "not-supported", f"{entry.label}: read entries are not answered here"
            )
        answer = reader(entry)
    except ServiceError as exc:
        return {"response": {"status": str(exc.status), "outcome": operation_outcome(exc.issues)}}
    except TransientStoreError as exc:
        # The writes of the Bundle may be committed already: a 503 for the whole Bundle would
        # tell the client they were not. The read alone is to be sent again.
        return {"response": {"status": "503", "outcome": operation_outcome([unavailable(exc)])}}
    if entry.method == "HEAD":
        answer.pop("resource", None)
    return answer


def entry_response(result: WriteResult) -> JsonObject:
    """The `response` of a transaction or batch entry."""
    response: JsonObject = {
        "status": {200: "200 OK", 201: "201 Created", 204: "204 No Content"}[result.status]
    }
    if result.location:
        response["location"] = result.location
        response["etag"] = f'W/"{result.version_id}"'
    if result.last_updated is not None:
        response["lastModified"] = result.last_updated.isoformat()
    entry: JsonObject = {"response": response}
    if result.resource is not None:
        entry["resource"] = result.resource
    return entry


def parse_etag(value: str) -> int:
    """`W/"3"` -> 3; anything else is a 400."""
    text = value.strip()
    text = text.removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ServiceError.of(400, "invalid", f"If-Match {value!r} is not a version ETag")
    return int(text)


def parse_criteria(criteria: str, what: str = "If-None-Exist") -> list[tuple[str, str]]:
    """`identifier=sys|1&code=x` -> [(name, value)], as URL query parameters."""
    from urllib.parse import parse_qsl

    text = criteria.split("?", 1)[1] if "?" in criteria else criteria
    params = parse_qsl(text, keep_blank_values=False)
    if not params:
        raise ServiceError.of(400, "invalid", f"{what} {criteria!r} has no criteria")
    readable_parameters(params)
    return params


def readable_parameters(params: Sequence[tuple[str, str]]) -> None:
    """400 when a (percent-decoded) search parameter holds a control character: FHIR strings
    cannot contain one, so nothing could match, and PostgreSQL refuses U+0000 outright."""
    issues = [
        issue
        for name, value in params
        for issue in control_character_issues({name: value}, "query")
    ]
    if issues:
        raise ServiceError(400, issues)


def normalise_criteria(criteria: str) -> str:
    """A canonical form of conditional-create criteria, the key that makes them race-free."""
    return "&".join(f"{k}={v}" for k, v in sorted(parse_criteria(criteria)))


PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def parse_date_param(value: str) -> tuple[str, datetime]:
    """`ge2025-01-01` -> ('ge', datetime); a date without time is midnight UTC."""
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    text = value[2:] if value[:2] in PREFIXES else value
    if prefix not in ("eq", "gt", "lt", "ge", "le"):
        raise ServiceError.of(
            400, "not-supported", f"_lastUpdated prefix {prefix!r} is not supported"
        )
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ServiceError.of(
            400, "invalid", f"_lastUpdated value {value!r} is not a date"
        ) from exc
    return prefix, in_utc(when)  # clamped: the store converts to UTC, which may overflow


def current_outputs(service: FhirService, patients: Iterable[str]) -> list[JsonObject]:
    """The current (non-deleted) outputs of the given patients, in a stable order."""
    out: list[JsonObject] = []
    with service.uow_factory() as uow:
        for patient in sorted(set(patients)):
            rows = uow.resources.outputs_of_patient(patient)
            out.extend(
                dict(r.content)
                for r in sorted(rows, key=lambda r: (r.resource_type, r.resource_id))
            )
    return out
