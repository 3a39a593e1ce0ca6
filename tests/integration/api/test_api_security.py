"""SMART on FHIR authorisation on signed bearer JWTs (issue 13): the scope table, refused
tokens, the patient context, export ownership, discovery. Keys are made in the test."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_support import FHIR_JSON, Serve, example, post_json, put_json
from joserfc.jwk import RSAKey
from security_support import PUBLIC_BASE, IdentityProvider, bearer
from support.conditions import primary_condition

from fhir_app.export import EXPORT_TYPES, ExportJob, ExportRequest, write_ndjson
from fhir_app.service import FhirService

PATIENTS = ("patient-01-stable-blastic.json", "patient-03-unstable.json")
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def idp(tmp_path: Path) -> IdentityProvider:
    """A fresh identity provider with a key made for this test."""
    return IdentityProvider(tmp_path)


@pytest.fixture
def loaded(service: FhirService) -> FhirService:
    """Patients p01 and p03 stored, their outputs derived."""
    for name in PATIENTS:
        service.transaction(example(name))
    return service


@pytest.fixture
def smart(
    serve: Serve, idp: IdentityProvider, loaded: FhirService, tmp_path: Path
) -> Iterator[Callable[[str], httpx.Client]]:
    """`client(scope, **claims)`: an HTTP client on a SMART server, with a token of `scope`."""
    base = serve(**idp.settings(), export_dir=tmp_path / "exports")
    clients: list[httpx.Client] = []

    def client(scope: str, **claims: Any) -> httpx.Client:
        token = idp.token(scope, **claims)
        made = httpx.Client(base_url=f"{base}/", headers=bearer(token), timeout=60)
        clients.append(made)
        return made

    yield client
    for made in clients:
        made.close()


def observation_of(patient: str, rid: str | None = None) -> dict[str, Any]:
    """A new input Observation of `patient` (the primary-tumour finding of example p01)."""
    bundle = example("patient-01-stable-blastic.json")
    resource = copy.deepcopy(
        next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "p01-primary")
    )
    resource["subject"] = {"reference": f"Patient/{patient}"}
    resource.pop("id", None)
    if rid is not None:
        resource["id"] = rid
    return resource


def relative(url: str) -> str:
    """A URL the server wrote under its public base, relative to the test client's /fhir/."""
    prefix = f"{PUBLIC_BASE}/fhir/"
    assert url.startswith(prefix), url
    return url.removeprefix(prefix)


def export_files(client: httpx.Client, kicked: httpx.Response) -> dict[str, str]:
    """The files of an accepted export, once complete: type -> NDJSON text."""
    assert kicked.status_code == 202, kicked.text
    status = relative(kicked.headers["content-location"])
    deadline = time.monotonic() + 60
    while (done := client.get(status)).status_code == 202:
        assert time.monotonic() < deadline, "export still running"
        time.sleep(0.05)
    assert done.status_code == 200, done.text
    manifest = done.json()
    assert manifest["error"] == []
    files: dict[str, str] = {}
    for item in manifest["output"]:
        response = client.get(relative(item["url"]))
        assert response.status_code == 200, response.text
        assert len(response.text.splitlines()) == item["count"]
        files[item["type"]] = response.text
    return files


def ids_in(text: str) -> set[str]:
    """The resource ids of an NDJSON file."""
    return {orjson.loads(line)["id"] for line in text.splitlines()}


def output_ids(admin: httpx.Client, rtype: str, patient: str) -> set[str]:
    """The ids of a patient's resources of an exported type (outputs, and inputs of the type)."""
    found = admin.get(rtype, params={"patient": patient, "_count": "50"}).json()
    assert found["total"] == len(found.get("entry", [])), "more than one page"
    return {entry["resource"]["id"] for entry in found.get("entry", [])}


def diagnostics(response: httpx.Response) -> str:
    """The diagnostics of an OperationOutcome response."""
    return " ".join(i.get("diagnostics", "") for i in response.json().get("issue", []))


# --------------------------------------------------------------------------- the scope table

