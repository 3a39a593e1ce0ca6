"""Writing, versioning, deleting and reading resources, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from fhir_app.store import StoredResource, UnitOfWork

T0 = datetime(2024, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)


def observation(value: int = 40, **extra: Any) -> dict[str, Any]:
    """A small input Observation (height loss) of patient p1."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:test", "code": "height-loss"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": value, "unit": "%"},
        **extra,
    }


def put(
    make_uow: Callable[[], UnitOfWork],
    content: dict[str, Any],
    *,
    resource_id: str = "obs-1",
    now: datetime = T0,
    raw: str | None = None,
) -> tuple[StoredResource, bool]:
    with make_uow() as uow:
        result = uow.resources.write(
            "Observation",
            resource_id,
            content,
            patient_id="p1",
            status=content.get("status"),
            is_output=False,
            raw=raw,
            now=now,
        )
        uow.commit()
    return result


def test_first_write_is_version_1_with_server_meta(make_uow: Callable[[], UnitOfWork]) -> None:
    stored, created = put(make_uow, observation(), raw='{"resourceType": "Observation"}')

    assert created
    assert (stored.version_id, stored.deleted, stored.patient_id, stored.status) == (
        1,
        False,
        "p1",
        "final",
    )
    assert stored.reference == "Observation/obs-1/_history/1"
    assert stored.content["id"] == "obs-1"
    assert stored.content["meta"] == {
        "versionId": "1",
        "lastUpdated": "2024-03-01T08:30:00.123456Z",
    }
    with make_uow() as uow:
        read = uow.resources.current("Observation", "obs-1")
    assert read == stored
    assert list(read.content)[:3] == ["resourceType", "id", "meta"]
    assert read.last_updated == T0
    assert read.last_updated.tzinfo is not None


def test_identical_resend_makes_no_new_version(make_uow: Callable[[], UnitOfWork]) -> None:
    first, _ = put(make_uow, observation())
    # The client echoes the server's meta and id: still the same resource.
    resend = {**first.content}
    again, created = put(make_uow, resend, now=T0 + timedelta(minutes=5))

    assert not created
    assert again == first
    with make_uow() as uow:
        assert len(uow.resources.history("Observation", "obs-1")) == 1


def test_changed_content_is_the_next_version(make_uow: Callable[[], UnitOfWork]) -> None:
    put(make_uow, observation(40))
    second, created = put(make_uow, observation(60), now=T0 + timedelta(hours=1))

    assert created
    assert second.version_id == 2
    assert second.content["valueQuantity"]["value"] == 60
    assert second.content["meta"]["versionId"] == "2"
    with make_uow() as uow:
        first = uow.resources.version("Observation", "obs-1", 1)
        assert first is not None
        assert first.content["valueQuantity"]["value"] == 40
        assert uow.resources.version("Observation", "obs-1", 3) is None
        assert uow.resources.current("Observation", "obs-1") == second


def test_a_changed_profile_is_a_change(make_uow: Callable[[], UnitOfWork]) -> None:
    put(make_uow, observation())
    stored, created = put(make_uow, observation(meta={"profile": ["urn:profile"]}))

    assert created
    assert stored.content["meta"]["profile"] == ["urn:profile"]


def test_raw_text_is_kept_per_version(make_uow: Callable[[], UnitOfWork], engine: Any) -> None:
    put(make_uow, observation(40), raw='{"value": 40.50}')
    put(make_uow, observation(60), raw='{"value": 60.0}')
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT version_id, raw FROM resource_version ORDER BY version_id"
        ).all()
    assert [tuple(row) for row in rows] == [(1, '{"value": 40.50}'), (2, '{"value": 60.0}')]


def test_versions_never_go_back_in_time(make_uow: Callable[[], UnitOfWork]) -> None:
    put(make_uow, observation(40))
    later, _ = put(make_uow, observation(60), now=T0 - timedelta(days=1))

    assert later.last_updated == T0


def test_other_time_zones_are_stored_as_utc(make_uow: Callable[[], UnitOfWork]) -> None:
    plus_two = timezone(timedelta(hours=2))
    put(make_uow, observation(), now=datetime(2024, 3, 1, 10, 30, tzinfo=plus_two))
    with make_uow() as uow:
        current = uow.resources.current("Observation", "obs-1")
    assert current is not None
    assert current.last_updated == datetime(2024, 3, 1, 8, 30, tzinfo=UTC)
    assert current.last_updated.utcoffset() == timedelta(0)
    assert current.content["meta"]["lastUpdated"] == "2024-03-01T08:30:00.000000Z"


def test_naive_timestamps_are_refused(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow, pytest.raises(ValueError, match="naive"):
        uow.resources.write(
            "Observation",
            "obs-1",
            observation(),
            patient_id="p1",
            status="final",
            is_output=False,
            now=datetime(2024, 3, 1, 8, 30),  # naive: the point of the test
        )


def test_delete_records_a_deleted_version(make_uow: Callable[[], UnitOfWork]) -> None:
    put(make_uow, observation())
    with make_uow() as uow:
        deleted = uow.resources.delete("Observation", "obs-1", now=T0 + timedelta(hours=1))
        uow.commit()

    assert deleted is not None
    assert (deleted.version_id, deleted.deleted, deleted.patient_id) == (2, True, "p1")
    assert deleted.content == {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"versionId": "2", "lastUpdated": "2024-03-01T09:30:00.123456Z"},
    }
    with make_uow() as uow:
        current = uow.resources.current("Observation", "obs-1")
        again = uow.resources.delete("Observation", "obs-1", now=T0 + timedelta(hours=2))
        absent = uow.resources.delete("Observation", "never", now=T0)
    assert current == deleted
    assert again is None
    assert absent is None


