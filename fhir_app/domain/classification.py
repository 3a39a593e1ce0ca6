"""Metastasis classification: likely primaries and differential by appearance (DOMAIN.md 4-5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from fhir_app.domain.appearance import (
    BLASTIC,
    LYTIC,
    MIXED,
    AppearanceResult,
    AppearanceSettings,
    ct_attenuation,
    is_treated,
    words,
)
from fhir_app.domain.findings import FindingKind, LevelFindings, PatientContext, Sex, number
from fhir_app.domain.sins_answers import CollapseAnswer, LesionAnswer

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
        # DOMAIN.md 4a: Rodallec 2008 lists neuroblastoma among the lytic metastases of childhood.
        "neuroblastoma",
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

# Known primaries that are atypical for an appearance, with the reason shown to the reader
# (DOMAIN.md 4 and 4a). A known primary outside the row of its appearance is atypical too; these
# rows give the reason the literature states.
ATYPICAL_PRIMARIES: dict[str, tuple[frozenset[LesionAnswer], str]] = {
    "renal-cell": (frozenset({BLASTIC, MIXED}), "typically purely lytic"),
    "thyroid": (
        frozenset({BLASTIC, MIXED}),
        "differentiated thyroid carcinoma is typically purely lytic; medullary thyroid carcinoma "
        "may be sclerotic",
    ),
    "prostate": (frozenset({LYTIC}), "typically sclerotic"),
}
ATYPICAL_DEFAULT_REASON = "not among the typical primaries of this appearance"

UNKNOWN_PRIMARY = "unknown-primary"


# Sex-specific primaries (DOMAIN.md 4a): the sex a primary occurs in. Breast is absent on purpose:
# male breast cancer exists, so it stays for both. Unknown or other gender filters nothing.
SEX_SPECIFIC_PRIMARIES: dict[str, Sex] = {
    "prostate": Sex.MALE,
    "testis-seminoma": Sex.MALE,
    "cervix": Sex.FEMALE,
    "ovary": Sex.FEMALE,
}

# Childhood tumours (DOMAIN.md 4a; Rodallec et al., RadioGraphics 2008): listed only for a patient
# younger than ADULT_AGE at the study, or when the age is unknown (then marked so).
CHILDHOOD_PRIMARIES: tuple[str, ...] = ("neuroblastoma", "medulloblastoma")
ADULT_AGE = 18
CHILDHOOD_AGE_UNKNOWN = "childhood tumour, age unknown"

# DOMAIN.md 5 (v2): a collapsed level also lists the commonest benign alternative to a
# pathological fracture in the elderly.
OSTEOPOROTIC_FRACTURE = "osteoporotic-compression-fracture"
COLLAPSED_ANSWERS: frozenset[CollapseAnswer] = frozenset(
    {CollapseAnswer.LT_50, CollapseAnswer.GT_50}
)

TREATED_NOTE = (
    "Treated lesion: radiotherapy or chemotherapy may have formed new bone, so the appearance "
    "says less about the primary."
)


@dataclass(frozen=True, slots=True)
class Classification:
    """The metastasis classification of one level.

    `primary_remarks` pairs a likely primary with what the reader must know of it in this
    patient's context ("consistent with the known breast primary", "childhood tumour, age
    unknown"). `primary_context` is the sentence about the known primary, when there is one.
    """

    appearance: AppearanceResult
    likely_primaries: tuple[str, ...]
    differential: tuple[str, ...]
    atypical_primary: str | None  # the sentence when the known primary is atypical
    bone_island: str | None  # the sentence when the density favours a bone island
    treated: bool
    notes: tuple[str, ...]
    known_primary: str | None = None
    primary_context: str | None = None
    primary_remarks: tuple[tuple[str, str], ...] = ()
    left_out: tuple[str, ...] = ()  # the sentences naming primaries left out for this patient

    def remark(self, primary: str) -> str | None:
        """What the reader must know of one likely primary in this patient's context."""
        return next((text for code, text in self.primary_remarks if code == primary), None)


