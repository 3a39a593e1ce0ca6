"""The second clinical review in the FHIR outputs, through the stateless assess: a reading of the
bone lesion contradicted by CT (DOMAIN.md 2 v2) and the most unstable level of NOMS M (4f)."""

from __future__ import annotations

import base64
from typing import Any

from fhir_app.fhir import codes, samples
from fhir_app.service import assess

WHEN = "2025-05-02T12:00:00Z"


def run(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = assess((f"entry[{i}]", r) for i, r in enumerate(resources))
    assert not result.rejections
    return result.outputs


def obs(rid: str, kind: str, value: Any, level: str = "T12") -> dict[str, Any]:
    return samples.observation(rid, "p1", kind, value, level=level, effective=WHEN)


def one(outputs: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    [found] = [r for r in outputs if r["id"].startswith(prefix)]
    return found


def component(resource: dict[str, Any], code: str) -> dict[str, Any]:
    [found] = [c for c in resource["component"] if c["code"]["coding"][0]["code"] == code]
    return found


def _m2(pain: str = "occasional-non-mechanical") -> list[dict[str, Any]]:
    """The review's M2 input: T12 stated blastic, CT mean 40 HU; SINS 6 blastic, 8 lytic."""
    return [
        obs("m1", "sins:bone-lesion", "blastic"),
        obs("m2", "ct", 40),
        obs("m3", "pain", pain),
        obs("m4", "alignment", "normal-alignment"),
        obs("m5", "height_loss", 0),
        obs("m6", "involvement", 60),
        obs("m7", "posterior", "left"),
    ]


def test_stated_bone_lesion_contradicted_by_ct_is_a_discordant_range() -> None:
    outputs = run(_m2())
    sins = one(outputs, "sins-")
    assert sins["valueRange"] == {"low": {"value": 6}, "high": {"value": 8}}
    assert sins["status"] == "preliminary"
    assert "interpretation" not in sins
    bone = component(sins, "bone-lesion")
    assert bone["valueRange"] == {"low": {"value": 0}, "high": {"value": 2}}
    [extension] = bone["extension"]
    assert extension["url"] == codes.EXT_SINS_DISCORDANCE
    sentence = extension["valueString"]
    assert sentence.startswith(
        "Discordant bone lesion: the reading (reported as blastic) indicates blastic, but CT"
    )
    assert "the score allows both (lytic or blastic) because the CT disagrees" in sentence
    assert sentence in bone["code"]["text"]
    assert {"text": sentence} in sins["note"]
    risk = one(outputs, "risk-")
    assert risk["status"] == "preliminary"
    assert "qualitativeRisk" not in risk["prediction"][0]
    rationale = risk["prediction"][0]["rationale"]
    assert rationale.startswith("T12: SINS 6-8 (discordant findings)")
    assert sentence in rationale
    assert {"text": sentence} in risk["note"]
    assert risk["mitigation"] == (
        "SINS 6-8 spans the surgical-consultation threshold (7); resolving the discordant "
        "findings on bone lesion would decide it."
    )
    report = one(outputs, "report-")
    assert report["status"] == "preliminary"
    assert report["conclusion"].startswith(
        "T12 blastic, SINS 6-8 (category open: stable or potentially unstable); caveats: "
        "discordant bone lesion;"
    )
    # DOMAIN.md 3: the classification keeps the reading.
    classification = one(outputs, "cls-")
    assert classification["valueCodeableConcept"]["coding"][0]["code"] == "blastic"


def test_widened_bone_lesion_range_decides_the_consultation() -> None:
    outputs = run(_m2(pain="mechanical"))
    sins = one(outputs, "sins-")
    assert sins["valueRange"] == {"low": {"value": 8}, "high": {"value": 10}}
    risk = one(outputs, "risk-")
    assert risk["status"] == "final"
    assert risk["mitigation"] == "Surgical consultation recommended: SINS 7 or more at T12"
    assert "Discordant bone lesion" in risk["prediction"][0]["rationale"]


def _certain_11(level: str = "L1") -> list[dict[str, Any]]:
    return [
        obs("c1", "pain", "mechanical", level),
        obs("c2", "appearance", "lytic", level),
        obs("c3", "alignment", "normal-alignment", level),
        obs("c4", "height_loss", 30, level),
        obs("c5", "posterior", "left", level),
    ]


def test_noms_m_names_the_certain_consultation_level_and_the_one_that_could_be_higher() -> None:
    """The review's A input: L1 certainly 11 and T5 open (3-16)."""
    outputs = run([*_certain_11(), obs("t1", "appearance", "lytic", "T5")])
    mechanical = component(one(outputs, "noms-"), "mechanical")
    assert mechanical["code"]["text"] == (
        "M: most unstable level by lowest possible SINS, then highest possible: L1 SINS 11 "
        "(potentially unstable): mechanical instability to be considered; T5 could be higher: "
        "SINS 3-16 (category open: stable or potentially unstable or unstable)"
    )
    # 11 to 16 spans two categories: no coded category.
    assert "valueCodeableConcept" not in mechanical
    assert mechanical["valueRange"] == {"low": {"value": 11}, "high": {"value": 16}}
    report = one(outputs, "report-")
    assert report["conclusion"].startswith("L1 lytic, SINS 11 (potentially unstable)")
    page = next(f for f in report["presentedForm"] if f["contentType"].startswith("text/html"))
    html = base64.b64decode(page["data"]).decode()
    assert html.index('id="level-L1-') < html.index('id="level-T5-')


def test_noms_m_codes_the_category_when_every_level_stays_in_it() -> None:
    t7 = [
        obs("s1", "pain", "mechanical", "T7"),
        obs("s2", "appearance", "lytic", "T7"),
        obs("s3", "alignment", "normal-alignment", "T7"),
        obs("s4", "height_loss", 30, "T7"),
    ]
    outputs = run([*_certain_11(), *t7])
    mechanical = component(one(outputs, "noms-"), "mechanical")
    assert mechanical["valueCodeableConcept"]["coding"][0]["code"] == "potentially-unstable"
    assert "valueRange" not in mechanical
    assert mechanical["code"]["text"].endswith(
        "L1 SINS 11 (potentially unstable): mechanical instability to be considered"
    )
