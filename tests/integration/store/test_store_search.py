"""Search of current resources in the store: compartment, index criteria, _lastUpdated, paging,
total, includes (fhir_app.store.search.query)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_app.fhir.search import IndexRows
from fhir_app.store import UnitOfWork
from fhir_app.store.search.query import Criterion, IndexQuery

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SINS = "https://fhir-app.org/fhir/CodeSystem/sins"
FINDING = "https://fhir-app.org/fhir/CodeSystem/spine-finding"
Tokens = tuple[tuple[str, str, str], ...]


def store(
    uow: UnitOfWork,
    resource_id: str,
    *,
    patient: str | None = "p1",
    minutes: int = 0,
    tokens: Tokens = (),
    references: Tokens = (),
    is_output: bool = False,
    resource_type: str = "Observation",
    value: int = 0,
) -> None:
    """Write one resource `minutes` after T0 with these index rows."""
    content: dict[str, Any] = {"resourceType": resource_type, "status": "final", "note": value}
    uow.resources.write(
        resource_type,
        resource_id,
        content,
        patient_id=patient,
        status="final",
        is_output=is_output,
        index=IndexRows(tokens=tokens, references=references),
        now=T0 + timedelta(minutes=minutes),
    )


def ids(found: tuple[list[Any], int | None]) -> tuple[list[str], int | None]:
    resources, total = found
    return [r.resource_id for r in resources], total


def find(uow: UnitOfWork, *criteria: Criterion, rtype: str = "Observation", **kw: Any) -> Any:
    return ids(uow.search.find(IndexQuery(rtype, criteria, **{"count": 50, **kw})))


def code(*values: tuple[str | None, str | None], negated: bool = False) -> Criterion:
    return Criterion("token", "code", tokens=values, negated=negated)


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
        store(uow, "d", minutes=4, tokens=(("code", "", "local-code"),))
        store(uow, "e", minutes=5, tokens=(("code", SINS, "sins-total"),), is_output=True)
        store(uow, "gone", minutes=6, tokens=(("code", SINS, "sins-total"),))
        uow.resources.delete("Observation", "gone", now=T0 + timedelta(minutes=7))
        store(uow, "study", minutes=8, resource_type="ImagingStudy")
        uow.commit()
    return make_uow


def test_all_current_of_a_type_in_last_updated_order(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        assert find(uow) == (["a", "b", "c", "d", "e"], 5)


def test_by_compartment_and_patient_criterion(filled: Callable[[], UnitOfWork]) -> None:
    patient = Criterion("compartment", "patient", references=((("Patient",), "p2"),))
    group = Criterion("compartment", "patient", references=((("Group",), "p2"),))
    with filled() as uow:
        assert find(uow, compartment="p2") == (["c"], 1)
        assert find(uow, compartment="p9") == ([], 0)
        assert find(uow, patient) == (["c"], 1)
        assert find(uow, group) == ([], 0)
        assert find(uow, Criterion("compartment", "patient", missing=True)) == ([], 0)


def test_by_code_with_and_without_system(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        assert find(uow, code((SINS, "sins-total")))[0] == ["a", "c", "e"]
        assert find(uow, code((None, "sins-total")))[0] == ["a", "c", "e"]
        assert find(uow, code((FINDING, "sins-total")))[0] == []
        # "" is a coding without a system (`code=|local-code`).
        assert find(uow, code(("", "local-code")))[0] == ["d"]
        assert find(uow, code((SINS, "local-code")))[0] == []
        # `system|`: any code of the system.
        assert find(uow, code((FINDING, None)))[0] == ["b"]
        assert find(uow, code((SINS, "sins-total"), negated=True))[0] == ["b", "d"]


def test_tokens_or_within_a_criterion_and_across_criteria(
    filled: Callable[[], UnitOfWork],
) -> None:
    identifier = Criterion("token", "identifier", tokens=(("urn:ids", "c-1"),))
    with filled() as uow:
        either = find(uow, code((SINS, "sins-total"), (FINDING, "pain-character")))
        both = find(uow, code((SINS, "sins-total")), identifier)
        # The same parameter twice (AND): no resource has both codes.
        twice = find(uow, code((SINS, "sins-total")), code((FINDING, "pain-character")))
    assert either == (["a", "b", "c", "e"], 4)
    assert both == (["c"], 1)
    assert twice == ([], 0)


def _at(minutes: int) -> tuple[datetime, datetime]:
    # A search value of second precision: [t, t + 1 s).
    moment = T0 + timedelta(minutes=minutes)
    return moment, moment + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ((("eq", *_at(2)),), ["b"]),
        ((("ne", *_at(2)),), ["a", "c", "d", "e"]),
        ((("gt", *_at(3)),), ["d", "e"]),
        ((("ge", *_at(3)),), ["c", "d", "e"]),
        ((("lt", *_at(2)),), ["a"]),
        ((("le", *_at(2)),), ["a", "b"]),
        ((("sa", *_at(3)),), ["d", "e"]),
        ((("eb", *_at(2)),), ["a"]),
    ],
    ids=["eq", "ne", "gt", "ge", "lt", "le", "sa", "eb"],
)
def test_by_last_updated(
    filled: Callable[[], UnitOfWork],
    criteria: tuple[tuple[str, datetime, datetime], ...],
    expected: list[str],
) -> None:
    with filled() as uow:
        found = find(uow, Criterion("last-updated", "_lastUpdated", dates=criteria))
    assert found == (expected, len(expected))


def test_last_updated_range_is_two_criteria(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        found = find(
            uow,
            Criterion("last-updated", "_lastUpdated", dates=(("ge", *_at(2)),)),
            Criterion("last-updated", "_lastUpdated", dates=(("lt", *_at(4)),)),
        )
    assert found == (["b", "c"], 2)


def test_pages_and_total(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        pages = [find(uow, count=2, offset=offset) for offset in (0, 2, 4, 6)]
        only_total = find(uow, count=0)
        no_total = find(uow, count=2, count_total=False)
    assert pages == [(["a", "b"], 5), (["c", "d"], 5), (["e"], 5), ([], 5)]
    assert only_total == ([], 5)
    assert no_total == (["a", "b"], None)


def test_sort_by_last_updated_descending(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow:
        assert find(uow, sort=(("_lastUpdated", True),)) == (["e", "d", "c", "b", "a"], 5)


def test_same_instant_pages_by_id(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        for resource_id in ("z", "m", "a", "q"):
            store(uow, resource_id)
        uow.commit()
    with make_uow() as uow:
        first = find(uow, count=2, offset=0)
        second = find(uow, count=2, offset=2)
    assert (first, second) == ((["a", "m"], 4), (["q", "z"], 4))


def test_negative_paging_is_refused(filled: Callable[[], UnitOfWork]) -> None:
    with filled() as uow, pytest.raises(ValueError, match="negative"):
        uow.search.find(IndexQuery("Observation", count=-1))


def test_index_follows_the_current_version(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        store(uow, "a", tokens=(("code", SINS, "pain"),), value=1)
        store(uow, "a", tokens=(("code", SINS, "collapse"),), value=2)
        uow.commit()
    with make_uow() as uow:
        old = find(uow, code((SINS, "pain")))
        new = find(uow, code((SINS, "collapse")))
        uow.resources.delete("Observation", "a", now=T0 + timedelta(hours=1))
        after_delete = find(uow, code((SINS, "collapse")))
    assert old == ([], 0)
    assert new == (["a"], 1)
    assert after_delete == ([], 0)


def test_duplicate_tokens_collapse(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        store(uow, "a", tokens=(("code", SINS, "pain"), ("code", SINS, "pain")))
        assert find(uow, code((SINS, "pain"))) == (["a"], 1)


def test_includes_and_revincludes(make_uow: Callable[[], UnitOfWork]) -> None:
    with make_uow() as uow:
        store(uow, "o1", minutes=1)
        store(uow, "o2", minutes=2, patient="p2")
        store(
            uow,
            "r1",
            minutes=3,
            resource_type="DiagnosticReport",
            references=(("result", "Observation", "o1"), ("result", "Observation", "o2")),
        )
        uow.commit()
    with make_uow() as uow:
        results = uow.search.referenced(
            "DiagnosticReport", ["r1"], "result", "reference", ("Observation",)
        )
        own = uow.search.referenced(
            "DiagnosticReport", ["r1"], "result", "reference", ("Observation",), "p1"
        )
        reports = uow.search.referring(
            "DiagnosticReport", "result", "reference", [("Observation", "o2")]
        )
        none = uow.search.referring(
            "DiagnosticReport", "result", "reference", [("Observation", "o9")]
        )
    assert [r.resource_id for r in results] == ["o1", "o2"]
    assert [r.resource_id for r in own] == ["o1"]
    assert [r.resource_id for r in reports] == ["r1"]
    assert none == []


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
