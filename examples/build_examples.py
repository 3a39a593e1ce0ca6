"""Writes the example input bundles of examples/ (run: python examples/build_examples.py).

Each file is one patient's transaction Bundle, realistic in shape (Patient, ImagingStudy, finding
Observations in panel and standalone form). tests/e2e checks what fhir-app derives from each.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from fhir_app.fhir.inputs import JsonObject
from fhir_app.fhir.samples import (
    imaging_study,
    lesion_panel,
    observation,
    patient,
    primary_tumor,
    transaction,
)

HERE = Path(__file__).resolve().parent
CT, MR = "CT", "MR"


def p01_stable() -> list[JsonObject]:
    """L3 sclerotic prostate metastasis, everything known: SINS 2, stable."""
    pid = "p01"
    return [
        patient(pid, "Lindqvist", "Erik", "1951-03-14", "male"),
        imaging_study("p01-ct", pid, CT, started="2025-02-03T09:12:00Z", uid="1.2.826.0.1.1001"),
        primary_tumor("p01-primary", pid, "prostate", effective="2024-11-20"),
        lesion_panel(
            "p01-l3",
            pid,
            "L3",
            [
                ("appearance", "blastic"),
                ("ct", 640),
                ("pain", "pain-free"),
                ("alignment", "normal-alignment"),
                ("height_loss", 0),
                ("involvement", 20),
                ("posterior", "none"),
            ],
            effective="2025-02-03T10:00:00Z",
            study="p01-ct",
        ),
    ]


def p02_potentially_unstable() -> list[JsonObject]:
    """T7 lytic breast metastasis, < 50% collapse, left pedicle: SINS 7, potentially unstable."""
    pid = "p02"
    when = "2025-03-11T14:30:00+01:00"
    return [
        patient(pid, "Moreau", "Claire", "1968-07-02", "female"),
        imaging_study(
            "p02-ct", pid, CT, started="2025-03-11T13:05:00+01:00", uid="1.2.826.0.1.1002"
        ),
        primary_tumor("p02-primary", pid, "breast", effective="2023-05-09"),
        lesion_panel(
            "p02-t7",
            pid,
            "T7",
            [
                ("appearance", "lytic"),
                ("pain", "occasional-non-mechanical"),
                ("alignment", "normal-alignment"),
                ("height_loss", 30),
                ("involvement", 60),
                ("posterior", "left"),
            ],
            effective=when,
            study="p02-ct",
        ),
    ]


def p03_unstable() -> list[JsonObject]:
    """L1 renal-cell metastasis, standalone findings, every component at its worst: SINS 18."""
    pid = "p03"
    when = "2025-04-22T08:45:00Z"
    s = "p03-ct"

    def obs(n: str, kind: str, value: object) -> JsonObject:
        return observation(f"p03-{n}", pid, kind, value, level="L1", effective=when, study=s)

    return [
        patient(pid, "Okafor", "Daniel", "1959-12-30", "male"),
        imaging_study(s, pid, CT, started="2025-04-22T08:10:00Z", uid="1.2.826.0.1.1003"),
        primary_tumor("p03-primary", pid, "renal-cell", effective="2022-10-01"),
        obs("ct", "ct", 35),
        obs("pain", "pain", "mechanical"),
        obs("align", "alignment", "subluxation-translation"),
        obs("loss", "height_loss", 65),
        obs("left", "posterior", "left"),
        obs("right", "posterior", "right"),
    ]


def p04_incomplete() -> list[JsonObject]:
    """T5 lytic lesion on staging CT, pain, alignment and posterior elements not yet reported."""
    pid = "p04"
    return [
        patient(pid, "Haddad", "Samir", "1972-01-18", "male"),
        imaging_study("p04-ct", pid, CT, started="2025-05-02T11:00:00Z", uid="1.2.826.0.1.1004"),
        primary_tumor("p04-primary", pid, "lung-non-small-cell", effective="2025-04-15"),
        lesion_panel(
            "p04-t5",
            pid,
            "T5",
            [("ct", 48), ("height_loss", 0), ("involvement", 15)],
            effective="2025-05-02T12:00:00Z",
            study="p04-ct",
        ),
    ]


def p05_mri_only() -> list[JsonObject]:
    """C5 lesion seen on MRI only: T1 hypo, T2 heterogeneous -> mixed."""
    pid = "p05"
    when = "2025-06-18T16:20:00Z"
    s = "p05-mr"

    def obs(n: str, kind: str, value: object) -> JsonObject:
        return observation(f"p05-{n}", pid, kind, value, level="C5", effective=when, study=s)

    return [
        patient(pid, "Nowak", "Agnieszka", "1964-09-05", "female"),
        imaging_study(s, pid, MR, started="2025-06-18T15:40:00Z", uid="1.2.826.0.1.1005"),
        obs("t1", "t1", "hypo"),
        obs("t2", "t2", "heterogeneous"),
        obs("gd", "contrast", True),
        obs("pain", "pain", "mechanical"),
        obs("align", "alignment", "de-novo-deformity"),
        obs("loss", "height_loss", 20),
        obs("post", "posterior", "both"),
    ]


def p06_bone_island() -> list[JsonObject]:
    """T9 very dense focus (950 HU) in an untreated patient: favours a bone island."""
    pid = "p06"
    return [
        patient(pid, "Svensson", "Ingrid", "1970-02-27", "female"),
        imaging_study("p06-ct", pid, CT, started="2025-07-01T10:00:00Z", uid="1.2.826.0.1.1006"),
        lesion_panel(
            "p06-t9",
            pid,
            "T9",
            [
                ("ct", 950),
                ("pain", "pain-free"),
                ("alignment", "normal-alignment"),
                ("height_loss", 0),
                ("involvement", 5),
                ("posterior", "none"),
            ],
            effective="2025-07-01T10:30:00Z",
            study="p06-ct",
        ),
    ]


def p07_atypical_primary() -> list[JsonObject]:
    """L4 sclerotic lesion in a thyroid cancer patient: atypical (thyroid is typically lytic)."""
    pid = "p07"
    return [
        patient(pid, "Fernandes", "Rita", "1958-04-11", "female"),
        imaging_study("p07-ct", pid, CT, started="2025-08-09T09:00:00Z", uid="1.2.826.0.1.1007"),
        primary_tumor("p07-primary", pid, "thyroid", effective="2019-03-02"),
        lesion_panel(
            "p07-l4",
            pid,
            "L4",
            [
                ("ct", 520),
                ("pain", "occasional-non-mechanical"),
                ("alignment", "normal-alignment"),
                ("height_loss", 0),
                ("involvement", 40),
                ("posterior", "right"),
            ],
            effective="2025-08-09T09:45:00Z",
            study="p07-ct",
        ),
    ]


def p08_several_levels() -> list[JsonObject]:
    """Breast cancer with three levels (panel and standalone forms), one unstable at T11."""
    pid = "p08"
    when = "2025-09-14T07:30:00Z"
    ct, mr = "p08-ct", "p08-mr"
    return [
        patient(pid, "Brennan", "Aoife", "1961-11-23", "female"),
        imaging_study(ct, pid, CT, started="2025-09-14T07:00:00Z", uid="1.2.826.0.1.1008"),
        imaging_study(mr, pid, MR, started="2025-09-15T18:00:00Z", uid="1.2.826.0.1.1009"),
        primary_tumor("p08-primary", pid, "breast", effective="2021-06-30"),
        # Back pain reported once for the patient, without a level.
        observation("p08-pain", pid, "pain", "mechanical", level=None, effective=when),
        lesion_panel(
            "p08-t11",
            pid,
            "T11",
            [
                ("appearance", "lytic"),
                ("alignment", "de-novo-deformity"),
                ("height_loss", 55),
                ("posterior", "both"),
            ],
            effective=when,
            study=ct,
        ),
        lesion_panel(
            "p08-t4",
            pid,
            "T4",
            [("ct", 420), ("alignment", "normal-alignment"), ("height_loss", 0)],
            effective=when,
            study=ct,
        ),
        observation("p08-l2-t1", pid, "t1", "iso", level="L2", effective=when, study=mr),
        observation("p08-l2-t2", pid, "t2", "iso", level="L2", effective=when, study=mr),
        observation("p08-l2-pain", pid, "pain", "pain-free", level="L2", effective=when, study=mr),
    ]


def p09_withdrawn() -> list[JsonObject]:
    """S1 lesion whose mechanical-pain finding was entered in error and replaced."""
    pid = "p09"
    s = "p09-ct"
    early, late = "2025-10-01T09:00:00Z", "2025-10-02T09:00:00Z"
    return [
        patient(pid, "Kowalczyk", "Marek", "1955-05-19", "male"),
        imaging_study(s, pid, CT, started="2025-10-01T08:30:00Z", uid="1.2.826.0.1.1010"),
        lesion_panel(
            "p09-s1",
            pid,
            "S1",
            [
                ("appearance", "mixed"),
                ("alignment", "normal-alignment"),
                ("height_loss", 10),
                ("posterior", "none"),
            ],
            effective=early,
            study=s,
        ),
        observation(
            "p09-pain-wrong",
            pid,
            "pain",
            "mechanical",
            level="S1",
            effective=late,
            status="entered-in-error",
        ),
        observation(
            "p09-pain", pid, "pain", "occasional-non-mechanical", level="S1", effective=early
        ),
    ]


def p10_treated_preliminary() -> list[JsonObject]:
    """T10 lesion after radiotherapy, preliminary read: CT density is not used, MRI decides."""
    pid = "p10"
    when = "2025-11-03T13:00:00Z"
    return [
        patient(pid, "Yilmaz", "Deniz", "1966-08-08", "male"),
        imaging_study("p10-ct", pid, CT, started="2025-11-03T12:00:00Z", uid="1.2.826.0.1.1011"),
        imaging_study("p10-mr", pid, MR, started="2025-11-03T12:40:00Z", uid="1.2.826.0.1.1012"),
        primary_tumor("p10-primary", pid, "prostate", effective="2020-01-10"),
        lesion_panel(
            "p10-t10",
            pid,
            "T10",
            [
                ("treated", True),
                ("ct", 80),
                ("t2", "hyper"),
                ("pain", "pain-free"),
                ("sins:alignment", "normal-alignment"),
                ("sins:collapse", "no-collapse"),
                ("sins:posterolateral", "unilateral"),
            ],
            effective=when,
            status="preliminary",
            study="p10-mr",
        ),
    ]


def p11_discordant() -> list[JsonObject]:
    """L1: stated no collapse and no posterolateral involvement, but 60% height loss and a left
    pedicle finding: both answers stay possible (SINS 4-8) and the level is marked discordant."""
    pid = "p11"
    when = "2025-11-20T08:40:00Z"
    return [
        patient(pid, "Okafor", "Ngozi", "1957-09-30", "female"),
        imaging_study("p11-ct", pid, CT, started="2025-11-20T08:00:00Z", uid="1.2.826.0.1.1013"),
        lesion_panel(
            "p11-l1",
            pid,
            "L1",
            [
                ("appearance", "mixed"),
                ("pain", "pain-free"),
                ("alignment", "normal-alignment"),
                ("sins:collapse", "no-collapse"),
                ("sins:posterolateral", "no-posterolateral"),
            ],
            effective=when,
            study="p11-ct",
        ),
        observation("p11-l1-height", pid, "height_loss", 60, level="L1", effective=when),
        observation("p11-l1-pedicle", pid, "posterior", "left", level="L1", effective=when),
    ]


def p12_patient_level_pain() -> list[JsonObject]:
    """Occasional pain reported for a patient with two lesion levels: each level 0-1, not 1."""
    pid = "p12"
    when = "2025-12-02T11:00:00Z"
    return [
        patient(pid, "Haddad", "Karim", "1963-01-17", "male"),
        imaging_study("p12-ct", pid, CT, started="2025-12-02T10:30:00Z", uid="1.2.826.0.1.1014"),
        observation(
            "p12-pain", pid, "pain", "occasional-non-mechanical", level=None, effective=when
        ),
        lesion_panel(
            "p12-t5",
            pid,
            "T5",
            [
                ("appearance", "lytic"),
                ("alignment", "normal-alignment"),
                ("height_loss", 20),
                ("posterior", "right"),
            ],
            effective=when,
            study="p12-ct",
        ),
        lesion_panel(
            "p12-l3",
            pid,
            "L3",
            [
                ("appearance", "lytic"),
                ("alignment", "normal-alignment"),
                ("height_loss", 0),
                ("involvement", 30),
                ("posterior", "none"),
            ],
            effective=when,
            study="p12-ct",
        ),
    ]


def p13_bone_island_by_maximum() -> list[JsonObject]:
    """T8 sclerotic focus: mean 640 HU, but the maximum (method 56851009) is 1210 HU > 1060."""
    pid = "p13"
    when = "2025-12-09T15:20:00Z"
    return [
        patient(pid, "Nakamura", "Yuki", "1975-06-05", "female"),
        imaging_study("p13-ct", pid, CT, started="2025-12-09T15:00:00Z", uid="1.2.826.0.1.1015"),
        observation("p13-t8-mean", pid, "ct", 640, level="T8", effective=when, method="mean"),
        observation("p13-t8-max", pid, "ct", 1210, level="T8", effective=when, method="max"),
        lesion_panel(
            "p13-t8",
            pid,
            "T8",
            [
                ("pain", "pain-free"),
                ("alignment", "normal-alignment"),
                ("height_loss", 0),
                ("involvement", 10),
                ("posterior", "none"),
            ],
            effective=when,
            study="p13-ct",
        ),
    ]


def p14_primary_in_context() -> list[JsonObject]:
    """L2 sclerotic lesion of a 58-year-old woman with known breast cancer: breast first,
    prostate and testis-seminoma left out (sex), neuroblastoma and medulloblastoma (age)."""
    pid = "p14"
    when = "2026-01-08T09:10:00Z"
    return [
        patient(pid, "Dubois", "Hélène", "1967-10-04", "female"),
        imaging_study("p14-ct", pid, CT, started="2026-01-08T08:50:00Z", uid="1.2.826.0.1.1016"),
        primary_tumor("p14-primary", pid, "breast", effective="2022-02-14"),
        lesion_panel(
            "p14-l2",
            pid,
            "L2",
            [
                ("ct", 560),
                ("pain", "occasional-non-mechanical"),
                ("alignment", "normal-alignment"),
                ("height_loss", 0),
                ("involvement", 35),
                ("posterior", "none"),
            ],
            effective=when,
            study="p14-ct",
        ),
    ]


def p15_collapsed_level() -> list[JsonObject]:
    """T12 lytic lesion with 40% height loss in a man of 81: an osteoporotic compression
    fracture is in the differential."""
    pid = "p15"
    when = "2026-01-20T13:45:00Z"
    return [
        patient(pid, "Rossi", "Giovanni", "1944-12-01", "male"),
        imaging_study("p15-ct", pid, CT, started="2026-01-20T13:15:00Z", uid="1.2.826.0.1.1017"),
        lesion_panel(
            "p15-t12",
            pid,
            "T12",
            [
                ("ct", 60),
                ("pain", "mechanical"),
                ("alignment", "normal-alignment"),
                ("height_loss", 40),
                ("posterior", "none"),
            ],
            effective=when,
            study="p15-ct",
        ),
    ]


def p16_high_grade_escc() -> list[JsonObject]:
    """T9 renal-cell metastasis compressing the cord without CSF around it (ESCC 3), with
    myelopathy, standalone findings; L2 with epidural impingement (ESCC 1a) in a panel. NOMS: high
    grade, radioresistant primary, unstable."""
    pid = "p16"
    when = "2026-02-03T07:40:00Z"
    s = "p16-mr"

    def obs(n: str, kind: str, value: object, level: str | None = "T9") -> JsonObject:
        return observation(f"p16-{n}", pid, kind, value, level=level, effective=when, study=s)

    return [
        patient(pid, "Nakamura", "Kenji", "1957-06-21", "male"),
        imaging_study(s, pid, MR, started="2026-02-03T07:05:00Z", uid="1.2.826.0.1.1018"),
        primary_tumor("p16-primary", pid, "renal-cell", effective="2024-09-30"),
        obs("appearance", "appearance", "lytic"),
        obs("pain", "pain", "mechanical"),
        obs("align", "alignment", "de-novo-deformity"),
        obs("loss", "height_loss", 55),
        obs("posterior", "posterior", "both"),
        obs("escc", "escc", "3"),
        lesion_panel(
            "p16-l2",
            pid,
            "L2",
            [
                ("appearance", "lytic"),
                ("pain", "pain-free"),
                ("alignment", "normal-alignment"),
                ("height_loss", 0),
                ("involvement", 20),
                ("posterior", "none"),
                ("escc", "1a"),
            ],
            effective=when,
            study=s,
        ),
        obs("myelopathy", "myelopathy", True, level=None),
    ]


def p17_low_grade_escc() -> list[JsonObject]:
    """T6 lesion of a seminoma deforming the thecal sac without cord abutment (ESCC 1b), no
    myelopathy, in one vertebral-lesion panel. NOMS: low grade, radiosensitive primary."""
    pid = "p17"
    return [
        patient(pid, "Novak", "Tomas", "1990-09-12", "male"),
        imaging_study("p17-mr", pid, MR, started="2026-02-10T15:00:00Z", uid="1.2.826.0.1.1019"),
        primary_tumor("p17-primary", pid, "testis-seminoma", effective="2025-12-01"),
        lesion_panel(
            "p17-t6",
            pid,
            "T6",
            [
                ("appearance", "mixed"),
                ("pain", "occasional-non-mechanical"),
                ("alignment", "normal-alignment"),
                ("height_loss", 0),
                ("involvement", 30),
                ("posterior", "none"),
                ("escc", "1b"),
                ("myelopathy", False),
            ],
            effective="2026-02-10T15:40:00Z",
            study="p17-mr",
        ),
    ]


EXAMPLES = {
    "patient-01-stable-blastic": p01_stable,
    "patient-02-potentially-unstable": p02_potentially_unstable,
    "patient-03-unstable": p03_unstable,
    "patient-04-incomplete": p04_incomplete,
    "patient-05-mri-only": p05_mri_only,
    "patient-06-bone-island": p06_bone_island,
    "patient-07-atypical-primary": p07_atypical_primary,
    "patient-08-several-levels": p08_several_levels,
    "patient-09-withdrawn-finding": p09_withdrawn,
    "patient-10-treated-preliminary": p10_treated_preliminary,
    "patient-11-discordant-collapse": p11_discordant,
    "patient-12-patient-level-pain": p12_patient_level_pain,
    "patient-13-bone-island-maximum": p13_bone_island_by_maximum,
    "patient-14-primary-in-context": p14_primary_in_context,
    "patient-15-collapsed-level": p15_collapsed_level,
    "patient-16-high-grade-escc": p16_high_grade_escc,
    "patient-17-low-grade-escc": p17_low_grade_escc,
}


def render(name: str) -> bytes:
    """The JSON of one example bundle, as committed."""
    return orjson.dumps(transaction(EXAMPLES[name]()), option=orjson.OPT_INDENT_2) + b"\n"


def main() -> None:
    """Write every example bundle next to this script."""
    for name in EXAMPLES:
        (HERE / f"{name}.json").write_bytes(render(name))


if __name__ == "__main__":
    main()
