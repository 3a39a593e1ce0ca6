"""`fhir-app serve` (issue 13): static tokens only long and on loopback, TLS, and an access log
without query strings or ids."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.ports import unclaimed_port
from typer.testing import CliRunner

from fhir_app.api.server import server_config
from fhir_app.cli import app, serve_refusal, serve_warnings
from fhir_app.config import Settings, get_settings

LONG = "k" * 40
SMART = {
    "smart_jwks": "/etc/jwks.json",
    "smart_issuer": "https://idp.invalid",
    "smart_audience": "https://fhir.invalid/fhir",
}


@pytest.mark.parametrize(
    ("host", "overrides", "refused"),
    [
        ("127.0.0.1", {}, None),
        ("127.0.0.1", {"auth_tokens": [LONG]}, None),
        ("127.0.0.1", {"auth_tokens": ["short"]}, "shorter than 32"),
        ("::1", {"auth_tokens": ["x" * 31]}, "shorter than 32"),
        ("0.0.0.0", {"auth_tokens": [LONG]}, "loopback only"),
        ("10.1.2.3", {"auth_tokens": [LONG], **SMART}, "loopback only"),
        ("0.0.0.0", {}, "without authentication"),
        ("0.0.0.0", {"allow_unauthenticated_remote": True}, None),
        ("0.0.0.0", SMART, None),
    ],
)
def test_serve_refusals(host: str, overrides: dict[str, object], refused: str | None) -> None:
    reason = serve_refusal(host, Settings(**overrides), allow_open=False)  # type: ignore[arg-type]
    if refused is None:
        assert reason is None
    else:
        assert reason is not None
        assert refused in reason


def test_serve_warns_when_the_token_endpoint_is_not_configured() -> None:
    [warning] = serve_warnings(Settings(**SMART))  # type: ignore[arg-type]
    assert "FHIR_APP_SMART_TOKEN_URL" in warning
    assert "\n" not in warning
    configured = Settings(**SMART, smart_token_url="https://idp.invalid/token")  # type: ignore[arg-type]
    assert serve_warnings(configured) == []
    assert serve_warnings(Settings(auth_tokens=[LONG])) == []


def test_serve_trusts_no_proxy_headers_unless_configured() -> None:
    default = server_config(object(), Settings(), host="127.0.0.1", port=8080)
    assert default.proxy_headers is False
    proxied = server_config(
        object(), Settings(forwarded_allow_ips="10.0.0.5"), host="127.0.0.1", port=8080
    )
    assert proxied.proxy_headers is True
    assert proxied.forwarded_allow_ips == "10.0.0.5"


def test_serve_exits_2_on_a_refusal(tmp_path: Path) -> None:
    env = {"FHIR_APP_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "FHIR_APP_AUTH_TOKENS": "x"}
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["serve"], env=env)
    assert result.exit_code == 2
    assert "shorter than 32" in result.output
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    env["FHIR_APP_AUTH_TOKENS"] = LONG
    get_settings.cache_clear()  # the settings are read once per process
    result = CliRunner().invoke(app, ["serve", "--ssl-certfile", str(cert)], env=env)
    assert result.exit_code == 2
    assert "go together" in result.output
    get_settings.cache_clear()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fhir-app test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serve_over_tls_with_an_access_log_without_patient_data(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = unclaimed_port()
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "FHIR_APP_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "FHIR_APP_AUTH_TOKENS": LONG,
        "FHIR_APP_EXPORT_DIR": str(tmp_path / "exports"),
    }
    command = [
        str(Path(sys.executable).parent / "fhir-app"),
        "serve",
        "--port",
        str(port),
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
    ]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        headers = {"Authorization": f"Bearer {LONG}"}
        with httpx.Client(base_url=f"https://127.0.0.1:{port}/fhir/", verify=context) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    assert client.get("metadata").status_code == 200
                    break
                except httpx.TransportError:
                    assert server.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
            found = client.get("RiskAssessment", params={"patient": "p0042"}, headers=headers)
            assert found.status_code == 200
            assert client.get("Observation/p0042-l3", headers=headers).status_code == 404
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5)  # TLS only
    finally:
        server.terminate()
        server.wait(timeout=30)
    output = log_path.read_text()
    assert "GET /fhir/{resource_type} 200" in output, output
    assert "GET /fhir/{resource_type}/{resource_id} 404" in output, output
    assert "p0042" not in output, output
    assert "https://127.0.0.1" in output