# interaction -> (permission it needs, resource types it applies to)
INTERACTIONS = {
    "read": ("r", ("Observation", "RiskAssessment")),
    "vread": ("r", ("Observation", "RiskAssessment")),
    "history": ("r", ("Observation", "RiskAssessment")),
    "search": ("s", ("Observation", "RiskAssessment")),
    "create": ("c", ("Observation",)),
    "update": ("u", ("Observation",)),
    "delete": ("d", ("Observation",)),
}
# scope -> the (type, permission) cells it grants, written out by hand.
SCOPES: dict[str, set[tuple[str, str]]] = {
    "system/*.cruds": {(t, p) for t in ("Observation", "RiskAssessment") for p in "cruds"},
    "system/Observation.rs": {("Observation", "r"), ("Observation", "s")},
    "system/Observation.cu": {("Observation", "c"), ("Observation", "u")},
    "system/Observation.d": {("Observation", "d")},
    "system/Observation.read": {("Observation", "r"), ("Observation", "s")},
    "system/Observation.write": {("Observation", p) for p in "cud"},
    "system/*.*": {(t, p) for t in ("Observation", "RiskAssessment") for p in "cruds"},
    "user/RiskAssessment.r": {("RiskAssessment", "r")},
    "system/RiskAssessment.s system/Observation.r": {
        ("RiskAssessment", "s"),
        ("Observation", "r"),
    },
    "system/Patient.cruds": set(),
    "patient/*.cruds": set(),  # void without a patient claim
    "system/Observation.rs?category=laboratory": set(),  # granular: not enforceable, no grant
    "openid fhirUser": set(),
}
SUCCESS = {
    "read": 200,
    "vread": 200,
    "history": 200,
    "search": 200,
    "create": 201,
    "update": 200,
    "delete": 204,
}


def perform(
    client: httpx.Client, admin: httpx.Client, interaction: str, rtype: str
) -> httpx.Response:
    """Do the interaction on a resource of p01 (a fresh Observation for the writes)."""
    if rtype == "Observation":
        created = post_json(admin, "Observation", observation_of("p01"))
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
    else:
        found = admin.get("RiskAssessment", params={"patient": "p01"}).json()
        rid = found["entry"][0]["resource"]["id"]
    if interaction == "read":
        return client.get(f"{rtype}/{rid}")
    if interaction == "vread":
        return client.get(f"{rtype}/{rid}/_history/1")
    if interaction == "history":
        return client.get(f"{rtype}/{rid}/_history")
    if interaction == "search":
        return client.get(rtype, params={"patient": "p01"})
    if interaction == "create":
        return post_json(client, rtype, observation_of("p01"))
    if interaction == "update":
        return put_json(client, f"{rtype}/{rid}", observation_of("p01", rid))
    assert interaction == "delete"
    return client.delete(f"{rtype}/{rid}")


@pytest.mark.parametrize("scope", list(SCOPES))
def test_each_scope_allows_exactly_what_it_grants(
    smart: Callable[..., httpx.Client], scope: str
) -> None:
    admin = smart("system/*.cruds", client_id="admin")
    client = smart(scope)
    cells = 0
    for interaction, (permission, types) in INTERACTIONS.items():
        for rtype in types:
            response = perform(client, admin, interaction, rtype)
            cell = f"{scope}: {interaction} {rtype}"
            if (rtype, permission) in SCOPES[scope]:
                assert response.status_code == SUCCESS[interaction], f"{cell}: {response.text}"
            else:
                assert response.status_code == 403, f"{cell}: {response.text}"
                context = "user" if scope.startswith("user/") else "system"
                assert f"{context}/{rtype}.{permission}" in diagnostics(response), cell
            cells += 1
    assert cells == 11


def test_transaction_needs_the_permission_of_every_entry(
    smart: Callable[..., httpx.Client],
) -> None:
    bundle = example("patient-02-potentially-unstable.json")  # PUTs of Patient and inputs
    refused = post_json(smart("system/Observation.cu system/ImagingStudy.cu"), "", bundle)
    assert refused.status_code == 403, refused.text
    assert "system/Patient.u" in diagnostics(refused)
    allowed = post_json(
        smart("system/Observation.cu system/ImagingStudy.cu system/Patient.cu"), "", bundle
    )
    assert allowed.status_code == 200, allowed.text


# --------------------------------------------------------------------------- refused tokens


def refused_tokens(idp: IdentityProvider) -> dict[str, str]:
    """Tokens that must all be 401."""
    impostor = RSAKey.generate_key(2048, parameters={"kid": "key-1"})  # the same kid
    unknown = RSAKey.generate_key(2048, parameters={"kid": "key-unknown"})
    return {
        "expired": idp.token("system/*.rs", exp=1_000_000_000, iat=999_999_000),
        "not yet valid": idp.token("system/*.rs", nbf=4_000_000_000),
        "wrong audience": idp.token("system/*.rs", aud="https://elsewhere.invalid/fhir"),
        "wrong issuer": idp.token("system/*.rs", iss="https://evil.invalid"),
        "no expiry": idp.token("system/*.rs", exp=None),
        "wrong signature": idp.token("system/*.rs", key=impostor),
        "unknown kid": idp.token("system/*.rs", key=unknown),
        "alg none": idp.unsigned("system/*.rs"),
        "HS256 with the public key": idp.hmac_with_public_key("system/*.rs"),
        "garbage": "a.b.c",
        "not a JWT": "x" * 40,
    }


