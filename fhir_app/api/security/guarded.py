"""The service as one caller may use it: SMART scopes and the patient compartment enforced.

`GuardedService` is the `FhirService` of one request: every route (and any route added later
that takes `ServiceDep`) goes through it, so no interaction is left unchecked. Per interaction:
read, vread and instance history need `r`; search `s`; create `c`; update and patch `u`; delete
`d`; conditional update `c` `u` `s` (it may create, it searches), conditional delete `d` `s`; type
history `r` and `s` on the type, system history only the types with both (403 when none);
`$everything` `r` on Patient, then only the types readable; `$validate` the permission of the
write it checks (`c`, or `u` for an instance): it stores nothing but answers what a write would.
A transaction or batch needs the permission of every write entry (a batch with one forbidden
entry is refused whole, before anything is stored); its GET entries are checked one by one as
they are read, through this service. A missing permission is 403 naming the scope that would
allow it.

Search is what reveals stored content besides read: a conditional create (`If-None-Exist`, or
criteria in the query or in a Bundle entry's `ifNoneExist`) searches, so it needs `s` as well as
`c`. A write answers with the stored resource only when the caller may read it (`r` on the
type): a create that stored the caller's own content answers it, but a conditional create that
matched, an update and a patch (even one that changes nothing) answer, without `r`, an
OperationOutcome saying what is stored, not the content.

With a patient context (the token's `patient` claim), the caller sees and writes only resources
whose patient is that patient (`patient_of`: the Patient itself, or the subject/patient
reference): reads of other patients' resources are 404 (their existence is not confirmed),
searches (and the resources they include) are bounded to the patient, history (at every level)
leaves out versions of other patients, `$everything` of another patient is 404, and a write of
another patient's resource (or over one, or a patch that moves one to another patient) is 403.
A deleted resource still belongs to the patient of its last version: another patient's is 404
to read and 403 to write (a caller cannot re-create it under its own patient). `$validate` runs
the same patient checks as the write it tries. A conditional create, update or delete over REST
whose criteria match another patient's resource is refused with a 403 that names no resource
(nor how many match); in a Bundle they cannot be checked before they match, so a
patient-context caller cannot send them there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import urlsplit

from fhir_app.api.security.principal import Principal
from fhir_app.fhir.bundle import BundleEntry, bundle_entries
from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.outcome import operation_outcome
from fhir_app.fhir.patch import JsonPatch, apply_json_patch, binary_json_patch, tests_stored
from fhir_app.fhir.search import ReferenceValue, SearchQuery
from fhir_app.searching import SearchResult
from fhir_app.service import (
    INPUT_TYPES,
    OUTPUT_TYPES,
    EntryReader,
    FhirService,
    HistoryCursor,
    ServiceError,
    StoredResource,
    WriteResult,
    parse_criteria,
    patient_of,
)

PATIENT_PARAMETERS = ("subject", "patient")
STORED_TYPES = INPUT_TYPES | OUTPUT_TYPES
# Versions are stored as 32-bit integers: a larger one names no version (404, not a crash).
MAX_VERSION_ID = 2**31 - 1
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def forbidden(principal: Principal, rtype: str, permission: str) -> ServiceError:
    """403 naming the scope that is missing."""
    return ServiceError.of(
        403,
        "forbidden",
        f"The token's scopes do not allow this: it needs the scope "
        f"{principal.needed_scope(rtype, permission)} (or {principal.scope_context}/*."
        f"{permission})",
    )


def outside_compartment(what: str) -> ServiceError:
    """403 for a write outside the token's patient context."""
    return ServiceError.of(403, "forbidden", f"{what} is outside the patient context of the token")


def not_known(what: str) -> ServiceError:
    """404, as for a resource that does not exist (its existence is not confirmed)."""
    return ServiceError.of(404, "not-found", f"{what} is not known")


