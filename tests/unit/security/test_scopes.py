"""SMART scope parsing (hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_app.api.security.principal import principal_of_claims
from fhir_app.api.security.scopes import PERMISSIONS, Scopes, parse_scope

# scope -> (context, type, permissions), or None when it grants nothing here.
CASES: list[tuple[str, tuple[str, str, str] | None]] = [
    ("system/*.cruds", ("system", "*", "cruds")),
    ("system/Observation.rs", ("system", "Observation", "rs")),
    ("user/Observation.cu", ("user", "Observation", "cu")),
    ("patient/*.r", ("patient", "*", "r")),
    ("system/AuditEvent.rs", ("system", "AuditEvent", "rs")),
    # SMART v1 suffixes
    ("system/*.read", ("system", "*", "rs")),
    ("patient/Observation.write", ("patient", "Observation", "cud")),
    ("user/*.*", ("user", "*", "cruds")),
    # not grants
    ("system/Observation.sr", None),  # v2 letters must keep the order c r u d s
    ("system/Observation.x", None),
    ("system/Observation.", None),
    ("system/Observation.rs?category=laboratory", None),
    ("launch/patient", None),
    ("openid", None),
    ("fhirUser", None),
    ("admin/*.cruds", None),
    ("system/observation.rs", None),
]


@pytest.mark.parametrize(("scope", "expected"), CASES)
def test_parse_scope(scope: str, expected: tuple[str, str, str] | None) -> None:
    grant = parse_scope(scope)
    if expected is None:
        assert grant is None
    else:
        assert grant is not None
        assert (grant.context, grant.resource_type, "".join(sorted(grant.permissions))) == (
            expected[0],
            expected[1],
            "".join(sorted(expected[2])),
        )


@given(
    st.sets(st.sampled_from(PERMISSIONS), min_size=1),
    st.sampled_from(["Observation", "*"]),
    st.sampled_from(PERMISSIONS),
)
def test_a_scope_allows_exactly_its_letters(letters: set[str], rtype: str, permission: str) -> None:
    text = "".join(p for p in PERMISSIONS if p in letters)
    scopes = Scopes.parse(f"system/{rtype}.{text}")
    assert scopes.allows("Observation", permission) == (permission in letters)
    assert scopes.allows("RiskAssessment", permission) == (rtype == "*" and permission in letters)


def test_patient_scopes_need_a_patient_claim() -> None:
    without = principal_of_claims({"sub": "c", "scope": "patient/*.rs system/Observation.r"})
    assert not without.allows("RiskAssessment", "r")
    assert without.allows("Observation", "r")
    assert without.patient is None
    within = principal_of_claims({"sub": "c", "scope": "patient/*.rs", "patient": "p01"})
    assert within.allows("RiskAssessment", "r")
    assert within.patient == "p01"
    assert within.needed_scope("Observation", "c") == "patient/Observation.c"


def test_client_identity_from_the_claims() -> None:
    assert principal_of_claims({"sub": "u", "client_id": "app"}).client_id == "app"
    assert principal_of_claims({"sub": "u", "azp": "app2"}).client_id == "app2"
    assert principal_of_claims({"sub": "svc"}).client_id == "svc"