def test_bad_tokens_are_401(serve: Serve, idp: IdentityProvider) -> None:
    base = serve(**idp.settings(), auth_failure_limit=1000)
    with httpx.Client(base_url=f"{base}/") as client:
        assert client.get("Observation").status_code == 401
        for name, token in refused_tokens(idp).items():
            response = client.get("Observation", headers=bearer(token))
            assert response.status_code == 401, f"{name}: {response.text}"
            assert response.headers["www-authenticate"].startswith("Bearer")
        good = client.get("Observation", headers=bearer(idp.token("system/*.rs")))
        assert good.status_code == 200, good.text


# --------------------------------------------------------------------------- patient context


def test_a_patient_context_token_never_sees_another_patient(
    smart: Callable[..., httpx.Client], loaded: FhirService
) -> None:
    mine = smart("patient/*.rs patient/AuditEvent.rs", patient="p01")
    admin = smart("system/*.cruds", client_id="admin")
    theirs = admin.get("RiskAssessment", params={"patient": "p03"}).json()["entry"][0]
    their_id = theirs["resource"]["id"]
    # Search: everything found is p01's; asking for p03 finds nothing.
    for rtype in ("Observation", "RiskAssessment", "DiagnosticReport", "ImagingStudy"):
        found = mine.get(rtype).json()
        assert found["total"] >= 1, rtype
        for entry in found["entry"]:
            assert entry["resource"].get("subject", {}).get("reference") == "Patient/p01"
        assert mine.get(rtype, params={"patient": "p03"}).json()["total"] == 0
    assert mine.get("Observation", params={"_id": "p03-primary"}).json()["total"] == 0
    assert mine.get("Patient", params={"_id": "p03"}).json()["total"] == 0
    # Read, vread, history of p03's resources: not known.
    for path in (
        f"RiskAssessment/{their_id}",
        f"RiskAssessment/{their_id}/_history",
        f"RiskAssessment/{their_id}/_history/1",
        "Observation/p03-primary",
        "Patient/p03",
    ):
        assert mine.get(path).status_code == 404, path
    assert mine.get("Patient/p01").status_code == 200
    assert mine.get("Observation/p01-primary/_history").status_code == 200
    # Export: only p01's outputs (test_a_patient_context_export_holds_only_its_patient).
    exported_files = export_files(mine, mine.get("$export", headers=ASYNC))
    assert exported_files
    assert all("Patient/p03" not in text for text in exported_files.values())
    # AuditEvent: only p01's interactions.
    admin.get("Observation/p03-primary")
    events = mine.get("AuditEvent", params={"_count": "1000"}).json()
    assert events["total"] >= 1
    for entry in events["entry"]:
        patients = [
            e["what"]["reference"]
            for e in entry["resource"].get("entity", [])
            if e.get("role", {}).get("code") == "1"
        ]
        assert patients == ["Patient/p01"], entry["resource"]
    all_events = admin_events(smart)
    assert all_events > events["total"]


def admin_events(smart: Callable[..., httpx.Client]) -> int:
    """How many AuditEvents a system client sees."""
    auditor = smart("system/AuditEvent.rs", client_id="auditor")
    total: int = auditor.get("AuditEvent", params={"_count": "0"}).json()["total"]
    return total


def test_a_patient_context_token_cannot_write_another_patient(
    smart: Callable[..., httpx.Client],
) -> None:
    mine = smart("patient/*.cruds", patient="p01")
    assert post_json(mine, "Observation", observation_of("p03")).status_code == 403
    assert post_json(mine, "Observation", observation_of("p01")).status_code == 201
    over = put_json(mine, "Observation/p03-primary", observation_of("p01", "p03-primary"))
    assert over.status_code == 403
    assert mine.delete("Observation/p03-primary").status_code == 403
    bundle = example("patient-02-potentially-unstable.json")
    assert post_json(mine, "", bundle).status_code == 403
    admin = smart("system/*.rs", client_id="admin")
    assert admin.get("Observation/p03-primary").status_code == 200


