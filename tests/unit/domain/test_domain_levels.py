"""Vertebral levels: one row per level of CONTRACT.md 2a and DOMAIN.md section 2."""

from __future__ import annotations

import pytest
from domain_test_builders import DOC_LEVELS, DOC_POINTS, assess

from fhir_app.domain.levels import (
    LEVEL_BY_LABEL,
    LEVEL_BY_SNOMED,
    OUTSIDE_SINS_SNOMED,
    VertebralLevel,
)
from fhir_app.domain.sins_answers import SinsComponent


@pytest.mark.parametrize(("label", "snomed", "region", "location"), DOC_LEVELS)
def test_level_has_documented_snomed_region_and_location(
    label: str, snomed: str, region: str, location: str
) -> None:
    level = LEVEL_BY_LABEL[label]
    assert level.label == label
    assert level.snomed == snomed
    assert level.region.value == region
    assert level.location.value == location
    assert LEVEL_BY_SNOMED[snomed] is level


@pytest.mark.parametrize(("label", "snomed", "region", "location"), DOC_LEVELS)
def test_level_scores_its_location_points(
    label: str, snomed: str, region: str, location: str
) -> None:
    component = assess(LEVEL_BY_LABEL[label]).sins.component(SinsComponent.LOCATION)
    assert component.answer is not None
    assert component.answer.value == location
    assert component.points == (DOC_POINTS["location"][location],)
    assert component.known
    assert label in component.explanation


def test_levels_are_exactly_the_29_documented_in_cranio_caudal_order() -> None:
    assert [level.label for level in VertebralLevel] == [row[0] for row in DOC_LEVELS]
    assert [level.order for level in VertebralLevel] == list(range(29))
    assert len(LEVEL_BY_SNOMED) == 29


def test_coccyx_and_occiput_are_outside_sins() -> None:
    assert "64688005" not in LEVEL_BY_SNOMED
    assert OUTSIDE_SINS_SNOMED["64688005"] == "coccyx"
    assert "occiput" in OUTSIDE_SINS_SNOMED.values()
    assert not set(OUTSIDE_SINS_SNOMED) & set(LEVEL_BY_SNOMED)
