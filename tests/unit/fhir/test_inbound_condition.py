"""Inbound mapping of input Conditions (CONTRACT 3, v2) and Observations outside the contract.

A primary cancer Condition states the known primary like a `primary-tumor` Observation; a
secondary cancer Condition of the bone states a lesion at each vertebral level of its bodySite.
The status rules (inbound module docstring) are one table, one row per status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from support.conditions import primary_condition, secondary_condition

from fhir_app.derivation import group_by_patient
from fhir_app.domain.findings import FindingKind
from fhir_app.domain.levels import VertebralLevel
from fhir_app.fhir import samples
from fhir_app.fhir.inbound import map_condition, map_observation
from fhir_app.fhir.inputs import InputRejected, MappedCondition
from fhir_app.fhir.parse import validate_resource
from fhir_app.service import mapped as service_mapped

RECEIVED = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def mapped(raw: dict[str, Any], version: int = 1) -> MappedCondition:
    validate_resource(raw)
    return map_condition(raw, resource_id=raw["id"], version=version, received_at=RECEIVED)


def test_a_primary_condition_states_the_known_primary() -> None:
    m = mapped(primary_condition("c1", "p1", "breast"), version=3)
    assert (m.patient, m.primary_tumor, m.findings) == ("p1", "breast", ())
    assert m.primary_observed_at == datetime(2024, 1, 10, tzinfo=UTC)
    assert (m.ignored, m.withdrawn, m.preliminary) == (False, False, False)
    assert m.reference == "Condition/c1/_history/3"


def test_any_condition_with_a_primary_tumor_coding_states_it_without_the_mcode_profile() -> None:
    assert mapped(primary_condition("c1", "p1", "renal-cell", profile=False)).primary_tumor == (
        "renal-cell"
    )


def test_a_primary_condition_reads_like_a_primary_tumor_observation() -> None:
    condition = mapped(primary_condition("c1", "p1", "prostate"))
    observation = map_observation(
        samples.primary_tumor("o1", "p1", "prostate", effective="2024-01-10"),
        resource_id="o1",
        version=1,
        received_at=RECEIVED,
    )
    for m in (condition, observation):
        grouped = group_by_patient([m], [])["p1"]
        assert grouped.primary_tumor() == "prostate"
        assert grouped.patient_wide == [m]
        assert grouped.by_level == {}
    assert condition.primary_observed_at == observation.primary_observed_at


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        (("L1",), [VertebralLevel.L1]),
        (("T12", "L1"), [VertebralLevel.T12, VertebralLevel.L1]),
        (("L1", "L1"), [VertebralLevel.L1]),
    ],
)
def test_a_secondary_bone_condition_states_a_lesion_at_each_level(
    levels: tuple[str, ...], expected: list[VertebralLevel]
) -> None:
    m = mapped(secondary_condition("c2", "p1", *levels))
    assert [f.level for f in m.findings] == expected
    for f in m.findings:
        assert f.finding.kind is FindingKind.LESION_PRESENT
        assert f.finding.source == "Condition/c2/_history/1"
        assert f.finding.observed_at == datetime(2024, 3, 1, tzinfo=UTC)
    assert m.primary_tumor is None
    assert sorted(group_by_patient([m], [])["p1"].by_level, key=lambda v: v.order) == expected


@pytest.mark.parametrize(("profile", "snomed_bone"), [(True, False), (False, True)])
def test_the_mcode_profile_or_the_snomed_code_alone_makes_a_secondary(
    profile: bool, snomed_bone: bool
) -> None:
    m = mapped(secondary_condition("c2", "p1", "T7", profile=profile, snomed_bone=snomed_bone))
    assert [f.level for f in m.findings] == [VertebralLevel.T7]


@pytest.mark.parametrize(
    "raw",
    [
        # neither profile nor 94222008: a secondary of the liver says nothing of the spine
        secondary_condition("c", "p1", "T7", profile=False, snomed_bone=False),
        # a secondary of bone without a vertebral level
        secondary_condition("c", "p1"),
        {
            **secondary_condition("c", "p1"),
            "bodySite": [{"coding": [{"system": "http://snomed.info/sct", "code": "64688005"}]}],
        },
        # codes outside the contract: a diabetes Condition
        {
            "resourceType": "Condition",
            "id": "c",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
            "subject": {"reference": "Patient/p1"},
        },
        # no Patient subject: a Group, a contained Patient, none
        {**primary_condition("c", "p1", "breast"), "subject": {"reference": "Group/g1"}},
        {**primary_condition("c", "p1", "breast"), "subject": {"reference": "#p1"}},
        {**primary_condition("c", "p1", "breast"), "subject": {"display": "somebody"}},
    ],
    ids=["liver", "no-site", "coccyx", "outside", "group", "contained", "no-subject"],
)
def test_stored_and_ignored(raw: dict[str, Any]) -> None:
    m = mapped(raw)
    assert m.ignored
    assert (m.findings, m.primary_tumor) == ((), None)
    assert group_by_patient([m], []) == {}


# (verificationStatus, clinicalStatus) -> counts, withdrawn, preliminary; for the primary and
# for the secondary (inbound module docstring).
STATUS_RULES: list[tuple[str | None, str | None, bool, bool, bool, bool]] = [
    # verification, clinical, primary counts, secondary counts, withdrawn, preliminary
    ("confirmed", "active", True, True, False, False),
    ("confirmed", "recurrence", True, True, False, False),
    ("confirmed", "relapse", True, True, False, False),
    ("confirmed", None, True, True, False, False),
    ("confirmed", "inactive", True, False, False, False),
    ("confirmed", "remission", True, False, False, False),
    ("confirmed", "resolved", True, False, False, False),
    (None, "active", True, True, False, False),
    ("unconfirmed", "active", True, True, False, True),
    ("provisional", "active", True, True, False, True),
    ("differential", "active", True, True, False, True),
    ("refuted", "active", False, False, True, False),
    ("entered-in-error", None, False, False, True, False),
]


@pytest.mark.parametrize(
    ("verification", "clinical", "primary_counts", "secondary_counts", "withdrawn", "preliminary"),
    STATUS_RULES,
)
def test_status_rules(
    verification: str | None,
    clinical: str | None,
    primary_counts: bool,
    secondary_counts: bool,
    withdrawn: bool,
    preliminary: bool,
) -> None:
    primary = mapped(
        primary_condition("c1", "p1", "breast", clinical=clinical, verification=verification)
    )
    secondary = mapped(
        secondary_condition("c2", "p1", "L2", clinical=clinical, verification=verification)
    )
    patient = group_by_patient([primary, secondary], []).get("p1")
    assert (patient is not None and patient.primary_tumor() == "breast") is primary_counts
    assert (patient is not None and VertebralLevel.L2 in patient.by_level) is secondary_counts
    assert primary.withdrawn is withdrawn
    assert secondary.withdrawn is withdrawn
    assert primary.preliminary is preliminary
    assert all(f.finding.preliminary is preliminary for f in secondary.findings)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"onsetDateTime": "2023-11-02"}, datetime(2024, 1, 10, tzinfo=UTC)),
        (
            {"recordedDate": None, "onsetDateTime": "2023-11-02T10:00:00+01:00"},
            datetime(2023, 11, 2, 9, 0, tzinfo=UTC),
        ),
        ({"recordedDate": None}, RECEIVED),
    ],
)
def test_time_is_recorded_then_onset_then_received(
    changes: dict[str, Any], expected: datetime
) -> None:
    raw = {**primary_condition("c1", "p1", "breast"), **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    assert mapped(raw).primary_observed_at == expected


@pytest.mark.parametrize(
    ("codes", "message"),
    [(["not-a-primary"], "not a code of"), (["breast", "prostate"], "several primary tumours")],
)
def test_a_primary_tumor_coding_outside_its_code_system_is_refused(
    codes: list[str], message: str
) -> None:
    raw = primary_condition("c1", "p1", "breast")
    raw["code"]["coding"] = [
        {"system": "https://fhir-app.org/fhir/CodeSystem/primary-tumor", "code": c} for c in codes
    ]
    with pytest.raises(InputRejected) as caught:
        mapped(raw)
    (issue,) = caught.value.issues
    assert message in issue.diagnostics
    assert issue.expression == ("Condition.code",)


PRIMARY_SYSTEM = "https://fhir-app.org/fhir/CodeSystem/primary-tumor"


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (["unknown-primary", "breast"], "breast"),
        (["breast", "unknown-primary"], "breast"),
        (["unknown-primary"], "unknown-primary"),
    ],
)
def test_an_unspecified_primary_yields_to_a_named_one_in_the_same_concept(
    codes: list[str], expected: str
) -> None:
    """R4 codings of one concept may differ in granularity: the named primary is the finer one."""
    raw = primary_condition("c1", "p1", "breast")
    raw["code"]["coding"] = [{"system": PRIMARY_SYSTEM, "code": c} for c in codes]
    assert mapped(raw).primary_tumor == expected
    observation = samples.primary_tumor("o1", "p1", "breast", effective="2024-01-10")
    observation["valueCodeableConcept"]["coding"] = raw["code"]["coding"]
    validate_resource(observation)
    read = map_observation(observation, resource_id="o1", version=1, received_at=RECEIVED)
    assert read.primary_tumor == expected


def test_two_named_primaries_still_disagree_beside_an_unspecified_one() -> None:
    raw = primary_condition("c1", "p1", "breast")
    raw["code"]["coding"] = [
        {"system": PRIMARY_SYSTEM, "code": c} for c in ("unknown-primary", "breast", "prostate")
    ]
    with pytest.raises(InputRejected) as caught:
        mapped(raw)
    (issue,) = caught.value.issues
    assert "several primary tumours: breast, prostate" in issue.diagnostics


def test_icd10_unspecified_beside_a_snomed_primary_states_the_snomed_one() -> None:
    """Through the shipped ConceptMap: C80.1 maps to unknown-primary, SNOMED 254837009 to breast."""
    raw = primary_condition("c1", "p1", "breast")
    raw["code"] = {
        "coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C80.1"},
            {"system": "http://snomed.info/sct", "code": "254837009"},
        ]
    }
    validate_resource(raw)
    condition = service_mapped(raw, resource_id="c1", version_id=1, received_at=RECEIVED)
    assert isinstance(condition, MappedCondition)
    assert condition.primary_tumor == "breast"
    raw["code"]["coding"] = raw["code"]["coding"][:1]
    alone = service_mapped(raw, resource_id="c1", version_id=1, received_at=RECEIVED)
    assert isinstance(alone, MappedCondition)
    assert alone.primary_tumor == "unknown-primary"


# --- Observations whatever their subject (CONTRACT 3, v2) ------------------------------------

OUTSIDE_CODE = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}  # heart rate


@pytest.mark.parametrize(
    "subject",
    [{"reference": "#p1"}, {"reference": "Group/101"}, None, {"display": "a patient"}],
    ids=["contained", "group", "none", "display-only"],
)
def test_an_observation_outside_the_contract_is_ignored_whatever_its_subject(
    subject: dict[str, Any] | None,
) -> None:
    raw: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": OUTSIDE_CODE,
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    if subject is not None:
        raw["subject"] = subject
    if subject == {"reference": "#p1"}:
        raw["contained"] = [{"resourceType": "Patient", "id": "p1"}]
    validate_resource(raw)
    m = map_observation(raw, resource_id="o1", version=1, received_at=RECEIVED)
    assert m.ignored
    assert m.patient is None
    assert group_by_patient([m], []) == {}


@pytest.mark.parametrize(
    "subject", [{"reference": "#p1"}, {"reference": "Group/101"}, None], ids=str
)
def test_a_contract_finding_without_a_patient_subject_is_refused(
    subject: dict[str, Any] | None,
) -> None:
    raw = samples.observation("o1", "p1", "pain", "mechanical", level="L1", effective="2024")
    del raw["subject"]
    if subject is not None:
        raw["subject"] = subject
    with pytest.raises(InputRejected) as caught:
        map_observation(raw, resource_id="o1", version=1, received_at=RECEIVED)
    assert caught.value.issues[0].expression[0].startswith("Observation.subject")
