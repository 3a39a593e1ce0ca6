"""Repositories: versioned resources with search, conditional-create claims, ingest checkpoints.

Every write is made safe against concurrent writers by the database, not by Python locks: the
primary keys of `resource_version` and `conditional_create` decide who creates first
(`INSERT ... ON CONFLICT DO NOTHING`, the loser re-reads the winner's row), and the current row
of an existing resource is locked (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite transactions
are serialised by `BEGIN IMMEDIATE`) before its version is bumped.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    false,
    func,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from fhir_app.store.errors import StoreError, TransientStoreError, translated
from fhir_app.store.schema import (
    ConditionalCreate,
    IngestCheckpoint,
    ResourceCurrent,
    ResourceVersion,
    conditional_create_table,
    ingest_checkpoint_table,
    resource_current_table,
    resource_version_table,
)
from fhir_app.store.search.indexing import IndexValues, delete_index, insert_index

JsonObject = dict[str, Any]

# Patient too: its gender and birth date are the context of the likely primaries (DOMAIN.md 4a).
INPUT_TYPES: Final = ("Observation", "Condition", "ImagingStudy", "Patient")
# A lost creation race is resolved on the next attempt; more than a few means something is wrong.
_WRITE_ATTEMPTS: Final = 5
# Meta elements the server sets on every version: not part of what the client said.
_SERVER_META: Final = frozenset({"versionId", "lastUpdated"})

_LAST_UPDATED_PREFIXES: Final[dict[str, Callable[[Any, datetime], ColumnElement[bool]]]] = {
    "eq": lambda column, value: column == value,
    "ne": lambda column, value: column != value,
    "gt": lambda column, value: column > value,
    "ge": lambda column, value: column >= value,
    "lt": lambda column, value: column < value,
    "le": lambda column, value: column <= value,
}


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource as stored; `content` is the resource as served."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    patient_id: str | None
    status: str | None
    is_output: bool
    content: JsonObject

    @property
    def reference(self) -> str:
        """The version-specific reference, `Observation/abc/_history/2`."""
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id}"


def content_hash(content: JsonObject) -> str:
    """sha256 of the resource as the client sent it: keys sorted, without `id` and without the
    server-set `meta.versionId` / `meta.lastUpdated` (other meta, e.g. profile, counts)."""
    body = {key: value for key, value in content.items() if key not in ("id", "meta")}
    meta = content.get("meta")
    if isinstance(meta, dict):
        kept = {key: value for key, value in meta.items() if key not in _SERVER_META}
        if kept:
            body["meta"] = kept
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def fhir_instant(moment: datetime) -> str:
    """A FHIR `instant` in UTC with microseconds, the precision the store keeps."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def checkpoint_key(path: Path) -> str:
    """The checkpoint key of an input file: its absolute path, size and modification time, so
    that a changed file starts again from the beginning."""
    stat = path.stat()
    identity = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()


