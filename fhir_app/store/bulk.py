"""The store side of bulk processing: batched writes, derivation queue, resumable run state.

`fhir-app process` writes thousands of resources per transaction; one statement per resource (as
`ResourceRepository.write` does for the REST path) would make the database round trips the
bottleneck. Here every call takes a whole batch: one SELECT for the current rows, then
`executemany` INSERTs and UPDATEs.

Concurrency is optimistic: versions are decided from one read of the current rows, and any writer
that got in between has written the same `(type, id, version)` first, so the INSERT collides on the
primary key of `resource_version`. That collision is a `TransientStoreError`: the caller runs the
whole batch again on fresh reads. SQLite transactions are serialised anyway (`BEGIN IMMEDIATE`).

Tables (one Alembic revision, `bulk processing`):
- `derivation_pending`: patients whose inputs changed and whose outputs are not derived yet. The
  ingest chunk that changes an input queues its patient in the same transaction; the derivation
  that catches up removes it in its own. Nothing is lost when a run dies in between.
- `bulk_run`, `bulk_run_patient`, `bulk_run_rejection`: what a run (its list of input files) has
  done so far, to resume it and to write the same outputs as an uninterrupted run. The per-file
  positions are `ingest_checkpoint` rows. A finished run removes all of it.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
import psycopg
from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    false,
    func,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from fhir_app.store.errors import StoreError, TransientStoreError, store_error, translated
from fhir_app.store.repository import (
    INPUT_TYPES,
    JsonObject,
    _in_served_order,
    _served,
    fhir_instant,
)
from fhir_app.store.schema import (
    HASH_LENGTH,
    ID_LENGTH,
    Base,
    JsonDocument,
    ResourceCurrent,
    ResourceVersion,
    ingest_checkpoint_table,
    resource_current_table,
    resource_version_table,
)
from fhir_app.store.search.indexing import IndexValues, delete_index, index_table_rows

# Patient ids of a run are listed in code point order on both backends (PostgreSQL's default
# collation may be a locale's), the order `sorted()` gives, so outputs come out the same everywhere.
_BYTE_ORDERED_ID = String(ID_LENGTH).with_variant(String(ID_LENGTH, collation="C"), "postgresql")


class DerivationPending(Base):
    """A patient whose outputs must be derived again (its inputs changed since)."""

    __tablename__ = "derivation_pending"

    patient_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    queued_at: Mapped[datetime]


class BulkRun(Base):
    """A bulk run in progress: `fhir-app process` over one list of input files."""

    __tablename__ = "bulk_run"

    # sha256 of the input files' checkpoint keys, in order.
    run_key: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    accepted: Mapped[int] = mapped_column(BigInteger)
    rejected: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BulkRunPatient(Base):
    """A patient an accepted input of the run was about: its outputs go to the run's folder."""

    __tablename__ = "bulk_run_patient"

    run_key: Mapped[str] = mapped_column(
        String(HASH_LENGTH), ForeignKey("bulk_run.run_key", ondelete="CASCADE"), primary_key=True
    )
    patient_id: Mapped[str] = mapped_column(_BYTE_ORDERED_ID, primary_key=True)


class BulkRunRejection(Base):
    """An input the run refused, in input order, as the OperationOutcome that is written out."""

    __tablename__ = "bulk_run_rejection"

    run_key: Mapped[str] = mapped_column(
        String(HASH_LENGTH), ForeignKey("bulk_run.run_key", ondelete="CASCADE"), primary_key=True
    )
    source_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    item_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    outcome: Mapped[dict[str, Any]] = mapped_column(JsonDocument)


derivation_pending_table = Base.metadata.tables["derivation_pending"]
bulk_run_table = Base.metadata.tables["bulk_run"]
bulk_run_patient_table = Base.metadata.tables["bulk_run_patient"]
bulk_run_rejection_table = Base.metadata.tables["bulk_run_rejection"]

# Bind parameters per statement stay far below SQLite's 32,766 and PostgreSQL's 65,535.
_IN_BATCH: Final = 1_000


