"""Searches compiled to SQL over the current rows and the index tables.

The store's own vocabulary (`Criterion`, `IndexQuery`), which the service fills from the typed
FHIR query (`fhir_app.fhir.search.SearchQuery`): each criterion is one parameter occurrence whose
values are alternatives (OR); criteria all hold (AND), each an `EXISTS` over its index table so
that several values of one parameter never need to sit in the same index row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import aliased

from fhir_app.store.errors import translated
from fhir_app.store.repository import StoredResource, _current_versions, _stored
from fhir_app.store.schema import (
    ResourceCurrent,
    search_date_table,
    search_reference_table,
    search_string_table,
    search_token_table,
)

IndexKind = Literal["token", "reference", "date", "string", "compartment", "id", "last-updated"]


@dataclass(frozen=True, slots=True)
class Criterion:
    """One condition on one index; its values are alternatives.

    tokens: (system or None for any, code or None for any); references: (allowed target types,
    id); dates: (prefix, low, high) of the searched range; strings: ("start" | "contains" |
    "exact", text). `missing` set: the parameter has no value (True) / has one (False).
    `negated`: none of the values (`:not`).
    """

    index: IndexKind
    param: str
    tokens: tuple[tuple[str | None, str | None], ...] = ()
    references: tuple[tuple[tuple[str, ...], str], ...] = ()
    dates: tuple[tuple[str, datetime, datetime], ...] = ()
    strings: tuple[tuple[str, str], ...] = ()
    ids: tuple[str, ...] = ()
    missing: bool | None = None
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IndexQuery:
    """A search of the current, non-deleted resources of one type."""

    resource_type: str
    criteria: tuple[Criterion, ...] = ()
    # (key, descending): "_lastUpdated" or a date parameter's name.
    sort: tuple[tuple[str, bool], ...] = ()
    count: int = 50
    offset: int = 0
    count_total: bool = True
    # Only this patient's resources (the caller's patient context).
    compartment: str | None = None


# A range [low, high) of a resource against the searched range [p_low, p_high) (search.html#prefix).
_RANGE_PREFIXES: Final[dict[str, Callable[[Any, Any, datetime, datetime], ColumnElement[bool]]]] = {
    "eq": lambda low, high, p_low, p_high: and_(low >= p_low, high <= p_high),
    "ne": lambda low, high, p_low, p_high: or_(low < p_low, high > p_high),
    "gt": lambda low, high, p_low, p_high: high > p_high,
    "lt": lambda low, high, p_low, p_high: low < p_low,
    "ge": lambda low, high, p_low, p_high: high > p_low,
    "le": lambda low, high, p_low, p_high: low < p_high,
    "sa": lambda low, high, p_low, p_high: low >= p_high,
    "eb": lambda low, high, p_low, p_high: high <= p_low,
}
# The same for an instant (lastUpdated): a point t, the range [t, t].
_POINT_PREFIXES: Final[dict[str, Callable[[Any, datetime, datetime], ColumnElement[bool]]]] = {
    "eq": lambda t, p_low, p_high: and_(t >= p_low, t < p_high),
    "ne": lambda t, p_low, p_high: or_(t < p_low, t >= p_high),
    "gt": lambda t, p_low, p_high: t >= p_high,
    "lt": lambda t, p_low, p_high: t < p_low,
    "ge": lambda t, p_low, p_high: t >= p_low,
    "le": lambda t, p_low, p_high: t < p_high,
    "sa": lambda t, p_low, p_high: t >= p_high,
    "eb": lambda t, p_low, p_high: t < p_low,
}
_TABLES: Final[dict[str, Table]] = {
    "token": search_token_table,
    "reference": search_reference_table,
    "date": search_date_table,
    "string": search_string_table,
}


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _value_matches(criterion: Criterion, table: Table) -> list[ColumnElement[bool]]:
    c = table.c
    if criterion.index == "token":
        matches = []
        for system, code in criterion.tokens:
            parts = []
            if code is not None:
                parts.append(c.code == code)
            if system is not None:
                parts.append(c.system == system)
            matches.append(and_(*parts) if parts else true())
        return matches
    if criterion.index == "reference":
        return [
            and_(c.target_type.in_(types), c.target_id == rid) if types else false()
            for types, rid in criterion.references
        ]
    if criterion.index == "date":
        return [
            _RANGE_PREFIXES[prefix](c.low, c.high, low, high)
            for prefix, low, high in criterion.dates
        ]
    matches = []
    for match, text in criterion.strings:
        if match == "exact":
            matches.append(c.exact == text)
        elif match == "contains":
            matches.append(c.value.like(f"%{_like_escaped(text)}%", escape="\\"))
        else:
            matches.append(c.value.like(f"{_like_escaped(text)}%", escape="\\"))
    return matches


def _indexed(criterion: Criterion) -> ColumnElement[bool]:
    table = _TABLES[criterion.index]
    owned = and_(
        table.c.resource_type == ResourceCurrent.resource_type,
        table.c.resource_id == ResourceCurrent.resource_id,
        table.c.param == criterion.param,
    )
    if criterion.missing is not None:
        present = exists().where(owned)
        return not_(present) if criterion.missing else present
    found = exists().where(owned, or_(*_value_matches(criterion, table)))
    return not_(found) if criterion.negated else found


def _column(criterion: Criterion) -> ColumnElement[bool]:
    if criterion.index == "id":
        return ResourceCurrent.resource_id.in_(criterion.ids)
    if criterion.index == "last-updated":
        return or_(
            *(
                _POINT_PREFIXES[prefix](ResourceCurrent.last_updated, low, high)
                for prefix, low, high in criterion.dates
            )
        )
    # compartment: the patient the resource belongs to.
    if criterion.missing is not None:
        column = ResourceCurrent.patient_id
        return column.is_(None) if criterion.missing else column.is_not(None)
    ids = [rid for types, rid in criterion.references if "Patient" in types]
    return ResourceCurrent.patient_id.in_(ids) if ids else false()


def condition(criterion: Criterion) -> ColumnElement[bool]:
    """The SQL condition of one criterion over `resource_current`."""
    if criterion.index in _TABLES:
        return _indexed(criterion)
    return _column(criterion)


def _conditions(query: IndexQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        ResourceCurrent.resource_type == query.resource_type,
        ResourceCurrent.deleted == false(),
    ]
    if query.compartment is not None:
        conditions.append(ResourceCurrent.patient_id == query.compartment)
    conditions.extend(condition(criterion) for criterion in query.criteria)
    return conditions


def _order(query: IndexQuery) -> list[Any]:
    order: list[Any] = []
    for key, descending in query.sort:
        if key == "_lastUpdated":
            column: Any = ResourceCurrent.last_updated
        else:
            table = search_date_table
            # The earliest value of the date parameter; resources without one sort last.
            column = (
                select(func.min(table.c.low))
                .where(
                    table.c.resource_type == ResourceCurrent.resource_type,
                    table.c.resource_id == ResourceCurrent.resource_id,
                    table.c.param == key,
                )
                .scalar_subquery()
            )
        order.append(column.desc().nulls_last() if descending else column.asc().nulls_last())
    return [*order, ResourceCurrent.last_updated, ResourceCurrent.resource_id]


def _chunks(items: Sequence[Any], size: int = 500) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class SearchRepository:
    """Searches of one unit of work."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @translated
    def find(self, query: IndexQuery) -> tuple[list[StoredResource], int | None]:
        """One page of matches and the total (None when not asked for), in the query's order
        then by (lastUpdated, id)."""
        if query.count < 0 or query.offset < 0:
            raise ValueError("count and offset must not be negative")
        conditions = _conditions(query)
        total: int | None = None
        if query.count_total:
            total = self._connection.execute(
                select(func.count()).select_from(ResourceCurrent).where(*conditions)
            ).scalar_one()
        if query.count == 0 or (total is not None and query.offset >= total):
            return [], total
        rows = self._connection.execute(
            _current_versions()
            .where(*conditions)
            .order_by(*_order(query))
            .limit(query.count)
            .offset(query.offset)
        )
        return [_stored(row) for row in rows], total

    @translated
    def referenced(
        self,
        source_type: str,
        source_ids: Sequence[str],
        param: str,
        index: IndexKind,
        target_types: Sequence[str],
        compartment: str | None = None,
    ) -> list[StoredResource]:
        """`_include`: the current resources that `param` of these `source_type` resources
        points to, of `target_types`."""
        found: list[StoredResource] = []
        for batch in _chunks(list(source_ids)):
            if index == "compartment":
                # The sources' own rows, not the outer query's: an alias keeps them apart.
                source = aliased(ResourceCurrent)
                owner = select(source.patient_id).where(
                    source.resource_type == source_type,
                    source.resource_id.in_(batch),
                    source.patient_id.is_not(None),
                )
                match: ColumnElement[bool] = and_(
                    ResourceCurrent.resource_type == "Patient",
                    ResourceCurrent.resource_id.in_(owner),
                )
            else:
                r = search_reference_table.c
                match = exists().where(
                    r.resource_type == source_type,
                    r.resource_id.in_(batch),
                    r.param == param,
                    r.target_type == ResourceCurrent.resource_type,
                    r.target_id == ResourceCurrent.resource_id,
                )
            found.extend(self._current(match, target_types, compartment))
        return found

    @translated
    def referring(
        self,
        source_type: str,
        param: str,
        index: IndexKind,
        targets: Sequence[tuple[str, str]],
        compartment: str | None = None,
    ) -> list[StoredResource]:
        """`_revinclude`: the current `source_type` resources whose `param` points to any of
        the (type, id) `targets`."""
        by_type: dict[str, list[str]] = defaultdict(list)
        for rtype, rid in targets:
            by_type[rtype].append(rid)
        found: list[StoredResource] = []
        for rtype, ids in by_type.items():
            for batch in _chunks(ids):
                if index == "compartment":
                    if rtype != "Patient":
                        continue
                    match: ColumnElement[bool] = ResourceCurrent.patient_id.in_(batch)
                else:
                    r = search_reference_table.c
                    match = exists().where(
                        r.resource_type == ResourceCurrent.resource_type,
                        r.resource_id == ResourceCurrent.resource_id,
                        r.param == param,
                        r.target_type == rtype,
                        r.target_id.in_(batch),
                    )
                found.extend(self._current(match, (source_type,), compartment))
        return found

    def _current(
        self, match: ColumnElement[bool], types: Sequence[str], compartment: str | None
    ) -> list[StoredResource]:
        conditions = [
            ResourceCurrent.resource_type.in_(list(types)),
            ResourceCurrent.deleted == false(),
            match,
        ]
        if compartment is not None:
            conditions.append(ResourceCurrent.patient_id == compartment)
        rows = self._connection.execute(
            _current_versions()
            .where(*conditions)
            .order_by(
                ResourceCurrent.resource_type,
                ResourceCurrent.last_updated,
                ResourceCurrent.resource_id,
            )
        )
        return [_stored(row) for row in rows]
