"""Differential tests: the schema gate refuses at least everything fhir.resources refuses, and
the rules of R4 JSON that fhir.resources lets through (CONTRACT 3b).

Each mutation kind is one test, its id carrying the corpus size (`[null-1234]`); the summary
test prints the table the README quotes (pytest -s).
"""

from __future__ import annotations

import collections
from functools import cache

import pytest
from validation_corpus import ALWAYS_INVALID, Mutation, mutations, seeds

from fhir_app.fhir.inputs import InputRejected, JsonObject
from fhir_app.fhir.validation.models import model_issues
from fhir_app.fhir.validation.resource import validate_resource


def new_refuses(resource: JsonObject) -> bool:
    try:
        validate_resource(resource)
    except InputRejected:
        return True
    return False


def old_refuses(resource: JsonObject) -> bool:
    return bool(model_issues(resource["resourceType"], resource))


@cache
def corpus() -> dict[str, list[Mutation]]:
    by_kind: dict[str, list[Mutation]] = collections.defaultdict(list)
    for mutation in mutations():
        by_kind[mutation.kind].append(mutation)
    return dict(by_kind)


@cache
def verdicts(kind: str) -> list[tuple[Mutation, bool, bool]]:
    return [(m, old_refuses(m.resource), new_refuses(m.resource)) for m in corpus()[kind]]


KINDS = sorted(corpus())


@pytest.mark.parametrize("name", sorted(seeds()))
def test_every_seed_is_valid_for_both(name: str) -> None:
    seed = seeds()[name]
    assert not old_refuses(seed)
    assert not new_refuses(seed)


@pytest.mark.parametrize("kind", KINDS, ids=[f"{k}-{len(corpus()[k])}" for k in KINDS])
def test_new_refuses_everything_fhir_resources_refuses(kind: str) -> None:
    missed = [f"{m.seed} {m.where}" for m, old, new in verdicts(kind) if old and not new]
    assert not missed, missed[:20]


@pytest.mark.parametrize(
    "kind",
    sorted(ALWAYS_INVALID & set(KINDS)),
    ids=[f"{k}-{len(corpus()[k])}" for k in sorted(ALWAYS_INVALID & set(KINDS))],
)
def test_new_refuses_every_mutation_r4_forbids(kind: str) -> None:
    accepted = [f"{m.seed} {m.where}" for m, _, new in verdicts(kind) if not new]
    assert not accepted, accepted[:20]


def test_the_corpus_holds_what_fhir_resources_lets_through() -> None:
    """The reason for the gate: R4 rules fhir.resources does not check, refused by the new one."""
    let_through = collections.Counter(
        kind
        for kind in ALWAYS_INVALID & set(KINDS)
        for _, old, new in verdicts(kind)
        if new and not old
    )
    for kind in ("null", "empty", "wrong-type", "long-string", "bad-code"):
        assert let_through[kind] > 0, kind


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    for kind in KINDS:
        found = verdicts(kind)
        rows.append(
            (
                kind,
                len(found),
                sum(old for _, old, _ in found),
                sum(new for _, _, new in found),
                sum(new and not old for _, old, new in found),
                sum(old and not new for _, old, new in found),
            )
        )
    total = [sum(r[i] for r in rows) for i in range(1, 6)]
    widths = (10, 10, 8, 10, 10)
    header = ("mutations", "fhir.res", "new", "new only", "old only")
    with capsys.disabled():
        print(
            "\n"
            + f"{'kind':<20}"
            + "".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True))
        )
        for kind, *counts in [*rows, ("total", *total)]:
            cells = "".join(f"{c:>{w}}" for c, w in zip(counts, widths, strict=True))
            print(f"{kind:<20}{cells}")
    assert total[4] == 0
