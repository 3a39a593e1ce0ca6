"""Every example bundle through `fhir-app assess`: SINS, categories, appearances and flags."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.ports import unclaimed_port
from typer.testing import CliRunner

from fhir_app.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SINS = "https://fhir-app.org/fhir/CodeSystem/sins"
SURGICAL = "Surgical consultation recommended: SINS 7 or more at "


@dataclass(frozen=True)
class Expected:
    """What a spine surgeon should read for one level."""

    level: str
    total: int | tuple[int, int]
    category: str | None
    appearance: str | None
    status: str = "final"
    surgical: bool = False
    flags: tuple[str, ...] = ()  # phrases that must appear in the classification notes


CASES: dict[str, list[Expected]] = {
    "patient-01-stable-blastic": [Expected("L3", 2, "stable", "blastic")],
    "patient-02-potentially-unstable": [
        Expected("T7", 7, "potentially-unstable", "lytic", surgical=True)
    ],
    "patient-03-unstable": [Expected("L1", 18, "unstable", "lytic", surgical=True)],
    "patient-04-incomplete": [Expected("T5", (3, 13), None, "lytic", status="preliminary")],
    "patient-05-mri-only": [Expected("C5", 13, "unstable", "mixed", surgical=True)],
    "patient-06-bone-island": [Expected("T9", 1, "stable", "blastic", flags=("bone island",))],
    "patient-07-atypical-primary": [
        Expected("L4", 4, "stable", "blastic", flags=("atypical", "typically purely lytic"))
    ],
    # DOMAIN.md 2 (v2): the patient's "mechanical" leaves the pain of T11 and T4 open (0-3).
    "patient-08-several-levels": [
        Expected("T11", (13, 16), "unstable", "lytic", surgical=True),
        Expected("L2", (4, 14), None, "lytic", status="preliminary"),
        Expected("T4", (1, 8), None, "blastic", status="preliminary"),
    ],
    "patient-09-withdrawn-finding": [
        Expected("S1", 7, "potentially-unstable", "mixed", surgical=True)
    ],
    "patient-10-treated-preliminary": [
        Expected("T10", (3, 4), "stable", None, status="preliminary", flags=("Treated lesion",))
    ],
    "patient-11-discordant-collapse": [Expected("L1", (4, 8), None, "mixed", status="preliminary")],
    "patient-12-patient-level-pain": [
        Expected("T5", (6, 7), None, "lytic", status="preliminary"),
        Expected("L3", (4, 5), "stable", "lytic"),
    ],
    "patient-13-bone-island-maximum": [
        Expected("T8", 1, "stable", "blastic", flags=("maximum 1210 HU > 1060 HU",))
    ],
    "patient-14-primary-in-context": [
        Expected(
            "L2",
            3,
            "stable",
            "blastic",
            flags=("Consistent with the known breast primary", "Left out for a female patient"),
        )
    ],
    "patient-15-collapsed-level": [
        Expected(
            "T12",
            10,
            "potentially-unstable",
            "lytic",
            surgical=True,
            flags=("osteoporotic compression fracture",),
        )
    ],
    "patient-16-high-grade-escc": [
        Expected("T9", 14, "unstable", "lytic", surgical=True),
        Expected("L2", 4, "stable", "lytic"),
    ],
    "patient-17-low-grade-escc": [Expected("T6", 3, "stable", "mixed")],
}


def run_assess(name: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["assess", str(EXAMPLES / f"{name}.json")])
    assert result.exit_code == 0, result.output
    bundle: dict[str, Any] = orjson.loads(result.stdout)
    return bundle


def by_code(bundle: dict[str, Any], rtype: str, code: str | None = None) -> list[dict[str, Any]]:
    out = []
    for entry in bundle["entry"]:
        r = entry["resource"]
        if r["resourceType"] != rtype:
            continue
        if code is None or any(c["code"] == code for c in r["code"]["coding"]):
            out.append(r)
    return out


def level_of(resource: dict[str, Any]) -> str:
    from fhir_app.domain.levels import LEVEL_BY_SNOMED

    if resource["resourceType"] == "RiskAssessment":
        site = resource["extension"][0]["valueCodeableConcept"]
    else:
        site = resource["bodySite"]
    return LEVEL_BY_SNOMED[site["coding"][0]["code"]].label


def test_every_example_has_expectations() -> None:
    assert sorted(CASES) == sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert len(CASES) >= 8


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_sins_and_classification(name: str) -> None:
    bundle = run_assess(name)
    expected = {e.level: e for e in CASES[name]}
    sins = {level_of(r): r for r in by_code(bundle, "Observation", "sins-total")}
    classes = {level_of(r): r for r in by_code(bundle, "Observation", "lesion-classification")}
    risks = {level_of(r): r for r in by_code(bundle, "RiskAssessment")}
    assert set(sins) == set(classes) == set(risks) == set(expected)
    for level, exp in expected.items():
        obs = sins[level]
        if isinstance(exp.total, int):
            assert obs["valueInteger"] == exp.total
        else:
            assert (
                obs["valueRange"]["low"]["value"],
                obs["valueRange"]["high"]["value"],
            ) == exp.total
        cats = [c["code"] for i in obs.get("interpretation", []) for c in i["coding"]]
        assert cats == ([exp.category] if exp.category else [])
        assert obs["status"] == exp.status
        cls = classes[level]
        if exp.appearance is None:
            assert "valueCodeableConcept" not in cls
        else:
            assert cls["valueCodeableConcept"]["coding"][0] == {
                **cls["valueCodeableConcept"]["coding"][0],
                "system": SINS,
                "code": exp.appearance,
            }
        notes = " ".join(n["text"] for n in cls.get("note", []))
        for flag in exp.flags:
            assert flag.lower() in notes.lower(), (flag, notes)
        risk = risks[level]
        mitigation = risk.get("mitigation", "")
        assert (mitigation == SURGICAL + level) == exp.surgical
        assert risk["status"] == exp.status
    (report,) = by_code(bundle, "DiagnosticReport")
    order = [e.level for e in CASES[name]]
    positions = [report["conclusion"].index(level) for level in order]
    assert positions == sorted(positions), "most unstable level first"


def test_incomplete_level_names_what_is_missing() -> None:
    bundle = run_assess("patient-04-incomplete")
    (risk,) = by_code(bundle, "RiskAssessment")
    assert "pain" in risk["mitigation"].lower()
    assert "alignment" in risk["mitigation"].lower()
    (obs,) = by_code(bundle, "Observation", "sins-total")
    absent = [c for c in obs["component"] if "dataAbsentReason" in c]
    assert len(absent) == 3  # pain, alignment, posterolateral: no finding at all


def test_withdrawn_finding_does_not_count() -> None:
    bundle = run_assess("patient-09-withdrawn-finding")
    (obs,) = by_code(bundle, "Observation", "sins-total")
    pain = next(c for c in obs["component"] if c["code"]["coding"][0]["code"] == "pain")
    assert pain["valueCodeableConcept"]["coding"][0]["code"] == "occasional-non-mechanical"
    refs = " ".join(d["reference"] for d in obs["derivedFrom"])
    assert "p09-pain-wrong" not in refs


def test_discordance_reaches_the_risk_assessment_and_the_report() -> None:
    bundle = run_assess("patient-11-discordant-collapse")
    (obs,) = by_code(bundle, "Observation", "sins-total")
    marked = [c["code"]["coding"][0]["code"] for c in obs["component"] if "extension" in c]
    assert marked == ["collapse", "posterolateral"]
    (risk,) = by_code(bundle, "RiskAssessment")
    notes = " ".join(n["text"] for n in risk["note"])
    assert "Discordant collapse" in notes
    assert "Discordant posterolateral" in notes
    assert "Discordant collapse" in risk["prediction"][0]["rationale"]
    (report,) = by_code(bundle, "DiagnosticReport")
    assert "discordant vertebral body collapse" in report["conclusion"]


def test_the_known_primary_and_the_context_of_the_patient() -> None:
    bundle = run_assess("patient-14-primary-in-context")
    (cls,) = by_code(bundle, "Observation", "lesion-classification")
    likely = [
        c["valueCodeableConcept"]["coding"][0]["code"]
        for c in cls["component"]
        if c["code"]["coding"][0]["code"] == "likely-primary"
    ]
    assert likely[0] == "breast"
    for left_out in ("prostate", "testis-seminoma", "neuroblastoma", "medulloblastoma"):
        assert left_out not in likely
    (report,) = by_code(bundle, "DiagnosticReport")
    assert "consistent with the known breast primary" in report["conclusion"]


def _component(resource: dict[str, Any], code: str) -> dict[str, Any]:
    return next(c for c in resource["component"] if c["code"]["coding"][0]["code"] == code)


@pytest.mark.parametrize(
    ("name", "grades", "highest", "group", "myelopathy", "oncologic"),
    [
        (
            "patient-16-high-grade-escc",
            {"T9": "3", "L2": "1a"},
            "3",
            "high-grade",
            True,
            "radioresistant",
        ),
        ("patient-17-low-grade-escc", {"T6": "1b"}, "1b", "low-grade", False, "radiosensitive"),
    ],
)
def test_escc_and_noms_inputs_reach_every_output(
    name: str,
    grades: dict[str, str],
    highest: str,
    group: str,
    myelopathy: bool,
    oncologic: str,
) -> None:
    bundle = run_assess(name)
    for cls in by_code(bundle, "Observation", "lesion-classification"):
        escc = _component(cls, "escc-grade")
        assert escc["valueCodeableConcept"]["coding"][0]["code"] == grades[level_of(cls)]
    for risk in by_code(bundle, "RiskAssessment"):
        grade = grades[level_of(risk)]
        assert f"ESCC grade {grade} (" in risk["prediction"][0]["rationale"]
    (noms,) = by_code(bundle, "Observation", "noms-inputs")
    neurologic = _component(noms, "neurologic")
    assert neurologic["valueCodeableConcept"]["coding"][0]["code"] == highest
    assert neurologic["interpretation"][0]["coding"][0]["code"] == group
    assert _component(noms, "myelopathy")["valueBoolean"] is myelopathy
    oncology = _component(noms, "oncologic")["valueCodeableConcept"]["coding"][0]["code"]
    assert oncology == oncologic
    assert "dataAbsentReason" in _component(noms, "systemic")
    (report,) = by_code(bundle, "DiagnosticReport")
    assert f"Observation/{noms['id']}/_history/1" in [r["reference"] for r in report["result"]]
    assert report["conclusion"].endswith(noms["valueString"])
    for level, grade in grades.items():
        assert f"{level} " in report["conclusion"]
        assert f"ESCC grade {grade} (" in report["conclusion"]
    (provenance,) = by_code(bundle, "Provenance")
    targets = [t["reference"] for t in provenance["target"]]
    assert f"Observation/{noms['id']}/_history/1" in targets


def test_patient_wide_pain_is_said_so() -> None:
    bundle = run_assess("patient-08-several-levels")
    sins = {level_of(r): r for r in by_code(bundle, "Observation", "sins-total")}
    t11_pain = next(c for c in sins["T11"]["component"] if c["code"]["coding"][0]["code"] == "pain")
    assert "patient" in t11_pain["code"]["text"].lower()
    l2_pain = next(c for c in sins["L2"]["component"] if c["code"]["coding"][0]["code"] == "pain")
    assert l2_pain["valueCodeableConcept"]["coding"][0]["code"] == "pain-free"


def test_assess_command_line_exit_codes(tmp_path: Path) -> None:
    """The installed console script: 0 all accepted, 1 some rejected, 2 usage errors."""
    exe = [sys.executable, "-m", "fhir_app.cli"]
    ok = subprocess.run(
        [*exe, "assess", str(EXAMPLES / "patient-01-stable-blastic.json")],
        capture_output=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert orjson.loads(ok.stdout)["resourceType"] == "Bundle"
    bad = tmp_path / "bad.ndjson"
    good = (EXAMPLES / "patient-01-stable-blastic.json").read_bytes()
    first = orjson.loads(good)["entry"][3]["resource"]
    bad.write_bytes(orjson.dumps(first) + b"\n{not json\n")
    some = subprocess.run([*exe, "assess", str(bad)], capture_output=True, check=False)
    assert some.returncode == 1
    assert b"line 2" in some.stderr
    usage = subprocess.run(
        [*exe, "assess", str(tmp_path / "missing.json")], capture_output=True, check=False
    )
    assert usage.returncode == 2


def test_examples_are_generated_by_the_builder() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import build_examples  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(EXAMPLES))
    for name in build_examples.EXAMPLES:
        assert (EXAMPLES / f"{name}.json").read_bytes() == build_examples.render(name), name


def test_serve_with_two_workers_answers(tmp_path: Path) -> None:
    """`fhir-app serve --workers 2`: both processes build their app from the environment."""
    import os
    import time

    import httpx

    port = unclaimed_port()  # not one another test's bind(0) may take before the server's
    env = {**os.environ, "FHIR_APP_DATABASE_URL": f"sqlite:///{tmp_path}/w.db"}
    server = subprocess.Popen(
        [sys.executable, "-m", "fhir_app.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        body = (EXAMPLES / "patient-03-unstable.json").read_bytes()
        headers = {"Content-Type": "application/fhir+json"}
        assert httpx.post(base, content=body, headers=headers, timeout=30).status_code == 200
        for _ in range(4):  # whichever worker answers sees the committed outputs
            found = httpx.get(f"{base}/RiskAssessment", params={"patient": "p03"}, timeout=10)
            assert found.json()["total"] == 1
    finally:
        server.terminate()
        server.wait(timeout=20)
