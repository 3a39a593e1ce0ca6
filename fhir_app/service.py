"""The use cases: ingest -> derive -> persist -> emit, one transaction each.

`assess` is the stateless path (nothing stored). `FhirService` is the persistent one: every write
of an input re-derives the patients it touches inside the same unit of work, so a rejected
transaction leaves the database exactly as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Protocol, Self

import orjson

from fhir_app.derivation import PatientInputs, group_by_patient
from fhir_app.domain.appearance import AppearanceSettings
from fhir_app.domain.levels import VertebralLevel
from fhir_app.fhir import inbound, outbound
from fhir_app.fhir.bundle import BundleEntry, assign_ids, bundle_entries
from fhir_app.fhir.inputs import (
    InputRejected,
    Issue,
    JsonObject,
    MappedObservation,
    MappedPatient,
    MappedStudy,
)
from fhir_app.fhir.outcome import operation_outcome
from fhir_app.fhir.parse import validate_resource

try:
    PROCESSOR_VERSION = version("fhir-app")
except PackageNotFoundError:  # running from a source tree that was never installed
    PROCESSOR_VERSION = "0.0.0"

LEVEL_KINDS = ("sins", "cls", "risk")
INPUT_TYPES = frozenset({"Observation", "ImagingStudy", "Patient"})
OUTPUT_TYPES = frozenset({"Observation", "RiskAssessment", "DiagnosticReport", "Provenance"})


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def mapped(
    raw: JsonObject, *, resource_id: str, version_id: int, received_at: datetime
) -> MappedObservation | MappedStudy | MappedPatient | None:
    """Map an input resource to what derivation needs."""
    rtype = raw.get("resourceType")
    if rtype == "Observation":
        return inbound.map_observation(
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
) -> AssessResult:
    """Validate, map and derive a set of inputs in memory: the heart of `$assess`."""
    settings = settings or AppearanceSettings()
    now = now or utcnow()
    result = AssessResult()
    observations: list[MappedObservation] = []
    studies: list[MappedStudy] = []
    patients: list[MappedPatient] = []
    counter = 0
    for label, item in items:
        if isinstance(item, InputRejected):
            result.rejections.append(Rejection(label, item.issues))
            continue
        counter += 1
        try:
            validate_resource(item)
            rid = item.get("id") if isinstance(item.get("id"), str) else f"input-{counter}"
            assert isinstance(rid, str)
            m = mapped(item, resource_id=rid, version_id=1, received_at=now)
        except InputRejected as exc:
            result.rejections.append(Rejection(label, exc.issues))
            continue
        result.accepted += 1
        if isinstance(m, MappedObservation):
            observations.append(m)
        elif isinstance(m, MappedStudy):
            studies.append(m)
        elif isinstance(m, MappedPatient):
            patients.append(m)
    first = outbound.FirstVersion(now)
    for _, patient in sorted(group_by_patient(observations, studies, patients).items()):
        if patient.by_level:
            result.outputs.extend(derive(patient, first, settings, now))
    return result


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


# Where the `code` search parameter looks, per type. CONTRACT section 5 searches RiskAssessment and
# Provenance by code too: their R4 counterparts are the assessment method and the activity.
CODE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "RiskAssessment": ("code", "method"),
    "Provenance": ("activity",),
}


def search_tokens(resource: JsonObject) -> list[tuple[str, str | None, str]]:
    """The token search parameters of a resource: `code` codings and `identifier`s."""
    tokens: list[tuple[str, str | None, str]] = []
    for element in CODE_ELEMENTS.get(str(resource.get("resourceType")), ("code",)):
        concept = resource.get(element)
        if not isinstance(concept, dict):
            continue
        for c in concept.get("coding", []) or []:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                tokens.append(("code", c.get("system"), c["code"]))
    for ident in resource.get("identifier", []) or []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            tokens.append(("identifier", ident.get("system"), ident["value"]))
    return tokens


Clock = Callable[[], datetime]


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
        expected.add(outbound.output_id("report", patient, None))
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


class StoreVersioner:
    """Stamps outputs against the database: a new version only when what was derived changed.

    A final output whose content changes becomes `amended` (CONTRACT section 4c).
    """

    def __init__(
        self,
        resources: Any,
        now: datetime,
        patient: str | None = None,
        known: Iterable[StoredResource] | None = None,
    ) -> None:
        self.resources = resources
        self.now = now
        # The patient derived for: a Provenance names no subject, yet is searched by patient.
        self.patient = patient
        # The patient's current outputs, read once: one query per derivation, not per output.
        self.known = None if known is None else {(r.resource_type, r.resource_id): r for r in known}
        self.written: list[str] = []

    def stamp(self, resource: JsonObject) -> JsonObject:
        """Persist the output when it changed; return it as stored."""
        rtype, rid = resource["resourceType"], resource["id"]
        if self.known is None:
            current = self.resources.current(rtype, rid)
        else:
            current = self.known.get((rtype, rid))
        candidate = resource
        if current is not None and not current.deleted:
            if outbound.comparable(current.content) == outbound.comparable(resource):
                return dict(current.content)
            was_final = current.content.get("status") in ("final", "amended")
            if resource.get("status") == "final" and was_final:
                candidate = {**resource, "status": "amended"}
        stored, changed = self.resources.write(
            rtype,
            rid,
            candidate,
            patient_id=patient_of(candidate) or self.patient,
            status=candidate.get("status"),
            is_output=True,
            tokens=search_tokens(candidate),
            now=self.now,
        )
        if changed:
            self.written.append(f"{rtype}/{rid}/_history/{stored.version_id}")
        return dict(stored.content)


class UnitOfWork(Protocol):
    """The store's unit of work as the service uses it."""

    resources: Any

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...


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
        with self.uow_factory() as uow:
            affected: set[str] = set()
            result = self._create(uow, rtype, raw, if_none_exist, affected)
            self._rederive(uow, affected)
            uow.commit()
        return result

    def update(
        self, rtype: str, rid: str, raw: JsonObject, *, if_match: str | None = None
    ) -> WriteResult:
        """Create or update an input at a client-chosen id."""
        with self.uow_factory() as uow:
            affected: set[str] = set()
            result = self._update(uow, rtype, rid, raw, if_match, affected)
            self._rederive(uow, affected)
            uow.commit()
        return result

    def delete(self, rtype: str, rid: str) -> WriteResult:
        """Delete an input; the outputs are derived again without it."""
        with self.uow_factory() as uow:
            affected: set[str] = set()
            result = self._delete(uow, rtype, rid, affected)
            self._rederive(uow, affected)
            uow.commit()
        return result

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

    def _validated(self, raw: JsonObject, rid: str, version_id: int, now: datetime) -> None:
        try:
            validate_resource(raw)
            mapped(raw, resource_id=rid, version_id=version_id, received_at=now)
        except InputRejected as exc:
            raise ServiceError(422, exc.issues) from exc

    def _create(
        self,
        uow: UnitOfWork,
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
                row = repo.current(rtype, owner)
                if row is not None and not row.deleted:
                    return self._result(200, row)
        raw = {**raw, "id": rid}
        return self._write(uow, rtype, rid, raw, affected, created=True, current=None)

    def _update(
        self,
        uow: UnitOfWork,
        rtype: str,
        rid: str,
        raw: JsonObject,
        if_match: str | None,
        affected: set[str],
    ) -> WriteResult:
        self._check_input_type(rtype, raw)
        body_id = raw.get("id")
        if body_id is not None and body_id != rid:
            raise ServiceError.of(
                400, "invalid", f"resource id {body_id!r} does not match the URL id {rid!r}", "id"
            )
        current = uow.resources.current(rtype, rid)
        if current is not None and current.is_output:
            raise ServiceError.of(
                409, "conflict", f"{rtype}/{rid} is derived by fhir-app and cannot be written"
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
        uow: UnitOfWork,
        rtype: str,
        rid: str,
        raw: JsonObject,
        affected: set[str],
        *,
        created: bool,
        current: StoredResource | None,
    ) -> WriteResult:
        """Validate and store one input; `current` is its current version, read by the caller."""
        repo = uow.resources
        now = self.clock()
        next_version = 1 if current is None else current.version_id + 1
        self._validated(raw, rid, next_version, now)
        stored, changed = repo.write(
            rtype,
            rid,
            raw,
            patient_id=patient_of(raw),
            status=raw.get("status") if isinstance(raw.get("status"), str) else None,
            is_output=False,
            tokens=search_tokens(raw),
            raw=orjson.dumps(raw).decode(),
            now=now,
        )
        if changed:
            if current is not None and current.patient_id:
                affected.add(current.patient_id)
            if stored.patient_id:
                affected.add(stored.patient_id)
        return self._result(201 if created and changed else 200, stored)

    def _delete(self, uow: UnitOfWork, rtype: str, rid: str, affected: set[str]) -> WriteResult:
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
        self, uow: UnitOfWork, rtype: str, criteria: str
    ) -> StoredResource | None:
        params = parse_criteria(criteria)
        rows, total = self._search(uow, rtype, params, count=2, offset=0)
        if total > 1:
            raise ServiceError.of(
                412, "multiple-matches", f"If-None-Exist {criteria!r} matches {total} resources"
            )
        return rows[0] if rows else None

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

    # ---- derivation --------------------------------------------------------------------------

    def _rederive(self, uow: UnitOfWork, patients: Iterable[str]) -> list[str]:
        """Derive the outputs of each patient again; returns the output versions written."""
        written: list[str] = []
        for patient in sorted(set(patients)):
            written.extend(self._rederive_patient(uow, patient))
        return written

    def _rederive_patient(self, uow: UnitOfWork, patient: str) -> list[str]:
        now = self.clock()
        repo = uow.resources
        inputs = grouped(repo.inputs_of_patient(patient), patient)
        previous = repo.outputs_of_patient(patient)
        withdrawals = withdrawn_outputs(patient, inputs, previous)
        versioner = StoreVersioner(repo, now, patient, known=previous)
        if inputs.by_level or withdrawals:
            derive(inputs, versioner, self.settings, now, withdrawals)
        return versioner.written

    # ---- transactions and batches ------------------------------------------------------------

    def transaction(self, bundle: JsonObject) -> JsonObject:
        """Process a transaction Bundle atomically: every entry succeeds, or nothing is stored."""
        entries = bundle_entries(bundle)
        responses: list[JsonObject] = []
        with self.uow_factory() as uow:
            assign_ids(entries, uow.resources.next_id, self._conditional_matches(uow, entries))
            affected: set[str] = set()
            for entry in entries:
                try:
                    result = self._entry(uow, entry, affected)
                except ServiceError as exc:
                    raise ServiceError(
                        exc.status,
                        [
                            Issue(
                                i.severity,
                                i.code,
                                f"{entry.label}: {i.diagnostics}",
                                tuple(f"{entry.expression}.{e}" for e in i.expression)
                                or (entry.expression,),
                            )
                            for i in exc.issues
                        ],
                    ) from exc
                responses.append(entry_response(result))
            self._rederive(uow, affected)
            uow.commit()
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}

    def batch(self, bundle: JsonObject) -> JsonObject:
        """Process a batch Bundle: each entry in its own transaction, answered per entry."""
        entries = bundle_entries(bundle)
        assign_ids(entries, lambda: str(uuid.uuid4()))
        responses: list[JsonObject] = []
        for entry in entries:
            try:
                with self.uow_factory() as uow:
                    affected: set[str] = set()
                    result = self._entry(uow, entry, affected)
                    self._rederive(uow, affected)
                    uow.commit()
                responses.append(entry_response(result))
            except ServiceError as exc:
                responses.append(
                    {
                        "response": {
                            "status": str(exc.status),
                            "outcome": operation_outcome(exc.issues),
                        }
                    }
                )
        return {"resourceType": "Bundle", "type": "batch-response", "entry": responses}

    def _conditional_matches(self, uow: UnitOfWork, entries: list[BundleEntry]) -> dict[int, str]:
        """The existing resource of each conditional create that matches one, by entry index."""
        matches: dict[int, str] = {}
        for entry in entries:
            if (entry.method or "").upper() == "POST" and entry.if_none_exist and entry.resource:
                rtype = (entry.url or "").split("?")[0].strip("/").split("/")[0]
                try:
                    found = self._conditional_match(uow, rtype, entry.if_none_exist)
                except ServiceError:
                    continue  # refused again, with the entry named, when the entry is processed
                if found is not None:
                    matches[entry.index] = found.resource_id
        return matches

    def _entry(self, uow: UnitOfWork, entry: BundleEntry, affected: set[str]) -> WriteResult:
        method = (entry.method or "").upper()
        resource = entry.resource
        target = (entry.url or "").split("?")[0].strip("/")
        parts = target.split("/") if target else []
        if method == "POST":
            if resource is None:
                raise ServiceError.of(400, "required", "a POST entry needs a resource")
            rtype = parts[0] if parts else str(resource.get("resourceType"))
            # assign_ids gave the entry its id and pointed the Bundle's references at it.
            return self._create(
                uow, rtype, resource, entry.if_none_exist, affected, rid=resource.get("id")
            )
        if method == "PUT":
            if resource is None or len(parts) != 2:
                raise ServiceError.of(400, "required", "a PUT entry needs a resource and Type/id")
            return self._update(uow, parts[0], parts[1], resource, entry.if_match, affected)
        if method == "DELETE":
            if len(parts) != 2:
                raise ServiceError.of(400, "not-supported", "DELETE entries need Type/id")
            return self._delete(uow, parts[0], parts[1], affected)
        raise ServiceError.of(
            400, "not-supported", f"Bundle entry method {entry.method!r} is not supported"
        )

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

    def search(
        self, rtype: str, params: Sequence[tuple[str, str]], *, count: int, offset: int
    ) -> tuple[list[StoredResource], int]:
        """Search current resources of a type; returns the page and the total."""
        with self.uow_factory() as uow:
            return self._search(uow, rtype, params, count=count, offset=offset)

    def _search(
        self,
        uow: UnitOfWork,
        rtype: str,
        params: Sequence[tuple[str, str]],
        *,
        count: int,
        offset: int,
    ) -> tuple[list[StoredResource], int]:
        patient: str | None = None
        tokens: list[tuple[str, str | None, str]] = []
        last_updated: list[tuple[str, datetime]] = []
        for name, value in params:
            if name in ("subject", "patient"):
                patient = value.split("/")[-1]
            elif name in ("code", "identifier"):
                for alternative in value.split(","):
                    system, _, code = alternative.rpartition("|")
                    tokens.append((name, system or None, code))
            elif name == "_id":
                tokens.append(("_id", None, value))
            elif name == "_lastUpdated":
                last_updated.append(parse_date_param(value))
            else:
                raise ServiceError.of(
                    400, "not-supported", f"search parameter {name!r} is not supported", name
                )
        ids = [t[2] for t in tokens if t[0] == "_id"]
        tokens = [t for t in tokens if t[0] != "_id"]
        if ids:
            row = uow.resources.current(rtype, ids[0])
            rows = [row] if row is not None and not row.deleted else []
            return rows, len(rows)
        found: tuple[list[StoredResource], int] = uow.resources.search(
            rtype,
            patient_id=patient,
            tokens=tokens,
            last_updated=last_updated,
            count=count,
            offset=offset,
        )
        return found


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


def parse_criteria(criteria: str) -> list[tuple[str, str]]:
    """`identifier=sys|1&code=x` -> [(name, value)], as URL query parameters."""
    from urllib.parse import parse_qsl

    text = criteria.split("?", 1)[1] if "?" in criteria else criteria
    params = parse_qsl(text, keep_blank_values=False)
    if not params:
        raise ServiceError.of(400, "invalid", f"If-None-Exist {criteria!r} has no criteria")
    return params


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
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return prefix, when


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
