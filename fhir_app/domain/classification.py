"""Metastasis classification: likely primaries and differential by appearance (DOMAIN.md 4-5)."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_app.domain.appearance import (
    BLASTIC,
    LYTIC,
    MIXED,
    AppearanceResult,
    AppearanceSettings,
    is_treated,
    words,
)
from fhir_app.domain.findings import CtAttenuation, FindingKind, LevelFindings
from fhir_app.domain.sins_answers import LesionAnswer

# Primary tumours by appearance, most typical first, then by how often the primary reaches the
# spine (Greenspan; Rodallec et al., RadioGraphics 2008; Radiopaedia).
LIKELY_PRIMARIES: dict[LesionAnswer, tuple[str, ...]] = {
    BLASTIC: (
        "prostate",
        "breast",
        "lung-small-cell",
        "carcinoid",
        "bladder-urothelial",
        "gi-mucinous-adenocarcinoma",
        "lymphoma-hodgkin",
        "pancreas",
        "medulloblastoma",
        "neuroblastoma",
        "testis-seminoma",
    ),
    MIXED: (
        "breast",
        "lung-non-small-cell",
        "prostate",
        "cervix",
        "ovary",
        "testis-seminoma",
        "bladder-urothelial",
        "gi-adenocarcinoma",
        "lymphoma-non-hodgkin",
        "melanoma",
        "squamous-cell",
    ),
    LYTIC: (
        "renal-cell",
        "thyroid",
        "lung-non-small-cell",
        "breast",
        "gi-adenocarcinoma",
        "melanoma",
        "hepatocellular",
        "phaeochromocytoma",
    ),
}

# Differential diagnosis by appearance (Expert DDx; Radiopaedia; Insights Imaging 2019).
DIFFERENTIAL: dict[LesionAnswer, tuple[str, ...]] = {
    BLASTIC: (
        "bone-island",
        "sclerotic-haemangioma",
        "degenerative-endplate-change",
        "lymphoma",
        "paget-disease",
        "healing-compression-fracture",
        "vertebral-augmentation",
        "osteoid-osteoma-osteoblastoma",
        "chronic-osteomyelitis",
        "sclerotic-myeloma",
        "bone-infarct",
    ),
    MIXED: (
        "lymphoma",
        "infection-spondylodiscitis",
        "paget-disease",
        "langerhans-cell-histiocytosis",
        "myeloma",
    ),
    LYTIC: (
        "myeloma-plasmacytoma",
        "aggressive-haemangioma",
        "lymphoma",
        "infection-spondylodiscitis",
        "giant-cell-tumour",
        "aneurysmal-bone-cyst",
        "langerhans-cell-histiocytosis",
        "brown-tumour",
        "chordoma",
    ),
}

# Known primaries that are atypical for an appearance, with the reason shown to the reader.
ATYPICAL_PRIMARIES: dict[str, tuple[frozenset[LesionAnswer], str]] = {
    "renal-cell": (frozenset({BLASTIC, MIXED}), "typically purely lytic"),
    "thyroid": (frozenset({BLASTIC, MIXED}), "typically purely lytic"),
    "prostate": (frozenset({LYTIC}), "typically sclerotic"),
}

UNKNOWN_PRIMARY = "unknown-primary"

TREATED_NOTE = (
    "Treated lesion: radiotherapy or chemotherapy may have formed new bone, so the appearance "
    "says less about the primary."
)


@dataclass(frozen=True, slots=True)
class Classification:
    """The metastasis classification of one level."""

    appearance: AppearanceResult
    likely_primaries: tuple[str, ...]
    differential: tuple[str, ...]
    atypical_primary: str | None  # the sentence when the known primary is atypical
    bone_island: str | None  # the sentence when the density favours a bone island
    treated: bool
    notes: tuple[str, ...]


def bone_island_sentence(
    findings: LevelFindings, treated: bool, settings: AppearanceSettings
) -> str | None:
    """The bone-island flag: an untreated lesion denser than the Ulano et al. thresholds."""
    finding = findings.latest(FindingKind.CT_ATTENUATION)
    if finding is None or treated:
        return None
    assert isinstance(finding.value, CtAttenuation)
    mean, peak = finding.value.mean_hu, finding.value.max_hu
    reasons = []
    if mean is not None and mean > settings.bone_island_mean_hu:
        reasons.append(f"mean {mean:g} HU > {settings.bone_island_mean_hu:g} HU")
    if peak is not None and peak > settings.bone_island_max_hu:
        reasons.append(f"maximum {peak:g} HU > {settings.bone_island_max_hu:g} HU")
    if not reasons:
        return None
    return (
        f"Dense sclerotic lesion ({', '.join(reasons)}) favours a bone island (enostosis) over an "
        "osteoblastic metastasis (Ulano et al., AJR 2016: sensitivity 95%, specificity 96%)."
    )


def atypical_sentence(primary: str | None, allows: frozenset[LesionAnswer]) -> str | None:
    """The flag for a known primary that is atypical for every appearance still possible."""
    if primary is None or primary not in ATYPICAL_PRIMARIES:
        return None
    atypical_for, reason = ATYPICAL_PRIMARIES[primary]
    if not allows <= atypical_for:
        return None
    return f"Known primary {primary} is atypical for a {words(allows)} lesion ({reason})."


def classify(
    findings: LevelFindings,
    appearance: AppearanceResult,
    settings: AppearanceSettings | None = None,
) -> Classification:
    """Likely primaries, differential and flags for one level.

    DESIGN: primaries and differential are listed only when the appearance is determined; an open
    appearance says so in a note instead of mixing the rows of several appearances.
    """
    settings = settings or AppearanceSettings()
    treated = is_treated(findings)
    determined = appearance.determined
    notes: list[str] = []
    primaries: tuple[str, ...] = ()
    differential: tuple[str, ...] = ()
    # The density rule is about sclerotic lesions: a lesion that cannot be blastic is not flagged.
    bone_island = (
        bone_island_sentence(findings, treated, settings) if BLASTIC in appearance.allows else None
    )
    if determined is None:
        notes.append(
            f"Appearance open ({words(appearance.allows)}): likely primaries and differential "
            "are not narrowed."
        )
    else:
        primaries = LIKELY_PRIMARIES[determined]
        differential = DIFFERENTIAL[determined]
        if bone_island is not None and determined is BLASTIC:
            # The density rule makes the enostosis the leading alternative.
            differential = ("bone-island", *(d for d in differential if d != "bone-island"))
    atypical = atypical_sentence(findings.primary_tumor, appearance.allows)
    notes.extend(d.sentence() for d in appearance.discordances)
    notes.extend(appearance.notes)
    for sentence in (atypical, bone_island):
        if sentence is not None:
            notes.append(sentence)
    if treated:
        notes.append(TREATED_NOTE)
    return Classification(
        appearance, primaries, differential, atypical, bone_island, treated, tuple(notes)
    )