def test_writing_after_delete_starts_a_new_version(make_uow: Callable[[], UnitOfWork]) -> None:
    put(make_uow, observation())
    with make_uow() as uow:
        uow.resources.delete("Observation", "obs-1", now=T0)
        uow.commit()
    # Same content as before the deletion: it is a re-creation, not a resend.
    revived, created = put(make_uow, observation())

    assert created
    assert (revived.version_id, revived.deleted) == (3, False)


def test_history_is_newest_first_with_deletions(make_uow: Callable[[], UnitOfWork]) -> None:
    put(make_uow, observation(10))
    put(make_uow, observation(20), now=T0 + timedelta(minutes=1))
    with make_uow() as uow:
        uow.resources.delete("Observation", "obs-1", now=T0 + timedelta(minutes=2))
        uow.commit()
    with make_uow() as uow:
        history = uow.resources.history("Observation", "obs-1")
        unknown = uow.resources.history("Observation", "never")

    assert [(s.version_id, s.deleted) for s in history] == [(3, True), (2, False), (1, False)]
    assert unknown == []


def test_unknown_resource_reads_none(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        assert uow.resources.current("Observation", "never") is None
        assert uow.resources.version("Observation", "never", 1) is None


def test_same_id_of_another_type_is_another_resource(make_uow: Callable[[], UnitOfWork]) -> None:
    put(make_uow, observation())
    with make_uow() as uow:
        study, created = uow.resources.write(
            "ImagingStudy",
            "obs-1",
            {"resourceType": "ImagingStudy", "status": "available"},
            patient_id="p1",
            status="available",
            is_output=False,
            now=T0,
        )
        uow.commit()
    assert created
    assert study.version_id == 1


def test_leaving_without_commit_rolls_back(make_uow: Callable[[], UnitOfWork]) -> None:
    put(make_uow, observation(10))
    with make_uow() as uow:
        uow.resources.write(
            "Observation",
            "obs-1",
            observation(20),
            patient_id="p1",
            status="final",
            is_output=False,
            now=T0,
        )
        uow.resources.write(
            "Observation",
            "obs-2",
            observation(30),
            patient_id="p1",
            status="final",
            is_output=False,
            now=T0,
        )
        uow.resources.claim_conditional("Observation", "identifier=x", "obs-2")
    with make_uow() as uow:
        current = uow.resources.current("Observation", "obs-1")
        assert current is not None
        assert current.version_id == 1
        assert uow.resources.current("Observation", "obs-2") is None
        assert uow.resources.claim_conditional("Observation", "identifier=x", "obs-3") == "obs-3"


def test_an_exception_rolls_back(make_uow: Callable[[], UnitOfWork]) -> None:
    def fail_half_way() -> None:
        with make_uow() as uow:
            uow.resources.write(
                "Observation",
                "obs-1",
                observation(),
                patient_id="p1",
                status="final",
                is_output=False,
                now=T0,
            )
            raise RuntimeError("the service failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        fail_half_way()
    with make_uow() as uow:
        assert uow.resources.current("Observation", "obs-1") is None


def test_explicit_rollback_then_more_work(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        uow.resources.write(
            "Observation",
            "a",
            observation(),
            patient_id="p1",
            status="final",
            is_output=False,
            now=T0,
        )
        uow.rollback()
        uow.resources.write(
            "Observation",
            "b",
            observation(),
            patient_id="p1",
            status="final",
            is_output=False,
            now=T0,
        )
        uow.commit()
    with make_uow() as uow:
        assert uow.resources.current("Observation", "a") is None
        assert uow.resources.current("Observation", "b") is not None


def test_commit_outside_with_is_an_error() -> None:
    from fhir_app.store import make_engine, uow_factory

    engine = make_engine("sqlite://")
    try:
        with pytest.raises(RuntimeError, match="not open"):
            uow_factory(engine)().commit()
    finally:
        engine.dispose()


def test_claim_returns_the_first_owner(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        first = uow.resources.claim_conditional("Observation", "identifier=urn|1", "a")
        second = uow.resources.claim_conditional("Observation", "identifier=urn|1", "b")
        other_type = uow.resources.claim_conditional("ImagingStudy", "identifier=urn|1", "c")
        long_criteria = "identifier=" + "x" * 5000
        long_owner = uow.resources.claim_conditional("Observation", long_criteria, "d")
        uow.commit()
    with make_uow() as uow:
        later = uow.resources.claim_conditional("Observation", "identifier=urn|1", "e")

    assert (first, second, other_type, long_owner, later) == ("a", "a", "c", "d", "a")


def test_next_id_is_a_new_valid_fhir_id(make_uow: Callable[[], UnitOfWork]) -> None:
    import re

    with make_uow() as uow:
        ids = {uow.resources.next_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", new_id) for new_id in ids)


def test_checkpoints_save_and_move_forward(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        assert uow.checkpoints.position("file-a") is None
        uow.checkpoints.save("file-a", 100, now=T0)
        uow.commit()
    with make_uow() as uow:
        assert uow.checkpoints.position("file-a") == 100
        uow.checkpoints.save("file-a", 250, now=T0 + timedelta(seconds=5))
        uow.commit()
    with make_uow() as uow:
        assert uow.checkpoints.position("file-a") == 250
        assert uow.checkpoints.position("file-b") is None
