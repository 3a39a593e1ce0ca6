"""Bulk processing: the use case behind `fhir-app process INPUT... --out DIR` (CONTRACT section 5).

A registry hands over files of a million resources; this path takes them in streamed (bounded
memory), in chunked transactions, resumable after a crash, and derives every touched patient once:

1. Ingest. The files are read record by record (fhir_app.fhir.stream). Chunks of records go to
   worker processes, which parse, validate (the schema gate of fhir_app.fhir.validation) and map
   them; the main process stores each checked chunk in one transaction together with what makes
   it resumable: the file position (`ingest_checkpoint`), the run's counters, touched patients
   and rejections, and the patients whose inputs changed (queued for derivation). Inputs without
   an id get one derived from their content, so a second run stores them at the same id.
2. Derive. Every queued patient is derived once, from all of its current inputs, in batches: the
   main process hands out batches of queued patient ids; a worker reads the batch's inputs and
   outputs on its own connection, derives it (the same `derive` as the REST path, with versions
   decided against the outputs read), stores the new versions and takes the patients off the
   queue in one transaction. The main process is then no serial step between the database and
   the workers, and two batches' database work runs side by side. A first derivation is `final`
   or `preliminary`; an unchanged one writes nothing.
3. Write. `DIR/<ResourceType>.ndjson` with the current outputs of every patient the run touched
   and `DIR/OperationOutcome.ndjson` with every rejection in input order, then the run's state is
   removed. Killed anywhere, the same command resumes from the last commit and ends with the same
   files and database as an uninterrupted run (apart from timestamps).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import multiprocessing
import os
import signal
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, Final, Protocol, TypeVar

import orjson

from fhir_app.domain.appearance import AppearanceSettings
from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.parse import in_entry, validate_resource
from fhir_app.fhir.report import presented
from fhir_app.fhir.search import IndexRows
from fhir_app.fhir.stream import RecordKind, iter_records, record_unit
from fhir_app.fhir.validation import bundle_rules, schema
from fhir_app.service import (
    Rejection,
    derive_patient,
    mapped,
    patient_of,
    search_index,
    stored_of_patients,
    utcnow,
)
from fhir_app.store import (
    BulkUnitOfWork,
    TransientStoreError,
    checkpoint_key,
    content_hash,
)
from fhir_app.store.bulk import (
    CurrentState,
    InputRow,
    NewVersion,
    OutputRow,
    served_text,
    serving_parts,
)

T = TypeVar("T")
R = TypeVar("R")

# Records per ingest transaction, and the most JSON bytes a chunk may carry (long lines).
DEFAULT_CHUNK_RECORDS: Final = 1_000
MAX_CHUNK_BYTES: Final = 8 * 1024 * 1024
# Patients per derivation transaction, and per page when writing the outputs out.
DEFAULT_DERIVE_PATIENTS: Final = 200
OUTPUT_PAGE_PATIENTS: Final = 200
# Below this much input the worker processes would cost more to start than they save.
PARALLEL_MIN_BYTES: Final = 2 * 1024 * 1024
# Allocations between two young-generation collections during a run (the default is 700).
GC_THRESHOLD: Final = 50_000
# Versions written before the planner statistics are first refreshed (then at every fourfold).
STATISTICS_FIRST_REFRESH: Final = 1_000
# The checkpoint position of a file taken in to its end.
FILE_DONE: Final = 2**62
# A chunk that lost a race with another writer is run again on fresh reads, this many times.
WRITE_ATTEMPTS: Final = 5
# Namespace of the ids given to inputs without one (uuid5 of their canonical content).
CONTENT_ID_NAMESPACE: Final = uuid.UUID("6f1d7a52-3c1e-5b7e-9a57-7a0c2f1b8e3d")
OPERATION_OUTCOME: Final = "OperationOutcome"
# prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG: Final = 1
_PARTIAL_SUFFIX: Final = ".partial"


# --------------------------------------------------------------------------------- options etc.


@dataclass(frozen=True, slots=True)
class BulkOptions:
    """How a run is cut up. `workers` None: one per available CPU when the input is large
    enough to pay for them; 0: everything in this process."""

    workers: int | None = None
    chunk_records: int = DEFAULT_CHUNK_RECORDS
    derive_patients: int = DEFAULT_DERIVE_PATIENTS


class BulkProgress(Protocol):
    """What a run reports while it goes (the CLI draws a progress bar from it)."""

    def ingest_started(self, total_bytes: int) -> None:
        """Ingest begins over files of `total_bytes` in all."""

    def ingested(self, resources: int, bytes_read: int) -> None:
        """`resources` more inputs were stored or refused; `bytes_read` of the files are read."""

    def derive_started(self, patients: int) -> None:
        """Derivation begins for `patients` queued patients."""

    def derived(self, patients: int) -> None:
        """`patients` more patients were derived."""


class _Silent:
    """A BulkProgress that says nothing."""

    def ingest_started(self, total_bytes: int) -> None:
        """Nothing to show."""

    def ingested(self, resources: int, bytes_read: int) -> None:
        """Nothing to show."""

    def derive_started(self, patients: int) -> None:
        """Nothing to show."""

    def derived(self, patients: int) -> None:
        """Nothing to show."""


@dataclass(slots=True)
class BulkResult:
    """What a run did: inputs accepted and refused (over every attempt of the run), patients
    touched, and the lines written per output file."""

    accepted: int = 0
    rejected: int = 0
    patients: int = 0
    written: dict[str, int] = field(default_factory=dict)


class InputUnreadable(Exception):
    """An input file could not be read (an OSError while reading: EIO, EISDIR, a lost mount).

    The run stops with what it committed kept: the same command resumes it once the file reads.
    """

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(f"{path}: {cause.strerror or cause}")
        self.path = path
        self.cause = cause


@dataclass(frozen=True, slots=True)
class _Source:
    index: int
    path: Path
    key: str  # checkpoint_key of the file: path, size, modification time


def run_key_of(paths: Sequence[Path]) -> str:
    """The identity of a run: its input files (each by path, size and mtime), in order."""
    keys = "\n".join(checkpoint_key(path) for path in paths)
    return hashlib.sha256(keys.encode()).hexdigest()


def _source_checkpoint(run_key: str, source: _Source) -> str:
    text = f"{run_key}\0{source.index}\0{source.key}"
    return hashlib.sha256(text.encode()).hexdigest()


def content_id(resource: JsonObject) -> str:
    """The id of an input that came without one: a UUID of its canonical content, so that the
    same resource sent again lands on the same id instead of a duplicate."""
    body = {key: value for key, value in resource.items() if key not in ("id", "meta")}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    return str(uuid.uuid5(CONTENT_ID_NAMESPACE, canonical))


# --------------------------------------------------------------------------------- ingest (work)


@dataclass(frozen=True, slots=True)
class _IngestTask:
    source_index: int
    source_name: str
    records: list[tuple[int, str, RecordKind, bytes | InputRejected]]
    end: int  # the checkpoint position after this chunk (records of the file consumed)
    offset: int  # bytes of the file read after this chunk


@dataclass(frozen=True, slots=True)
class _CheckedInput:
    """An input that passed validation and mapping, ready to store."""

    record_index: int
    item_index: int
    label: str
    resource_type: str
    resource_id: str
    text: str  # the JSON as received, with its id
    meta: JsonObject  # its meta and every other element as JSON text (store.bulk.serving_parts)
    rest: str
    content_hash: str
    patient_id: str | None
    status: str | None
    index: IndexRows
    atomic: bool = False  # an entry of a transaction: stored with its record's others, or none


@dataclass(frozen=True, slots=True)
class _RefusedInput:
    record_index: int
    item_index: int
    outcome: JsonObject


@dataclass(frozen=True, slots=True)
class _CheckedChunk:
    source_index: int
    end: int
    offset: int
    items: list[_CheckedInput | _RefusedInput]


def check_chunk(task: _IngestTask) -> _CheckedChunk:
    """Parse, validate and map one chunk of records (in a worker process).

    A transaction (a record of its own, fhir.stream.record_unit) is all or nothing: when one of
    its entries is refused, every entry is, the others with an issue naming the refused ones.
    """
    received_at = utcnow()
    items: list[_CheckedInput | _RefusedInput] = []
    for record_index, label, kind, data in task.records:
        resources, atomic = record_unit(kind, label, data)
        checked: list[_CheckedInput | _RefusedInput] = []
        refused: list[str] = []
        for item_index, (where, item) in enumerate(resources):
            full_label = f"{task.source_name}: {where}"
            try:
                if isinstance(item, InputRejected):
                    raise item
                checked.append(
                    _checked(record_index, item_index, full_label, item, received_at, atomic)
                )
            except InputRejected as exc:
                outcome = Rejection(full_label, in_entry(where, exc.issues)).outcome()
                checked.append(_RefusedInput(record_index, item_index, outcome))
                refused.append(where)
        if atomic and refused:
            checked = [
                item
                if isinstance(item, _RefusedInput)
                else _RefusedInput(
                    record_index, item.item_index, _refused_along(item.label, refused)
                )
                for item in checked
            ]
        items.extend(checked)
    return _CheckedChunk(task.source_index, task.end, task.offset, items)


def _refused_along(label: str, refused: Sequence[str]) -> JsonObject:
    """The OperationOutcome of a transaction entry (`label`: `file: Bundle.entry[2]`) refused
    because the entries labelled `refused` were."""
    where = label.rpartition(": ")[2].rpartition(" ")[2]
    issue = bundle_rules.refused_along(where, [r.rpartition(" ")[2] for r in refused])
    return Rejection(label, [issue]).outcome()


def _checked(
    record_index: int,
    item_index: int,
    label: str,
    raw: JsonObject,
    received_at: datetime,
    atomic: bool = False,
) -> _CheckedInput:
    """Validate and map one input as FhirService.ingest does; raises InputRejected."""
    validate_resource(raw)
    resource_type = str(raw["resourceType"])
    given = raw.get("id")
    resource_id = given if isinstance(given, str) and given else content_id(raw)
    body = {**raw, "id": resource_id}
    mapped(body, resource_id=resource_id, version_id=1, received_at=received_at)
    status = body.get("status")
    meta, rest = serving_parts(body)
    return _CheckedInput(
        record_index=record_index,
        item_index=item_index,
        label=label,
        resource_type=resource_type,
        resource_id=resource_id,
        text=orjson.dumps(body).decode(),
        meta=meta,
        rest=rest,
        content_hash=content_hash(body),
        patient_id=patient_of(body),
        status=status if isinstance(status, str) else None,
        index=search_index(body),
        atomic=atomic,
    )


def _output_conflicts(
    inputs: Sequence[_CheckedInput], states: dict[tuple[str, str], CurrentState]
) -> dict[tuple[int, int], JsonObject]:
    """The OperationOutcome of every input refused at store time, by (record, item): one that
    would overwrite an output of fhir-app, and every other entry of its transaction."""
    found: dict[tuple[int, int], JsonObject] = {}
    refused_records: dict[int, list[str]] = {}
    for item in inputs:
        state = states.get((item.resource_type, item.resource_id))
        if state is not None and state.is_output:
            text = (
                f"{item.resource_type}/{item.resource_id} is derived by fhir-app and cannot "
                "be written"
            )
            found[(item.record_index, item.item_index)] = Rejection(
                item.label, [Issue("error", "conflict", text)]
            ).outcome()
            if item.atomic:
                refused_records.setdefault(item.record_index, []).append(
                    item.label.rpartition(": ")[2]
                )
    for item in inputs:
        key = (item.record_index, item.item_index)
        if item.atomic and item.record_index in refused_records and key not in found:
            found[key] = _refused_along(item.label, refused_records[item.record_index])
    return found


# ------------------------------------------------------------------------------- derive (work)


@dataclass(frozen=True, slots=True)
class _DeriveTask:
    patients: list[tuple[str, list[InputRow], list[OutputRow]]]
    settings: AppearanceSettings
    now: datetime


@dataclass(frozen=True, slots=True)
class _Derived:
    patients: list[str]
    versions: list[NewVersion]
    existing: list[tuple[str, str]]  # outputs that had a current row when read
    inputs: frozenset[tuple[str, str, int]]  # the input versions the derivation read


def derive_batch(task: _DeriveTask) -> _Derived:
    """Derive a batch of patients from inputs and outputs read before (pure)."""
    versions: list[NewVersion] = []
    existing: list[tuple[str, str]] = []
    read: set[tuple[str, str, int]] = set()
    for patient, inputs, outputs in task.patients:
        versions.extend(derive_patient(patient, inputs, outputs, task.settings, task.now))
        existing.extend((row.resource_type, row.resource_id) for row in outputs)
        read.update((row.resource_type, row.resource_id, row.version_id) for row in inputs)
    return _Derived(
        [patient for patient, _, _ in task.patients], versions, existing, frozenset(read)
    )


@dataclass(frozen=True, slots=True)
class _DeriveDone:
    patients: int
    versions: int


@dataclass(frozen=True, slots=True)
class _Store:
    """What deriving and storing a batch of patients needs besides their ids, the same for the
    whole run: the units of work, the clock and the appearance settings."""

    uow_factory: Callable[[], BulkUnitOfWork]
    clock: Callable[[], datetime]
    settings: AppearanceSettings


# The store of the run, set in the parent before its workers fork (they inherit it: a factory of
# connections and a clock do not travel through a pipe).
_inherited_store: _Store | None = None


def derive_job(patients: list[str], store: _Store | None = None) -> _DeriveDone:
    """Read, derive and store a batch of queued patients (in a worker process, on its own
    connections, or in this one).

    The inputs are read without the patients' derivation locks; under them, the batch goes in
    only when the patients' current inputs are still the versions it read (so a REST write or
    another run's chunk committed in between is never overwritten by outputs derived without
    it). When they changed, the batch is read, derived and written again inside one locked
    transaction.
    """
    store = store or _inherited_store
    if store is None:  # pragma: no cover - BulkProcessor sets it before any worker starts
        raise RuntimeError("derive_job needs the run's store")
    try:
        with store.uow_factory() as uow:
            task = _read_task(uow, patients, store)
        derived = derive_batch(task)
        with store.uow_factory() as uow:
            uow.bulk.commit_without_waiting()
            uow.lock_patient_derivations(derived.patients)
            if uow.bulk.input_versions(derived.patients) == derived.inputs:
                uow.bulk.write_versions(derived.versions, existing=derived.existing)
                uow.bulk.derivation_done(derived.patients)
                uow.commit()
                return _DeriveDone(len(derived.patients), len(derived.versions))
    except TransientStoreError:
        pass  # a lost race or a lost connection: the locked way below, with its retries

    def again() -> _DeriveDone:
        with store.uow_factory() as uow:
            uow.bulk.commit_without_waiting()
            uow.lock_patient_derivations(patients)
            result = derive_batch(_read_task(uow, patients, store))
            uow.bulk.write_versions(result.versions, existing=result.existing)
            uow.bulk.derivation_done(result.patients)
            uow.commit()
        return _DeriveDone(len(result.patients), len(result.versions))

    return _retrying(again)


def _read_task(uow: BulkUnitOfWork, patients: list[str], store: _Store) -> _DeriveTask:
    """The current inputs and outputs of these patients, grouped per patient."""
    return _DeriveTask(stored_of_patients(uow.bulk, patients), store.settings, store.clock())


def _retrying(action: Callable[[], R]) -> R:
    """Run `action` again after a transient store error (a lost race, a busy database), up to
    WRITE_ATTEMPTS times."""
    for _ in range(WRITE_ATTEMPTS - 1):
        try:
            return action()
        except TransientStoreError:
            pass
    return action()


# --------------------------------------------------------------------------------- parallelism


class _Workers:
    """Worker processes mapping tasks in order, with a bounded number in flight, so that the
    reader never runs ahead of the writer by more than a few chunks (bounded memory)."""

    def __init__(self, count: int, store: _Store | None = None) -> None:
        global _inherited_store
        self.count = count
        self.forked = False  # whether the workers inherited `store`
        self._pool: Any = None
        if count > 0:
            # fork: the workers start at once with what the parent prepared, and with the run's
            # store (each opens connections of its own, see _worker_started).
            methods = multiprocessing.get_all_start_methods()
            self.forked = "fork" in methods
            if self.forked:
                _prepare_for_workers()
                _inherited_store = store
            context = multiprocessing.get_context("fork" if self.forked else None)
            self._pool = context.Pool(count, initializer=_worker_started)

    def map(self, function: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        """`function` over `tasks`, results in task order."""
        if self._pool is None:
            yield from map(function, tasks)
            return
        in_flight: deque[Any] = deque()
        for task in tasks:
            in_flight.append(self._pool.apply_async(function, (task,)))
            if len(in_flight) > self.count * 2:
                yield in_flight.popleft().get()
        while in_flight:
            yield in_flight.popleft().get()

    def close(self) -> None:
        """Stop the workers (and let go of the store they inherited)."""
        global _inherited_store
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        if self.forked:
            _inherited_store = None


@contextmanager
def _collector_for_bulk() -> Iterator[None]:
    """The cyclic garbage collector tuned for a bulk run, restored after.

    A run allocates millions of short-lived dicts (parsed JSON) while hundreds of thousands of
    long-lived objects (fhir.resources' models, imported code) sit in the heap: with the default
    thresholds the collector scans that heap so often that parsing JSON costs several times its
    own time. Freezing what exists now (also sparing the forked workers copy-on-write of it) and
    collecting less often keeps collection cheap; cycles are still collected.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _prepare_for_workers() -> None:
    """Build now, in the parent, what every worker builds on first use and then keeps: the
    compiled validator, the report's template and the picture's drawn layers. Forked workers
    share them (copy-on-write) instead of each spending ~0.4 s of CPU building its own."""
    schema.validator()
    presented.prepare()


def _worker_started() -> None:
    """Ctrl-C is the main process's to handle (it stops the pool); a worker ignores it. The
    connections the parent had pooled stay the parent's: the worker opens its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    after_fork = getattr(_inherited_store and _inherited_store.uow_factory, "after_fork", None)
    if after_fork is not None:
        after_fork()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the main process dies (even by SIGKILL). A
    worker stores derivations itself, and an orphan would go on storing the batches still
    queued to it beside the run that resumes the killed one."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # a kernel without it: a worker ends when its task pipe closes
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _shared_across_processes(uow_factory: Callable[[], BulkUnitOfWork]) -> bool:
    """Whether worker processes may open connections of their own to this store."""
    return bool(getattr(uow_factory, "shared_across_processes", False))


def available_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ------------------------------------------------------------------------------------ the run


class BulkProcessor:
    """`fhir-app process`: ingest, derive once per patient, write the outputs; resumable."""

    def __init__(
        self,
        uow_factory: Callable[[], BulkUnitOfWork],
        settings: AppearanceSettings | None = None,
        clock: Callable[[], datetime] = utcnow,
        options: BulkOptions | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.settings = settings or AppearanceSettings()
        self.clock = clock
        self.options = options or BulkOptions()
        self._versions_written = 0
        self._next_statistics = STATISTICS_FIRST_REFRESH

    def run(
        self,
        paths: Sequence[Path],
        out: Path,
        progress: BulkProgress | None = None,
        on_rejection: Callable[[JsonObject], None] | None = None,
    ) -> BulkResult:
        """Process the files into `out` (created if needed); resumes an interrupted run of the
        same files. `on_rejection` sees every rejection's OperationOutcome in input order."""
        progress = progress or _Silent()
        sources = [_Source(i, path, checkpoint_key(path)) for i, path in enumerate(paths)]
        with _collector_for_bulk():
            return self._run(paths, sources, out, progress, on_rejection)

    def _run(
        self,
        paths: Sequence[Path],
        sources: Sequence[_Source],
        out: Path,
        progress: BulkProgress,
        on_rejection: Callable[[JsonObject], None] | None,
    ) -> BulkResult:
        run_key = run_key_of(paths)
        total_bytes = sum(path.stat().st_size for path in paths)
        store = _Store(self.uow_factory, self.clock, self.settings)
        workers = _Workers(self._worker_count(total_bytes), store)
        try:
            with self.uow_factory() as uow:
                uow.bulk.open_run(run_key, now=self.clock())
                positions = [
                    uow.checkpoints.position(_source_checkpoint(run_key, s)) or 0 for s in sources
                ]
                uow.commit()
            progress.ingest_started(total_bytes)
            self._ingest(run_key, sources, positions, workers, progress)
            self._derive_pending(workers, store, progress)
        finally:
            workers.close()
        return self._write_out(run_key, sources, out, on_rejection)

    def _written(self, versions: int) -> None:
        """Count versions stored; refresh the planner statistics each time the run's writes
        have grown fourfold (a handful of times per run, see BulkRepository.refresh_statistics)."""
        self._versions_written += versions
        if self._versions_written >= self._next_statistics:
            with self.uow_factory() as uow:
                uow.bulk.refresh_statistics()
                uow.commit()
            self._next_statistics = self._versions_written * 4

    def _worker_count(self, total_bytes: int) -> int:
        if self.options.workers is not None:
            return max(0, self.options.workers)
        cpus = available_cpus()
        return cpus if cpus > 1 and total_bytes >= PARALLEL_MIN_BYTES else 0

    # ---- ingest ------------------------------------------------------------------------------

    def _tasks(self, sources: Sequence[_Source], positions: Sequence[int]) -> Iterator[_IngestTask]:
        """Chunks of records from each file's checkpoint on. A file's last chunk carries the
        position FILE_DONE, so that a resumed run does not read a finished file again (a
        Bundle would be parsed twice just to find nothing left)."""
        for source, start in zip(sources, positions, strict=True):
            if start == FILE_DONE:
                continue
            try:
                yield from self._source_tasks(source, start)
            except OSError as exc:
                raise InputUnreadable(source.path, exc) from exc

    def _source_tasks(self, source: _Source, start: int) -> Iterator[_IngestTask]:
        """The chunks of one file from record `start` on (see `_tasks`)."""
        ready: _IngestTask | None = None
        chunk: list[tuple[int, str, RecordKind, bytes | InputRejected]] = []
        size = 0
        for record in iter_records(source.path, start=start):
            if ready is not None:
                yield ready  # another record follows: not the file's last chunk
                ready = None
            chunk.append((record.index, record.label, record.kind, record.data))
            size += len(record.data) if isinstance(record.data, bytes) else 0
            if len(chunk) >= self.options.chunk_records or size >= MAX_CHUNK_BYTES:
                ready = _IngestTask(
                    source.index, source.path.name, chunk, record.index + 1, record.offset
                )
                chunk, size = [], 0
        last = ready or (
            _IngestTask(source.index, source.path.name, chunk, 0, 0) if chunk else None
        )
        if last is not None:
            offset = source.path.stat().st_size
            yield _IngestTask(source.index, source.path.name, last.records, FILE_DONE, offset)

    def _ingest(
        self,
        run_key: str,
        sources: Sequence[_Source],
        positions: Sequence[int],
        workers: _Workers,
        progress: BulkProgress,
    ) -> None:
        done_before = [0] * len(sources)
        for source in sources:
            done_before[source.index] = sum(s.path.stat().st_size for s in sources[: source.index])
        for checked in workers.map(check_chunk, self._tasks(sources, positions)):
            source = sources[checked.source_index]
            _retrying(partial(self._store_chunk, run_key, source, checked))
            progress.ingested(len(checked.items), done_before[source.index] + checked.offset)

    def _store_chunk(self, run_key: str, source: _Source, checked: _CheckedChunk) -> None:
        now = self.clock()
        with self.uow_factory() as uow:
            uow.bulk.commit_without_waiting()
            accepted_inputs = [i for i in checked.items if isinstance(i, _CheckedInput)]
            keys = [(i.resource_type, i.resource_id) for i in accepted_inputs]
            stored = uow.bulk.current_states(keys)
            states: dict[tuple[str, str], CurrentState] = dict(stored)
            versions: list[NewVersion] = []
            rejections: list[tuple[int, int, int, JsonObject]] = []
            touched: set[str] = set()
            changed: set[str] = set()
            accepted = 0
            conflicts = _output_conflicts(accepted_inputs, states)
            for item in checked.items:
                if isinstance(item, _RefusedInput):
                    rejections.append(
                        (source.index, item.record_index, item.item_index, item.outcome)
                    )
                    continue
                key = (item.resource_type, item.resource_id)
                state = states.get(key)
                refusal = conflicts.get((item.record_index, item.item_index))
                if refusal is not None:
                    rejections.append((source.index, item.record_index, item.item_index, refusal))
                    continue
                accepted += 1
                if item.patient_id:
                    touched.add(item.patient_id)
                unchanged = state is not None and state.content_hash == item.content_hash
                if unchanged and state is not None and not state.deleted:
                    continue  # sent before as it is now: no new version
                version = self._input_version(item, state, now)
                versions.append(version)
                if state is not None and state.patient_id:
                    changed.add(state.patient_id)
                if item.patient_id:
                    changed.add(item.patient_id)
                states[key] = CurrentState(
                    version_id=version.version_id,
                    deleted=False,
                    patient_id=item.patient_id,
                    is_output=False,
                    last_updated=version.last_updated,
                    content_hash=item.content_hash,
                )
            uow.bulk.write_versions(versions, existing=stored.keys())
            # Under the derivation locks of the changed patients, so that a derivation running
            # now either sees this chunk's inputs or leaves the patients queued for the next pass
            # (it cannot take them off the queue after this chunk put them on it).
            uow.lock_patient_derivations(changed)
            uow.bulk.queue_derivation(changed, now=now)
            uow.bulk.record_chunk(
                run_key, accepted=accepted, patients=touched, rejections=rejections, now=now
            )
            uow.checkpoints.save(_source_checkpoint(run_key, source), checked.end, now=now)
            uow.commit()
        self._written(len(versions))

    @staticmethod
    def _input_version(
        item: _CheckedInput, state: CurrentState | None, now: datetime
    ) -> NewVersion:
        version_id = 1 if state is None else state.version_id + 1
        # Versions must not go back in time when clocks of two writers disagree.
        moment = now if state is None else max(now, state.last_updated)
        content = served_text(
            item.resource_type, item.resource_id, version_id, moment, item.meta, item.rest
        )
        return NewVersion(
            resource_type=item.resource_type,
            resource_id=item.resource_id,
            version_id=version_id,
            last_updated=moment,
            patient_id=item.patient_id,
            status=item.status,
            is_output=False,
            content=content,
            content_hash=item.content_hash,
            index=item.index,
            raw=item.text,
        )

    # ---- derive ------------------------------------------------------------------------------

    def _derive_pending(self, workers: _Workers, store: _Store, progress: BulkProgress) -> None:
        with self.uow_factory() as uow:
            pending = uow.bulk.pending_count()
        progress.derive_started(pending)
        # Workers read and store their batches on their own connections, so the database work
        # of a batch runs beside the derivation of the next; a store that lives in this process
        # only (in-memory SQLite) derives here.
        if workers.forked and _shared_across_processes(self.uow_factory):
            derive: Callable[[list[str]], _DeriveDone] = derive_job
        else:
            derive, workers = partial(derive_job, store=store), _Workers(0)
        # Passes until the queue is empty: a patient queued behind the keyset cursor by another
        # writer during a pass is picked up by the next one.
        while pending:
            pending = 0
            for done in workers.map(derive, self._derive_jobs()):
                self._written(done.versions)
                pending += done.patients
                progress.derived(done.patients)

    def _derive_jobs(self) -> Iterator[list[str]]:
        """Batches of queued patient ids, in id order."""
        after: str | None = None
        while True:
            with self.uow_factory() as uow:
                patients = uow.bulk.pending_patients(
                    after=after, limit=self.options.derive_patients
                )
            if not patients:
                return
            after = patients[-1]
            yield patients

    # ---- write -------------------------------------------------------------------------------

    def _write_out(
        self,
        run_key: str,
        sources: Sequence[_Source],
        out: Path,
        on_rejection: Callable[[JsonObject], None] | None,
    ) -> BulkResult:
        out.mkdir(parents=True, exist_ok=True)
        for leftover in out.glob(f".*.ndjson{_PARTIAL_SUFFIX}"):
            leftover.unlink()
        result = BulkResult()
        files: dict[str, IO[bytes]] = {}

        def sink(resource_type: str) -> IO[bytes]:
            if resource_type not in files:
                partial = out / f".{resource_type}.ndjson{_PARTIAL_SUFFIX}"
                files[resource_type] = partial.open("wb", buffering=1 << 20)
                result.written[resource_type] = 0
            return files[resource_type]

        try:
            with self.uow_factory() as uow:
                totals = uow.bulk.open_run(run_key, now=self.clock())
                result.accepted, result.rejected = totals.accepted, totals.rejected
                result.patients = uow.bulk.run_patient_count(run_key)
                for rtype, line in self._run_outputs(uow, run_key):
                    sink(rtype).write(line + b"\n")
                    result.written[rtype] += 1
                for outcome in self._run_rejections(uow, run_key):
                    sink(OPERATION_OUTCOME).write(orjson.dumps(outcome) + b"\n")
                    result.written[OPERATION_OUTCOME] += 1
                    if on_rejection is not None:
                        on_rejection(outcome)
        finally:
            for handle in files.values():
                handle.close()
        for stale in out.glob("*.ndjson"):
            stale.unlink()
        for rtype in files:
            (out / f".{rtype}.ndjson{_PARTIAL_SUFFIX}").replace(out / f"{rtype}.ndjson")
        # Only now, with every file in place, is the run finished: a crash before this commit
        # writes the same files again on the next run.
        with self.uow_factory() as uow:
            uow.bulk.close_run(run_key, [_source_checkpoint(run_key, s) for s in sources])
            uow.commit()
        return result

    @staticmethod
    def _run_outputs(uow: BulkUnitOfWork, run_key: str) -> Iterator[tuple[str, bytes]]:
        """(type, NDJSON line) of the current outputs of the run's patients: patients in code
        point order, then by type and id (the order `service.current_outputs` gives)."""
        after: str | None = None
        while patients := uow.bulk.run_patients(run_key, after=after, limit=OUTPUT_PAGE_PATIENTS):
            after = patients[-1]
            order = {patient: n for n, patient in enumerate(patients)}
            lines = uow.bulk.output_lines(patients)
            lines.sort(key=lambda line: (order[line[0]], line[1], line[2]))
            for _, resource_type, _, line in lines:
                yield resource_type, line

    @staticmethod
    def _run_rejections(uow: BulkUnitOfWork, run_key: str) -> Iterator[JsonObject]:
        after: tuple[int, int, int] | None = None
        while page := uow.bulk.run_rejections(run_key, after=after, limit=1_000):
            after = page[-1][0]
            for _, outcome in page:
                yield outcome


def describe_rejection(outcome: JsonObject) -> Iterator[str]:
    """One line per issue of a rejection's OperationOutcome, as the CLI prints it."""
    for issue in outcome.get("issue", []):
        expression = issue.get("expression") or []
        where = f" [{', '.join(expression)}]" if expression else ""
        yield f"rejected {issue.get('diagnostics', '')}{where}"