@dataclass(frozen=True, slots=True)
class CurrentState:
    """What the store knows of a resource's current version, without its content."""

    version_id: int
    deleted: bool
    patient_id: str | None
    is_output: bool
    last_updated: datetime
    content_hash: str | None


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version to store. `content` is the JSON text of the resource as served
    (`served_text`, or `served_content` serialised), made where the CPU is (a worker process)."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    patient_id: str | None
    status: str | None
    is_output: bool
    content: str
    content_hash: str
    # The search index rows of this version (fhir_app.fhir.search.index_rows).
    index: IndexValues
    raw: str | None = None


@dataclass(frozen=True, slots=True)
class InputRow:
    """A current input as derivation reads it: the JSON as received, and its version."""

    patient_id: str
    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    text: str


@dataclass(frozen=True, slots=True)
class OutputRow:
    """A current output of a patient, with what versioning it again needs."""

    patient_id: str
    resource_type: str
    resource_id: str
    version_id: int
    deleted: bool
    last_updated: datetime
    content_hash: str | None
    content: JsonObject


@dataclass(frozen=True, slots=True)
class RunTotals:
    """Counters of a bulk run so far."""

    accepted: int
    rejected: int


def served_content(
    resource_type: str, resource_id: str, version_id: int, moment: datetime, content: JsonObject
) -> JsonObject:
    """The resource as the store serves this version (what `ResourceRepository.write` stores):
    `resourceType`, `id`, `meta` (with `versionId` and `lastUpdated`) first."""
    return _served(resource_type, resource_id, version_id, moment, content)


def serving_parts(content: JsonObject) -> tuple[JsonObject, str]:
    """A resource split for `served_text`: its meta, and the JSON of every other element
    (without `resourceType`, `id`, `meta` and without the outer braces)."""
    meta = dict(content.get("meta") or {})
    rest = {k: v for k, v in content.items() if k not in ("resourceType", "id", "meta")}
    return meta, orjson.dumps(rest).decode()[1:-1]


def served_text(
    resource_type: str,
    resource_id: str,
    version_id: int,
    moment: datetime | str,
    meta: JsonObject,
    rest: str,
) -> str:
    """`orjson.dumps(served_content(...))` from `serving_parts`, without parsing the resource
    again: the part that depends on the version is put in front of the JSON kept as text.
    `moment` may be given as its `fhir_instant` already."""
    instant = moment if isinstance(moment, str) else fhir_instant(moment)
    served_meta = {**meta, "versionId": str(version_id), "lastUpdated": instant}
    head = orjson.dumps({"resourceType": resource_type, "id": resource_id, "meta": served_meta})
    return head.decode()[:-1] + ("," + rest if rest else "") + "}"


_SERVED_START: Final = '{"resourceType":'


def _served_line(content: str) -> bytes:
    """Stored JSON text as a compact NDJSON line with `resourceType`, `id`, `meta` first.

    Both databases keep the text as written (already so); a version stored as jsonb before
    migration c4d8f2a6e9b1 comes back in jsonb's own key order and spacing, and is parsed and
    written again.
    """
    if content.startswith(_SERVED_START):
        return content.encode()
    return orjson.dumps(_in_served_order(orjson.loads(content)))


