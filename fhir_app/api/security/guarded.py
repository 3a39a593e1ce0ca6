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

With a patient context (the token's `patient` claim), the caller sees and writes only resources
whose patient is that patient (`patient_of`: the Patient itself, or the subject/patient
reference): reads of other patients' resources are 404 (their existence is not confirmed),
searches are bounded to the patient, history (at every level) leaves out versions of other
patients, `$everything` of another patient is 404, and a write of another patient's resource (or
over one, or a patch that moves one to another patient) is 403. A conditional update or delete
over REST is refused when its criteria match another patient's resource; in a Bundle they cannot
be checked before they match, so a patient-context caller cannot send them there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from fhir_app.api.security.principal import Principal
from fhir_app.fhir.bundle import bundle_entries
from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.patch import apply_json_patch, binary_json_patch
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
        """403 when the resource at rtype/rid exists and belongs to another patient."""
        if self.principal.patient is None:
            return
        with self.uow_factory() as uow:
            row = uow.resources.current(rtype, rid)
        if row is not None and not row.deleted and row.patient_id != self.principal.patient:
            raise outside_compartment(f"{rtype}/{rid}")

    # ---- reads -------------------------------------------------------------------------------

    def read(self, rtype: str, rid: str, version_id: int | None = None) -> StoredResource:
        """The resource when the caller may read it; 404 outside its patient context."""
        self.require(rtype, "r")
        row = self.inner.read(rtype, rid, version_id)
        if not self._visible(row):
            what = f"{rtype}/{rid}" + (f"/_history/{version_id}" if version_id else "")
            raise ServiceError.of(404, "not-found", f"{what} is not known")
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

    def search(
        self, rtype: str, params: Sequence[tuple[str, str]], *, count: int, offset: int
    ) -> tuple[list[StoredResource], int]:
        """A search bounded to the caller's patient, when it has one."""
        self.require(rtype, "s")
        context = self.principal.patient
        for name, value in params:
            if name in PATIENT_PARAMETERS:
                self._note(value.split("/")[-1])
        if context is None:
            return self.inner.search(rtype, params, count=count, offset=offset)
        self._note(context)
        asked = {value.split("/")[-1] for name, value in params if name in PATIENT_PARAMETERS}
        if asked - {context}:
            return [], 0  # another patient's resources: none of them are visible
        bounded = [*params, ("patient", context)]
        rows, total = self.inner.search(rtype, bounded, count=count, offset=offset)
        visible = [row for row in rows if self._visible(row)]
        # The `_id` search ignores other criteria; what it found outside the context is removed.
        return visible, total - (len(rows) - len(visible))

    # ---- writes ------------------------------------------------------------------------------

    def create(
        self, rtype: str, raw: JsonObject, *, if_none_exist: str | None = None
    ) -> WriteResult:
        """Create, when the caller may create this type for this patient."""
        self.require(rtype, "c")
        self._writable(rtype, raw)
        self._note(patient_of(raw))
        if if_none_exist is not None and self.principal.patient is not None:
            # A match is answered with the matching resource: it must be the caller's to see.
            self._check_conditional(rtype, if_none_exist)
        return self.inner.create(rtype, raw, if_none_exist=if_none_exist)

    def _check_conditional(self, rtype: str, criteria: str) -> None:
        rows, _total = self.inner.search(rtype, parse_criteria(criteria), count=2, offset=0)
        for row in rows:
            if not self._visible(row):
                raise outside_compartment(f"The If-None-Exist match {rtype}/{row.resource_id}")

    def update(
        self, rtype: str, rid: str, raw: JsonObject, *, if_match: str | None = None
    ) -> WriteResult:
        """Update, when the caller may update this type, for this patient, over this resource."""
        self.require(rtype, "u")
        self._writable(rtype, raw)
        self._existing_writable(rtype, rid)
        self._note(patient_of(raw))
        return self.inner.update(rtype, rid, raw, if_match=if_match)

    def delete(self, rtype: str, rid: str) -> WriteResult:
        """Delete, when the caller may delete this type and this patient's resources."""
        self.require(rtype, "d")
        self._existing_writable(rtype, rid)
        return self.inner.delete(rtype, rid)

    # ---- issue 12: conditional writes, patch, history, $everything, $validate ----------------

    def _check_matches(self, rtype: str, criteria: str, what: str) -> None:
        """403 when the criteria match a resource outside the caller's patient context: the
        conditional write would act on it."""
        if self.principal.patient is None:
            return
        rows, _total = self.inner.search(rtype, parse_criteria(criteria, what), count=2, offset=0)
        for row in rows:
            if not self._visible(row):
                raise outside_compartment(f"The {what} match {rtype}/{row.resource_id}")

    def update_conditional(
        self, rtype: str, criteria: str, raw: JsonObject, *, if_match: str | None = None
    ) -> WriteResult:
        """A conditional update needs `u` (and `c`, as it may create) and `s` (it searches)."""
        for permission in ("u", "c", "s"):
            self.require(rtype, permission)
        self._writable(rtype, raw)
        self._check_matches(rtype, criteria, f"PUT {rtype}?")
        self._note(patient_of(raw))
        return self.inner.update_conditional(rtype, criteria, raw, if_match=if_match)

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
        """A patch is an update (`u`): of this patient's resource, staying this patient's."""
        self.require(rtype, "u")
        self._existing_writable(rtype, rid)

        def checked(current: JsonObject) -> JsonObject:
            patched = change(current)
            self._writable(rtype, patched)
            self._note(patient_of(patched))
            return patched

        return self.inner.patch(rtype, rid, checked, if_match=if_match)

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
        bounded = self.principal.patient or patient
        if self.principal.patient is not None and patient not in (None, self.principal.patient):
            return []
        rows = self.inner.history_page(
            rtype, rid, since=since, before=before, count=count, types=types, patient=bounded
        )
        for row in rows:
            self._note(row.patient_id)
        return rows

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
        self.require("Patient", "r")
        if self.principal.patient is not None and patient != self.principal.patient:
            raise ServiceError.of(404, "not-found", f"Patient/{patient} is not known")
        candidates = types if types is not None else sorted(STORED_TYPES)
        readable = [t for t in candidates if self.principal.allows(t, "r")]
        self._note(patient)
        return self.inner.everything(patient, since=since, after=after, count=count, types=readable)

    def validate(self, rtype: str, raw: JsonObject, rid: str | None = None) -> list[Issue]:
        """`$validate` stores and reveals nothing, but it is a write's dry run: it needs the
        permission of the write it checks (`c`, or `u` for an instance) on the type."""
        self.require(rtype, "u" if rid is not None else "c")
        return self.inner.validate(rtype, raw, rid)

    def transaction(self, bundle: JsonObject, reader: EntryReader | None = None) -> JsonObject:
        """A transaction whose every write entry the caller may perform; its read entries go
        through `reader`, which the API builds over this guarded service."""
        self._check_entries(bundle)
        return self.inner.transaction(bundle, reader)

    def batch(self, bundle: JsonObject, reader: EntryReader | None = None) -> JsonObject:
        """A batch whose every write entry the caller may perform (refused whole otherwise);
        read entries are checked one by one as `reader` performs them."""
        self._check_entries(bundle)
        return self.inner.batch(bundle, reader)

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
