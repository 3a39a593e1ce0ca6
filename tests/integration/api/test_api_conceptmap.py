"""ConceptMaps over REST (CONTRACT.md 3a): a standard-coded input is stored as received and derives
what the contract-coded one derives, on SQLite and PostgreSQL.

The site's map (a temporary folder named by `concept_map_dir`) maps a site's local reading codes;
the SNOMED vertebral body codes and RadElement RDE2004 (degree of compression) come from the
shipped maps.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import Serve, example, post_json

from fhir_app.fhir import codes, conceptmap

LOCAL = "https://hospital.example.org/fhir/CodeSystem/spine-reading"
L1_BODY, L1_LEVEL = "61032001", "66794005"
RADELEMENT_DEGREE_OF_COMPRESSION = {"system": "https://www.radelement.org", "code": "RDE2004"}
T12_BODY, T12_LEVEL = "280849005", "23215003"

Json = dict[str, Any]

SITE_MAP: Json = {
    "resourceType": "ConceptMap",
    "url": "https://hospital.example.org/fhir/ConceptMap/spine-reading",
    "status": "active",
    "group": [
        {
            "source": LOCAL,
            "target": codes.CS_SINS,
            "element": [
                {"code": "COLLAPSE", "target": [{"code": "collapse", "equivalence": "equal"}]},
                {"code": "PAIN", "target": [{"code": "pain", "equivalence": "equal"}]},
                {"code": "GT50", "target": [{"code": "collapse-gt-50", "equivalence": "equal"}]},
                {"code": "MECH", "target": [{"code": "mechanical", "equivalence": "equal"}]},
                {"code": "PAINFREE", "target": [{"code": "pain-free", "equivalence": "equal"}]},
                {
                    "code": "ALIGNED",
                    "target": [{"code": "normal-alignment", "equivalence": "equal"}],
                },
                {"code": "NOPL", "target": [{"code": "no-posterolateral", "equivalence": "equal"}]},
            ],
        },
        {
            "source": LOCAL,
            "target": codes.CS_SPINE_FINDING,
            "element": [
                {"code": "PANEL", "target": [{"code": "vertebral-lesion", "equivalence": "equal"}]},
                {
                    "code": "PAINCHAR",
                    "target": [{"code": "pain-character", "equivalence": "equal"}],
                },
                {
                    "code": "ALIGN",
                    "target": [{"code": "spinal-alignment", "equivalence": "equal"}],
                },
                {
                    "code": "POSTERIOR",
                    "target": [{"code": "posterior-element-involvement", "equivalence": "equal"}],
                },
            ],
        },
    ],
}
# contract code -> the site's local code (the inverse of SITE_MAP)
LOCAL_OF = {
    (group["target"], target["code"]): element["code"]
    for group in SITE_MAP["group"]
    for element in group["element"]
    for target in element["target"]
}


@pytest.fixture
def fhir_with_site_maps(serve: Serve, tmp_path: Path) -> Iterator[httpx.Client]:
    folder = tmp_path / "site-maps"
    folder.mkdir()
    (folder / "spine-reading.json").write_text(json.dumps(SITE_MAP), encoding="utf-8")
    base = serve(concept_map_dir=folder)
    try:
        with httpx.Client(base_url=f"{base}/", timeout=60) as client:
            yield client
    finally:
        conceptmap.install(None)  # the next app loads the shipped maps only


def recoded(concept: Json | None, *, body: dict[str, str]) -> None:
    """Replace contract codings in place by the site's local codes or the SNOMED body code."""
    if concept is None:
        return
    out = []
    for coding in concept["coding"]:
        key = (coding["system"], coding["code"])
        if key == (codes.CS_SPINE_FINDING, codes.HEIGHT_LOSS):
            out.append(RADELEMENT_DEGREE_OF_COMPRESSION)  # the shipped RDES230 row
        elif key in LOCAL_OF:
            out.append({"system": LOCAL, "code": LOCAL_OF[key]})
        elif coding["system"] == codes.SNOMED and coding["code"] in body:
            out.append({"system": codes.SNOMED, "code": body[coding["code"]]})
        else:
            out.append(coding)
    concept["coding"] = out


def standard(observation: Json) -> Json:
    twin = copy.deepcopy(observation)
    body = {L1_LEVEL: L1_BODY, T12_LEVEL: T12_BODY}
    recoded(twin.get("code"), body=body)
    recoded(twin.get("bodySite"), body=body)
    recoded(twin.get("valueCodeableConcept"), body=body)
    for component in twin.get("component", []):
        recoded(component.get("code"), body=body)
        recoded(component.get("valueCodeableConcept"), body=body)
    return twin


