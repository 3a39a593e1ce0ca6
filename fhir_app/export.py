"""FHIR Bulk Data export (Bulk Data Access IG v2, system level) of the outputs, and its jobs.

What is exported: the current version of every output of CONTRACT section 4, one NDJSON file per
type: RiskAssessment, DiagnosticReport, the SINS and classification Observations, Provenance.
The inputs are not exported: they are the feeds' own records. A withdrawn output
(`entered-in-error`) is a current version and is exported, so that an incremental export tells
its reader about the withdrawal. A job started with a patient (the patient context of a SMART
token) exports only the outputs whose patient is that patient.

- `_since` is inclusive: an output whose lastUpdated is at or after it is exported. A client that
  chains exports with `_since` = the previous `transactionTime` then never misses an output
  stamped at exactly that instant (it may receive one twice; the versionId tells).
- `transactionTime` is the time the export started. Only outputs last updated at or before it are
  read, page by page in short read transactions (keyset pages, so the page reads neither skip nor
  repeat an output). An output that changes during the export moves beyond `transactionTime`: it
  is left out of this export and carried by the next one with `_since` = this `transactionTime`.
  The snapshot is consistent only as far as that goes (best effort): a write stamped before the
  export started but committed after its pages passed that instant is in neither export.
- Memory stays bounded by one page (`PAGE_SIZE` resources): lines are written as they are read.

Jobs (`ExportJobs`) run on daemon threads of the server, at most `workers` at a time (a small
executor; the rest wait, `queued`). Each job is a folder under the export folder holding its
NDJSON files and its state (`job.json`, replaced atomically), so a status survives a restart.
The thread running a job holds an exclusive `flock` on the job's `.lock` file; a status request
that finds an unfinished job whose lock is free knows its server stopped, and runs it again from
the start (with a new `transactionTime`). A cancel renames the folder away before removing it,
which also stops a job that runs in another server process. Finished jobs are removed after the
retention period, when a later export is started.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode

import orjson

from fhir_app.analytics.lesions import LesionRow, lesion_rows, write_csv, write_parquet
from fhir_app.fhir.inputs import JsonObject
from fhir_app.service import FhirService, ServiceError, StoredResource
from fhir_app.store import TransientStoreError

log = logging.getLogger("fhir_app.export")

# The output types of CONTRACT section 4, in the order their files are written.
EXPORT_TYPES: Final[tuple[str, ...]] = (
    "RiskAssessment",
    "DiagnosticReport",
    "Observation",
    "Provenance",
)
NDJSON: Final = "application/fhir+ndjson"
# Bulk Data IG: servers accept the two abbreviations of application/fhir+ndjson as well.
OUTPUT_FORMATS: Final = frozenset({NDJSON, "application/ndjson", "ndjson"})
PAGE_SIZE: Final = 500
MANIFEST_FILE: Final = "manifest.json"
# The lesion-table outputs of a `--flat` export.
LESIONS_CSV: Final = "lesions.csv"
LESIONS_PARQUET: Final = "lesions.parquet"
# Per-level outputs the lesion table is read from (CONTRACT 4a-4c), and how many patients'
# outputs are read at once.
LESION_SOURCE_TYPES: Final = ("Observation", "RiskAssessment")
LESION_BATCH_PATIENTS: Final = 200
EPOCH: Final = datetime(1, 1, 1, tzinfo=UTC)

# A FHIR instant (datatypes.html#instant): seconds and a zone are required.
_INSTANT = re.compile(
    r"(?P<date>\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]))"
    r"T(?P<time>([01]\d|2[0-3]):[0-5]\d:[0-5]\d)"
    r"(?P<fraction>\.\d+)?"
    r"(?P<zone>Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))"
)
# Attempts at one page read when the database reports a lost race or a busy lock.
_PAGE_ATTEMPTS: Final = 3


def fhir_instant(moment: datetime) -> str:
    """A FHIR `instant` in UTC with microseconds."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_instant(text: str, name: str = "_since") -> datetime:
    """A FHIR instant as an aware UTC datetime; 400 for anything else (a date alone, no zone).

    A `+hh:mm` offset that reached us as a space (a `+` left unencoded in a query string) is
    read as the `+` it was.
    """
    candidate = text.strip()
    if " " in candidate and "+" not in candidate:
        candidate = candidate.replace(" ", "+")
    match = _INSTANT.fullmatch(candidate)
    if match is None:
        raise ServiceError.of(
            400,
            "invalid",
            f"{name}={text} is not a FHIR instant (e.g. 2025-01-31T12:00:00Z)",
            name,
        )
    fraction = (match["fraction"] or "")[:7]  # Python keeps microseconds: 6 digits
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{fraction}{zone}")
    except ValueError as exc:  # a day the month does not have
        raise ServiceError.of(400, "invalid", f"{name}={text} is not a valid date", name) from exc
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export: the types (in `EXPORT_TYPES` order), `since` (inclusive), the format."""

    types: tuple[str, ...] = EXPORT_TYPES
    since: datetime | None = None
    output_format: str = NDJSON

    def query(self) -> list[tuple[str, str]]:
        """The request as kick-off parameters, in a canonical form."""
        params = [("_outputFormat", self.output_format)]
        if self.types != EXPORT_TYPES:
            params.append(("_type", ",".join(self.types)))
        if self.since is not None:
            params.append(("_since", fhir_instant(self.since)))
        return params


def export_request(
    *, types: Iterable[str] = (), since: str | None = None, output_format: str | None = None
) -> ExportRequest:
    """Check the kick-off parameters; ServiceError 400 names what is wrong.

    `types`: values of `_type`, each a comma list (blank entries ignored; none at all means every
    output type). `since`: a FHIR instant. `output_format`: one of `OUTPUT_FORMATS`.
    """
    wanted: set[str] = set()
    unknown: list[str] = []
    for value in types:
        for item in value.split(","):
            name = item.strip()
            if not name:
                continue
            if name in EXPORT_TYPES:
                wanted.add(name)
            else:
                unknown.append(name)
    if unknown:
        raise ServiceError.of(
            400,
            "not-supported",
            f"_type {', '.join(unknown)} cannot be exported; the exported types are the outputs "
            f"{', '.join(EXPORT_TYPES)}",
            "_type",
        )
    fmt = (output_format or NDJSON).strip()
    if fmt not in OUTPUT_FORMATS:
        raise ServiceError.of(
            400,
            "not-supported",
            f"_outputFormat={output_format} is not supported; use {NDJSON} "
            "(or application/ndjson, ndjson)",
            "_outputFormat",
        )
    return ExportRequest(
        types=tuple(t for t in EXPORT_TYPES if t in wanted) if wanted else EXPORT_TYPES,
        since=parse_instant(since) if since and since.strip() else None,
        output_format=NDJSON,
    )


# --------------------------------------------------------------------------- reading, writing


class ExportCancelled(Exception):
    """The job was cancelled (or its folder removed) while it ran."""


@dataclass(frozen=True, slots=True)
class ExportedFile:
    """One NDJSON file of an export: the resource type, the file name and its line count."""

    resource_type: str
    name: str
    count: int


def _page(
    service: FhirService,
    resource_type: str,
    *,
    since: datetime | None,
    until: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
    patient: str | None,
) -> list[StoredResource]:
    # A page is one short read: retried when the database reports a lost race or a busy lock,
    # rather than failing a long export for a moment's contention.
    for attempt in range(1, _PAGE_ATTEMPTS + 1):
        try:
            with service.uow_factory() as uow:
                rows: list[StoredResource] = uow.resources.current_outputs_page(
                    resource_type,
                    since=since,
                    until=until,
                    after=after,
                    limit=limit,
                    patient=patient,
                )
                return rows
        except TransientStoreError:
            if attempt == _PAGE_ATTEMPTS:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def output_pages(
    service: FhirService,
    resource_type: str,
    *,
    since: datetime | None,
    until: datetime,
    page_size: int = PAGE_SIZE,
    patient: str | None = None,
) -> Iterator[list[StoredResource]]:
    """The current outputs of a type last updated in [since, until], page by page, in
    (lastUpdated, id) order; each page is read in its own short transaction. `patient`: only
    that patient's outputs."""
    after: tuple[datetime, str] | None = None
    while True:
        rows = _page(
            service,
            resource_type,
            since=since,
            until=until,
            after=after,
            limit=page_size,
            patient=patient,
        )
        if rows:
            yield rows
        if len(rows) < page_size:
            return
        last = rows[-1]
        after = (last.last_updated, last.resource_id)


