"""Search of current resources: patient, tokens, _lastUpdated, output flag, paging and total."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_app.store import Token, UnitOfWork

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SINS = "https://fhir-app.org/fhir/CodeSystem/sins"
FINDING = "https://fhir-app.org/fhir/CodeSystem/spine-finding"


def store(
    uow: UnitOfWork,
    resource_id: str,
    *,
    patient: str | None = "p1",
    minutes: int = 0,
    tokens: tuple[Token, ...] = (),
    is_output: bool = False,
    resource_type: str = "Observation",
    value: int = 0,
) -> None:
    """Write one resource `minutes` after T0."""
    content: dict[str, Any] = {"resourceType": resource_type, "status": "final", "note": value}
    uow.resources.write(
        resource_type,
        resource_id,
        content,
        patient_id=patient,
        status="final",
        is_output=is_output,
        tokens=tokens,
        now=T0 + timedelta(minutes=minutes),
    )


def ids(found: tuple[list[Any], int]) -> tuple[list[str], int]:
    resources, total = found
    return [r.resource_id for r in resources], total


@pytest.fixture
def filled(make_uow: Callable[[], UnitOfWork]) -> Callable[[], UnitOfWork]:
    """Five Observations of two patients, one deleted, one output, and an ImagingStudy."""
    with make_uow() as uow:
        store(uow, "a", minutes=1, tokens=(("code", SINS, "sins-total"),))
        store(uow, "b", minutes=2, tokens=(("code", FINDING, "pain-character"),))
        store(
            uow,
            "c",
            patient="p2",
            minutes=3,
            tokens=(("code", SINS, "sins-total"), ("identifier", "urn:ids", "c-1")),
        )
        store(uow, "d", minutes=4, tokens=(("code", None, "local-code"),))
        store(uow, "e", minutes=5, tokens=(("code", SINS, "sins-total"),), is_output=True)
        store(uow, "gone", minutes=6, tokens=(("code", SINS, "sins-total"),))
        uow.resources.delete("Observation", "gone", now=T0 + timedelta(minutes=7))
        store(uow, "study", minutes=8, resource_type="ImagingStudy")
        uow.commit()
    return make_uow


def test_all_current_of_a_type_in_last_updated_order(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        found = uow.resources.search("Observation", count=50, offset=0)
    assert ids(found) == (["a", "b", "c", "d", "e"], 5)


def test_by_patient(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        assert ids(uow.resources.search("Observation", patient_id="p2", count=50, offset=0)) == (
            ["c"],
            1,
        )
        assert ids(uow.resources.search("Observation", patient_id="p9", count=50, offset=0)) == (
            [],
            0,
        )


def test_by_code_with_and_without_system(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        search = uow.resources.search
        assert ids(search("Observation", tokens=[("code", SINS, "sins-total")], count=9, offset=0))[
            0
        ] == ["a", "c", "e"]
        assert ids(search("Observation", tokens=[("code", None, "sins-total")], count=9, offset=0))[
            0
        ] == ["a", "c", "e"]
        assert (
            ids(search("Observation", tokens=[("code", FINDING, "sins-total")], count=9, offset=0))[
                0
            ]
            == []
        )
        # "" is a coding without a system (`code=|local-code`).
        assert ids(search("Observation", tokens=[("code", "", "local-code")], count=9, offset=0))[
            0
        ] == ["d"]
        assert (
            ids(search("Observation", tokens=[("code", SINS, "local-code")], count=9, offset=0))[0]
            == []
        )


def test_tokens_or_within_a_param_and_across_params(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        either = uow.resources.search(
            "Observation",
            tokens=[("code", SINS, "sins-total"), ("code", FINDING, "pain-character")],
            count=9,
            offset=0,
        )
        both = uow.resources.search(
            "Observation",
            tokens=[("code", SINS, "sins-total"), ("identifier", "urn:ids", "c-1")],
            count=9,
            offset=0,
        )
    assert ids(either) == (["a", "b", "c", "e"], 4)
    assert ids(both) == (["c"], 1)


def test_by_output_flag(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        outputs = uow.resources.search("Observation", is_output=True, count=9, offset=0)
        inputs = uow.resources.search("Observation", is_output=False, count=9, offset=0)
    assert ids(outputs) == (["e"], 1)
    assert ids(inputs) == (["a", "b", "c", "d"], 4)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ((("eq", T0 + timedelta(minutes=2)),), ["b"]),
        ((("ne", T0 + timedelta(minutes=2)),), ["a", "c", "d", "e"]),
        ((("gt", T0 + timedelta(minutes=3)),), ["d", "e"]),
        ((("ge", T0 + timedelta(minutes=3)),), ["c", "d", "e"]),
        ((("lt", T0 + timedelta(minutes=2)),), ["a"]),
        ((("le", T0 + timedelta(minutes=2)),), ["a", "b"]),
        ((("ge", T0 + timedelta(minutes=2)), ("lt", T0 + timedelta(minutes=4))), ["b", "c"]),
    ],
    ids=["eq", "ne", "gt", "ge", "lt", "le", "range"],
)
def test_by_last_updated(
    filled: Callable[[], UnitOfWork],
    criteria: tuple[tuple[str, datetime], ...],
    expected: list[str],
) -> None:
    with filled() as uow:
        found = uow.resources.search("Observation", last_updated=criteria, count=9, offset=0)
    assert ids(found) == (expected, len(expected))


def test_unknown_prefix_is_refused(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow, pytest.raises(ValueError, match="prefix"):
        uow.resources.search("Observation", last_updated=[("sa", T0)], count=9, offset=0)


def test_pages_and_total(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        pages = [
            ids(uow.resources.search("Observation", count=2, offset=offset))
            for offset in (0, 2, 4, 6)
        ]
        only_total = uow.resources.search("Observation", count=0, offset=0)
    assert pages == [(["a", "b"], 5), (["c", "d"], 5), (["e"], 5), ([], 5)]
    assert only_total == ([], 5)


def test_same_instant_pages_by_id(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        for resource_id in ("z", "m", "a", "q"):
            store(uow, resource_id)
        uow.commit()
    with make_uow() as uow:
        first = ids(uow.resources.search("Observation", count=2, offset=0))
        second = ids(uow.resources.search("Observation", count=2, offset=2))
    assert (first, second) == ((["a", "m"], 4), (["q", "z"], 4))


def test_negative_paging_is_refused(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow, pytest.raises(ValueError, match="negative"):
        uow.resources.search("Observation", count=-1, offset=0)


def test_tokens_follow_the_current_version(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        store(uow, "a", tokens=(("code", SINS, "pain"),), value=1)
        store(uow, "a", tokens=(("code", SINS, "collapse"),), value=2)
        uow.commit()
    with make_uow() as uow:
        old = uow.resources.search(
            "Observation", tokens=[("code", SINS, "pain")], count=9, offset=0
        )
        new = uow.resources.search(
            "Observation", tokens=[("code", SINS, "collapse")], count=9, offset=0
        )
        uow.resources.delete("Observation", "a", now=T0 + timedelta(hours=1))
        after_delete = uow.resources.search(
            "Observation", tokens=[("code", SINS, "collapse")], count=9, offset=0
        )
    assert ids(old) == ([], 0)
    assert ids(new) == (["a"], 1)
    assert ids(after_delete) == ([], 0)


def test_duplicate_tokens_collapse(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        store(uow, "a", tokens=(("code", SINS, "pain"), ("code", SINS, "pain")))
        found = uow.resources.search(
            "Observation", tokens=[("code", SINS, "pain")], count=9, offset=0
        )
    assert ids(found) == (["a"], 1)


def test_inputs_and_outputs_of_patient(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        store(uow, "report", is_output=True, resource_type="DiagnosticReport", minutes=9)
        inputs = uow.resources.inputs_of_patient("p1")
        outputs = uow.resources.outputs_of_patient("p1")
        nobody = uow.resources.inputs_of_patient("p9")
    assert [(r.resource_type, r.resource_id) for r in inputs] == [
        ("ImagingStudy", "study"),
        ("Observation", "a"),
        ("Observation", "b"),
        ("Observation", "d"),
    ]
    assert [(r.resource_type, r.resource_id) for r in outputs] == [
        ("DiagnosticReport", "report"),
        ("Observation", "e"),
    ]
    assert nobody == []


def test_patients_changed_since(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        assert uow.resources.patients_changed_since(T0) == ["p1", "p2"]
        assert uow.resources.patients_changed_since(T0 + timedelta(minutes=3)) == ["p1"]
        assert uow.resources.patients_changed_since(T0 + timedelta(minutes=8)) == []
