"""Grouping mapped inputs per patient and level, and deriving the domain results from them.

Shared by the stateless `assess` path and the persistent service: both hand over the current
accepted inputs of a patient and get back the domain summary plus what each level was derived from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from fhir_app.domain.appearance import AppearanceSettings
from fhir_app.domain.assessment import PatientSummary, summarise
from fhir_app.domain.findings import PATIENT_ONLY_KINDS, Finding, LevelFindings, PatientContext
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.noms import myelopathy_of
from fhir_app.fhir.inbound import parse_fhir_datetime
from fhir_app.fhir.inputs import MappedObservation, MappedPatient, MappedStudy


@dataclass(slots=True)
class PatientInputs:
    """The current, counting inputs of one patient, grouped by level."""

    patient: str
    by_level: dict[VertebralLevel, list[MappedObservation]] = field(default_factory=dict)
    patient_wide: list[MappedObservation] = field(default_factory=list)
    studies: dict[str, MappedStudy] = field(default_factory=dict)
    # The patient's own Patient resource (DOMAIN.md 4a context); None when none was received.
    patient_resource: MappedPatient | None = None

    @property
    def context(self) -> PatientContext:
        """Sex and birth date of the patient; nothing known without a Patient resource."""
        resource = self.patient_resource
        return resource.context if resource is not None else PatientContext()

    def primary_tumor(self) -> str | None:
        """The latest stated primary tumour of the patient."""
        stated = [o for o in self.patient_wide if o.primary_tumor is not None]
        if not stated:
            return None
        latest = max(
            stated, key=lambda o: (o.primary_observed_at is not None, o.primary_observed_at)
        )
        return latest.primary_tumor

    def level_findings(self, level: VertebralLevel) -> LevelFindings:
        """The findings of one level plus the patient-wide ones (pain stated without a level)."""
        findings: list[Finding] = []
        sources: list[str] = []
        for obs in self.by_level[level]:
            findings.extend(f.finding for f in obs.findings if f.level is level)
            sources.append(obs.reference)
        for obs in self.patient_wide:
            wide = [
                f.finding
                for f in obs.findings
                if f.level is None and f.finding.kind not in PATIENT_ONLY_KINDS
            ]
            findings.extend(wide)
            if wide:
                sources.append(obs.reference)
        return LevelFindings(
            tuple(findings),
            self.primary_tumor(),
            tuple(sources),
            self.context,
            len(self.by_level),
            self.study_started(self.by_level[level]),
        )

    def study_started(self, observations: Iterable[MappedObservation]) -> datetime | None:
        """When the latest ImagingStudy the observations were read from started (DOMAIN.md 4a).

        None when they reference no accepted study with a `started` (the age is then taken at
        the latest finding, and the output says so).
        """
        starts = [
            parse_fhir_datetime(s.started, "ImagingStudy.started")
            for s in self.studies_of(observations)
            if s.started is not None
        ]
        return max(starts) if starts else None

    def myelopathy(self) -> bool | None:
        """What the patient's latest `myelopathy` finding says; None when none does."""
        return myelopathy_of(
            f.finding for obs in self.patient_wide for f in obs.findings if f.level is None
        )

    def studies_of(self, observations: Iterable[MappedObservation]) -> list[MappedStudy]:
        """The accepted ImagingStudies the given observations were read from."""
        ids = sorted({sid for obs in observations for sid in obs.study_ids})
        return [self.studies[i] for i in ids if i in self.studies]

    def summary(self, settings: AppearanceSettings | None = None) -> PatientSummary:
        """Derive SINS and the classification of every lesion level of the patient."""
        return summarise(
            {lvl: self.level_findings(lvl) for lvl in self.by_level}, settings, self.myelopathy()
        )


def group_by_patient(
    observations: Iterable[MappedObservation],
    studies: Iterable[MappedStudy],
    patient_resources: Iterable[MappedPatient] = (),
) -> dict[str, PatientInputs]:
    """Group the counting inputs (not withdrawn, not ignored) per patient and level.

    `observations` include the Conditions (MappedCondition), read as the findings they state.

    A Patient resource is the context of the patient whose id it has.
    """
    patients: dict[str, PatientInputs] = {}

    def of(patient: str) -> PatientInputs:
        return patients.setdefault(patient, PatientInputs(patient))

    for resource in patient_resources:
        of(resource.resource_id).patient_resource = resource

    for study in studies:
        if not study.withdrawn and not study.ignored:
            of(study.patient).studies[study.resource_id] = study
    for obs in observations:
        # Only an ignored input can lack a patient; the check also tells the type checker so.
        if obs.withdrawn or obs.ignored or obs.patient is None:
            continue
        inputs = of(obs.patient)
        for level in sorted(obs.levels, key=lambda lvl: lvl.order):
            inputs.by_level.setdefault(level, []).append(obs)
        if obs.primary_tumor is not None or any(f.level is None for f in obs.findings):
            inputs.patient_wide.append(obs)
    return patients