# Called after each page written: the type and how many of it so far. May raise ExportCancelled.
Progress = Callable[[str, int], None]


def write_ndjson(
    service: FhirService,
    request: ExportRequest,
    directory: Path,
    transaction_time: datetime,
    *,
    progress: Progress | None = None,
    patients: set[str] | None = None,
    page_size: int = PAGE_SIZE,
    patient: str | None = None,
) -> list[ExportedFile]:
    """Write `directory/<Type>.ndjson` for each requested type that has outputs; returns them.

    Each file is written as `<name>.part` and renamed when complete, so a reader never sees half
    a file under the final name. Types without outputs get no file. When `patients` is given,
    the patient of every exported resource is added to it. `patient`: only that patient's
    outputs are written (the compartment of a patient-context token).
    """
    files: list[ExportedFile] = []
    for rtype in request.types:
        name = f"{rtype}.ndjson"
        part = directory / f"{name}.part"
        count = 0
        with part.open("wb") as handle:
            for rows in output_pages(
                service,
                rtype,
                since=request.since,
                until=transaction_time,
                page_size=page_size,
                patient=patient,
            ):
                handle.write(b"".join(orjson.dumps(row.content) + b"\n" for row in rows))
                if patients is not None:
                    patients.update(row.patient_id for row in rows if row.patient_id)
                count += len(rows)
                if progress is not None:
                    progress(rtype, count)
        if count:
            part.replace(directory / name)
            files.append(ExportedFile(rtype, name, count))
        else:
            part.unlink()
    return files


