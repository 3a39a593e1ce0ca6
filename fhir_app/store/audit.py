"""The audit trail: one row per AuditEvent, in its own table (never changed once written).

The columns are what the AuditEvent search filters on; `content` is the AuditEvent as served.
`patient_id` is the patient the interaction was about, when known: a patient-context client
sees only its patient's events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Index, String, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from fhir_app.store.errors import translated
from fhir_app.store.repository import _LAST_UPDATED_PREFIXES, _aware
from fhir_app.store.schema import ID_LENGTH, TYPE_LENGTH, Base

CLIENT_LENGTH = 255


class AuditRecord(Base):
    """One AuditEvent."""

    __tablename__ = "audit_event"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    recorded: Mapped[datetime]
    # rest subtype: read, vread, history-instance, search-type, create, update, delete, ...
    interaction: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(1))
    outcome: Mapped[str] = mapped_column(String(2))
    client_id: Mapped[str] = mapped_column(String(CLIENT_LENGTH))
    subject: Mapped[str | None] = mapped_column(String(CLIENT_LENGTH))
    entity_type: Mapped[str | None] = mapped_column(String(TYPE_LENGTH))
    patient_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    content: Mapped[dict[str, Any]]

    __table_args__ = (
        Index("ix_audit_event_recorded", "recorded", "id"),
        Index("ix_audit_event_patient", "patient_id", "recorded"),
    )


audit_event_table = AuditRecord.__table__


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One AuditEvent to store, with the columns its search filters on."""

    event_id: str
    recorded: datetime
    interaction: str
    action: str
    outcome: str
    client_id: str
    subject: str | None
    entity_type: str | None
    patient_id: str | None
    content: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of an AuditEvent search; every given one must hold."""

    recorded: Sequence[tuple[str, datetime]] = ()
    agents: Sequence[str] = ()  # client id or token subject, any of them
    entity_types: Sequence[str] = ()
    outcomes: Sequence[str] = ()
    patient_id: str | None = None


class AuditRepository:
    """Appends AuditEvents and searches them."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @translated
    def add_all(self, events: Sequence[AuditRow]) -> None:
        """Store AuditEvents, in one statement."""
        if not events:
            return
        self._connection.execute(
            insert(AuditRecord),
            [
                {
                    "id": e.event_id,
                    "recorded": _aware(e.recorded),
                    "interaction": e.interaction,
                    "action": e.action,
                    "outcome": e.outcome,
                    "client_id": e.client_id[:CLIENT_LENGTH],
                    "subject": e.subject[:CLIENT_LENGTH] if e.subject else None,
                    "entity_type": e.entity_type,
                    "patient_id": e.patient_id,
                    "content": e.content,
                }
                for e in events
            ],
        )

    @translated
    def search(
        self, query: AuditQuery, *, count: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of matching events (oldest first) and the total."""
        conditions = []
        for prefix, moment in query.recorded:
            compare = _LAST_UPDATED_PREFIXES.get(prefix)
            if compare is None:
                raise ValueError(f"unsupported date prefix: {prefix!r}")
            conditions.append(compare(AuditRecord.recorded, _aware(moment)))
        if query.agents:
            agents = list(query.agents)
            conditions.append(AuditRecord.client_id.in_(agents) | AuditRecord.subject.in_(agents))
        if query.entity_types:
            conditions.append(AuditRecord.entity_type.in_(list(query.entity_types)))
        if query.outcomes:
            conditions.append(AuditRecord.outcome.in_(list(query.outcomes)))
        if query.patient_id is not None:
            conditions.append(AuditRecord.patient_id == query.patient_id)
        total = self._connection.execute(
            select(func.count()).select_from(AuditRecord).where(*conditions)
        ).scalar_one()
        if count == 0 or offset >= total:
            return [], total
        rows = self._connection.execute(
            select(AuditRecord.content)
            .where(*conditions)
            .order_by(AuditRecord.recorded, AuditRecord.id)
            .limit(count)
            .offset(offset)
        ).scalars()
        return [dict(row) for row in rows], total

    @translated
    def get(self, event_id: str) -> dict[str, Any] | None:
        """One event with its patient (for the patient-context check), or None."""
        row = self._connection.execute(
            select(AuditRecord.content, AuditRecord.patient_id).where(AuditRecord.id == event_id)
        ).first()
        if row is None:
            return None
        return {"content": dict(row.content), "patient_id": row.patient_id}