def _aware(moment: datetime) -> datetime:
    """`moment`, refused when naive: the store cannot guess its zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime given to the store: {moment.isoformat()}")
    return moment


def _served(
    resource_type: str, resource_id: str, version_id: int, moment: datetime, content: JsonObject
) -> JsonObject:
    meta = dict(content.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = fhir_instant(moment)
    rest = {k: v for k, v in content.items() if k not in ("resourceType", "id", "meta")}
    return {"resourceType": resource_type, "id": resource_id, "meta": meta, **rest}


def _in_served_order(content: JsonObject) -> JsonObject:
    # JSONB stores keys in its own order; put resourceType, id and meta first again for readers.
    if next(iter(content), None) == "resourceType":
        return content
    head: JsonObject = {
        key: content[key] for key in ("resourceType", "id", "meta") if key in content
    }
    return {**head, **content}


_VERSION_COLUMNS = (
    ResourceVersion.resource_type,
    ResourceVersion.resource_id,
    ResourceVersion.version_id,
    ResourceVersion.last_updated,
    ResourceVersion.deleted,
    ResourceVersion.patient_id,
    ResourceVersion.status,
    ResourceVersion.is_output,
    ResourceVersion.content,
)


def _stored(row: Row[Any]) -> StoredResource:
    return StoredResource(
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        version_id=row.version_id,
        last_updated=row.last_updated,
        deleted=row.deleted,
        patient_id=row.patient_id,
        status=row.status,
        is_output=row.is_output,
        content=_in_served_order(row.content),
    )


def _history_conditions(
    resource_types: Sequence[str] | None,
    resource_id: str | None,
    since: datetime | None,
    patient: str | None,
) -> list[ColumnElement[bool]] | None:
    """The versions of a history (`history_page`, `history_count`); None when no type is
    chosen (nothing can match)."""
    conditions: list[ColumnElement[bool]] = []
    if resource_types is not None:
        chosen = sorted(set(resource_types))
        if not chosen:
            return None
        # One type as an equality: the planner then walks ix_resource_version_type_updated.
        conditions.append(
            ResourceVersion.resource_type == chosen[0]
            if len(chosen) == 1
            else ResourceVersion.resource_type.in_(chosen)
        )
    if resource_id is not None:
        conditions.append(ResourceVersion.resource_id == resource_id)
    if since is not None:
        conditions.append(ResourceVersion.last_updated >= _aware(since))
    if patient is not None:
        conditions.append(ResourceVersion.patient_id == patient)
    return conditions


def _compartment_conditions(
    patient_id: str, since: datetime | None, types: Sequence[str] | None
) -> list[ColumnElement[bool]] | None:
    """A patient's current resources (`compartment_page`, `compartment_count`); None when
    `types` is empty (nothing can match)."""
    conditions: list[ColumnElement[bool]] = [
        ResourceCurrent.patient_id == patient_id,
        ResourceCurrent.deleted == false(),
    ]
    if types is not None:
        if not types:
            return None
        conditions.append(ResourceCurrent.resource_type.in_(sorted(set(types))))
    if since is not None:
        conditions.append(ResourceCurrent.last_updated >= _aware(since))
    return conditions


def _current_versions() -> Select[Any]:
    """Current rows joined to the content of their version."""
    return (
        select(*_VERSION_COLUMNS)
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


def _insert_if_absent(connection: Connection, table: Table, values: JsonObject) -> bool:
    """INSERT that yields to an existing row with the same key; True when this one went in.

    On PostgreSQL a concurrent uncommitted insert of the same key makes this wait for its
    outcome, so the caller can read the winner's row right after.
    """
    dialect = connection.dialect.name
    statement = _INSERT_IF_ABSENT.get((dialect, table.name))
    if statement is None:
        if dialect == "postgresql":
            built: Any = postgresql.insert(table).on_conflict_do_nothing()
        elif dialect == "sqlite":
            built = sqlite.insert(table).on_conflict_do_nothing()
        else:  # pragma: no cover - make_engine only supports the two
            raise StoreError(f"unsupported database: {dialect}")
        # RETURNING, not rowcount: psycopg reports no rowcount for INSERT ... ON CONFLICT.
        statement = built.returning(*table.primary_key.columns)
        _INSERT_IF_ABSENT[(dialect, table.name)] = statement
    returned = connection.execute(statement, values).first()
    return returned is not None


# Statements of the hot path, built once with bind parameters: building a SQLAlchemy expression
# costs more than executing a cached one, and a REST transaction runs hundreds of them.
_CURRENT_BY_KEY: Final = _current_versions().where(
    ResourceCurrent.resource_type == bindparam("rt"),
    ResourceCurrent.resource_id == bindparam("rid"),
)
_VERSION_BY_KEY: Final = select(*_VERSION_COLUMNS).where(
    ResourceVersion.resource_type == bindparam("rt"),
    ResourceVersion.resource_id == bindparam("rid"),
    ResourceVersion.version_id == bindparam("vid"),
)
_LOCK_CURRENT: Final = (
    select(
        ResourceCurrent.version_id,
        ResourceCurrent.deleted,
        ResourceCurrent.patient_id,
        ResourceCurrent.status,
        ResourceCurrent.is_output,
        ResourceCurrent.last_updated,
        ResourceCurrent.content_hash,
    )
    .where(
        ResourceCurrent.resource_type == bindparam("rt"),
        ResourceCurrent.resource_id == bindparam("rid"),
    )
    # FOR UPDATE makes a second writer of this resource wait for our commit on PostgreSQL;
    # SQLite ignores it (its transactions are already serialised).
    .with_for_update()
)
_INSERT_VERSION: Final = resource_version_table.insert()
_INSERT_CURRENT: Final = resource_current_table.insert()
_CURRENT_COLUMNS: Final = (
    "version_id",
    "deleted",
    "patient_id",
    "status",
    "is_output",
    "last_updated",
    "content_hash",
)
_UPDATE_CURRENT: Final = (
    update(resource_current_table)
    .where(
        resource_current_table.c.resource_type == bindparam("k_rt"),
        resource_current_table.c.resource_id == bindparam("k_rid"),
    )
    .values({name: bindparam(name) for name in _CURRENT_COLUMNS})
)
_INSERT_IF_ABSENT: Final[dict[tuple[str, str], Any]] = {}


@dataclass(frozen=True, slots=True)
class _Current:
    version_id: int
    deleted: bool
    patient_id: str | None
    status: str | None
    is_output: bool
    last_updated: datetime
    content_hash: str | None


class ResourceRepository:
    """Versioned FHIR resources of one unit of work (one transaction)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @translated
    def current(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version; None if the resource never existed. A deleted resource comes
        back with `deleted=True` (its content is a stub: resourceType, id, meta)."""
        row = self._connection.execute(
            _CURRENT_BY_KEY, {"rt": resource_type, "rid": resource_id}
        ).one_or_none()
        return None if row is None else _stored(row)

    @translated
    def version(
        self, resource_type: str, resource_id: str, version_id: int
    ) -> StoredResource | None:
        """One version of a resource, or None when it does not exist."""
        row = self._connection.execute(
            _VERSION_BY_KEY, {"rt": resource_type, "rid": resource_id, "vid": version_id}
        ).one_or_none()
        return None if row is None else _stored(row)

    @translated
    def history(self, resource_type: str, resource_id: str) -> list[StoredResource]:
        """Every version of a resource, deletions included, newest first; empty if unknown."""
        rows = self._connection.execute(
            select(*_VERSION_COLUMNS)
            .where(
                ResourceVersion.resource_type == resource_type,
                ResourceVersion.resource_id == resource_id,
            )
            .order_by(ResourceVersion.version_id.desc())
        )
        return [_stored(row) for row in rows]

    @translated
    def history_page(
        self,
        resource_types: Sequence[str] | None,
        *,
        resource_id: str | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str, str, int] | None = None,
        limit: int,
        patient: str | None = None,
    ) -> list[StoredResource]:
        """Versions newest first (FHIR R4 history), deletions included, at most `limit`.

        `resource_types` None: every type (system history); with `resource_id`, the one type's
        resource (instance history). Ordered by (lastUpdated, type, id, version) descending;
        `before` is that key of the last version already read: the page holds the versions
        strictly older (keyset paging, served by ix_resource_version_updated,
        ix_resource_version_type_updated and, for one patient, ix_resource_version_patient_updated).
        `since`: lastUpdated at or after it. `patient`: only versions about that patient.
        """
        if limit <= 0:
            raise ValueError("limit must be positive")
        conditions = _history_conditions(resource_types, resource_id, since, patient)
        if conditions is None:
            return []
        one_type = resource_types is not None and len(set(resource_types)) == 1
        # Of one type, the type is no part of the order: (lastUpdated, id, version) is the order
        # of ix_resource_version_type_updated after its type, so the page is one range scan.
        order: tuple[Any, ...] = (
            (ResourceVersion.last_updated, ResourceVersion.resource_id, ResourceVersion.version_id)
            if one_type
            else (
                ResourceVersion.last_updated,
                ResourceVersion.resource_type,
                ResourceVersion.resource_id,
                ResourceVersion.version_id,
            )
        )
        if before is not None:
            moment, rtype, rid, vid = before
            position = (_aware(moment), rid, vid) if one_type else (_aware(moment), rtype, rid, vid)
            conditions.append(tuple_(*order) < tuple_(*position))
        rows = self._connection.execute(
            select(*_VERSION_COLUMNS)
            .where(*conditions)
            .order_by(*(column.desc() for column in order))
            .limit(limit)
        )
        return [_stored(row) for row in rows]

    @translated
    def history_count(
        self,
        resource_types: Sequence[str] | None,
        *,
        resource_id: str | None = None,
        since: datetime | None = None,
        patient: str | None = None,
    ) -> int:
        """How many versions `history_page` would list over all its pages (its `_count=0`)."""
        conditions = _history_conditions(resource_types, resource_id, since, patient)
        if conditions is None:
            return 0
        counted = self._connection.execute(
            select(func.count()).select_from(ResourceVersion).where(*conditions)
        ).scalar_one()
        return int(counted)

    @translated
    def compartment_page(
        self,
        patient_id: str,
        *,
        since: datetime | None = None,
        after: tuple[str, str] | None = None,
        limit: int,
        types: Sequence[str] | None = None,
    ) -> list[StoredResource]:
        """A page of a patient's current, non-deleted resources, inputs and outputs (the Patient
        itself included), ordered by (type, id) after the pair `after` (keyset paging: a resource
        updated while the pages are read keeps its place). `since`: lastUpdated at or after it;
        `types`: only these."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        conditions = _compartment_conditions(patient_id, since, types)
        if conditions is None:
            return []
        if after is not None:
            conditions.append(
                tuple_(ResourceCurrent.resource_type, ResourceCurrent.resource_id)
                > tuple_(after[0], after[1])
            )
        rows = self._connection.execute(
            _current_versions()
            .where(*conditions)
            .order_by(ResourceCurrent.resource_type, ResourceCurrent.resource_id)
            .limit(limit)
        )
        return [_stored(row) for row in rows]

    @translated
    def compartment_count(
        self,
        patient_id: str,
        *,
        since: datetime | None = None,
        types: Sequence[str] | None = None,
    ) -> int:
        """How many resources `compartment_page` would list over all its pages."""
        conditions = _compartment_conditions(patient_id, since, types)
        if conditions is None:
            return 0
        counted = self._connection.execute(
            select(func.count()).select_from(ResourceCurrent).where(*conditions)
        ).scalar_one()
        return int(counted)

    @translated
    def write(
        self,
        resource_type: str,
        resource_id: str,
        content: JsonObject,
        *,
        patient_id: str | None,
        status: str | None,
        is_output: bool,
        index: IndexValues | None = None,
        raw: str | None = None,
        now: datetime,
    ) -> tuple[StoredResource, bool]:
        """Store `content` as the next version of the resource (version 1 if new or first).

        The stored content gets `resourceType`, `id`, `meta.versionId` and `meta.lastUpdated`.
        When the content (without id and server meta) equals the current, non-deleted version,
        nothing is written and `(current, False)` comes back; otherwise `(new version, True)`.
        `index` replaces the resource's search index rows. Safe when several transactions write the
        same resource at once: exactly one creates version 1, the others see it.
        """
        now = _aware(now)
        digest = content_hash(content)
        for _attempt in range(_WRITE_ATTEMPTS):
            current = self._lock_current(resource_type, resource_id)
            if current is not None and not current.deleted and current.content_hash == digest:
                unchanged = self.version(resource_type, resource_id, current.version_id)
                if unchanged is None:  # pragma: no cover - the foreign key forbids it
                    raise StoreError(f"{resource_type}/{resource_id}: current version missing")
                return unchanged, False
            # Versions must not go back in time when clocks of two writers disagree.
            moment = now if current is None else max(now, current.last_updated)
            version_id = 1 if current is None else current.version_id + 1
            served = _served(resource_type, resource_id, version_id, moment, content)
            version_row = {
                "resource_type": resource_type,
                "resource_id": resource_id,
                "version_id": version_id,
                "last_updated": moment,
                "deleted": False,
                "patient_id": patient_id,
                "status": status,
                "is_output": is_output,
                "content": served,
                "raw": raw,
                "content_hash": digest,
            }
            current_row = {key: version_row[key] for key in _CURRENT_COLUMNS}
            if current is None:
                if not _insert_if_absent(self._connection, resource_version_table, version_row):
                    continue  # another transaction created it first: read its version and retry
                self._connection.execute(
                    _INSERT_CURRENT,
                    {"resource_type": resource_type, "resource_id": resource_id, **current_row},
                )
            else:
                self._connection.execute(_INSERT_VERSION, version_row)
                self._connection.execute(
                    _UPDATE_CURRENT, {"k_rt": resource_type, "k_rid": resource_id, **current_row}
                )
                delete_index(self._connection, [(resource_type, resource_id)])
            if index is not None:
                insert_index(self._connection, [(resource_type, resource_id, index)])
            return self._as_stored(version_row), True
        raise TransientStoreError(
            f"{resource_type}/{resource_id}: lost the creation race {_WRITE_ATTEMPTS} times"
        )

    @translated
    def delete(
        self, resource_type: str, resource_id: str, *, now: datetime
    ) -> StoredResource | None:
        """Record a deleted version; None when the resource is absent or already deleted.

        The deleted version keeps the patient, status and output flag of the version it ends,
        so that callers know whose outputs to derive again.
        """
        now = _aware(now)
        current = self._lock_current(resource_type, resource_id)
        if current is None or current.deleted:
            return None
        moment = max(now, current.last_updated)
        version_id = current.version_id + 1
        version_row = {
            "resource_type": resource_type,
            "resource_id": resource_id,
            "version_id": version_id,
            "last_updated": moment,
            "deleted": True,
            "patient_id": current.patient_id,
            "status": current.status,
            "is_output": current.is_output,
            "content": _served(resource_type, resource_id, version_id, moment, {}),
            "raw": None,
            "content_hash": None,
        }
        self._connection.execute(resource_version_table.insert().values(version_row))
        self._connection.execute(
            update(resource_current_table)
            .where(
                resource_current_table.c.resource_type == resource_type,
                resource_current_table.c.resource_id == resource_id,
            )
            .values(version_id=version_id, deleted=True, last_updated=moment, content_hash=None)
        )
        delete_index(self._connection, [(resource_type, resource_id)])
        return self._as_stored(version_row)

    @translated
    def inputs_of_patient(self, patient_id: str) -> list[StoredResource]:
        """The patient's current, non-deleted inputs (every type of INPUT_TYPES)."""
        return self._of_patient(patient_id, is_output=False, types=INPUT_TYPES)

    @translated
    def outputs_of_patient(self, patient_id: str) -> list[StoredResource]:
        """The patient's current, non-deleted outputs (any type)."""
        return self._of_patient(patient_id, is_output=True, types=None)

    @translated
    def current_outputs_page(
        self,
        resource_type: str,
        *,
        since: datetime | None,
        until: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
        patient: str | None = None,
    ) -> list[StoredResource]:
        """A keyset page of the current outputs of a type, for bulk export.

        Current, non-deleted output versions with `since <= lastUpdated <= until` (`since` None:
        no lower bound), ordered by (lastUpdated, id), strictly after the (lastUpdated, id) pair
        `after` (None: from the start). Keyset, not offset, paging: a resource that changes while
        the pages are read moves beyond `until`, so the pages neither skip nor repeat the others.
        `patient`: only that patient's outputs (the export of a patient-context token).
        """
        if limit <= 0:
            raise ValueError("limit must be positive")
        conditions: list[ColumnElement[bool]] = [
            ResourceCurrent.resource_type == resource_type,
            ResourceCurrent.is_output == true(),
            ResourceCurrent.deleted == false(),
            ResourceCurrent.last_updated <= _aware(until),
        ]
        if since is not None:
            conditions.append(ResourceCurrent.last_updated >= _aware(since))
        if patient is not None:
            conditions.append(ResourceCurrent.patient_id == patient)
        if after is not None:
            moment, resource_id = after
            conditions.append(
                or_(
                    ResourceCurrent.last_updated > _aware(moment),
                    and_(
                        ResourceCurrent.last_updated == moment,
                        ResourceCurrent.resource_id > resource_id,
                    ),
                )
            )
        rows = self._connection.execute(
            _current_versions()
            .where(*conditions)
            .order_by(ResourceCurrent.last_updated, ResourceCurrent.resource_id)
            .limit(limit)
        )
        return [_stored(row) for row in rows]

    @translated
    def current_outputs_of_patients(
        self, patient_ids: Sequence[str], types: Sequence[str]
    ) -> list[StoredResource]:
        """The current, non-deleted outputs of these types of several patients at once (for the
        lesion table, read patient by patient in batches), by patient, type, lastUpdated, id."""
        if not patient_ids:
            return []
        statement = (
            _current_versions()
            .where(
                ResourceCurrent.patient_id.in_(patient_ids),
                ResourceCurrent.is_output == true(),
                ResourceCurrent.deleted == false(),
                ResourceCurrent.resource_type.in_(types),
            )
            .order_by(
                ResourceCurrent.patient_id,
                ResourceCurrent.resource_type,
                ResourceCurrent.last_updated,
                ResourceCurrent.resource_id,
            )
        )
        return [_stored(row) for row in self._connection.execute(statement)]

    @translated
    def patients_changed_since(self, since: datetime) -> list[str]:
        """Patients with a resource (input or output, deletions included) updated after `since`."""
        rows = self._connection.execute(
            select(ResourceCurrent.patient_id)
            .where(
                ResourceCurrent.last_updated > _aware(since),
                ResourceCurrent.patient_id.is_not(None),
            )
            .distinct()
            .order_by(ResourceCurrent.patient_id)
        )
        return [patient for (patient,) in rows if patient is not None]

    @translated
    def claim_conditional(self, resource_type: str, criteria: str, resource_id: str) -> str:
        """Claim an If-None-Exist `criteria` for `resource_id`; the id that owns it comes back.

        That is `resource_id` when this transaction claimed first, else the earlier winner's id
        (which the caller then returns instead of creating). Race-free across processes: the
        primary key decides, and the losing insert does nothing instead of failing, so the
        enclosing transaction goes on. The caller normalises `criteria` (sorted parameters).
        """
        criteria_hash = hashlib.sha256(criteria.encode("utf-8")).hexdigest()
        _insert_if_absent(
            self._connection,
            conditional_create_table,
            {
                "resource_type": resource_type,
                "criteria_hash": criteria_hash,
                "criteria": criteria,
                "resource_id": resource_id,
                "created_at": datetime.now(UTC),
            },
        )
        owner: str = self._connection.execute(
            select(ConditionalCreate.resource_id).where(
                ConditionalCreate.resource_type == resource_type,
                ConditionalCreate.criteria_hash == criteria_hash,
            )
        ).scalar_one()
        return owner

    def next_id(self) -> str:
        """A new server-assigned logical id (a UUID, a valid FHIR id)."""
        return str(uuid.uuid4())

    def _of_patient(
        self, patient_id: str, *, is_output: bool, types: Sequence[str] | None
    ) -> list[StoredResource]:
        statement = _current_versions().where(
            ResourceCurrent.patient_id == patient_id,
            ResourceCurrent.is_output == (true() if is_output else false()),
            ResourceCurrent.deleted == false(),
        )
        if types is not None:
            statement = statement.where(ResourceCurrent.resource_type.in_(types))
        statement = statement.order_by(
            ResourceCurrent.resource_type, ResourceCurrent.last_updated, ResourceCurrent.resource_id
        )
        return [_stored(row) for row in self._connection.execute(statement)]

    def _lock_current(self, resource_type: str, resource_id: str) -> _Current | None:
        row = self._connection.execute(
            _LOCK_CURRENT, {"rt": resource_type, "rid": resource_id}
        ).one_or_none()
        return None if row is None else _Current(*row)

    @staticmethod
    def _as_stored(row: JsonObject) -> StoredResource:
        return StoredResource(
            resource_type=row["resource_type"],
            resource_id=row["resource_id"],
            version_id=row["version_id"],
            last_updated=row["last_updated"],
            deleted=row["deleted"],
            patient_id=row["patient_id"],
            status=row["status"],
            is_output=row["is_output"],
            content=row["content"],
        )


class CheckpointRepository:
    """How far each bulk input file has been processed."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @translated
    def position(self, source_key: str) -> int | None:
        """The saved position for `source_key`, or None when the file was never started."""
        position: int | None = self._connection.execute(
            select(IngestCheckpoint.position).where(IngestCheckpoint.source_key == source_key)
        ).scalar_one_or_none()
        return position

    @translated
    def save(self, source_key: str, position: int, *, now: datetime) -> None:
        """Record `position` for `source_key` (insert or move forward)."""
        now = _aware(now)
        if not _insert_if_absent(
            self._connection,
            ingest_checkpoint_table,
            {"source_key": source_key, "position": position, "updated_at": now},
        ):
            self._connection.execute(
                update(ingest_checkpoint_table)
                .where(ingest_checkpoint_table.c.source_key == source_key)
                .values(position=position, updated_at=now)
            )
