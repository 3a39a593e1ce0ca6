"""An AuditEvent for every REST interaction (FHIR R4 AuditEvent, IHE Basic Audit Log Patterns).

`AuditMiddleware` writes the event when the response starts, so a client that has its answer can
already find the event. What it holds:
- type `rest`, subtype the FHIR interaction (read, vread, history-instance, history-type,
  history-system, search-type, create, update, patch, delete, batch, transaction, operation),
  action C/R/U/D/E;
- outcome 0 (success), 4 (refused: any 4xx, 401 and 403 included) or 8 (server error);
- agents: the client (its client id; the token subject as the user agent when there is one) with
  its network address, and the server;
- source: this server; entities: the resource (type and id) or the search (its type and the
  query with the values of patient-identifying parameters removed: a `POST _search` form's
  criteria and a conditional create's `If-None-Exist` too), and the patient (when one).

A transaction or batch is recorded as one event for the Bundle (subtype `transaction` or
`batch`, outcome of the HTTP answer) and one event per entry, as if the entry had been its own
request: its interaction and action (a GET entry `read`/`R`, a POST `create`/`C`...), its
resource (`Type/id`, the id a create was given) or query, its patient and its own outcome (an
entry answered 404 is outcome 4). Why per entry rather than one event listing every entry: the
trail is searched by entity type, outcome, agent and patient (a patient-context client sees its
patient's events only), and each of those is one value per event; an event per entry keeps a
batch's read of `Observation/x`, or its failed entries, findable like the same request sent
alone. Each entry's event names the Bundle's event (`entity.detail` `bundle-event`).
A request the router refuses with 405 (a write of the AuditEvents, a method a path does not
take) is recorded too, with the caller its credentials name when they are valid.
Nothing identifying a patient is logged: the event goes to the database only.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_app.api.security.guarded import EntryRecord, GuardedService
from fhir_app.api.security.principal import Authenticator, Principal, forwarding_headers
from fhir_app.fhir.inputs import JsonObject
from fhir_app.service import FhirService
from fhir_app.store import AuditRow, fhir_instant

log = logging.getLogger("fhir_app.audit")

REST_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "Restful Operation",
}
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
# Query parameters whose values identify a patient: left out of the recorded query.
IDENTIFYING_PARAMETERS = frozenset(
    {"patient", "subject", "identifier", "_id", "name", "family", "given", "birthdate"}
)

# (method, route template) -> (interaction, action); routes not listed are not audited.
INTERACTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/fhir/{resource_type}"): ("search-type", "E"),
    ("POST", "/fhir/{resource_type}/_search"): ("search-type", "E"),
    ("POST", "/fhir/{resource_type}"): ("create", "C"),
    ("GET", "/fhir/{resource_type}/{resource_id}"): ("read", "R"),
    ("PUT", "/fhir/{resource_type}/{resource_id}"): ("update", "U"),
    ("DELETE", "/fhir/{resource_type}/{resource_id}"): ("delete", "D"),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history"): ("history-instance", "R"),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history/{version_id}"): ("vread", "R"),
    ("POST", "/fhir"): ("transaction", "E"),
    ("POST", "/fhir/"): ("transaction", "E"),
    ("POST", "/fhir/$assess"): ("operation", "E"),
    ("GET", "/fhir/$export"): ("operation", "E"),
    ("POST", "/fhir/$export"): ("operation", "E"),
    ("GET", "/fhir/$export-poll-status/{job_id}"): ("operation", "R"),
    ("DELETE", "/fhir/$export-poll-status/{job_id}"): ("operation", "D"),
    ("GET", "/fhir/$export-output/{job_id}/{file_name}"): ("operation", "R"),
    # Issue 12.
    ("PUT", "/fhir/{resource_type}"): ("update", "U"),  # conditional update
    ("DELETE", "/fhir/{resource_type}"): ("delete", "D"),  # conditional delete
    ("PATCH", "/fhir/{resource_type}/{resource_id}"): ("patch", "U"),
    ("GET", "/fhir/_history"): ("history-system", "R"),
    ("GET", "/fhir/{resource_type}/_history"): ("history-type", "R"),
    ("GET", "/fhir/Patient/{patient_id}/$everything"): ("operation", "E"),
    ("GET", "/fhir/Patient/{patient_id}/{compartment_type}"): ("search-type", "E"),
    ("POST", "/fhir/{resource_type}/$validate"): ("operation", "E"),
    ("POST", "/fhir/{resource_type}/{resource_id}/$validate"): ("operation", "E"),
    ("GET", "/fhir/AuditEvent"): ("search-type", "E"),
    ("GET", "/fhir/AuditEvent/{event_id}"): ("read", "R"),
}
# What a method would have done, for a request refused with 405 (still audited).
METHOD_INTERACTIONS: dict[str, tuple[str, str]] = {
    "GET": ("read", "R"),
    "POST": ("create", "C"),
    "PUT": ("update", "U"),
    "PATCH": ("patch", "U"),
    "DELETE": ("delete", "D"),
}
SEARCH_BY_POST = "/fhir/{resource_type}/_search"
FORM = "application/x-www-form-urlencoded"
# How much of a `POST _search` form is kept for its AuditEvent's query.
MAX_AUDITED_FORM = 64 * 1024
# Interactions whose query says what was asked: recorded (patient-identifying values removed).
QUERY_INTERACTIONS = frozenset({"search-type", "history-type", "history-system"})
# Routes of other modules that read patient data with the same auth: audited as reads.
EXTRA_READ_PREFIXES = ("/view/",)


def outcome_code(status: int) -> str:
    """IHE/FHIR AuditEvent.outcome: 0 success, 4 minor failure (refused), 8 serious failure."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def redacted_query(query_string: bytes) -> str:
    """The query with the values of patient-identifying parameters left out (`patient=`)."""
    return redacted_pairs(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def redacted_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """Query parameters as text, the values of patient-identifying ones left out."""
    # By the parameter's name without its modifier (`subject:Patient`).
    kept = [
        (name, "" if name.partition(":")[0] in IDENTIFYING_PARAMETERS else value)
        for name, value in pairs
    ]
    return urlencode(kept)


@dataclass(frozen=True, slots=True)
class Interaction:
    """What one request did, as the AuditEvent records it."""

    interaction: str
    action: str
    resource_type: str | None
    resource_id: str | None
    query: str | None
    path: str


def audit_event(
    what: Interaction,
    *,
    status: int,
    principal: Principal | None,
    patients: Iterable[str],
    client_address: str | None,
    server: str,
    now: datetime,
    part_of: str | None = None,
) -> JsonObject:
    """The AuditEvent resource of one interaction."""
    requestor: JsonObject = {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"value": principal.client_id if principal else "unauthenticated"}},
        "requestor": True,
    }
    if client_address:
        requestor["network"] = {"address": client_address, "type": "2"}
    agents: list[JsonObject] = [requestor]
    if principal is not None and principal.subject:
        agents.append(
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]}
                if principal.subject == principal.client_id
                else {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                            "code": "humanuser",
                            "display": "human user",
                        }
                    ]
                },
                "who": {"identifier": {"value": principal.subject}},
                "requestor": False,
            }
        )
    agents.append(
        {
            "type": {
                "coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]
            },
            "who": {"display": "fhir-app"},
            "requestor": False,
            "network": {"address": server, "type": "5"},
        }
    )
    entities: list[JsonObject] = []
    if what.resource_id and what.resource_type:
        entities.append(
            {
                "what": {"reference": f"{what.resource_type}/{what.resource_id}"},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if what.query is not None:
        # The type searched, not the route's template (`/fhir/Observation`).
        path = what.path.replace("{resource_type}", what.resource_type or "{resource_type}")
        path = path.replace("{compartment_type}", what.resource_type or "{compartment_type}")
        entity: JsonObject = {
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "description": f"{path}?{what.query}" if what.query else path,
            "query": base64.b64encode(what.query.encode()).decode(),
        }
        if what.resource_type:
            entity["what"] = {"type": what.resource_type}
        entities.append(entity)
    if part_of is not None:
        for entity in entities:
            entity["detail"] = [{"type": "bundle-event", "valueString": f"AuditEvent/{part_of}"}]
    for patient in sorted(set(patients)):
        entities.append(
            {
                "what": {"reference": f"Patient/{patient}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    event: JsonObject = {
        "resourceType": "AuditEvent",
        "id": uuid.uuid4().hex,
        "meta": {"lastUpdated": fhir_instant(now)},
        "type": REST_TYPE,
        "subtype": [{"system": INTERACTION_SYSTEM, "code": what.interaction}],
        "action": what.action,
        "recorded": fhir_instant(now),
        "outcome": outcome_code(status),
        "outcomeDesc": f"HTTP {status}",
        "agent": agents,
        "source": {
            "observer": {"display": "fhir-app"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if entities:
        event["entity"] = entities
    return event


def interaction_of(scope: Scope, status: int = 200) -> Interaction | None:
    """The audited interaction of a routed request, or None (metadata, unknown routes); a
    request refused with 405 as what its method would have done."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    method = scope.get("method", "")
    if method == "HEAD":
        method = "GET"
    params: dict[str, Any] = scope.get("path_params") or {}
    if template is None:
        return None
    known = INTERACTIONS.get((method, template))
    if known is None:
        if template.startswith(EXTRA_READ_PREFIXES) and method == "GET":
            known = ("read", "R")
        elif status == 405:
            known = METHOD_INTERACTIONS.get(method, ("operation", "E"))
        else:
            return None
    interaction, action = known
    rtype = params.get("resource_type")
    rid = params.get("resource_id") or params.get("event_id")
    if template.startswith("/fhir/AuditEvent"):
        rtype = "AuditEvent"
    if template.startswith("/fhir/$export"):
        rtype, rid = None, None
    if template.startswith(EXTRA_READ_PREFIXES):
        parts = [p for p in template.split("/") if p and not p.startswith("{")]
        rtype = parts[-1] if len(parts) > 1 else None
        rid = next((str(v) for v in params.values()), None)
    if "patient_id" in params:
        # $everything is about the Patient; a compartment search searches a type within it.
        rtype, rid = "Patient", str(params["patient_id"])
        if "compartment_type" in params:
            rtype, rid = str(params["compartment_type"]), None
    query: str | None = None
    if (
        interaction in QUERY_INTERACTIONS
        or template.startswith("/fhir/$export")
        or (rid is None and method in ("PUT", "DELETE"))  # conditional: the query names it
    ):
        query = redacted_query(scope.get("query_string", b""))
    elif interaction == "create" and rid is None:
        # A conditional create searches: its criteria (If-None-Exist, or the query).
        criteria = Headers(scope=scope).get("if-none-exist") or scope.get("query_string", b"")
        if criteria:
            text = criteria.encode("latin-1") if isinstance(criteria, str) else criteria
            query = redacted_query(text)
    return Interaction(interaction, action, rtype, rid, query, template)


def entry_interaction(record: EntryRecord) -> Interaction:
    """The interaction of one entry of a transaction or batch, as if it were its own request."""
    segments = [s for s in record.path.split("/") if s]
    rtype, rid = record.resource_type, record.resource_id
    pairs = parse_qsl(record.query, keep_blank_values=True) if record.query else []
    query = redacted_pairs(pairs) if record.query is not None else None
    path = "/fhir/" + "/".join(segments)
    method = "GET" if record.method == "HEAD" else record.method
    if method != "GET":
        interaction, action = METHOD_INTERACTIONS.get(method, ("operation", "E"))
    elif segments in ([], ["_history"]):
        interaction, action, query = "history-system", "R", query or ""
    elif len(segments) == 1:
        interaction, action, query = "search-type", "E", query or ""
    elif segments[1:] == ["_history"]:
        interaction, action, query = "history-type", "R", query or ""
    elif len(segments) == 2:
        interaction, action = "read", "R"
    elif segments[2:] == ["_history"]:
        interaction, action = "history-instance", "R"
    elif segments[2] == "_history":
        interaction, action = "vread", "R"
    elif segments[2] == "$everything":
        interaction, action, path = "operation", "E", "/fhir/Patient/{patient_id}/$everything"
    else:  # a compartment search, Patient/{id}/{type}: the patient's id is left out
        rtype, rid = segments[2], None
        interaction, action, query = "search-type", "E", query or ""
        path = "/fhir/Patient/{patient_id}/{compartment_type}"
    return Interaction(interaction, action, rtype, rid, query, path)


def audit_patient(principal: Principal | None, patients: set[str]) -> str | None:
    """The one patient the event is about (for the patient-context AuditEvent search)."""
    if principal is not None and principal.patient is not None:
        return principal.patient
    return next(iter(patients)) if len(patients) == 1 else None


class AuditMiddleware:
    """Records an AuditEvent for each audited interaction, before its response goes out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through; record its event at the response start (or on a crash)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorded = False
        form = bytearray()
        searched_by_post = scope.get("method") == "POST" and scope.get("path", "").endswith(
            "/_search"
        )

        async def receive_kept() -> Message:
            # The criteria of `POST _search` are in its form: kept for the event's query.
            message = await receive()
            if message["type"] == "http.request" and len(form) < MAX_AUDITED_FORM:
                form.extend(message.get("body", b"")[: MAX_AUDITED_FORM - len(form)])
            return message

        async def send_recorded(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self._record(scope, int(message["status"]), bytes(form))
            await send(message)

        try:
            await self.app(scope, receive_kept if searched_by_post else receive, send_recorded)
        except Exception:
            if not recorded:
                recorded = True
                await self._record(scope, 500, bytes(form))
            raise

    async def _record(self, scope: Scope, status: int, form: bytes = b"") -> None:
        app = scope.get("app")
        state = getattr(app, "state", None)
        settings = getattr(state, "settings", None)
        if settings is None or not settings.audit_events:
            return
        what = interaction_of(scope, status)
        if what is None:
            return
        request_state: dict[str, Any] = scope.get("state") or {}
        principal = request_state.get("principal")
        guarded = request_state.get("guarded")
        if principal is None and status == 405:
            principal = await identified(scope, getattr(state, "authenticator", None))
        if what.path == SEARCH_BY_POST and form:
            what = with_form(what, scope, form)
        if isinstance(guarded, GuardedService) and guarded.bundle_type is not None:
            what = replace(what, interaction=guarded.bundle_type)
        patients: set[str] = set(getattr(guarded, "patients", set()))
        if isinstance(principal, Principal) and principal.patient is not None:
            patients = {principal.patient}
        client = scope.get("client")
        service = getattr(state, "service", None)
        if not isinstance(service, FhirService):
            return
        server = request_state.get("fhir_base") or "fhir-app"
        event = audit_event(
            what,
            status=status,
            principal=principal if isinstance(principal, Principal) else None,
            patients=patients,
            client_address=client[0] if client else None,
            server=str(server),
            now=datetime.now(UTC),
        )

        writer = getattr(state, "audit_writer", None)
        if not isinstance(writer, AuditWriter):
            return
        caller = principal if isinstance(principal, Principal) else None
        writer.submit(audit_row(what, event, caller, patients))
        if not isinstance(guarded, GuardedService):
            return
        for record in guarded.entries:
            entry_patients = record.patients
            if caller is not None and caller.patient is not None:
                entry_patients = {caller.patient}
            entry_what = entry_interaction(record)
            entry_event = audit_event(
                entry_what,
                status=record.status or status,
                principal=caller,
                patients=entry_patients,
                client_address=client[0] if client else None,
                server=str(server),
                now=datetime.now(UTC),
                part_of=event["id"],
            )
            writer.submit(audit_row(entry_what, entry_event, caller, entry_patients))


def audit_row(
    what: Interaction, event: JsonObject, caller: Principal | None, patients: set[str]
) -> AuditRow:
    """The stored row of an AuditEvent (with the columns its search filters on)."""
    return AuditRow(
        event_id=event["id"],
        recorded=datetime.fromisoformat(event["recorded"]),
        interaction=what.interaction,
        action=what.action,
        outcome=event["outcome"],
        client_id=event["agent"][0]["who"]["identifier"]["value"],
        subject=caller.subject if caller else None,
        entity_type=what.resource_type,
        patient_id=audit_patient(caller, patients),
        content=event,
    )


async def identified(scope: Scope, authenticator: object) -> Principal | None:
    """The caller of a request no route authenticated (the router's 405), when its
    credentials are valid; verifying them may read the JWKS, so off the event loop."""
    if not isinstance(authenticator, Authenticator):
        return None
    headers = Headers(scope=scope)
    client = scope.get("client")
    return await run_in_threadpool(
        authenticator.identify,
        headers.get("authorization"),
        client[0] if client else "unknown",
        forwarded=forwarding_headers(headers),
    )


def with_form(what: Interaction, scope: Scope, form: bytes) -> Interaction:
    """A `POST _search` with the criteria of its form added to those of its query."""
    media = Headers(scope=scope).get("content-type", FORM).split(";")[0].strip().lower()
    if media != FORM:
        return what
    pairs = [
        *parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True),
        *parse_qsl(form.decode("utf-8", errors="replace"), keep_blank_values=True),
    ]
    return replace(what, query=redacted_pairs(pairs))


class AuditWriter:
    """Stores AuditEvents from a background thread, many per transaction.

    Why not in the request: on SQLite every write takes the database's one write lock, which a
    long transaction (an export) may hold for a while; a read must not wait for it, nor pay a
    write transaction of its own. Events wait in memory until written (retried every
    RETRY_SECONDS while the database refuses); `flush` waits until everything submitted so far
    is stored, which the AuditEvent search does first, so a client finds its own interactions.
    Events still queued when the process dies are lost: the queue is kept short by writing at
    once, and at most MAX_QUEUED wait (past that the oldest are dropped, and the drop logged).
    `close` stores what is queued and stops the thread, for an owner that stops serving (and may
    then drop the database) while the process goes on, as the tests do.
    """

    MAX_BATCH = 500
    MAX_QUEUED = 100_000
    RETRY_SECONDS = 0.5

    def __init__(self, uow_factory: Callable[[], Any]) -> None:
        self.uow_factory = uow_factory
        self._queue: deque[AuditRow] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.dropped = 0

    def submit(self, row: AuditRow) -> None:
        """Queue one event for writing."""
        with self._cond:
            if len(self._queue) >= self.MAX_QUEUED:
                self._queue.popleft()
                self.dropped += 1
                log.error("AuditEvent queue full: %d events dropped so far", self.dropped)
            self._queue.append(row)
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(
                    target=self._run, name="fhir-app-audit", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event submitted so far is stored; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Store what is queued (waiting at most `timeout`), then stop the writer thread.

        True when every event was stored; the ones still unstored at the timeout are dropped,
        and the drop logged. A later `submit` starts a new thread.
        """
        stored = self.flush(timeout)
        with self._cond:
            thread = self._thread
            self._closing = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=self.RETRY_SECONDS + timeout)
        with self._cond:
            if self._queue and self._thread is None:
                self.dropped += len(self._queue)
                log.error("AuditEvent writer closed: %d events not stored", len(self._queue))
                self._queue.clear()
        return stored

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    self._thread = None  # a later submit starts a new one
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(self.MAX_BATCH, len(self._queue)))
                ]
                self._in_flight = len(batch)
            stored = self._store(batch)
            with self._cond:
                if not stored:
                    self._queue.extendleft(reversed(batch))
                self._in_flight = 0
                self._cond.notify_all()
            if not stored:
                time.sleep(self.RETRY_SECONDS)

    def _store(self, batch: list[AuditRow]) -> bool:
        try:
            with self.uow_factory() as uow:
                uow.audit.add_all(batch)
                uow.commit()
        except Exception as error:  # kept and retried: the trail must not be lost silently
            log.error("AuditEvents not stored yet (%s); retrying", type(error).__name__)
            return False
        return True