@dataclass(slots=True)
class EntryRecord:
    """What one entry of a transaction or batch did, for its AuditEvent: the method, the
    resource (type and id, when known) or the query it read, its HTTP status and patients."""

    index: int
    method: str
    resource_type: str | None
    resource_id: str | None
    path: str
    query: str | None
    status: int
    patients: set[str] = field(default_factory=set)


class GuardedService(FhirService):
    """A FhirService that checks one caller's scopes and patient context on every call.

    `patients` collects the patients the request touched, for its AuditEvent.
    """

    def __init__(self, inner: FhirService, principal: Principal) -> None:
        super().__init__(inner.uow_factory, inner.settings, inner.clock)
        # Calls go to the service the app was made with (it may be a specialised one).
        self.inner = inner
        self.principal = principal
        self.patients: set[str] = set()
        # For the AuditEvents: the Bundle's type, and what each of its entries did.
        self.bundle_type: str | None = None
        self.entries: list[EntryRecord] = []

    # ---- checks ------------------------------------------------------------------------------

    def require(self, rtype: str, permission: str) -> None:
        """403 unless the caller's scopes grant `permission` on `rtype`."""
        if not self.principal.allows(rtype, permission):
            raise forbidden(self.principal, rtype, permission)

    def _visible(self, row: StoredResource) -> bool:
        context = self.principal.patient
        return context is None or row.patient_id == context

    def _note(self, patient: str | None) -> None:
        if patient:
            self.patients.add(patient)

    def _writable(self, rtype: str, raw: JsonObject | None) -> None:
        context = self.principal.patient
        if context is None or raw is None:
            return
        if patient_of(raw) != context:
            raise outside_compartment(f"A {rtype} of another patient (or of none)")

    def _existing_writable(self, rtype: str, rid: str) -> None:
        """403 when the resource at rtype/rid exists, or existed, for another patient: a
        deleted version keeps the patient of the version it ends, and its id stays that
        patient's (a re-creation would mix two patients in one history)."""
        if not self._owned_by_other(rtype, rid):
            return
        raise outside_compartment(f"{rtype}/{rid}")

    def _owned_by_other(self, rtype: str, rid: str) -> bool:
        """True when a patient-context caller's patient is not the one of rtype/rid's current
        version (deleted or not)."""
        if self.principal.patient is None:
            return False
        with self.uow_factory() as uow:
            row = uow.resources.current(rtype, rid)
        return row is not None and row.patient_id != self.principal.patient

    def _readable_result(self, result: WriteResult) -> WriteResult:
        """The result of a write as this caller may see it: the stored resource only with `r`
        on its type, unless the write created it from the caller's own content (201).
        Otherwise an OperationOutcome stands for it (a no-op patch or a matched conditional
        create must not be a read)."""
        if (
            result.status == 201
            or result.resource is None
            or self.principal.allows(result.resource_type, "r")
        ):
            return result
        return replace(result, resource=self.withheld(result.resource_type, result.resource_id))

    def withheld(self, rtype: str, rid: str) -> JsonObject:
        """The OperationOutcome that stands for a stored resource the caller may not read."""
        text = (
            f"{rtype}/{rid} is stored; its content is not returned: reading it needs the scope "
            f"{self.principal.needed_scope(rtype, 'r')}"
        )
        return operation_outcome([Issue("information", "informational", text)])

    # ---- reads -------------------------------------------------------------------------------

    def read(self, rtype: str, rid: str, version_id: int | None = None) -> StoredResource:
        """The resource when the caller may read it; 404 outside its patient context."""
        self.require(rtype, "r")
        what = f"{rtype}/{rid}" + (f"/_history/{version_id}" if version_id else "")
        if version_id is not None and not 0 < version_id <= MAX_VERSION_ID:
            raise not_known(what)
        try:
            row = self.inner.read(rtype, rid, version_id)
        except ServiceError as exc:
            # 410 says the resource existed: not for another patient's.
            if exc.status == 410 and self._owned_by_other(rtype, rid):
                raise not_known(what) from None
            raise
        if not self._visible(row):
            raise not_known(what)
        self._note(row.patient_id)
        return row

    def history(self, rtype: str, rid: str) -> list[StoredResource]:
        """The versions the caller may see; 404 when none."""
        self.require(rtype, "r")
        rows = [row for row in self.inner.history(rtype, rid) if self._visible(row)]
        if not rows:
            raise ServiceError.of(404, "not-found", f"{rtype}/{rid} is not known")
        for row in rows:
            self._note(row.patient_id)
        return rows

    def search(self, query: SearchQuery) -> SearchResult:
        """A search bounded to the caller's patient, when it has one; the resources that
        `_include` / `_revinclude` add obey the same scopes and compartment as the matches
        (those the caller may not search are left out)."""
        self.require(query.resource_type, "s")
        for clause in query.clauses:
            if clause.parameter.name in PATIENT_PARAMETERS:
                for value in clause.values:
                    if isinstance(value, ReferenceValue) and value.type in (None, "Patient"):
                        self._note(value.id)
        context = self.principal.patient
        if context is not None:
            self._note(context)
            query = query.bounded(context)
        result = self.inner.search(query)
        included = [
            row
            for row in result.included
            if self.principal.allows(row.resource_type, "s") and self._visible(row)
        ]
        return replace(result, included=included)

    def matches(
        self, rtype: str, params: Sequence[tuple[str, str]], *, count: int
    ) -> tuple[list[StoredResource], int]:
        """Conditional criteria, when the caller may search this type; bounded to its patient."""
        self.require(rtype, "s")
        rows, total = self.inner.matches(rtype, params, count=count)
        visible = [row for row in rows if self._visible(row)]
        return visible, total - (len(rows) - len(visible))

    # ---- writes ------------------------------------------------------------------------------

    def create(
        self, rtype: str, raw: JsonObject, *, if_none_exist: str | None = None
    ) -> WriteResult:
        """Create, when the caller may create this type for this patient; a conditional
        create (`if_none_exist`) searches, so it needs `s` too, and answers a match's content
        only when the caller may read it (`r`)."""
        self.require(rtype, "c")
        if if_none_exist is not None:
            self.require(rtype, "s")
        self._writable(rtype, raw)
        self._note(patient_of(raw))
        if if_none_exist is not None:
            self._check_matches(rtype, if_none_exist, "If-None-Exist")
        return self._readable_result(self.inner.create(rtype, raw, if_none_exist=if_none_exist))

    def update(
        self, rtype: str, rid: str, raw: JsonObject, *, if_match: str | None = None
    ) -> WriteResult:
        """Update, when the caller may update this type, for this patient, over this resource."""
        self.require(rtype, "u")
        self._writable(rtype, raw)
        self._existing_writable(rtype, rid)
        self._note(patient_of(raw))
        return self._readable_result(self.inner.update(rtype, rid, raw, if_match=if_match))

    def delete(self, rtype: str, rid: str) -> WriteResult:
        """Delete, when the caller may delete this type and this patient's resources."""
        self.require(rtype, "d")
        self._existing_writable(rtype, rid)
        return self.inner.delete(rtype, rid)

    # ---- issue 12: conditional writes, patch, history, $everything, $validate ----------------

    def _check_matches(self, rtype: str, criteria: str, what: str) -> None:
        """403 when the criteria match a resource outside the caller's patient context: the
        conditional write would act on it (or answer it). The 403 names neither the match
        nor how many there are."""
        if self.principal.patient is None:
            return
        rows, _total = self.inner.matches(rtype, parse_criteria(criteria, what), count=2)
        if any(not self._visible(row) for row in rows):
            raise outside_compartment(f"What the {what} criteria match")

    def update_conditional(
        self, rtype: str, criteria: str, raw: JsonObject, *, if_match: str | None = None
    ) -> WriteResult:
        """A conditional update needs `u` (and `c`, as it may create) and `s` (it searches)."""
        for permission in ("u", "c", "s"):
            self.require(rtype, permission)
        self._writable(rtype, raw)
        self._check_matches(rtype, criteria, f"PUT {rtype}?")
        self._note(patient_of(raw))
        return self._readable_result(
            self.inner.update_conditional(rtype, criteria, raw, if_match=if_match)
        )

    def delete_conditional(self, rtype: str, criteria: str) -> WriteResult:
        """A conditional delete needs `d` and `s` (it searches first)."""
        self.require(rtype, "d")
        self.require(rtype, "s")
        self._check_matches(rtype, criteria, f"DELETE {rtype}?")
        return self.inner.delete_conditional(rtype, criteria)

    def patch(
        self,
        rtype: str,
        rid: str,
        change: Callable[[JsonObject], JsonObject],
        *,
        if_match: str | None = None,
    ) -> WriteResult:
        """A patch is an update (`u`): of this patient's resource, staying this patient's. A
        JSON Patch with a `test` operation also reads (`r`): whether it applies tells the caller
        what is stored."""
        self.require(rtype, "u")
        if isinstance(change, JsonPatch) and change.reads:
            self.require(rtype, "r")
        self._existing_writable(rtype, rid)

        def checked(current: JsonObject) -> JsonObject:
            patched = change(current)
            self._writable(rtype, patched)
            self._note(patient_of(patched))
            return patched

        return self._readable_result(self.inner.patch(rtype, rid, checked, if_match=if_match))

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
        """History the caller may read: `r` on the instance's type; `r` and `s` on a type (the
        history of a type lists its resources like a search); at system level only the types
        with both (403 when none). A patient-context caller sees its patient's versions only."""
        bounds = self._history_bounds(rtype, rid, types, patient)
        if bounds is None:
            return []
        types, bounded = bounds
        rows = self.inner.history_page(
            rtype, rid, since=since, before=before, count=count, types=types, patient=bounded
        )
        for row in rows:
            self._note(row.patient_id)
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
        """The number of versions `history_page` shows this caller: the same checks and bounds."""
        bounds = self._history_bounds(rtype, rid, types, patient)
        if bounds is None:
            return 0
        types, bounded = bounds
        return self.inner.history_total(rtype, rid, since=since, types=types, patient=bounded)

    def _history_bounds(
        self,
        rtype: str | None,
        rid: str | None,
        types: Sequence[str] | None,
        patient: str | None,
    ) -> tuple[Sequence[str] | None, str | None] | None:
        """The checks of a history (see `history_page`): the types and the patient it is bounded
        to, or None when it can hold nothing for this caller."""
        if rid is not None and rtype is not None:
            self.require(rtype, "r")
        elif rtype is not None:
            self.require(rtype, "r")
            self.require(rtype, "s")
        else:
            candidates = types if types is not None else sorted(STORED_TYPES)
            types = [t for t in candidates if self._lists(t)]
            if not types:
                raise forbidden(self.principal, "*", "rs")
        if self.principal.patient is not None and patient not in (None, self.principal.patient):
            return None
        return types, self.principal.patient or patient

    def _lists(self, rtype: str) -> bool:
        return self.principal.allows(rtype, "r") and self.principal.allows(rtype, "s")

    def everything(
        self,
        patient: str,
        *,
        since: datetime | None = None,
        after: tuple[str, str] | None = None,
        count: int,
        types: Sequence[str] | None = None,
    ) -> list[StoredResource]:
        """`Patient/{id}/$everything`: `r` on the Patient; only the types the caller may read
        (`r`) are returned; another patient than the token's is 404."""
        readable = self._everything_types(patient, types)
        return self.inner.everything(patient, since=since, after=after, count=count, types=readable)

    def everything_total(
        self,
        patient: str,
        *,
        since: datetime | None = None,
        types: Sequence[str] | None = None,
    ) -> int:
        """The number of resources `everything` shows this caller: the same checks and bounds."""
        readable = self._everything_types(patient, types)
        return self.inner.everything_total(patient, since=since, types=readable)

    def _everything_types(self, patient: str, types: Sequence[str] | None) -> list[str]:
        """The checks of `$everything` (see `everything`): the types this caller reads in it."""
        self.require("Patient", "r")
        if self.principal.patient is not None and patient != self.principal.patient:
            raise ServiceError.of(404, "not-found", f"Patient/{patient} is not known")
        candidates = types if types is not None else sorted(STORED_TYPES)
        self._note(patient)
        return [t for t in candidates if self.principal.allows(t, "r")]

    def validate(self, rtype: str, raw: JsonObject, rid: str | None = None) -> list[Issue]:
        """`$validate` stores and reveals nothing, but it is a write's dry run: it needs the
        permission of the write it checks (`c`, or `u` for an instance) on the type."""
        self.require(rtype, "u" if rid is not None else "c")
        # The patient checks of the write too: `$validate` answers what the write would.
        self._writable(rtype, raw)
        if rid is not None:
            self._existing_writable(rtype, rid)
        return self.inner.validate(rtype, raw, rid)

    def transaction(self, bundle: JsonObject, reader: EntryReader | None = None) -> JsonObject:
        """A transaction whose every write entry the caller may perform; its read entries go
        through `reader`, which the API builds over this guarded service."""
        self.bundle_type = "transaction"
        self._check_entries(bundle)
        read_patients: dict[int, set[str]] = {}
        answer = self.inner.transaction(bundle, self._tracked(reader, read_patients))
        return self._entries_seen(bundle, answer, read_patients)

    def batch(self, bundle: JsonObject, reader: EntryReader | None = None) -> JsonObject:
        """A batch whose every write entry the caller may perform (refused whole otherwise);
        read entries are checked one by one as `reader` performs them."""
        self.bundle_type = "batch"
        self._check_entries(bundle)
        read_patients: dict[int, set[str]] = {}
        answer = self.inner.batch(bundle, self._tracked(reader, read_patients))
        return self._entries_seen(bundle, answer, read_patients)

    def _tracked(self, reader: EntryReader | None, seen: dict[int, set[str]]) -> EntryReader | None:
        """`reader`, noting the patients each entry's read touched (for its AuditEvent)."""
        if reader is None:
            return None

        def read(entry: BundleEntry) -> JsonObject:
            outer, self.patients = self.patients, set()
            try:
                return reader(entry)
            finally:
                seen[entry.index] = self.patients
                self.patients = outer | self.patients

        return read

    def _entries_seen(
        self, bundle: JsonObject, answer: JsonObject, read_patients: dict[int, set[str]]
    ) -> JsonObject:
        """Record what each entry did (`entries`), and withhold the stored resources the
        caller may not read from the write entries' answers (as `_readable_result`)."""
        responses = answer.get("entry") or []
        for entry in bundle_entries(bundle):
            if entry.index >= len(responses):
                break
            answered = responses[entry.index]
            response = answered.get("response") or {}
            method = (entry.method or "").upper()
            record = entry_record(entry, response)
            resource = answered.get("resource")
            if method in WRITE_METHODS:
                if entry.resource is not None and method in ("POST", "PUT"):
                    record.patients.add(patient_of(entry.resource) or "")
                if isinstance(resource, dict):
                    record.patients.add(patient_of(resource) or "")
                if method == "DELETE" and record.resource_type and record.resource_id:
                    record.patients.add(self._patient_of_stored(record) or "")
                record.patients.discard("")
                if (
                    isinstance(resource, dict)
                    and record.resource_type
                    and not str(response.get("status", "")).startswith("201")
                    and not self.principal.allows(record.resource_type, "r")
                ):
                    del answered["resource"]
                    response["outcome"] = self.withheld(
                        record.resource_type, record.resource_id or ""
                    )
            else:
                record.patients = read_patients.get(entry.index, set())
            self.entries.append(record)
        return answer

    def _patient_of_stored(self, record: EntryRecord) -> str | None:
        with self.uow_factory() as uow:
            row = uow.resources.current(str(record.resource_type), str(record.resource_id))
        return row.patient_id if row is not None else None

    def _check_entries(self, bundle: JsonObject) -> None:
        """The permission of each entry, parsed as the service parses it (FhirService._entry)."""
        permissions = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}
        for entry in bundle_entries(bundle):
            method = (entry.method or "").upper()
            url = entry.url or ""
            target = url.split("?")[0].strip("/")
            parts = target.split("/") if target else []
            types = {parts[0]} if parts else set()
            if entry.resource is not None and method != "PATCH":  # a PATCH carries a Binary
                types.add(str(entry.resource.get("resourceType")))
                self._note(patient_of(entry.resource))
            permission = permissions.get(method)
            if permission is None:
                continue  # the service refuses the method itself
            for rtype in sorted(types):
                self.require(rtype, permission)
                if method == "PATCH" and _tests_stored(entry.resource):
                    self.require(rtype, "r")  # a `test` operation reads, as over REST
                # Conditional entries search first (as over REST): `s`, and `c` for a
                # conditional update (it may create).
                if entry.if_none_exist is not None or "?" in url:
                    self.require(rtype, "s")
                if method == "PUT" and "?" in url:
                    self.require(rtype, "c")
            if self.principal.patient is None:
                continue
            if "?" in url or entry.if_none_exist is not None:
                raise outside_compartment(
                    f"{entry.label}: a conditional entry (its match cannot be checked first)"
                )
            if method in ("POST", "PUT"):
                self._writable(next(iter(types), "resource"), entry.resource)
            if method in ("PUT", "PATCH", "DELETE") and len(parts) == 2:
                self._existing_writable(parts[0], parts[1])
            if method == "PATCH" and len(parts) == 2:
                self._patched_writable(parts[0], parts[1], entry.resource)

    def _patched_writable(self, rtype: str, rid: str, binary: JsonObject | None) -> None:
        """403 when a PATCH entry would move the resource to another patient (or to none)."""
        try:
            operations = binary_json_patch(binary)
            current = self.inner.read(rtype, rid)
            patched = apply_json_patch(dict(current.content), operations)
        except (InputRejected, ServiceError):
            return  # the service refuses the entry itself, naming it
        self._writable(rtype, patched)


