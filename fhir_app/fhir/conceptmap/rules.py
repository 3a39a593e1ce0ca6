"""What a ConceptMap may say to fhir-app: the contract's codes, the equivalences, the contexts.

The rules below are the check every map passes at start-up (shipped and site maps alike) and the
reading the translator gives them. They are data, each with the reason it holds:

- Targets: only codes of this contract (CONTRACT.md section 2) may be targets, so a map can never
  invent a code the inbound mapping does not know.
- Equivalence (FHIR R4 `ConceptMapEquivalence`): a mapping is applied when the source concept is
  the target or a kind of it - `equivalent`, `equal`, `wider` (the target is wider than the
  source: the body of L1 lies in level L1) and `subsumes` (the target subsumes the source). Then
  reading the source as the target states nothing the feed did not state. `narrower`,
  `specializes`, `inexact` and `relatedto` would state more or something else than the feed did:
  a map that uses them is refused at start-up rather than silently half-applied. `unmatched` and
  `disjoint` document a source code that stays unmapped: loaded, never applied.
- dependsOn: a target that depends on another element applies only when the resource carries
  that element's code. The contexts fhir-app can read are listed in DEPENDS_ON_CONTEXTS; any other
  `property` is refused at start-up.
- ICD-O-3 morphology is written `8140/3` (histology/behaviour, WHO ICD-O-3); registries also
  write it as five digits, `81403` (NAACCR/SEER histology and behaviour fields side by side).
  A context coding in the second form is read as the first.
- Hierarchy: ICD-10-CM codes are hierarchical by prefix (C50.911 lies under C50.91, C50.9, C50;
  CDC/NCHS ICD-10-CM Tabular List). A code without a row of its own takes the rows of its nearest
  listed ancestor whose targets apply, so a map lists categories, not every billable subcode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from fhir_app.domain.escc import EsccGrade
from fhir_app.domain.levels import LEVEL_BY_SNOMED
from fhir_app.domain.sins_answers import (
    SINS_POINTS,
    SinsComponent,
)
from fhir_app.fhir import codes
from fhir_app.fhir.inbound import PRIMARY_TUMOR_CODES

ICD10CM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
ICDO3: Final = "http://terminology.hl7.org/CodeSystem/icd-o-3"
MCODE_HISTOLOGY: Final = (
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
)

APPLIED_EQUIVALENCES: Final = frozenset({"equivalent", "equal", "wider", "subsumes"})
UNMAPPED_EQUIVALENCES: Final = frozenset({"unmatched", "disjoint"})
REFUSED_EQUIVALENCES: Final = frozenset({"narrower", "specializes", "inexact", "relatedto"})

_SPINE_FINDING_INPUTS: Final = frozenset(
    {
        codes.VERTEBRAL_LESION,
        codes.LESION_APPEARANCE,
        codes.PAIN_CHARACTER,
        codes.SPINAL_ALIGNMENT,
        codes.HEIGHT_LOSS,
        codes.BODY_INVOLVEMENT,
        codes.POSTERIOR_ELEMENT,
        codes.CONTRAST_ENHANCEMENT,
        codes.TREATED_LESION,
        codes.PRIMARY_TUMOR,
        codes.ESCC_GRADE,
        codes.MYELOPATHY,
    }
)
_SINS_INPUTS: Final = frozenset(
    {component.value for component in SinsComponent}
    | {str(answer) for answers in SINS_POINTS.values() for answer in answers}
)

# The codes a map may target: the inputs of CONTRACT.md section 2 (outputs are never inputs).
CONTRACT_TARGETS: Final[dict[str, frozenset[str]]] = {
    codes.SNOMED: frozenset(LEVEL_BY_SNOMED)
    | {codes.SNOMED_LEFT, codes.SNOMED_RIGHT, codes.SNOMED_BILATERAL}
    | {codes.SNOMED_MEAN, codes.SNOMED_MAXIMUM},
    codes.CS_SPINE_FINDING: _SPINE_FINDING_INPUTS,
    codes.CS_SINS: _SINS_INPUTS,
    codes.CS_PRIMARY_TUMOR: frozenset(PRIMARY_TUMOR_CODES),
    codes.CS_ESCC: frozenset(grade.value for grade in EsccGrade),
    codes.DCM: frozenset({codes.DCM_ATTENUATION, codes.DCM_T1, codes.DCM_T2}),
    codes.RADLEX: frozenset({codes.RADLEX_HYPER, codes.RADLEX_ISO, codes.RADLEX_HYPO}),
}

# dependsOn.property -> how to read the context codes (system, code) from the resource.
ContextReader = Callable[[dict[str, object]], set[tuple[str, str]]]


def _extension_codes(url: str) -> ContextReader:
    """The codings of the valueCodeableConcept of the resource's extensions with `url`."""

    def read(resource: dict[str, object]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        extensions = resource.get("extension")
        for extension in extensions if isinstance(extensions, list) else ():
            if not isinstance(extension, dict) or extension.get("url") != url:
                continue
            concept = extension.get("valueCodeableConcept")
            codings = concept.get("coding") if isinstance(concept, dict) else None
            for coding in codings if isinstance(codings, list) else ():
                if isinstance(coding, dict):
                    system, code = coding.get("system"), coding.get("code")
                    if isinstance(system, str) and isinstance(code, str):
                        found.add((system, normal_morphology(code) if system == ICDO3 else code))
        return found

    return read


def normal_morphology(code: str) -> str:
    """`81403` -> `8140/3`; any other form as it is."""
    return f"{code[:4]}/{code[4]}" if len(code) == 5 and code.isdigit() else code


DEPENDS_ON_CONTEXTS: Final[dict[str, ContextReader]] = {
    # mCODE: the ICD-O-3 morphology of a cancer Condition refines its diagnosis code.
    MCODE_HISTOLOGY: _extension_codes(MCODE_HISTOLOGY),
}


def icd10cm_ancestors(code: str) -> list[str]:
    """`C50.911` -> [`C50.91`, `C50.9`, `C50`]: the prefixes down to the 3-character category."""
    ancestors: list[str] = []
    current = code
    while len(current) > 3:
        current = current[:-1].rstrip(".")
        ancestors.append(current)
    return ancestors


# Source systems whose codes inherit the rows of their ancestors (see the module docstring).
HIERARCHIES: Final[dict[str, Callable[[str], list[str]]]] = {ICD10CM: icd10cm_ancestors}