def bone_island_sentence(
    findings: LevelFindings,
    appearance: AppearanceResult,
    treated: bool,
    settings: AppearanceSettings,
) -> str | None:
    """The bone-island flag: an untreated sclerotic lesion denser than the Ulano et al. thresholds.

    DOMAIN.md 3: the rule is about sclerotic lesions, so it applies only when the appearance is
    determined blastic. On a time tie every tied value must pass (the flag lowers suspicion).
    """
    attenuation = ct_attenuation(findings)
    if attenuation is None or treated or appearance.determined is not BLASTIC:
        return None
    reasons = []
    if attenuation.means and min(attenuation.means) > settings.bone_island_mean_hu:
        reasons.append(f"mean {_hu(attenuation.means)} > {number(settings.bone_island_mean_hu)} HU")
    if attenuation.maxima and min(attenuation.maxima) > settings.bone_island_max_hu:
        reasons.append(
            f"maximum {_hu(attenuation.maxima)} > {number(settings.bone_island_max_hu)} HU"
        )
    if not reasons:
        return None
    return (
        f"Dense sclerotic lesion ({', '.join(reasons)}) favours a bone island (enostosis) over an "
        "osteoblastic metastasis (Ulano et al., AJR 2016: sensitivity 95%, specificity 96%)."
    )


def _hu(values: tuple[float, ...]) -> str:
    return " and ".join(f"{number(v)} HU" for v in values)


def dense_not_sclerotic_sentence(
    findings: LevelFindings,
    appearance: AppearanceResult,
    treated: bool,
    settings: AppearanceSettings,
) -> str | None:
    """A neutral note: the density passes the bone-island threshold but the lesion is not shown
    to be sclerotic (appearance not determined blastic), so the rule is not applied."""
    attenuation = ct_attenuation(findings)
    if attenuation is None or treated or appearance.determined is BLASTIC:
        return None
    dense = [
        f"{name} {_hu(values)} > {number(threshold)} HU"
        for name, values, threshold in (
            ("mean", attenuation.means, settings.bone_island_mean_hu),
            ("maximum", attenuation.maxima, settings.bone_island_max_hu),
        )
        if values and max(values) > threshold
    ]
    if not dense:
        return None
    return (
        f"Bone-island rule not applied: the attenuation ({', '.join(dense)}) is dense, but the "
        f"lesion is not shown to be sclerotic (appearance {words(appearance.allows)})."
    )


def known_primary(findings: LevelFindings) -> str | None:
    """The patient's known primary; `unknown-primary` states that there is none known."""
    primary = findings.primary_tumor
    return None if primary in (None, UNKNOWN_PRIMARY) else primary


def atypical_sentence(primary: str | None, allows: frozenset[LesionAnswer]) -> str | None:
    """The flag for a known primary outside the row of every appearance still possible."""
    if primary is None or primary == UNKNOWN_PRIMARY:
        return None
    if any(primary in LIKELY_PRIMARIES[a] for a in allows):
        return None
    atypical_for, reason = ATYPICAL_PRIMARIES.get(primary, (frozenset(), ATYPICAL_DEFAULT_REASON))
    if not allows <= atypical_for:
        reason = ATYPICAL_DEFAULT_REASON
    return (
        f"Atypical for the known {primary} primary: a {words(allows)} lesion ({reason}); "
        "the likely primaries of the appearance are still listed."
    )


def age_at(context: PatientContext, moment: datetime | None) -> tuple[int, int] | None:
    """The youngest and oldest age the patient can have on `moment`; None when unknown."""
    if moment is None or context.birth_earliest is None or context.birth_latest is None:
        return None
    on = moment.date()

    def years(born: date) -> int:
        return on.year - born.year - ((on.month, on.day) < (born.month, born.day))

    return years(context.birth_latest), years(context.birth_earliest)


def _study_moment(findings: LevelFindings) -> tuple[datetime, str] | None:
    """DOMAIN.md 4a: the study date (the latest study of the level), and the words of it.

    Without a known study date, the latest finding of the level stands in, and the words say so.
    """
    if findings.study_started is not None:
        return findings.study_started, f"the study date {findings.study_started.date()}"
    times = [f.observed_at for f in findings.findings if not f.patient_wide]
    if not times:
        return None
    latest = max(times)
    return latest, f"{latest.date()}, the latest finding (no study date known)"


