"""The lesion table: one flat row per (patient, vertebral level), read from the outputs.

A row joins the three per-level outputs of CONTRACT.md 4a-4c by patient and level: the SINS
Observation (`sins#sins-total`), the classification Observation
(`spine-finding#lesion-classification`) and the SINS RiskAssessment (`method` `sins#sins`). The
level comes from `bodySite` (Observations) and from the vertebral-level extension (RiskAssessment);
the patient from `subject`. Everything else in the input is ignored, so a whole export (inputs,
reports, Provenance) can be handed in as it is.

Choices:
- Current version only: of several versions of one resource (same type and id) the highest
  `meta.versionId` counts. A current version that is `entered-in-error` withdraws that output, and
  a (patient, level) whose SINS Observation is withdrawn or absent has no row: the score is what a
  lesion row is about. A missing classification or RiskAssessment leaves its columns empty.
- Primary tumour: `known_primary` is the classification's `spine-finding#primary-tumor`
  component (the patient's known primary, v2); `likely_primary_1` the first `likely-primary`
  component: the known primary when it is in the appearance's row, else the most typical primary
  for the appearance in the patient's context (DOMAIN.md 4a: a woman never gets prostate).
- `escc_grade` is the classification's `spine-finding#escc-grade` component (v2, DOMAIN.md 6):
  empty when no finding states the level's grade, never assumed.
- `surgical_consultation` is true when the lowest possible total is 7 or more, the rule behind the
  RiskAssessment's mitigation (CONTRACT 4c); with a range across 6/7 it is false (not decided).
- `status` is the RiskAssessment's (`final`, `preliminary`, `amended`), or the SINS Observation's
  when there is no RiskAssessment. `last_updated` is the latest `meta.lastUpdated` of the joined
  outputs; `effective` the SINS Observation's `effectiveDateTime`.
- Open values are None in Python and empty in CSV: an open appearance, an open SINS component
  (answer and points), an undetermined total or category. Unknown is never 0.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from fhir_app.domain.levels import LEVEL_BY_SNOMED, VertebralLevel
from fhir_app.domain.sins_answers import (
    SINS_POINTS,
    SURGICAL_CONSULTATION_MIN_TOTAL,
    SinsComponent,
)
from fhir_app.fhir import codes

if TYPE_CHECKING:
    import pyarrow as pa

JsonObject = dict[str, Any]
ColumnKind = Literal["string", "int", "bool", "timestamp"]

ENTERED_IN_ERROR: Final = "entered-in-error"


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the lesion table: its name, value kind, whether it may be empty, meaning."""

    name: str
    kind: ColumnKind
    nullable: bool
    description: str


def _component_columns(component: SinsComponent) -> tuple[Column, Column]:
    prefix = component.value.replace("-", "_")
    return (
        Column(prefix, "string", True, f"SINS {component.value} answer code; empty when open"),
        Column(f"{prefix}_points", "int", True, f"SINS {component.value} points; empty when open"),
    )


# The schema of the lesion table, in column order; `LesionRow` has exactly these fields.
LESION_COLUMNS: Final[tuple[Column, ...]] = (
    Column("patient", "string", False, "Patient logical id (from subject)"),
    Column("level", "string", False, "Vertebral level as clinicians write it, C1..S5"),
    Column("region", "string", False, "cervical, thoracic, lumbar or sacral"),
    Column("appearance", "string", True, "lytic, mixed or blastic; empty when open"),
    *(column for c in SinsComponent for column in _component_columns(c)),
    Column("sins_total", "int", True, "SINS total 0-18; empty when the total is a range"),
    Column("sins_low", "int", False, "Lowest possible SINS total (the total when determined)"),
    Column("sins_high", "int", False, "Highest possible SINS total (the total when determined)"),
    Column("category", "string", True, "SINS category code; empty when the range spans two"),
    Column("surgical_consultation", "bool", False, "Lowest possible total is 7 or more"),
    Column("known_primary", "string", True, "The patient's known primary; empty when none"),
    Column("likely_primary_1", "string", True, "Most typical likely primary; empty when open"),
    Column("escc_grade", "string", True, "ESCC grade 0, 1a, 1b, 1c, 2 or 3; empty when unknown"),
    Column("effective", "timestamp", True, "When the findings were observed (latest finding)"),
    Column("last_updated", "timestamp", True, "Latest meta.lastUpdated of the joined outputs"),
    Column("status", "string", False, "RiskAssessment status (else the SINS Observation's)"),
)
COLUMN_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in LESION_COLUMNS)