# --------------------------------------------------------------------------- export owner


def test_export_jobs_belong_to_the_client_that_started_them(
    smart: Callable[..., httpx.Client],
) -> None:
    owner = smart("system/*.rs", client_id="exporter")
    stranger = smart("system/*.rs", client_id="stranger", sub="stranger")
    kicked = owner.get("$export", headers=ASYNC)
    assert kicked.status_code == 202, kicked.text
    status = kicked.headers["content-location"]
    assert status.startswith("https://fhir.test.invalid/fhir/")
    path = status.removeprefix("https://fhir.test.invalid/fhir/")
    assert stranger.get(path).status_code == 404
    assert stranger.delete(path).status_code == 404
    assert owner.get(path).status_code in (200, 202)
    narrow = smart("system/Observation.rs", client_id="narrow")
    refused = narrow.get("$export", headers=ASYNC, params={"_type": "RiskAssessment"})
    assert refused.status_code == 403
    assert "system/RiskAssessment.r" in diagnostics(refused)


# --------------------------------------------------------------------------- discovery


def test_smart_configuration_and_capability_security(serve: Serve, idp: IdentityProvider) -> None:
    base = serve(
        **idp.settings(),
        smart_authorize_url="https://idp.test.invalid/authorize",
        smart_token_url="https://idp.test.invalid/token",
    )
    root = base.removesuffix("/fhir")
    with httpx.Client() as client:
        config = client.get(f"{root}/.well-known/smart-configuration")
        assert config.status_code == 200
        document = config.json()
        assert document["token_endpoint"] == "https://idp.test.invalid/token"
        assert document["issuer"] == "https://idp.test.invalid"
        assert "permission-v2" in document["capabilities"]
        statement = client.get(f"{base}/metadata").json()
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {"read", "search-type"}
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris == {
        "authorize": "https://idp.test.invalid/authorize",
        "token": "https://idp.test.invalid/token",
    }


def test_static_tokens_still_work_with_every_permission(serve: Serve, loaded: FhirService) -> None:
    token = "t" * 40
    base = serve(auth_tokens=[token])
    with httpx.Client(base_url=f"{base}/", headers=bearer(token)) as client:
        assert client.get("Observation/p01-primary").status_code == 200
        created = post_json(client, "Observation", observation_of("p01"))
        assert created.status_code == 201
        assert client.get("AuditEvent").status_code == 200
        assert client.post("AuditEvent", content=b"{}", headers=FHIR_JSON).status_code == 405


# --------------------------------------------------------------------------- patient export


def test_a_patient_context_export_holds_only_its_patient(
    smart: Callable[..., httpx.Client],
) -> None:
    admin = smart("system/*.rs", client_id="admin")
    mine_ids = {t: output_ids(admin, t, "p01") for t in EXPORT_TYPES}
    their_ids = {t: output_ids(admin, t, "p03") for t in EXPORT_TYPES}
    assert all(their_ids.values())
    assert all(mine_ids.values())
    mine = smart("patient/*.rs", patient="p01", client_id="p01-app")
    kicked = mine.get("$export", headers=ASYNC)
    files = export_files(mine, kicked)
    assert set(files) == set(EXPORT_TYPES)
    for rtype, text in files.items():
        exported_ids = ids_in(text)
        assert exported_ids <= mine_ids[rtype], rtype
        assert not exported_ids & their_ids[rtype], rtype
        assert not any(rid in text for ids in their_ids.values() for rid in ids), rtype
        # Nothing of p03's (its references are `Patient/p03`, `Observation/p03-...`).
        assert "p03" not in text, rtype
        assert "p01" in text, rtype
    # Another client cannot read the job, its status or its files.
    stranger = smart("system/*.rs", client_id="stranger", sub="stranger")
    status = relative(kicked.headers["content-location"])
    job = status.rsplit("/", 1)[-1]
    assert stranger.get(status).status_code == 404
    assert stranger.get(f"$export-output/{job}/RiskAssessment.ndjson").status_code == 404
    assert stranger.delete(status).status_code == 404
    assert mine.get(status).status_code == 200
    # A system token's export still holds both patients.
    everyone = export_files(admin, admin.get("$export", headers=ASYNC))
    for rtype in EXPORT_TYPES:
        exported_ids = ids_in(everyone[rtype])
        assert exported_ids & mine_ids[rtype], rtype
        assert exported_ids & their_ids[rtype], rtype
        assert ids_in(files[rtype]) < exported_ids, rtype