def manifest(
    *,
    transaction_time: datetime,
    request_url: str,
    requires_access_token: bool,
    files: Sequence[ExportedFile],
    url_of: Callable[[str], str],
) -> JsonObject:
    """The Bulk Data manifest (complete status response) of an export."""
    return {
        "transactionTime": fhir_instant(transaction_time),
        "request": request_url,
        "requiresAccessToken": requires_access_token,
        "output": [
            {"type": f.resource_type, "url": url_of(f.name), "count": f.count} for f in files
        ],
        "error": [],
    }


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


# --------------------------------------------------------------------------- lesion tables


def lesion_table(service: FhirService, patients: Iterable[str] | None = None) -> list[LesionRow]:
    """The lesion table (fhir_app.analytics) of the current outputs, by patient then level.

    `patients` restricts it to those patients (None: everyone). The per-level outputs are read
    `LESION_BATCH_PATIENTS` patients at a time, so memory holds the rows and one batch of
    outputs, never the whole population's.
    """
    if patients is None:
        with service.uow_factory() as uow:
            chosen: list[str] = uow.resources.patients_changed_since(EPOCH)
    else:
        chosen = sorted(set(patients))
    rows: list[LesionRow] = []
    for start in range(0, len(chosen), LESION_BATCH_PATIENTS):
        batch = chosen[start : start + LESION_BATCH_PATIENTS]
        with service.uow_factory() as uow:
            outputs: list[StoredResource] = uow.resources.current_outputs_of_patients(
                batch, LESION_SOURCE_TYPES
            )
        # Batches are in patient order and lesion_rows sorts within one: the table is sorted.
        rows.extend(lesion_rows(row.content for row in outputs))
    return rows


# --------------------------------------------------------------------------- to a folder


@dataclass(frozen=True, slots=True)
class FolderExport:
    """What `export_to_folder` wrote: the manifest, and the lesion count of a flat export."""

    manifest: JsonObject
    lesions: int | None