@dataclass(frozen=True, slots=True)
class LesionRow:
    """One lesion: a (patient, level) with its SINS, classification and risk, flat."""

    patient: str
    level: str
    region: str
    appearance: str | None
    location: str | None
    location_points: int | None
    pain: str | None
    pain_points: int | None
    bone_lesion: str | None
    bone_lesion_points: int | None
    alignment: str | None
    alignment_points: int | None
    collapse: str | None
    collapse_points: int | None
    posterolateral: str | None
    posterolateral_points: int | None
    sins_total: int | None
    sins_low: int
    sins_high: int
    category: str | None
    surgical_consultation: bool
    known_primary: str | None
    likely_primary_1: str | None
    escc_grade: str | None
    effective: datetime | None
    last_updated: datetime | None
    status: str

    def as_dict(self) -> dict[str, Any]:
        """The row as a dict in column order."""
        return dict(zip(COLUMN_NAMES, astuple(self), strict=True))

    @property
    def vertebral_level(self) -> VertebralLevel:
        """The level as the domain's enum member."""
        return VertebralLevel[self.level]


# --- reading the outputs -------------------------------------------------------------------


def fhir_moment(text: str) -> datetime:
    """A FHIR dateTime / instant as an aware datetime; partial dates and no zone are taken as UTC.

    `2025`, `2025-09` and `2025-09-14` read as the start of that year, month or day.
    """
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _codings(concept: Any) -> list[JsonObject]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding", []) if isinstance(c, dict)]


def _code(concept: Any, system: str) -> str | None:
    """The code of the first coding of `system` in a CodeableConcept."""
    for coding in _codings(concept):
        if coding.get("system") == system and isinstance(coding.get("code"), str):
            code: str = coding["code"]
            return code
    return None


def _has_code(concept: Any, system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for c in _codings(concept))


