"""What the inbound mapping hands to the service: accepted inputs as domain findings.

These types are the seam between the FHIR adapter and the service layer. They hold domain values
and references only; the raw JSON stays with the caller (store or stateless assess) as received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_app.domain.findings import Finding, PatientContext
from fhir_app.domain.levels import VertebralLevel

JsonObject = dict[str, Any]


def versioned(resource_type: str, resource_id: str, version: int) -> str:
    """A version-specific reference, `Observation/abc/_history/2`."""
    return f"{resource_type}/{resource_id}/_history/{version}"


@dataclass(frozen=True, slots=True)
class LevelFinding:
    """A finding and the level it belongs to; `level` None means patient-wide (pain only)."""

    level: VertebralLevel | None
    finding: Finding


@dataclass(frozen=True, slots=True)
class MappedObservation:
    """One accepted input Observation, mapped.

    `withdrawn` (entered-in-error, cancelled) findings must not count; `ignored` is an Observation
    whose code lies outside the contract: stored, never derived from. `patient` is None only for
    an ignored input whose subject is not a Patient (a contained Patient, a Group, or none).
    """

    resource_id: str
    version: int
    patient: str | None
    status: str
    findings: tuple[LevelFinding, ...] = ()
    primary_tumor: str | None = None
    primary_observed_at: datetime | None = None
    study_ids: tuple[str, ...] = ()  # ImagingStudy ids from derivedFrom / partOf
    withdrawn: bool = False
    ignored: bool = False

    @property
    def reference(self) -> str:
        """The version-specific reference to this input."""
        return versioned("Observation", self.resource_id, self.version)

    @property
    def preliminary(self) -> bool:
        """True when the status makes the outputs preliminary (`unknown` counts as such)."""
        return self.status in ("preliminary", "unknown")

    @property
    def levels(self) -> frozenset[VertebralLevel]:
        """The levels this input speaks about (patient-wide pain not included)."""
        return frozenset(f.level for f in self.findings if f.level is not None)


@dataclass(frozen=True, slots=True)
class MappedCondition(MappedObservation):
    """One accepted input Condition, read as the findings it states (CONTRACT 3, v2).

    A primary cancer Condition states the patient's known primary exactly as a `primary-tumor`
    Observation does, and a secondary one a lesion at each vertebral level of its bodySite, so the
    derivation treats it as an Observation; only its references name the Condition. `status` holds
    the clinicalStatus code (empty when absent); `provisional` is a verificationStatus of
    unconfirmed, provisional or differential: its lesion findings are preliminary (so are the
    outputs of their level), and its primary is read as a preliminary primary-tumor Observation's.
    """

    provisional: bool = False

    @property
    def reference(self) -> str:
        """The version-specific reference to this input."""
        return versioned("Condition", self.resource_id, self.version)

    @property
    def preliminary(self) -> bool:
        """True when the diagnosis is not confirmed (verificationStatus, DESIGN in inbound)."""
        return self.provisional


@dataclass(frozen=True, slots=True)
class MappedStudy:
    """One accepted input ImagingStudy, mapped."""

    resource_id: str
    version: int
    patient: str
    status: str
    modalities: tuple[str, ...] = ()
    study_uid: str | None = None
    started: str | None = None
    withdrawn: bool = False
    # No imaging modality of the contract (only US, MG, ...): stored, never a finding's context.
    ignored: bool = False

    @property
    def reference(self) -> str:
        """The version-specific reference to this study."""
        return versioned("ImagingStudy", self.resource_id, self.version)


@dataclass(frozen=True, slots=True)
class MappedPatient:
    """One accepted input Patient: the context of DOMAIN.md 4a (sex, birth date)."""

    resource_id: str
    version: int
    context: PatientContext

    @property
    def reference(self) -> str:
        """The version-specific reference to this Patient."""
        return versioned("Patient", self.resource_id, self.version)


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue: severity, code (issue-type), text and FHIRPath expressions."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()


@dataclass(slots=True)
class InputRejected(Exception):
    """A resource the contract refuses; `issues` becomes its OperationOutcome."""

    issues: list[Issue] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)