def test_a_patient_context_export_needs_read_on_each_type(
    smart: Callable[..., httpx.Client],
) -> None:
    narrow = smart("patient/RiskAssessment.rs", patient="p01", client_id="narrow")
    refused = narrow.get("$export", headers=ASYNC, params={"_type": "Observation"})
    assert refused.status_code == 403
    assert "patient/Observation.r" in diagnostics(refused)
    assert narrow.get("$export", headers=ASYNC).status_code == 403  # every type by default
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "_type", "valueString": "Provenance"}],
    }
    assert post_json(narrow, "$export", parameters, **ASYNC).status_code == 403
    files = export_files(
        narrow, narrow.get("$export", headers=ASYNC, params={"_type": "RiskAssessment"})
    )
    assert list(files) == ["RiskAssessment"]
    assert "Patient/p03" not in files["RiskAssessment"]
    assert "Patient/p01" in files["RiskAssessment"]


def test_the_patient_bound_pages_and_the_job_state(loaded: FhirService, tmp_path: Path) -> None:
    """Keyset pages of one output each stay within the patient; the job keeps its patient (a
    job run again after a restart is read from its state)."""
    everyone = write_ndjson(loaded, ExportRequest(), tmp_path, loaded.clock(), page_size=1)
    folder = tmp_path / "p01"
    folder.mkdir()
    patients: set[str] = set()
    files = write_ndjson(
        loaded,
        ExportRequest(),
        folder,
        loaded.clock(),
        page_size=1,
        patient="p01",
        patients=patients,
    )
    assert patients == {"p01"}
    assert [f.resource_type for f in files] == list(EXPORT_TYPES)
    one_page = tmp_path / "p01-one-page"
    one_page.mkdir()
    write_ndjson(loaded, ExportRequest(), one_page, loaded.clock(), patient="p01")
    assert sum(f.count for f in files) > len(files)  # some type took several pages
    for mine, total in zip(files, everyone, strict=True):
        assert 0 < mine.count < total.count
        text = (folder / mine.name).read_text()
        assert len(ids_in(text)) == mine.count  # neither skipped nor repeated
        assert text == (one_page / mine.name).read_text()
        assert "p03" not in text
    job = ExportJob(
        id="0" * 32,
        status="queued",
        request_url="$export",
        types=list(EXPORT_TYPES),
        since=None,
        created="2026-01-01T00:00:00Z",
        owner="p01-app",
        patient="p01",
    )
    assert ExportJob.from_json(job.to_json()) == job


# --------------------------------------------------------------------------- no patient, Condition


def test_an_input_without_a_patient_is_outside_every_patient_context(
    smart: Callable[..., httpx.Client],
) -> None:
    """CONTRACT 3 (v2): an Observation of a Group is stored with no patient; a patient-context
    token neither sees nor writes it, a system token does both."""
    ward: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "ward-hr",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Group/ward-3"},
        "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    feed = smart("system/*.cruds", client_id="feed")
    assert put_json(feed, "Observation/ward-hr", ward).status_code == 201
    mine = smart("patient/*.cruds", patient="p01")
    assert mine.get("Observation/ward-hr").status_code == 404
    assert mine.get("Observation", params={"_id": "ward-hr"}).json().get("total") == 0
    assert put_json(mine, "Observation/ward-hr", ward).status_code == 403
    assert post_json(mine, "Observation", {**ward, "id": "ward-2"}).status_code == 403
    assert feed.get("Observation/ward-hr").status_code == 200


def test_conditions_obey_the_scopes_and_the_patient_context(
    smart: Callable[..., httpx.Client],
) -> None:
    condition = primary_condition("p01-cancer", "p01", "prostate")
    observations_only = smart("patient/Observation.cruds", patient="p01", client_id="narrow")
    assert put_json(observations_only, "Condition/p01-cancer", condition).status_code == 403
    mine = smart("patient/*.cruds", patient="p01")
    other = primary_condition("p03-cancer", "p03", "renal-cell")
    assert put_json(mine, "Condition/p03-cancer", other).status_code == 403
    assert put_json(mine, "Condition/p01-cancer", condition).status_code == 201
    assert mine.get("Condition/p01-cancer").status_code == 200
    found = mine.get("Condition", params={"patient": "p01"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["p01-cancer"]
    admin = smart("system/*.cruds", client_id="admin")
    assert put_json(admin, "Condition/p03-cancer", other).status_code == 201
    assert mine.get("Condition/p03-cancer").status_code == 404
    assert mine.delete("Condition/p03-cancer").status_code == 403
