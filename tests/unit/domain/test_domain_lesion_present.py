"""A level known only to have a lesion (a secondary cancer Condition of the level, CONTRACT 3 v2).

"The level appears in the outputs, with every SINS component open that no finding narrows": the
location comes from the level (DOMAIN.md 2), every other component keeps every answer, and adding
the lesion-present finding to other findings changes nothing they decide.
"""

from __future__ import annotations

import pytest
from domain_test_builders import DOC_LEVELS, DOC_POINTS, assess, finding

from fhir_app.domain.findings import Finding, FindingKind
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins_answers import CollapseAnswer, LesionAnswer, PainAnswer, SinsComponent

LESION = finding(FindingKind.LESION_PRESENT, True, source="Condition/bone-met/_history/1")
OPEN_COMPONENTS = [c for c in SinsComponent if c is not SinsComponent.LOCATION]


@pytest.mark.parametrize(("label", "snomed", "region", "location"), DOC_LEVELS)
def test_only_the_location_is_determined(
    label: str, snomed: str, region: str, location: str
) -> None:
    result = assess(VertebralLevel[label], LESION)
    assert result.sins.component(SinsComponent.LOCATION).answer == location
    for component in OPEN_COMPONENTS:
        opened = result.sins.component(component)
        assert opened.answer is None
        assert not opened.known
        assert set(opened.points) == set(DOC_POINTS[component.value].values())
    assert result.sins.total is None
    assert result.classification.appearance.determined is None


@pytest.mark.parametrize(
    "others",
    [
        (finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC, 1),),
        (
            finding(FindingKind.PAIN, PainAnswer.MECHANICAL, 1),
            finding(FindingKind.COLLAPSE, CollapseAnswer.GT_50, 2),
        ),
    ],
)
def test_the_lesion_narrows_nothing_the_other_findings_decide(others: tuple[Finding, ...]) -> None:
    with_lesion = assess(VertebralLevel.L1, LESION, *others)
    without = assess(VertebralLevel.L1, *others)
    assert with_lesion.sins.components == without.sins.components
    assert with_lesion.classification == without.classification
