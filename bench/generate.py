"""A synthetic population of vertebral-metastasis patients as fhir-app input (CONTRACT section 3).

Every resource is built by the builders of `fhir_app.fhir.samples`, so the population speaks the
contract exactly as the examples and the tests do. Each patient is generated from its own random
stream (seeded by `seed` and the patient's index), so patient 1,000,000 costs no more than
patient 0, any patient can be rebuilt alone (the REST benchmark does), and the output is the same
per seed.

What a patient looks like (the shares are DESIGN choices for a realistic mix, not literature):
- a Patient; a CT study (85%) and/or an MR study (55%), at least one, each with a DICOM UID;
- a known primary tumour (90%), drawn by how often each primary reaches the spine (DOMAIN.md 1);
- 1-4 lesion levels (40/30/20/10%), thoracic 60%, lumbar 28%, cervical 8%, sacral 4%
  (the thoracolumbar spine carries most spinal metastases);
- per level: complete findings (60%) or an incomplete subset; CT attenuation and MR signal
  consistent with the lesion's appearance, derivedFrom the study they were read from; the whole
  level as one `vertebral-lesion` panel or as standalone Observations (50/50);
- a patient-wide pain finding without bodySite instead of per-level pain (15%);
- a preliminary finding now and then (~3%) and an entered-in-error misreading beside the real
  findings (~2% of levels; the level keeps its counting findings, so every level yields outputs).

Run: `python bench/generate.py --patients 1000 --out pop.ndjson [--format ndjson|bundle] [--seed S]`
or `--resources N` for a population of at least N input resources.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from fhir_app.domain.levels import SpinalRegion, VertebralLevel
from fhir_app.fhir.inputs import JsonObject
from fhir_app.fhir.samples import (
    imaging_study,
    lesion_panel,
    observation,
    patient,
    primary_tumor,
    transaction,
)

FORMATS: Final = ("ndjson", "bundle")
DEFAULT_PREFIX: Final = "bench"

# DOMAIN.md section 1 ranks the primaries that reach the spine: breast, lung, prostate, lymphoma,
# renal cell, gastrointestinal, melanoma, pancreas, thyroid, carcinoid. The weights follow that
# order (DESIGN); the rarer primaries of DOMAIN.md section 4 share the tail.
PRIMARY_WEIGHTS: Final[dict[str, float]] = {
    "breast": 24,
    "lung-non-small-cell": 16,
    "lung-small-cell": 4,
    "prostate": 17,
    "lymphoma-non-hodgkin": 6,
    "lymphoma-hodgkin": 2,
    "renal-cell": 7,
    "gi-adenocarcinoma": 5,
    "gi-mucinous-adenocarcinoma": 1,
    "melanoma": 4,
    "pancreas": 3,
    "thyroid": 3,
    "carcinoid": 2,
    "bladder-urothelial": 1.5,
    "cervix": 1,
    "ovary": 1,
    "hepatocellular": 1,
    "squamous-cell": 1,
    "unknown-primary": 3,
}

# Appearance by primary (lytic, mixed, blastic); otherwise Greenspan's 75/10/15 of bone metastases.
APPEARANCES: Final = ("lytic", "mixed", "blastic")
APPEARANCE_WEIGHTS: Final[dict[str, tuple[float, float, float]]] = {
    "prostate": (5, 15, 80),
    "breast": (50, 30, 20),
    "lung-small-cell": (40, 20, 40),
    "carcinoid": (30, 20, 50),
    "renal-cell": (97, 2, 1),
    "thyroid": (97, 2, 1),
}
DEFAULT_APPEARANCE_WEIGHTS: Final = (75, 10, 15)

REGION_WEIGHTS: Final[dict[SpinalRegion, float]] = {
    SpinalRegion.THORACIC: 60,
    SpinalRegion.LUMBAR: 28,
    SpinalRegion.CERVICAL: 8,
    SpinalRegion.SACRAL: 4,
}
_LEVEL_LABELS: Final = [level.label for level in VertebralLevel]
_LEVEL_WEIGHTS: Final = [
    REGION_WEIGHTS[level.region]
    / sum(1 for other in VertebralLevel if other.region is level.region)
    for level in VertebralLevel
]

LEVEL_COUNT_WEIGHTS: Final = (40, 30, 20, 10)  # 1, 2, 3, 4 levels
SINS_KINDS: Final = ("appearance", "pain", "alignment", "height_loss", "involvement", "posterior")

FAMILY_NAMES: Final = (
    "Lindqvist", "Moreau", "Okafor", "Tanaka", "Novak", "García", "Schmidt", "Rossi", "Kowalski",
    "Nguyen", "Haddad", "Jensen", "Murphy", "Silva", "Ivanova", "Dubois", "Chen", "Patel",
)  # fmt: skip
GIVEN_NAMES: Final = {
    "female": ("Claire", "Amara", "Yuki", "Elena", "Maria", "Ingrid", "Sofia", "Aoife", "Mei"),
    "male": ("Erik", "Jonas", "Kenji", "Luca", "Tomasz", "Omar", "Pedro", "Henrik", "Arjun"),
}

# Stays in the month so that every generated date is valid without calendar arithmetic.
EPOCH: Final = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class PatientInputs:
    """One generated patient: its input resources and the levels that must yield outputs."""

    patient_id: str
    resources: list[JsonObject]
    levels: tuple[str, ...]


@dataclass(slots=True)
class PopulationSummary:
    """What was generated: counts to check outputs against and to report."""

    patients: int = 0
    levels: int = 0
    resources: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    panels: int = 0
    standalone_findings: int = 0
    seconds: float = 0.0

    @property
    def resources_per_patient(self) -> float:
        """Input resources per patient on average."""
        return self.resources / self.patients if self.patients else 0.0

    def add(self, generated: PatientInputs) -> None:
        """Count one patient."""
        self.patients += 1
        self.levels += len(generated.levels)
        self.resources += len(generated.resources)
        for resource in generated.resources:
            self.by_type[resource["resourceType"]] += 1
            code = resource.get("code", {}).get("coding", [{}])[0].get("code")
            if code == "vertebral-lesion":
                self.panels += 1
            elif resource.get("bodySite") is not None:
                self.standalone_findings += 1

    def describe(self) -> str:
        """A few lines for the terminal."""
        types = ", ".join(f"{n} {t}" for t, n in sorted(self.by_type.items()))
        rate = self.resources / self.seconds if self.seconds else 0.0
        return (
            f"{self.patients} patients, {self.levels} lesion levels, {self.resources} resources "
            f"({self.resources_per_patient:.1f} per patient; {types}); "
            f"{self.panels} panels, {self.standalone_findings} standalone level findings; "
            f"generated in {self.seconds:.2f} s ({rate:,.0f} resources/s)"
        )


def patient_id_of(index: int, seed: int, prefix: str = DEFAULT_PREFIX) -> str:
    """The Patient id of the index-th patient of a population (distinct across seeds)."""
    return f"{prefix}-{seed}-{index}"


def _study_uid(patient_id: str, modality: str) -> str:
    # 2.25.<uuid as integer> is the DICOM way to make a UID without an org root (PS3.5 B.2).
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'{patient_id}/{modality}').int}"


def _timestamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _PatientBuilder:
    """The random choices for one patient; methods return lists of resources."""

    def __init__(self, index: int, seed: int, prefix: str) -> None:
        self.rng = random.Random(f"{seed}:{index}")  # str seeds hash with SHA-512: stable
        self.pid = patient_id_of(index, seed, prefix)
        self.scanned = EPOCH + dt.timedelta(
            days=self.rng.randrange(730), hours=self.rng.randrange(7, 18)
        )
        self.read = self.scanned + dt.timedelta(minutes=self.rng.randrange(20, 180))
        has_ct = self.rng.random() < 0.85
        has_mr = self.rng.random() < 0.55 or not has_ct
        self.studies = {
            m: f"{self.pid}-{m.lower()}" for m, on in (("CT", has_ct), ("MR", has_mr)) if on
        }
        self.primary = (
            self.rng.choices(list(PRIMARY_WEIGHTS), weights=list(PRIMARY_WEIGHTS.values()))[0]
            if self.rng.random() < 0.90
            else None
        )
        self.patient_wide_pain = self.rng.random() < 0.15

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def status(self) -> str:
        return "preliminary" if self.chance(0.03) else "final"

    def base(self) -> list[JsonObject]:
        """Patient, studies, primary tumour and patient-wide pain."""
        rng = self.rng
        gender = rng.choice(("female", "male"))
        birth = dt.date(rng.randrange(1935, 1986), rng.randrange(1, 13), rng.randrange(1, 29))
        out = [
            patient(
                self.pid,
                rng.choice(FAMILY_NAMES),
                rng.choice(GIVEN_NAMES[gender]),
                birth.isoformat(),
                gender,
            )
        ]
        for modality, study_id in self.studies.items():
            out.append(
                imaging_study(
                    study_id,
                    self.pid,
                    modality,
                    started=_timestamp(self.scanned),
                    uid=_study_uid(self.pid, modality),
                )
            )
        if self.primary is not None:
            diagnosed = self.scanned - dt.timedelta(days=rng.randrange(30, 2000))
            out.append(
                primary_tumor(
                    f"{self.pid}-primary",
                    self.pid,
                    self.primary,
                    effective=diagnosed.date().isoformat(),
                )
            )
        if self.patient_wide_pain:
            out.append(
                observation(
                    f"{self.pid}-pain",
                    self.pid,
                    "pain",
                    self._pain(),
                    level=None,
                    effective=_timestamp(self.read),
                    status=self.status(),
                )
            )
        return out

    def level_labels(self) -> list[str]:
        """1-4 distinct levels, weighted to the thoracolumbar spine, cranio-caudal order."""
        count = self.rng.choices((1, 2, 3, 4), weights=LEVEL_COUNT_WEIGHTS)[0]
        chosen: set[str] = set()
        while len(chosen) < count:
            chosen.add(self.rng.choices(_LEVEL_LABELS, weights=_LEVEL_WEIGHTS)[0])
        return sorted(chosen, key=_LEVEL_LABELS.index)

    def _pain(self) -> str:
        return self.rng.choices(
            ("mechanical", "occasional-non-mechanical", "pain-free"), weights=(35, 35, 30)
        )[0]

    def _findings(self, appearance: str) -> list[tuple[str, Any]]:
        """The SINS findings and imaging measurements of one level (short sample kinds)."""
        rng = self.rng
        complete = self.chance(0.60)
        wanted = [k for k in SINS_KINDS if complete or self.chance(0.5)]
        if self.patient_wide_pain and "pain" in wanted:
            wanted.remove("pain")
        if not wanted:
            wanted = [rng.choice([k for k in SINS_KINDS if k != "pain"])]
        findings: list[tuple[str, Any]] = []
        height_loss = rng.choice((0, 0, 0, rng.randrange(5, 51), rng.randrange(51, 90)))
        for kind in wanted:
            if kind == "appearance":
                findings.append(("appearance", appearance))
            elif kind == "pain":
                findings.append(("pain", self._pain()))
            elif kind == "alignment":
                answer = rng.choices(
                    ("normal-alignment", "de-novo-deformity", "subluxation-translation"),
                    weights=(80, 15, 5),
                )[0]
                # A feed may state the SINS answer itself (CONTRACT 2c, last paragraph).
                findings.append(("sins:alignment" if self.chance(0.1) else "alignment", answer))
            elif kind == "height_loss":
                findings.append(("height_loss", height_loss))
            elif kind == "involvement":
                findings.append(("involvement", rng.randrange(10, 95)))
            else:
                side = rng.choices(("none", "left", "right", "both"), weights=(45, 20, 20, 15))[0]
                findings.append(("posterior", side))
        treated = self.chance(0.15)
        if "CT" in self.studies and self.chance(0.8):
            findings.append(("ct", self._attenuation(appearance, treated)))
        if "MR" in self.studies:
            t1, t2 = self._signal(appearance)
            if self.chance(0.7):
                findings.append(("t1", t1))
            if self.chance(0.8):
                findings.append(("t2", t2))
            if self.chance(0.4):
                findings.append(("contrast", appearance != "blastic"))
        if treated or self.chance(0.1):
            findings.append(("treated", treated))
        return findings

    def _attenuation(self, appearance: str, treated: bool) -> int:
        low, high = {"lytic": (15, 95), "mixed": (110, 290), "blastic": (320, 950)}[appearance]
        if treated and appearance == "lytic":
            high = 400  # treated lytic lesions sclerose (DOMAIN.md section 1)
        return self.rng.randrange(low, high)

    def _signal(self, appearance: str) -> tuple[str, str]:
        if appearance == "lytic":
            return self.rng.choice(("iso", "hypo")), self.rng.choice(("hyper", "iso"))
        if appearance == "mixed":
            return "hypo", self.rng.choice(("heterogeneous", "hyper", "hypo"))
        return "hypo", "hypo"

    def _study_for(self, kind: str) -> str | None:
        if kind == "pain":
            return None  # pain is a clinical finding, not read from an image
        if kind == "ct":
            return self.studies["CT"]
        if kind in ("t1", "t2", "contrast"):
            return self.studies["MR"]
        return next(iter(self.studies.values()))

    def level_group(self, label: str, *, panel: bool | None = None) -> list[JsonObject]:
        """The input Observations of one lesion level (a panel, or one per finding)."""
        appearance = self.rng.choices(
            APPEARANCES,
            weights=APPEARANCE_WEIGHTS.get(self.primary or "", DEFAULT_APPEARANCE_WEIGHTS),
        )[0]
        findings = self._findings(appearance)
        as_panel = self.chance(0.5) if panel is None else panel
        base_id = f"{self.pid}-{label.lower()}"
        effective = _timestamp(self.read)
        out: list[JsonObject] = []
        if as_panel:
            study = self.studies.get("MR" if any(k in ("t1", "t2") for k, _ in findings) else "CT")
            out.append(
                lesion_panel(
                    f"{base_id}-panel",
                    self.pid,
                    label,
                    findings,
                    effective=effective,
                    status=self.status(),
                    study=study or next(iter(self.studies.values())),
                )
            )
        else:
            for kind, value in findings:
                out.append(
                    observation(
                        f"{base_id}-{kind.replace(':', '-').replace('_', '-')}",
                        self.pid,
                        kind,
                        value,
                        level=label,
                        effective=effective,
                        status=self.status(),
                        study=self._study_for(kind),
                    )
                )
        if self.chance(0.02):
            # A misread appearance, withdrawn by the radiologist: must not count.
            wrong = self.rng.choice([a for a in APPEARANCES if a != appearance])
            out.append(
                observation(
                    f"{base_id}-misread",
                    self.pid,
                    "appearance",
                    wrong,
                    level=label,
                    effective=effective,
                    status="entered-in-error",
                    study=next(iter(self.studies.values())),
                )
            )
        return out

    def follow_up(self, label: str, number: int) -> JsonObject:
        """A later standalone reading at a level already described (latest wins per component)."""
        later = self.read + dt.timedelta(days=7 * number)
        kind, value = self.rng.choice(
            (("height_loss", self.rng.randrange(0, 90)), ("pain", self._pain()))
        )
        return observation(
            f"{self.pid}-{label.lower()}-follow-up-{number}",
            self.pid,
            kind,
            value,
            level=label,
            effective=_timestamp(later),
            study=self._study_for(kind),
        )


def patient_inputs(
    index: int, seed: int = 0, *, size: int | None = None, prefix: str = DEFAULT_PREFIX
) -> PatientInputs:
    """The input resources of the index-th patient of the population `seed`.

    With `size`, exactly that many resources (at least 8): levels are kept while they fit (the
    first one as a panel if it would not), then later follow-up readings fill the rest.
    """
    builder = _PatientBuilder(index, seed, prefix)
    resources = builder.base()
    labels = builder.level_labels()
    if size is None:
        for label in labels:
            resources.extend(builder.level_group(label))
        return PatientInputs(builder.pid, resources, tuple(labels))
    if size < 8:
        raise ValueError("a patient of exact size needs at least 8 resources")
    kept: list[str] = []
    for label in labels:
        group = builder.level_group(label)
        if len(resources) + len(group) > size:
            if kept:
                break
            group = builder.level_group(label, panel=True)
        resources.extend(group)
        kept.append(label)
    number = 0
    while len(resources) < size:
        number += 1
        resources.append(builder.follow_up(kept[number % len(kept)], number))
    return PatientInputs(builder.pid, resources, tuple(kept))


def iter_patients(
    patients: int | None = None,
    seed: int = 0,
    *,
    resources: int | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> Iterator[PatientInputs]:
    """Patients 0, 1, 2, ... until `patients` of them, or until `resources` inputs are reached."""
    if (patients is None) == (resources is None):
        raise ValueError("give exactly one of patients or resources")
    index = total = 0
    while (patients is not None and index < patients) or (
        resources is not None and total < resources
    ):
        generated = patient_inputs(index, seed, prefix=prefix)
        total += len(generated.resources)
        index += 1
        yield generated


def write_population(
    sink: IO[bytes],
    patients: int | None = None,
    seed: int = 0,
    *,
    resources: int | None = None,
    fmt: str = "ndjson",
    prefix: str = DEFAULT_PREFIX,
) -> PopulationSummary:
    """Stream a population to `sink`, one resource (or Bundle entry) at a time.

    `ndjson` writes one resource per line; `bundle` one transaction Bundle whose entries PUT every
    resource at its id. Memory stays bounded by one patient either way.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    summary = PopulationSummary()
    started = time.perf_counter()
    if fmt == "bundle":
        sink.write(b'{"resourceType":"Bundle","type":"transaction","entry":[\n')
    first = True
    for generated in iter_patients(patients, seed, resources=resources, prefix=prefix):
        summary.add(generated)
        if fmt == "ndjson":
            sink.write(b"".join(orjson.dumps(r) + b"\n" for r in generated.resources))
            continue
        for entry in transaction(generated.resources)["entry"]:
            sink.write(orjson.dumps(entry) if first else b",\n" + orjson.dumps(entry))
            first = False
    if fmt == "bundle":
        sink.write(b"\n]}\n")
    summary.seconds = time.perf_counter() - started
    return summary


def write_population_file(
    path: Path,
    patients: int | None = None,
    seed: int = 0,
    *,
    resources: int | None = None,
    fmt: str = "ndjson",
    prefix: str = DEFAULT_PREFIX,
) -> PopulationSummary:
    """`write_population` into a file (created or replaced)."""
    with path.open("wb", buffering=1 << 20) as sink:
        return write_population(sink, patients, seed, resources=resources, fmt=fmt, prefix=prefix)


def main(argv: list[str] | None = None) -> int:
    """Command line: write a population and print what it holds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--patients", type=int, help="number of patients")
    size.add_argument("--resources", type=int, help="at least this many input resources")
    parser.add_argument("--out", type=Path, required=True, help="output file ('-' for stdout)")
    parser.add_argument("--format", choices=FORMATS, default="ndjson")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="start of every Patient id")
    args = parser.parse_args(argv)
    options = {"resources": args.resources, "fmt": args.format, "prefix": args.prefix}
    if str(args.out) == "-":
        summary = write_population(sys.stdout.buffer, args.patients, args.seed, **options)
    else:
        summary = write_population_file(args.out, args.patients, args.seed, **options)
    print(summary.describe(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
