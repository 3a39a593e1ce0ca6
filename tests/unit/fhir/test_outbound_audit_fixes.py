"""The clinical audit's findings in the FHIR outputs, through the stateless assess (CONTRACT 4)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from fhir_app.fhir import codes, samples
from fhir_app.service import assess

WHEN = "2025-05-02T12:00:00Z"


def run(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = assess((f"entry[{i}]", r) for i, r in enumerate(resources))
    assert not result.rejections
    return result.outputs


def obs(rid: str, kind: str, value: Any, level: str = "L5", **kw: Any) -> dict[str, Any]:
    return samples.observation(rid, "p1", kind, value, level=level, effective=WHEN, **kw)


def one(outputs: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    [found] = [r for r in outputs if r["id"].startswith(prefix)]
    return found


def component(resource: dict[str, Any], code: str) -> dict[str, Any]:
    [found] = [c for c in resource["component"] if c["code"]["coding"][0]["code"] == code]
    return found


REST = [
    ("o2", "appearance", "lytic"),
    ("o3", "alignment", "normal-alignment"),
    ("o4", "height_loss", 0),
    ("o5", "involvement", 10),
    ("o6", "posterior", "none"),
]


@pytest.mark.parametrize("ids", [("tx-pain-1", "tx-pain-2"), ("tx-pain-2", "tx-pain-1")])
def test_same_time_pain_tie_is_a_discordant_range_whatever_the_ids(ids: tuple[str, str]) -> None:
    outputs = run(
        [
            obs(ids[0], "pain", "mechanical"),
            obs(ids[1], "pain", "pain-free"),
            *(obs(r, k, v) for r, k, v in REST),
        ]
    )
    sins = one(outputs, "sins-")
    assert sins["valueRange"] == {"low": {"value": 5}, "high": {"value": 8}}
    pain = component(sins, "pain")
    assert pain["valueRange"] == {"low": {"value": 0}, "high": {"value": 3}}
    [extension] = pain["extension"]
    assert extension["url"] == codes.EXT_SINS_DISCORDANCE
    sentence = extension["valueString"]
    assert sentence.startswith("Discordant pain: findings at the same time state mechanical")
    risk = one(outputs, "risk-")
    assert sentence in risk["prediction"][0]["rationale"]
    assert risk["prediction"][0]["rationale"].startswith("L5: SINS 5-8 (discordant findings)")
    assert {"text": sentence} in risk["note"]
    assert risk["mitigation"] == (
        "SINS 5-8 spans the surgical-consultation threshold (7); resolving the discordant "
        "findings on pain would decide it."
    )
    conclusion = one(outputs, "report-")["conclusion"]
    assert "discordant pain" in conclusion


def test_escc_tie_reports_the_highest_grade_and_names_it() -> None:
    outputs = run(
        [obs("e1", "escc", "1a"), obs("e2", "escc", "2"), obs("o2", "appearance", "lytic")]
    )
    risk = one(outputs, "risk-")
    assert "Discordant ESCC grades" in risk["prediction"][0]["rationale"]
    assert "ESCC grade 2 (high grade)" in one(outputs, "report-")["conclusion"]


def test_noms_m_ranks_by_lowest_sins_and_names_the_level_that_could_be_higher() -> None:
    stable_six = [
        obs("l1", "pain", "mechanical", level="L1"),
        obs("l2", "appearance", "blastic", level="L1"),
        obs("l3", "alignment", "normal-alignment", level="L1"),
        obs("l4", "height_loss", 0, level="L1"),
        obs("l5", "involvement", 10, level="L1"),
        obs("l6", "posterior", "none", level="L1"),
    ]
    outputs = run([*stable_six, obs("t1", "appearance", "lytic", level="T5")])
    noms = one(outputs, "noms-")
    mechanical = component(noms, "mechanical")
    # The patient's highest SINS is 6 to 16: no category, the range.
    assert mechanical["valueRange"] == {"low": {"value": 6}, "high": {"value": 16}}
    assert mechanical["code"]["text"] == (
        "M: most unstable level by lowest possible SINS, then highest possible: L1 SINS 6 "
        "(stable); T5 could be higher: SINS 3-16 "
        "(category open: stable or potentially unstable or unstable)"
    )
    report = one(outputs, "report-")
    assert report["conclusion"].startswith("L1 blastic, SINS 6 (stable)")
    page = next(f for f in report["presentedForm"] if f["contentType"].startswith("text/html"))
    html = base64.b64decode(page["data"]).decode()
    assert html.index('id="level-L1-') < html.index('id="level-T5-')


def test_age_at_the_imaging_study_date_keeps_neuroblastoma() -> None:
    study = samples.imaging_study("st1", "p1", "CT", started="2025-05-02T11:00:00Z", uid="1.2.3")
    patient = samples.patient("p1", "Doe", "Sam", "2007-06-01", "male")
    outputs = run(
        [
            patient,
            study,
            obs("a1", "appearance", "lytic", level="T5", study="st1"),
            samples.observation(
                "a2", "p1", "escc", "1a", level="T5", effective="2025-07-01T12:00:00Z"
            ),
        ]
    )
    classification = one(outputs, "cls-")
    primaries = [
        c["valueCodeableConcept"]["coding"][0]["code"]
        for c in classification["component"]
        if c["code"]["coding"][0]["code"] == "likely-primary"
    ]
    assert "neuroblastoma" in primaries


def test_no_bone_island_for_an_open_appearance() -> None:
    outputs = run(
        [
            obs("c1", "ct", 200, level="T5"),
            obs("c2", "ct", 1061, level="T5", method="max"),
        ]
    )
    notes = [n["text"] for n in one(outputs, "cls-")["note"]]
    assert not any(n.startswith("Dense sclerotic lesion") for n in notes)
    assert "bone island favoured" not in one(outputs, "report-")["conclusion"]
    assert not any("bone island" in n["text"] for n in one(outputs, "risk-").get("note", []))


def test_measured_values_are_printed_unrounded() -> None:
    outputs = run([obs("h1", "height_loss", 50.0000001), obs("c1", "ct", 100.0000001)])
    collapse = component(one(outputs, "sins-"), "collapse")
    assert "height loss 50.0000001%" in collapse["code"]["text"]
    notes = [n["text"] for n in one(outputs, "cls-")["note"]]
    assert "CT heuristic: mean attenuation 100.0000001 HU between 100 and 300 HU." in notes


def test_a_discordant_collapse_range_is_not_called_incomplete() -> None:
    outputs = run(
        [
            obs("p", "pain", "pain-free"),
            obs("a", "appearance", "lytic"),
            obs("n", "alignment", "normal-alignment"),
            obs("x", "posterior", "none"),
            obs("s", "sins:collapse", "no-collapse"),
            obs("h", "height_loss", 60),
        ]
    )
    risk = one(outputs, "risk-")
    rationale = risk["prediction"][0]["rationale"]
    assert rationale.startswith("L5: SINS 5-8 (discordant findings)")
    assert "incomplete" not in rationale
    assert risk["mitigation"].endswith(
        "resolving the discordant findings on vertebral body collapse would decide it."
    )
    assert "(discordant findings)" in one(outputs, "sins-")["text"]["div"]