def _chunks(items: Sequence[Any], size: int = _IN_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_ignoring_duplicates(connection: Connection, table: Any, rows: list[JsonObject]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of many rows."""
    if not rows:
        return
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - make_engine only supports the two
        raise StoreError(f"unsupported database: {dialect}")
    connection.execute(statement, rows)


class BulkRepository:
    """Batched reads and writes of one unit of work (one transaction)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    # ---- resources ---------------------------------------------------------------------------

    @translated
    def current_states(
        self, keys: Iterable[tuple[str, str]], *, lock: bool = False
    ) -> dict[tuple[str, str], CurrentState]:
        """The current state of each (type, id) that exists (deleted ones included).

        `lock`: hold the rows until the transaction ends (FOR UPDATE on PostgreSQL, in id order so
        that two writers of the same resources queue instead of deadlocking; SQLite transactions
        are serialised anyway), for a writer that decides versions from them."""
        by_type: dict[str, list[str]] = defaultdict(list)
        for resource_type, resource_id in set(keys):
            by_type[resource_type].append(resource_id)
        found: dict[tuple[str, str], CurrentState] = {}
        for resource_type, ids in sorted(by_type.items()):
            for batch in _chunks(sorted(ids)):
                statement = select(
                    ResourceCurrent.resource_id,
                    ResourceCurrent.version_id,
                    ResourceCurrent.deleted,
                    ResourceCurrent.patient_id,
                    ResourceCurrent.is_output,
                    ResourceCurrent.last_updated,
                    ResourceCurrent.content_hash,
                ).where(
                    ResourceCurrent.resource_type == resource_type,
                    ResourceCurrent.resource_id.in_(batch),
                )
                if lock:
                    statement = statement.order_by(ResourceCurrent.resource_id).with_for_update()
                rows = self._connection.execute(statement)
                for row in rows:
                    found[(resource_type, row[0])] = CurrentState(*row[1:])
        return found

    @translated
    def write_versions(
        self, versions: Sequence[NewVersion], existing: Iterable[tuple[str, str]]
    ) -> None:
        """Store new versions and make the last one of each resource current.

        `existing`: the (type, id) that had a current row when the versions were decided (their
        row is updated and their search index rows replaced); every other resource is created.
        Raises TransientStoreError when another writer stored one of these versions first.
        """
        if not versions:
            return
        had_row = set(existing)
        last: dict[tuple[str, str], NewVersion] = {}
        for version in versions:
            last[(version.resource_type, version.resource_id)] = version
        created = [v for key, v in last.items() if key not in had_row]
        updated = [v for key, v in last.items() if key in had_row]
        with self._raw_errors():
            self._prefer_fast_compression()
            self._insert_rows(
                resource_version_table,
                [
                    (
                        v.resource_type,
                        v.resource_id,
                        v.version_id,
                        v.last_updated,
                        False,
                        v.patient_id,
                        v.status,
                        v.is_output,
                        v.content,
                        v.raw,
                        v.content_hash,
                    )
                    for v in versions
                ],
            )
            self._insert_rows(
                resource_current_table,
                [
                    (
                        v.resource_type,
                        v.resource_id,
                        v.version_id,
                        False,
                        v.patient_id,
                        v.status,
                        v.is_output,
                        v.last_updated,
                        v.content_hash,
                    )
                    for v in created
                ],
            )
            if updated:
                self._update_current(updated)
                delete_index(self._connection, [(v.resource_type, v.resource_id) for v in updated])
            # The same rows as ResourceRepository.write stores (index_table_rows), by COPY.
            for table, rows in index_table_rows(
                (v.resource_type, v.resource_id, v.index) for v in last.values()
            ).items():
                self._insert_rows(table, rows)

    def _insert_rows(self, table: Table, rows: list[tuple[Any, ...]]) -> None:
        """INSERT many rows given in the table's column order, the fastest way each database
        offers: COPY on PostgreSQL, the driver's executemany on SQLite. JSON columns take the
        JSON text; the column types' conversions (UTC timestamps, booleans) are applied here."""
        if not rows:
            return
        if not self._connection.in_transaction():
            self._connection.begin()
        names = ", ".join(column.name for column in table.columns)
        driver: Any = self._connection.connection.driver_connection
        if self._connection.dialect.name == "postgresql":
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            return
        processors = [
            None
            if isinstance(column.type, JSON)
            # The dialect's own type: its processor writes SQLite's one text form of a
            # timestamp (with microseconds), the form compared against in queries.
            else column.type.dialect_impl(self._connection.dialect).bind_processor(
                self._connection.dialect
            )
            for column in table.columns
        ]
        converting = [(i, p) for i, p in enumerate(processors) if p is not None]
        prepared = []
        for row in rows:
            values = list(row)
            for i, process in converting:
                values[i] = process(values[i])
            prepared.append(values)
        marks = ", ".join("?" for _ in table.columns)
        cursor = driver.cursor()
        try:
            cursor.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", prepared)
        finally:
            cursor.close()

    def _prefer_fast_compression(self) -> None:
        """Compress large JSON values with lz4 rather than pglz in this transaction (PostgreSQL
        with lz4): outputs are several kB and pglz doubles the cost of storing them."""
        if self._connection.dialect.name != "postgresql":
            return
        info = self._connection.info
        if "lz4" not in info:
            info["lz4"] = bool(
                self._connection.exec_driver_sql(
                    "SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                    " WHERE name = 'default_toast_compression'"
                ).scalar()
            )
        if info["lz4"]:
            self._connection.exec_driver_sql("SET LOCAL default_toast_compression = 'lz4'")

    @contextmanager
    def _raw_errors(self) -> Iterator[None]:
        """Driver errors of the raw COPY / executemany in the store's words: a key that another
        writer stored first is transient (run the batch again), anything else a StoreError."""
        try:
            yield
        except IntegrityError as error:  # through SQLAlchemy (UPDATE, DELETE)
            raise TransientStoreError(
                f"another writer stored one of these resources first: {error.orig}"
            ) from error
        except (psycopg.IntegrityError, sqlite3.IntegrityError) as error:
            raise TransientStoreError(
                f"another writer stored one of these resources first: {error}"
            ) from error
        except (psycopg.Error, sqlite3.Error) as error:
            # A conflict, a lost connection or a busy database is transient, the rest not.
            translation = store_error(error)
            raise (translation or StoreError(str(error))) from error

    def _update_current(self, versions: Sequence[NewVersion]) -> None:
        table = resource_current_table
        statement = (
            update(table)
            .where(
                table.c.resource_type == bindparam("key_type"),
                table.c.resource_id == bindparam("key_id"),
            )
            .values(
                version_id=bindparam("version_id"),
                deleted=false(),
                patient_id=bindparam("patient_id"),
                status=bindparam("status"),
                is_output=bindparam("is_output"),
                last_updated=bindparam("last_updated"),
                content_hash=bindparam("content_hash"),
            )
        )
        self._connection.execute(
            statement,
            [
                {
                    "key_type": v.resource_type,
                    "key_id": v.resource_id,
                    "version_id": v.version_id,
                    "patient_id": v.patient_id,
                    "status": v.status,
                    "is_output": v.is_output,
                    "last_updated": v.last_updated,
                    "content_hash": v.content_hash,
                }
                for v in versions
            ],
        )

    @translated
    def inputs_of_patients(self, patients: Sequence[str]) -> list[InputRow]:
        """The current, non-deleted input Observations and ImagingStudies of these patients,
        as the JSON text received (the content stored, for an input written without it)."""
        text = func.coalesce(ResourceVersion.raw, cast(ResourceVersion.content, Text))
        rows: list[InputRow] = []
        for batch in _chunks(patients):
            result = self._connection.execute(
                self._current_join(
                    ResourceCurrent.patient_id,
                    ResourceCurrent.resource_type,
                    ResourceCurrent.resource_id,
                    ResourceCurrent.version_id,
                    ResourceCurrent.last_updated,
                    text,
                )
                .where(
                    ResourceCurrent.patient_id.in_(batch),
                    ResourceCurrent.is_output == false(),
                    ResourceCurrent.deleted == false(),
                    ResourceCurrent.resource_type.in_(INPUT_TYPES),
                )
                .order_by(
                    ResourceCurrent.patient_id,
                    ResourceCurrent.resource_type,
                    ResourceCurrent.last_updated,
                    ResourceCurrent.resource_id,
                )
            )
            rows.extend(InputRow(*row) for row in result)
        return rows

    @translated
    def input_versions(self, patients: Sequence[str]) -> frozenset[tuple[str, str, int]]:
        """(type, id, version) of the current inputs `inputs_of_patients` reads for these
        patients: what a derivation read, to check it is still current."""
        found: set[tuple[str, str, int]] = set()
        for batch in _chunks(patients):
            rows = self._connection.execute(
                select(
                    ResourceCurrent.resource_type,
                    ResourceCurrent.resource_id,
                    ResourceCurrent.version_id,
                ).where(
                    ResourceCurrent.patient_id.in_(batch),
                    ResourceCurrent.is_output == false(),
                    ResourceCurrent.deleted == false(),
                    ResourceCurrent.resource_type.in_(INPUT_TYPES),
                )
            )
            found.update((row[0], row[1], row[2]) for row in rows)
        return frozenset(found)

    @translated
    def outputs_of_patients(self, patients: Sequence[str]) -> list[OutputRow]:
        """The current outputs of these patients (any type, withdrawn ones included)."""
        rows: list[OutputRow] = []
        for batch in _chunks(patients):
            result = self._connection.execute(
                self._current_join(
                    ResourceCurrent.patient_id,
                    ResourceCurrent.resource_type,
                    ResourceCurrent.resource_id,
                    ResourceCurrent.version_id,
                    ResourceCurrent.deleted,
                    ResourceCurrent.last_updated,
                    ResourceCurrent.content_hash,
                    ResourceVersion.content,
                ).where(
                    ResourceCurrent.patient_id.in_(batch),
                    ResourceCurrent.is_output == true(),
                )
            )
            rows.extend(
                OutputRow(
                    patient_id=row.patient_id,
                    resource_type=row.resource_type,
                    resource_id=row.resource_id,
                    version_id=row.version_id,
                    deleted=row.deleted,
                    last_updated=row.last_updated,
                    content_hash=row.content_hash,
                    content=_in_served_order(row.content),
                )
                for row in result
            )
        return rows

    @translated
    def output_lines(self, patients: Sequence[str]) -> list[tuple[str, str, str, bytes]]:
        """The current, non-deleted outputs of these patients as NDJSON lines (compact JSON,
        `resourceType`, `id`, `meta` first): (patient, type, id, line) in no particular order."""
        lines: list[tuple[str, str, str, bytes]] = []
        for batch in _chunks(patients):
            result = self._connection.execute(
                self._current_join(
                    ResourceCurrent.patient_id,
                    ResourceCurrent.resource_type,
                    ResourceCurrent.resource_id,
                    cast(ResourceVersion.content, Text),
                ).where(
                    ResourceCurrent.patient_id.in_(batch),
                    ResourceCurrent.is_output == true(),
                    ResourceCurrent.deleted == false(),
                )
            )
            for patient, resource_type, resource_id, content in result:
                lines.append((patient, resource_type, resource_id, _served_line(content)))
        return lines

    @staticmethod
    def _current_join(*columns: Any) -> Any:
        return (
            select(*columns)
            .select_from(ResourceCurrent)
            .join(
                ResourceVersion,
                and_(
                    ResourceVersion.resource_type == ResourceCurrent.resource_type,
                    ResourceVersion.resource_id == ResourceCurrent.resource_id,
                    ResourceVersion.version_id == ResourceCurrent.version_id,
                ),
            )
        )

    @translated
    def commit_without_waiting(self) -> None:
        """Let this transaction's COMMIT return before its WAL reaches the disk (PostgreSQL).

        Safe for the chunks of a resumable run: a chunk lost to a server crash takes its own
        checkpoint with it and is simply done again, and the run's last transaction commits
        durably, which makes every earlier one durable too (the WAL is written in order).
        """
        if self._connection.dialect.name == "postgresql":
            self._connection.exec_driver_sql("SET LOCAL synchronous_commit = off")

    @translated
    def refresh_statistics(self) -> None:
        """Let PostgreSQL plan for the tables as they are now (ANALYZE; nothing on SQLite).

        PostgreSQL plans a foreign-key check once per connection and keeps the plan until the
        table's statistics change. Planned while `resource_current` was nearly empty (a new
        database), the check scans the whole table, and inserting search tokens slows down with
        every row stored. Called as the tables grow, this replaces such plans with index lookups.
        """
        if self._connection.dialect.name == "postgresql":
            self._connection.exec_driver_sql(
                "ANALYZE resource_version, resource_current, search_token, search_reference,"
                " search_date, search_string"
            )

    # ---- derivation queue --------------------------------------------------------------------

    @translated
    def queue_derivation(self, patients: Iterable[str], *, now: datetime) -> None:
        """Mark patients as needing their outputs derived again (idempotent)."""
        rows = [{"patient_id": p, "queued_at": now} for p in sorted(set(patients))]
        _insert_ignoring_duplicates(self._connection, derivation_pending_table, rows)

    @translated
    def pending_patients(self, *, after: str | None, limit: int) -> list[str]:
        """The next `limit` patients waiting for derivation, in id order after `after`."""
        statement = select(DerivationPending.patient_id)
        if after is not None:
            statement = statement.where(DerivationPending.patient_id > after)
        rows = self._connection.execute(
            statement.order_by(DerivationPending.patient_id).limit(limit)
        )
        return [patient for (patient,) in rows]

    @translated
    def pending_count(self) -> int:
        """How many patients wait for derivation."""
        count: int = self._connection.execute(
            select(func.count()).select_from(DerivationPending)
        ).scalar_one()
        return count

    @translated
    def derivation_done(self, patients: Sequence[str]) -> None:
        """Take patients off the derivation queue."""
        for batch in _chunks(patients):
            self._connection.execute(
                delete(derivation_pending_table).where(
                    derivation_pending_table.c.patient_id.in_(batch)
                )
            )

    # ---- runs --------------------------------------------------------------------------------

    @translated
    def open_run(self, run_key: str, *, now: datetime) -> RunTotals:
        """The run's counters, the run being started when it is new."""
        _insert_ignoring_duplicates(
            self._connection,
            bulk_run_table,
            [
                {
                    "run_key": run_key,
                    "accepted": 0,
                    "rejected": 0,
                    "started_at": now,
                    "updated_at": now,
                }
            ],
        )
        accepted, rejected = self._connection.execute(
            select(BulkRun.accepted, BulkRun.rejected).where(BulkRun.run_key == run_key)
        ).one()
        return RunTotals(accepted, rejected)

    @translated
    def record_chunk(
        self,
        run_key: str,
        *,
        accepted: int,
        patients: Iterable[str],
        rejections: Sequence[tuple[int, int, int, JsonObject]],
        now: datetime,
    ) -> None:
        """Add one ingested chunk to the run: counters, touched patients, rejections
        (source index, record index, item index, OperationOutcome)."""
        self._connection.execute(
            update(bulk_run_table)
            .where(bulk_run_table.c.run_key == run_key)
            .values(
                accepted=bulk_run_table.c.accepted + accepted,
                rejected=bulk_run_table.c.rejected + len(rejections),
                updated_at=now,
            )
        )
        _insert_ignoring_duplicates(
            self._connection,
            bulk_run_patient_table,
            [{"run_key": run_key, "patient_id": p} for p in sorted(set(patients))],
        )
        if rejections:
            self._connection.execute(
                bulk_run_rejection_table.insert(),
                [
                    {
                        "run_key": run_key,
                        "source_index": source,
                        "record_index": record,
                        "item_index": item,
                        "outcome": outcome,
                    }
                    for source, record, item, outcome in rejections
                ],
            )

    @translated
    def run_patients(self, run_key: str, *, after: str | None, limit: int) -> list[str]:
        """The next `limit` patients of the run in code point order after `after`."""
        statement = select(BulkRunPatient.patient_id).where(BulkRunPatient.run_key == run_key)
        if after is not None:
            statement = statement.where(BulkRunPatient.patient_id > after)
        rows = self._connection.execute(statement.order_by(BulkRunPatient.patient_id).limit(limit))
        return [patient for (patient,) in rows]

    @translated
    def run_patient_count(self, run_key: str) -> int:
        """How many patients the run touched."""
        count: int = self._connection.execute(
            select(func.count())
            .select_from(BulkRunPatient)
            .where(BulkRunPatient.run_key == run_key)
        ).scalar_one()
        return count

    @translated
    def run_rejections(
        self, run_key: str, *, after: tuple[int, int, int] | None, limit: int
    ) -> list[tuple[tuple[int, int, int], JsonObject]]:
        """The next `limit` rejections of the run in input order after position `after`."""
        position = tuple_(
            BulkRunRejection.source_index,
            BulkRunRejection.record_index,
            BulkRunRejection.item_index,
        )
        statement = select(
            BulkRunRejection.source_index,
            BulkRunRejection.record_index,
            BulkRunRejection.item_index,
            BulkRunRejection.outcome,
        ).where(BulkRunRejection.run_key == run_key)
        if after is not None:
            statement = statement.where(position > tuple_(*after))
        rows = self._connection.execute(
            statement.order_by(
                BulkRunRejection.source_index,
                BulkRunRejection.record_index,
                BulkRunRejection.item_index,
            ).limit(limit)
        )
        return [((source, record, item), outcome) for source, record, item, outcome in rows]

    @translated
    def close_run(self, run_key: str, checkpoint_keys: Sequence[str]) -> None:
        """Forget a finished run: its counters, patients, rejections and file positions."""
        for table in (bulk_run_rejection_table, bulk_run_patient_table, bulk_run_table):
            self._connection.execute(delete(table).where(table.c.run_key == run_key))
        if checkpoint_keys:
            self._connection.execute(
                delete(ingest_checkpoint_table).where(
                    ingest_checkpoint_table.c.source_key.in_(list(checkpoint_keys))
                )
            )