def stored(resource: Json) -> Json:
    """A resource as the client sent it: the server's meta left out."""
    return {k: v for k, v in resource.items() if k != "meta"}


def outputs(fhir: httpx.Client, patient: str) -> dict[str, Json]:
    found: dict[str, Json] = {}
    for rtype in ("Observation", "RiskAssessment", "DiagnosticReport"):
        response = fhir.get(rtype, params={"subject": f"Patient/{patient}", "_count": "100"})
        assert response.status_code == 200, response.text
        for entry in response.json().get("entry", []):
            resource = entry["resource"]
            if codes.BASE in str(resource.get("meta", {}).get("profile")):
                found[resource["id"]] = resource
    return found


_VOLATILE = frozenset({"meta", "issued", "recorded", "date", "presentedForm", "lastUpdated"})


def clinical(resource: Any) -> Any:
    """The clinical content: no meta or timestamps, references without their version."""
    if isinstance(resource, dict):
        return {k: clinical(v) for k, v in resource.items() if k not in _VOLATILE}
    if isinstance(resource, list):
        return [clinical(v) for v in resource]
    if isinstance(resource, str):
        return re.sub(r"/_history/\d+", "", resource)
    return resource


def test_a_standard_coded_observation_is_stored_as_received_and_read_as_the_contract_code(
    fhir_with_site_maps: httpx.Client,
) -> None:
    fhir = fhir_with_site_maps
    sent = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOCAL, "code": "COLLAPSE", "display": "Collapse"}]},
        "subject": {"reference": "Patient/cm1"},
        "effectiveDateTime": "2025-03-01T10:00:00Z",
        "bodySite": {
            "coding": [
                {
                    "system": codes.SNOMED,
                    "code": L1_BODY,
                    "display": "Structure of body of first lumbar vertebra",
                }
            ]
        },
        "valueCodeableConcept": {"coding": [{"system": LOCAL, "code": "GT50"}]},
    }
    created = post_json(fhir, "Observation", sent)
    assert created.status_code == 201, created.text
    location = created.json()["id"]

    read = fhir.get(f"Observation/{location}")
    assert read.status_code == 200
    assert stored(read.json()) == {**sent, "id": location}  # no contract coding was stored

    [risk] = [r for r in outputs(fhir, "cm1").values() if r["resourceType"] == "RiskAssessment"]
    level = risk["extension"][0]["valueCodeableConcept"]["coding"][0]
    assert level["code"] == L1_LEVEL
    [sins] = [
        r
        for r in outputs(fhir, "cm1").values()
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "sins-total"
    ]
    collapse = next(c for c in sins["component"] if c["code"]["coding"][0]["code"] == "collapse")
    assert collapse["valueCodeableConcept"]["coding"][0]["code"] == "collapse-gt-50"


def test_standard_codes_derive_what_contract_codes_derive(
    fhir_with_site_maps: httpx.Client,
) -> None:
    """Twins: patient p15 in contract codes, patient p15s with the same facts in standard codes."""
    fhir = fhir_with_site_maps
    contract = example("patient-15-collapsed-level.json")
    twin = json.loads(json.dumps(contract).replace("p15", "p15s"))
    for entry in twin["entry"]:
        if entry["resource"]["resourceType"] == "Observation":
            entry["resource"] = standard(entry["resource"])
    text = json.dumps(twin)
    assert codes.CS_SPINE_FINDING not in text
    assert codes.CS_SINS not in text
    assert T12_LEVEL not in text
    assert T12_BODY in text
    assert "RDE2004" in text
    post_json(fhir, "", contract).raise_for_status()
    post_json(fhir, "", twin).raise_for_status()

    # stored as received
    lesion = next(e["resource"] for e in twin["entry"] if e["resource"]["id"] == "p15s-t12")
    assert stored(fhir.get("Observation/p15s-t12").json()) == lesion

    expected = outputs(fhir, "p15")
    derived = outputs(fhir, "p15s")
    assert len(derived) == len(expected) > 0
    # Output ids are per (patient, level): name the twin's outputs as the contract's.
    [report_a] = [k for k in expected if k.startswith("report-")]
    [report_b] = [k for k in derived if k.startswith("report-")]
    key_a, key_b = report_a.removeprefix("report-"), report_b.removeprefix("report-")
    renamed = json.loads(json.dumps(derived).replace(key_b, key_a).replace("p15s", "p15"))
    assert clinical(renamed) == clinical(expected)