def export_to_folder(
    service: FhirService, request: ExportRequest, out: Path, *, flat: bool = False
) -> FolderExport:
    """The export of `fhir-app export`: `out/<Type>.ndjson` and `out/manifest.json`.

    With `flat`, also the lesion table of the patients in the export (their every current
    lesion, not only the outputs that changed since `_since`, read right after the NDJSON) as
    `lesions.csv` and `lesions.parquet`. Files of an earlier export in `out` that this one does
    not write again are removed, so the folder matches its manifest. The manifest's URLs are
    `file:` URIs.
    """
    out.mkdir(parents=True, exist_ok=True)
    stale = [f"{rtype}.ndjson" for rtype in EXPORT_TYPES]
    stale += [MANIFEST_FILE, LESIONS_CSV, LESIONS_PARQUET]
    for name in stale:
        (out / name).unlink(missing_ok=True)
    transaction_time = service.clock()
    patients: set[str] | None = set() if flat else None
    files = write_ndjson(service, request, out, transaction_time, patients=patients)
    query = urlencode(request.query(), quote_via=quote, safe="/:,+")
    document = manifest(
        transaction_time=transaction_time,
        request_url=f"$export?{query}",
        requires_access_token=False,
        files=files,
        url_of=lambda name: (out / name).resolve().as_uri(),
    )
    _write_atomically(out / MANIFEST_FILE, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    lesions: int | None = None
    if patients is not None:
        rows = lesion_table(service, patients)
        write_csv(rows, out / LESIONS_CSV)
        write_parquet(rows, out / LESIONS_PARQUET)
        lesions = len(rows)
    return FolderExport(document, lesions)


# --------------------------------------------------------------------------- jobs

JobStatus = Literal["queued", "in-progress", "complete", "error"]
UNFINISHED: Final[frozenset[str]] = frozenset({"queued", "in-progress"})
# The progress of a job that a database fault interrupted; it runs again at the next poll.
WAITING_FOR_DATABASE: Final = "waiting for the database; the export starts again"
STATE_FILE: Final = "job.json"
LOCK_FILE: Final = ".lock"
TOMBSTONE_PREFIX: Final = ".deleted-"
JOB_ID: Final = re.compile(r"[0-9a-f]{32}")


@dataclass(slots=True)
class ExportJob:
    """The state of one export job, as kept in its `job.json`."""

    id: str
    status: JobStatus
    request_url: str
    types: list[str]
    since: str | None
    created: str
    transaction_time: str | None = None
    completed: str | None = None
    progress: str = "queued"
    output: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # The client that started the job (issue 13): only it may poll, download or cancel.
    owner: str | None = None
    # The patient context of the token that started it: only that patient's outputs are
    # exported. Kept with the state, so that a job run again after a restart stays bounded.
    patient: str | None = None

    def to_json(self) -> bytes:
        """The state file's content."""
        return orjson.dumps(
            {
                "id": self.id,
                "status": self.status,
                "request": self.request_url,
                "types": self.types,
                "since": self.since,
                "created": self.created,
                "transactionTime": self.transaction_time,
                "completed": self.completed,
                "progress": self.progress,
                "output": self.output,
                "error": self.error,
                "owner": self.owner,
                "patient": self.patient,
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes) -> ExportJob:
        """A job from its state file's content; ValueError when it is not one."""
        document = orjson.loads(data)
        try:
            status = document["status"]
            if status not in ("queued", "in-progress", "complete", "error"):
                raise ValueError(f"unknown job status {status!r}")
            return cls(
                id=str(document["id"]),
                status=status,
                request_url=str(document["request"]),
                types=[str(t) for t in document["types"]],
                since=document.get("since"),
                created=str(document["created"]),
                transaction_time=document.get("transactionTime"),
                completed=document.get("completed"),
                progress=str(document.get("progress", "")),
                output=list(document.get("output", [])),
                error=document.get("error"),
                owner=document.get("owner"),
                patient=document.get("patient"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an export job state: {exc}") from exc

    @property
    def files(self) -> list[ExportedFile]:
        """The NDJSON files of a complete job."""
        return [ExportedFile(o["type"], o["name"], int(o["count"])) for o in self.output]

    def request(self) -> ExportRequest:
        """The export this job runs."""
        return ExportRequest(
            types=tuple(self.types),
            since=datetime.fromisoformat(self.since) if self.since else None,
        )

    def started_at(self) -> datetime | None:
        """The transaction time: when the export started (None before it has)."""
        return datetime.fromisoformat(self.transaction_time) if self.transaction_time else None

    def finished_at(self) -> datetime:
        """When the job completed (or, unfinished, when it was created)."""
        return datetime.fromisoformat(self.completed or self.created)


def _try_lock(path: Path) -> int | None:
    """An exclusive flock on `path` (created if absent), or None when someone holds it.

    flock locks belong to the open file description: another open of the same file, even in this
    process, conflicts, and the kernel releases the lock when its process dies.
    """
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _not_found(job_id: str) -> ServiceError:
    return ServiceError.of(
        404, "not-found", f"Export job {job_id} is not known (never started, cancelled or expired)"
    )


class ExportJobs:
    """The bulk export jobs of one server process, kept under `directory`.

    Several server processes may share the folder: the state is in files, and the lock files
    decide who runs a job.
    """

    def __init__(
        self,
        service: FhirService,
        directory: Path,
        *,
        retention: timedelta,
        workers: int = 1,
        max_unfinished: int = 16,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.service = service
        self.directory = directory
        self.retention = retention
        self.page_size = page_size
        self.max_unfinished = max_unfinished
        self._slots = threading.BoundedSemaphore(workers)
        self._guard = threading.Lock()
        # Jobs running (or queued) in this process, with the event that cancels each.
        self._running: dict[str, threading.Event] = {}

    # ---- the interactions ---------------------------------------------------------------------

    def start(
        self,
        request: ExportRequest,
        request_url: str,
        owner: str | None = None,
        patient: str | None = None,
    ) -> ExportJob:
        """Queue an export; returns its job (status `queued`). 429 when too many are unfinished.

        `owner`: the client that started it (the REST layer lets only it see the job).
        `patient`: export only that patient's outputs (None: every patient's).
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._remove_expired()
        with self._guard:
            if len(self._running) >= self.max_unfinished:
                raise ServiceError.of(
                    429,
                    "throttled",
                    f"{len(self._running)} exports are already unfinished on this server; "
                    "poll or cancel them, then try again",
                )
            job = ExportJob(
                id=uuid.uuid4().hex,
                status="queued",
                request_url=request_url,
                types=list(request.types),
                since=fhir_instant(request.since) if request.since else None,
                created=fhir_instant(self.service.clock()),
                owner=owner,
                patient=patient,
            )
            folder = self.directory / job.id
            folder.mkdir(mode=0o700)
            lock = _try_lock(folder / LOCK_FILE)
            assert lock is not None, "a new job folder cannot be locked by anyone else"
            self._save(job)
            self._launch(job, lock)
        return job

    def job(self, job_id: str) -> ExportJob:
        """The job's state; 404 when unknown. An unfinished job whose server stopped runs again."""
        job = self._load(job_id)
        if job.status in UNFINISHED and not self._runs_here(job_id):
            job = self._resume_if_abandoned(job)
        elif job.status not in UNFINISHED and self._expired(job):
            self._remove(job_id)
            raise _not_found(job_id)
        return job

    def cancel(self, job_id: str) -> None:
        """Stop the job if it runs and remove its folder; 404 when unknown."""
        self._load(job_id)
        with self._guard:
            event = self._running.get(job_id)
        if event is not None:
            event.set()
        if not self._remove(job_id):
            raise _not_found(job_id)

    def output_file(self, job_id: str, name: str) -> Path:
        """The path of one NDJSON file of a complete job; 404 for anything else."""
        job = self.job(job_id)
        if job.status != "complete" or name not in {f.name for f in job.files}:
            raise ServiceError.of(404, "not-found", f"Export job {job_id} has no file {name!r}")
        return self.directory / job_id / name

    def expires(self, job: ExportJob) -> datetime:
        """When a finished job's files are removed."""
        return job.finished_at() + self.retention

    # ---- running ------------------------------------------------------------------------------

    def _launch(self, job: ExportJob, lock: int) -> None:
        event = threading.Event()
        self._running[job.id] = event
        # Daemon threads: a stopping server does not wait for an export; the job is resumed when
        # it is next polled (its lock dies with the process).
        threading.Thread(
            target=self._run,
            args=(job, lock, event),
            name=f"fhir-app-export-{job.id[:8]}",
            daemon=True,
        ).start()

    def _run(self, job: ExportJob, lock: int, cancelled: threading.Event) -> None:
        folder = self.directory / job.id
        try:
            with self._slots:
                self._check(job, cancelled)
                transaction_time = self.service.clock()
                job.status = "in-progress"
                job.transaction_time = fhir_instant(transaction_time)
                job.progress = "started"
                self._save(job)
                count = len(job.types)

                def progress(rtype: str, written: int) -> None:
                    self._check(job, cancelled)
                    position = job.types.index(rtype) + 1
                    job.progress = (
                        f"{rtype}: {written} resources written (type {position} of {count})"
                    )
                    self._save(job)

                files = write_ndjson(
                    self.service,
                    job.request(),
                    folder,
                    transaction_time,
                    progress=progress,
                    page_size=self.page_size,
                    patient=job.patient,
                )
                self._check(job, cancelled)
                job.output = [
                    {"type": f.resource_type, "name": f.name, "count": f.count} for f in files
                ]
                job.status = "complete"
                job.completed = fhir_instant(self.service.clock())
                job.progress = "complete"
                self._save(job)
        except ExportCancelled:
            log.info("export job %s cancelled", job.id)
        except TransientStoreError as exc:
            self._wait_for_database(job, exc)
        except FileNotFoundError:
            # The folder went away under the job: a cancel (perhaps by another server process).
            if folder.exists():
                self._fail(job, "a file of the job disappeared")
        except Exception:
            self._fail(job, "unexpected error")
        finally:
            os.close(lock)
            with self._guard:
                self._running.pop(job.id, None)

    def _wait_for_database(self, job: ExportJob, fault: TransientStoreError) -> None:
        """The database failed the job (unreachable, restarting): not a failed export. The job
        is queued again; its lock is released when this thread ends, so the next status request
        runs it again from the start and the client sees 202 until it completes."""
        log.warning("export job %s waits for the database: %s", job.id, fault)
        job.status = "queued"
        job.transaction_time = None
        job.progress = WAITING_FOR_DATABASE
        try:
            self._save(job)
        except OSError:
            log.exception("export job %s: its state could not be recorded", job.id)

    def _fail(self, job: ExportJob, what: str) -> None:
        reference = uuid.uuid4().hex[:12]
        log.exception("export job %s failed (%s), reference %s", job.id, what, reference)
        job.status = "error"
        job.error = f"The export failed (reference {reference}); the details are in the server log"
        job.completed = fhir_instant(self.service.clock())
        job.progress = "error"
        try:
            self._save(job)
        except OSError:
            log.exception("export job %s: the error could not be recorded", job.id)

    def _check(self, job: ExportJob, cancelled: threading.Event) -> None:
        if cancelled.is_set() or not (self.directory / job.id / STATE_FILE).exists():
            raise ExportCancelled(job.id)

    def _runs_here(self, job_id: str) -> bool:
        with self._guard:
            return job_id in self._running

    def _resume_if_abandoned(self, job: ExportJob) -> ExportJob:
        try:
            lock = _try_lock(self.directory / job.id / LOCK_FILE)
        except FileNotFoundError:
            raise _not_found(job.id) from None
        if lock is None:
            return job  # another server process runs it
        with self._guard:
            # Read again under the lock: the job may have finished since it was first read.
            current = self._load(job.id)
            if current.status not in UNFINISHED or job.id in self._running:
                os.close(lock)
                return current
            log.warning(
                "export job %s was interrupted (its server stopped, or its database failed); "
                "running it again",
                job.id,
            )
            current.status = "queued"
            current.transaction_time = None
            if current.progress != WAITING_FOR_DATABASE:
                current.progress = "queued again: the server running it stopped"
            self._save(current)
            self._launch(current, lock)
        return current

    # ---- files --------------------------------------------------------------------------------

    def _load(self, job_id: str) -> ExportJob:
        if not JOB_ID.fullmatch(job_id):
            raise _not_found(job_id)
        try:
            data = (self.directory / job_id / STATE_FILE).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(job_id) from None
        try:
            return ExportJob.from_json(data)
        except ValueError as exc:
            log.error("export job %s: unreadable state: %s", job_id, exc)
            raise ServiceError.of(
                500, "exception", f"The state of export job {job_id} is unreadable"
            ) from exc

    def _save(self, job: ExportJob) -> None:
        _write_atomically(self.directory / job.id / STATE_FILE, job.to_json())

    def _remove(self, job_id: str) -> bool:
        """Remove a job's folder; False when it was already gone.

        Renamed first, atomically: a job running in any process then fails to write its next
        file and stops, and no half-removed folder is ever seen under the job's name.
        """
        tombstone = self.directory / f"{TOMBSTONE_PREFIX}{job_id}-{uuid.uuid4().hex[:8]}"
        try:
            (self.directory / job_id).rename(tombstone)
        except FileNotFoundError:
            return False
        shutil.rmtree(tombstone, ignore_errors=True)
        return True

    def _expired(self, job: ExportJob) -> bool:
        return self.service.clock() > self.expires(job)

    def _remove_expired(self) -> None:
        """Remove finished jobs past their retention, abandoned ones as old, and tombstones."""
        for entry in self.directory.iterdir():
            if entry.name.startswith(TOMBSTONE_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            if not JOB_ID.fullmatch(entry.name):
                continue
            try:
                job = ExportJob.from_json((entry / STATE_FILE).read_bytes())
                lock = _try_lock(entry / LOCK_FILE)
            except (OSError, ValueError):
                continue
            if lock is None:
                continue  # running
            try:
                if self._expired(job):
                    self._remove(entry.name)
            finally:
                os.close(lock)