def primaries_in_context(
    row: tuple[str, ...], findings: LevelFindings
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...], str | None]:
    """DOMAIN.md 4a: the row in the patient's context.

    Returns the primaries (the known one first when it is in the row), the remarks per primary,
    the sentences naming what was left out, and the sentence about the known primary.
    DESIGN: the known primary is never left out by the sex or age filter: the record says it.
    """
    known = known_primary(findings)
    context = findings.context
    listed: list[str] = []
    remarks: list[tuple[str, str]] = []
    by_sex: list[str] = []
    by_age: list[str] = []
    moment = _study_moment(findings)
    ages = age_at(context, moment[0] if moment is not None else None)
    for primary in row:
        if primary == known:
            continue
        sex = SEX_SPECIFIC_PRIMARIES.get(primary)
        if sex is not None and context.sex is not None and context.sex is not sex:
            by_sex.append(primary)
            continue
        if primary in CHILDHOOD_PRIMARIES:
            if ages is None or ages[0] < ADULT_AGE <= ages[1]:
                remarks.append((primary, CHILDHOOD_AGE_UNKNOWN))
            elif ages[0] >= ADULT_AGE:
                by_age.append(primary)
                continue
        listed.append(primary)
    left_out: list[str] = []
    if by_sex:
        assert context.sex is not None
        left_out.append(
            f"Left out for a {context.sex.value} patient: {', '.join(by_sex)} (sex-specific)."
        )
    if by_age:
        assert ages is not None
        assert moment is not None
        aged = str(ages[0]) if ages[0] == ages[1] else f"{ages[0]}-{ages[1]}"
        left_out.append(
            f"Left out for a patient aged {aged} on {moment[1]}: {', '.join(by_age)} "
            f"(childhood tumours, listed only under {ADULT_AGE})."
        )
    sentence = None
    if known is not None and known in row:
        listed.insert(0, known)
        sentence = f"Consistent with the known {known} primary."
        remarks.insert(0, (known, f"consistent with the known {known} primary"))
    return tuple(listed), tuple(remarks), tuple(left_out), sentence


def collapsed(findings: LevelFindings) -> bool:
    """DOMAIN.md 5 (v2): height loss above 0, or a stated collapse of < 50% or > 50%."""
    # Findings at the same latest time that disagree: any one of them that reports a collapse
    # keeps the benign alternative in the differential.
    measured = any(
        isinstance(f.value, float) and f.value > 0 for f in findings.latest(FindingKind.HEIGHT_LOSS)
    )
    return measured or any(
        f.value in COLLAPSED_ANSWERS for f in findings.latest(FindingKind.COLLAPSE)
    )


def classify(
    findings: LevelFindings,
    appearance: AppearanceResult,
    settings: AppearanceSettings | None = None,
) -> Classification:
    """Likely primaries, differential and flags for one level.

    DESIGN: primaries and the differential by appearance are listed only when the appearance is
    determined; an open appearance says so in a note instead of mixing the rows of several
    appearances. The osteoporotic fracture of a collapsed level does not depend on appearance.
    """
    settings = settings or AppearanceSettings()
    treated = is_treated(findings)
    determined = appearance.determined
    notes: list[str] = []
    primaries: tuple[str, ...] = ()
    remarks: tuple[tuple[str, str], ...] = ()
    left_out: tuple[str, ...] = ()
    consistent: str | None = None
    differential: tuple[str, ...] = ()
    bone_island = bone_island_sentence(findings, appearance, treated, settings)
    dense = dense_not_sclerotic_sentence(findings, appearance, treated, settings)
    if determined is None:
        notes.append(
            f"Appearance open ({words(appearance.allows)}): likely primaries and the differential "
            "by appearance are not narrowed."
        )
    else:
        primaries, remarks, left_out, consistent = primaries_in_context(
            LIKELY_PRIMARIES[determined], findings
        )
        differential = DIFFERENTIAL[determined]
        if bone_island is not None:
            # The density rule makes the enostosis the leading alternative.
            differential = ("bone-island", *(d for d in differential if d != "bone-island"))
    if collapsed(findings):
        differential = (*differential, OSTEOPOROTIC_FRACTURE)
    atypical = atypical_sentence(findings.primary_tumor, appearance.allows)
    notes.extend(d.sentence() for d in appearance.discordances)
    notes.extend(appearance.notes)
    notes.extend(appearance.ties)
    for sentence in (consistent, atypical, *left_out, bone_island, dense):
        if sentence is not None:
            notes.append(sentence)
    unknown_age = [code for code, text in remarks if text == CHILDHOOD_AGE_UNKNOWN]
    if unknown_age:
        notes.append(f"{', '.join(unknown_age)}: {CHILDHOOD_AGE_UNKNOWN}.")
    if collapsed(findings):
        notes.append(
            "Vertebral body collapse: an osteoporotic compression fracture (benign) is the "
            "commonest alternative to a pathological fracture in the elderly."
        )
    if treated:
        notes.append(TREATED_NOTE)
    return Classification(
        appearance,
        primaries,
        differential,
        atypical,
        bone_island,
        treated,
        tuple(notes),
        known_primary(findings),
        consistent or atypical,
        remarks,
        left_out,
    )