def _patient(resource: JsonObject) -> str | None:
    reference = resource.get("subject", {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith("Patient/"):
        return None
    return reference.removeprefix("Patient/").split("/", 1)[0]


def _level(concept: Any, where: str) -> VertebralLevel:
    snomed = _code(concept, codes.SNOMED)
    level = LEVEL_BY_SNOMED.get(snomed or "")
    if level is None:
        raise ValueError(f"{where}: no SINS vertebral level (SNOMED CT) in {concept!r}")
    return level


def _version(resource: JsonObject) -> int:
    text = resource.get("meta", {}).get("versionId")
    return int(text) if isinstance(text, str) and text.isdigit() else 0


def _last_updated(resource: JsonObject) -> datetime | None:
    text = resource.get("meta", {}).get("lastUpdated")
    return fhir_moment(text) if isinstance(text, str) else None


OutputKind = Literal["sins", "classification", "risk"]


def output_kind(resource: JsonObject) -> OutputKind | None:
    """Which per-level output a resource is (SINS, classification, RiskAssessment), or None."""
    rtype = resource.get("resourceType")
    if rtype == "Observation":
        code = resource.get("code")
        if _has_code(code, codes.CS_SINS, codes.SINS_TOTAL):
            return "sins"
        if _has_code(code, codes.CS_SPINE_FINDING, codes.LESION_CLASSIFICATION):
            return "classification"
    elif rtype == "RiskAssessment" and _has_code(
        resource.get("method"), codes.CS_SINS, codes.SINS_METHOD
    ):
        return "risk"
    return None


def current_versions(resources: Iterable[JsonObject]) -> list[JsonObject]:
    """The highest version of every (resourceType, id); of equal versions the last one seen."""
    current: dict[tuple[str, str], JsonObject] = {}
    for resource in resources:
        key = (str(resource.get("resourceType")), str(resource.get("id")))
        held = current.get(key)
        if held is None or _version(resource) >= _version(held):
            current[key] = resource
    return list(current.values())


def _level_of(resource: JsonObject, kind: OutputKind) -> VertebralLevel:
    where = f"{resource.get('resourceType')}/{resource.get('id')}"
    if kind != "risk":
        return _level(resource.get("bodySite"), where)
    for extension in resource.get("extension", []):
        if isinstance(extension, dict) and extension.get("url") == codes.EXT_VERTEBRAL_LEVEL:
            return _level(extension.get("valueCodeableConcept"), where)
    raise ValueError(f"{where}: RiskAssessment without the vertebral-level extension")


@dataclass(slots=True)
class _LevelOutputs:
    sins: JsonObject | None = None
    classification: JsonObject | None = None
    risk: JsonObject | None = None


def _newer(held: JsonObject | None, candidate: JsonObject) -> bool:
    # Ids are stable per (patient, level), so two resources of one kind for one level come only
    # from foreign data; the most recently updated one is taken, then the greatest id.
    if held is None:
        return True
    epoch = datetime.min.replace(tzinfo=UTC)
    return ((_last_updated(candidate) or epoch), str(candidate.get("id"))) >= (
        (_last_updated(held) or epoch),
        str(held.get("id")),
    )


def _group(resources: Iterable[JsonObject]) -> dict[tuple[str, VertebralLevel], _LevelOutputs]:
    groups: dict[tuple[str, VertebralLevel], _LevelOutputs] = {}
    for resource in current_versions(resources):
        kind = output_kind(resource)
        if kind is None or resource.get("status") == ENTERED_IN_ERROR:
            continue
        patient = _patient(resource)
        if patient is None:
            continue
        outputs = groups.setdefault((patient, _level_of(resource, kind)), _LevelOutputs())
        if _newer(getattr(outputs, kind), resource):
            setattr(outputs, kind, resource)
    return groups


# --- the row -------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _range(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, dict):
        return None
    low = _int(value.get("low", {}).get("value"))
    high = _int(value.get("high", {}).get("value"))
    return None if low is None or high is None else (low, high)


def _answer(component: SinsComponent, entry: JsonObject) -> tuple[str | None, int | None]:
    """The answer code and points of a determined SINS component; (None, None) when open."""
    for coding in _codings(entry.get("valueCodeableConcept")):
        if coding.get("system") != codes.CS_SINS:
            continue
        answer = coding.get("code")
        for extension in coding.get("extension", []):
            if extension.get("url") == codes.EXT_ORDINAL_VALUE:
                return answer, _int(extension.get("valueDecimal"))
        # Without the ordinalValue extension the points come from the SINS table.
        table = {a.value: p for a, p in SINS_POINTS[component].items()}
        return answer, table.get(answer) if isinstance(answer, str) else None
    return None, None


def _components(sins: JsonObject) -> dict[str, Any]:
    values: dict[str, Any] = {}
    by_code = {
        _code(entry.get("code"), codes.CS_SINS): entry
        for entry in sins.get("component", [])
        if isinstance(entry, dict)
    }
    for component in SinsComponent:
        prefix = component.value.replace("-", "_")
        entry = by_code.get(component.value)
        answer, points = (None, None) if entry is None else _answer(component, entry)
        values[prefix] = answer
        values[f"{prefix}_points"] = points
    return values


def _totals(sins: JsonObject) -> tuple[int | None, int, int]:
    total = _int(sins.get("valueInteger"))
    if total is not None:
        return total, total, total
    bounds = _range(sins.get("valueRange"))
    if bounds is None:
        raise ValueError(f"Observation/{sins.get('id')}: SINS total without valueInteger or range")
    return None, *bounds


def _primary(classification: JsonObject | None, component: str) -> str | None:
    """The primary-tumor code of the first classification component of code `component`."""
    if classification is None:
        return None
    for entry in classification.get("component", []):
        if isinstance(entry, dict) and _has_code(
            entry.get("code"), codes.CS_SPINE_FINDING, component
        ):
            return _code(entry.get("valueCodeableConcept"), codes.CS_PRIMARY_TUMOR)
    return None


def _escc_grade(classification: JsonObject | None) -> str | None:
    """The level's ESCC grade: the classification's `spine-finding#escc-grade` component."""
    for entry in (classification or {}).get("component", []):
        if isinstance(entry, dict) and _has_code(
            entry.get("code"), codes.CS_SPINE_FINDING, codes.ESCC_GRADE
        ):
            return _code(entry.get("valueCodeableConcept"), codes.CS_ESCC)
    return None


def _row(patient: str, level: VertebralLevel, outputs: _LevelOutputs) -> LesionRow:
    sins, classification, risk = outputs.sins, outputs.classification, outputs.risk
    assert sins is not None
    total, low, high = _totals(sins)
    appearance = (
        _code(classification.get("valueCodeableConcept"), codes.CS_SINS)
        if classification is not None
        else None
    )
    category = next(
        (c for c in (_code(i, codes.CS_SINS) for i in sins.get("interpretation", [])) if c),
        None,
    )
    effective = sins.get("effectiveDateTime")
    updates = [
        moment
        for moment in (_last_updated(r) for r in (sins, classification, risk) if r is not None)
        if moment is not None
    ]
    status = (risk or sins).get("status")
    return LesionRow(
        patient=patient,
        level=level.label,
        region=level.region.value,
        appearance=appearance,
        **_components(sins),
        sins_total=total,
        sins_low=low,
        sins_high=high,
        category=category,
        surgical_consultation=low >= SURGICAL_CONSULTATION_MIN_TOTAL,
        known_primary=_primary(classification, codes.PRIMARY_TUMOR),
        likely_primary_1=_primary(classification, codes.LIKELY_PRIMARY),
        escc_grade=_escc_grade(classification),
        effective=fhir_moment(effective) if isinstance(effective, str) else None,
        last_updated=max(updates) if updates else None,
        status=str(status),
    )


def lesion_rows(resources: Iterable[JsonObject]) -> list[LesionRow]:
    """One row per (patient, level) with a current SINS Observation, by patient then C1..S5.

    `resources` may hold anything (inputs, reports, Provenance, several versions); see the
    module docstring for what is read and how. Raises ValueError on a per-level output whose
    level cannot be read or a SINS Observation without a total.
    """
    groups = _group(resources)
    keys = sorted(groups, key=lambda key: (key[0], key[1].order))
    return [
        _row(patient, level, groups[patient, level])
        for patient, level in keys
        if groups[patient, level].sins is not None
    ]


# --- writers -------------------------------------------------------------------------------


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def csv_records(rows: Iterable[LesionRow]) -> Iterator[list[str]]:
    """The header, then each row as CSV text fields (empty for None, true/false, ISO 8601)."""
    yield list(COLUMN_NAMES)
    for row in rows:
        yield [_csv_text(v) for v in astuple(row)]


def write_csv(rows: Iterable[LesionRow], path: Path | str) -> None:
    """Write the lesion table as UTF-8 CSV with a header row, columns in `LESION_COLUMNS` order."""
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(csv_records(rows))


def arrow_schema() -> pa.Schema:
    """The Arrow schema of the lesion table: nullable ints, bool, UTC timestamps, descriptions."""
    import pyarrow as pa

    kinds: Mapping[ColumnKind, pa.DataType] = {
        "string": pa.string(),
        "int": pa.int16(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema(
        [
            pa.field(
                c.name,
                kinds[c.kind],
                nullable=c.nullable,
                metadata={"description": c.description},
            )
            for c in LESION_COLUMNS
        ],
        metadata={"description": "fhir-app lesion table: one row per (patient, vertebral level)"},
    )


def arrow_table(rows: Sequence[LesionRow]) -> pa.Table:
    """The lesion table as an Arrow table of `arrow_schema()`."""
    import pyarrow as pa

    columns = {name: [getattr(row, name) for row in rows] for name in COLUMN_NAMES}
    return pa.Table.from_pydict(columns, schema=arrow_schema())


def write_parquet(rows: Iterable[LesionRow], path: Path | str) -> None:
    """Write the lesion table as Parquet with `arrow_schema()`."""
    import pyarrow.parquet as pq

    pq.write_table(arrow_table(list(rows)), Path(path))