def entry_record(entry: BundleEntry, response: JsonObject) -> EntryRecord:
    """What an entry acted on, from its request url (and, for a write, the `location` of its
    answer: the id a create was given)."""
    status_text = str(response.get("status", "")).strip().split(" ")[0]
    status = int(status_text) if status_text.isdigit() else 0
    parts = urlsplit((entry.url or "").strip())
    path = parts.path
    if parts.scheme or parts.netloc:
        path = path.split("/fhir", 1)[-1]
    segments = [s for s in path.strip("/").split("/") if s]
    location = str(response.get("location") or "")
    if location and (entry.method or "").upper() in WRITE_METHODS:
        segments = [s for s in urlsplit(location).path.strip("/").split("/") if s][-4:][:2]
    rtype = segments[0] if segments and segments[0][:1].isupper() else None
    rid = segments[1] if len(segments) > 1 and not segments[1].startswith(("_", "$")) else None
    query = parts.query if parts.query or (rid is None and rtype is not None) else None
    if entry.if_none_exist is not None:
        query = entry.if_none_exist  # a conditional create searched
    return EntryRecord(
        index=entry.index,
        method=(entry.method or "").upper(),
        resource_type=rtype,
        resource_id=rid,
        path="/".join(segments),
        query=query,
        status=status,
    )


def _tests_stored(binary: JsonObject | None) -> bool:
    """Whether a PATCH entry's JSON Patch has a `test` operation (a malformed one is refused by
    the service, naming the entry)."""
    try:
        return tests_stored(binary_json_patch(binary))
    except InputRejected:
        return False
