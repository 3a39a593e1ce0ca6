"""The container set-up, checked statically: docker-compose.yml against the Dockerfile."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
# ${NAME:-default} gives the default; ${NAME:?message} makes NAME required.
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def with_defaults(value: str) -> str:
    """The value as Compose would give it with no variable set (required ones: a marker)."""

    def replace(match: re.Match[str]) -> str:
        if match["op"] == ":-":
            return match["arg"]
        if match["op"] == ":?":
            return f"<required {match['name']}>"
        return ""

    return VARIABLE.sub(replace, value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(key): str(value) for key, value in raw.items()}


def instruction(dockerfile: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for kind, arguments in dockerfile if kind == name]


def cmd_port(dockerfile: list[tuple[str, str]]) -> int:
    (command,) = instruction(dockerfile, "CMD")
    argv = json.loads(command)
    assert argv[:2] == ["fhir-app", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    return int(argv[argv.index("--port") + 1])


def test_two_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"app", "postgres"}
    assert compose["services"]["postgres"]["image"] == "postgres:15"
    assert compose["services"]["app"]["build"] == "."


def test_postgres_has_a_pg_isready_healthcheck(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    test = postgres["healthcheck"]["test"]
    command = " ".join(test[1:]) if isinstance(test, list) else test
    settings = environment(postgres)
    assert "pg_isready" in command
    assert f"-U {settings['POSTGRES_USER']}" in command
    assert f"-d {settings['POSTGRES_DB']}" in command


def test_postgres_data_live_on_a_named_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["postgres"]["volumes"]
    named = [v.split(":", 1)[0] for v in volumes if v.endswith(":/var/lib/postgresql/data")]
    assert named
    assert named[0] in compose["volumes"]


def test_app_waits_for_a_healthy_database(compose: dict[str, Any]) -> None:
    assert compose["services"]["app"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}
    }


def test_app_database_url_points_at_the_postgres_service(compose: dict[str, Any]) -> None:
    postgres = environment(compose["services"]["postgres"])
    url = make_url(with_defaults(environment(compose["services"]["app"])["FHIR_APP_DATABASE_URL"]))
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "postgres"
    assert url.port in (None, 5432)
    assert url.database == postgres["POSTGRES_DB"]
    assert url.username == with_defaults(postgres["POSTGRES_USER"])
    assert url.password == with_defaults(postgres["POSTGRES_PASSWORD"])


@pytest.mark.parametrize(
    "name", ["FHIR_APP_PUBLIC_BASE_URL", "FHIR_APP_SMART_JWKS", "FHIR_APP_SMART_ISSUER"]
)
def test_app_requires_an_identity_provider(compose: dict[str, Any], name: str) -> None:
    app = environment(compose["services"]["app"])
    match = VARIABLE.fullmatch(app[name])
    assert match is not None
    assert (match["name"], match["op"]) == (name, ":?")
    # Static tokens are refused off loopback (`serve`), so the container must not rely on them.
    assert "FHIR_APP_AUTH_TOKENS" not in app


OPTIONAL = [
    "FHIR_APP_SMART_TOKEN_URL",
    "FHIR_APP_SMART_AUTHORIZE_URL",
    "FHIR_APP_SMART_AUDIENCE",
    "FHIR_APP_FORWARDED_ALLOW_IPS",
]


@pytest.mark.parametrize("name", OPTIONAL)
def test_app_passes_optional_settings_through_empty_by_default(
    compose: dict[str, Any], name: str
) -> None:
    """An operator can set them without editing the file; unset, they reach the app empty."""
    match = VARIABLE.fullmatch(environment(compose["services"]["app"])[name])
    assert match is not None
    assert (match["name"], match["op"], match["arg"]) == (name, ":-", "")


def test_the_default_environment_is_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty pass-throughs read as unset, so the set-up as shipped starts (required set)."""
    from fhir_app.config import Settings

    given = {
        "FHIR_APP_PUBLIC_BASE_URL": "https://fhir.example.org",
        "FHIR_APP_SMART_JWKS": "https://idp.example.org/jwks",
        "FHIR_APP_SMART_ISSUER": "https://idp.example.org",
    }
    for name, value in environment(compose["services"]["app"]).items():
        monkeypatch.setenv(name, given.get(name, with_defaults(value)))
    settings = Settings()
    assert settings.smart_token_url is None
    assert settings.smart_authorize_url is None
    assert settings.smart_audience is None
    assert settings.forwarded_allow_ips == ""


def test_app_publishes_the_port_the_server_listens_on(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    port = cmd_port(dockerfile)
    published = [str(p) for p in compose["services"]["app"]["ports"]]
    assert any(p.rsplit(":", 1)[-1] == str(port) for p in published)
    assert str(port) in " ".join(instruction(dockerfile, "EXPOSE")).split()


def test_image_is_slim_python_and_runs_unprivileged(dockerfile: list[tuple[str, str]]) -> None:
    assert instruction(dockerfile, "FROM") == ["python:3.11-slim"]
    users = instruction(dockerfile, "USER")
    assert users
    assert users[-1] not in ("root", "0")
    assert any("pip install" in run for run in instruction(dockerfile, "RUN"))


def test_runtime_files_are_in_the_working_folder(dockerfile: list[tuple[str, str]]) -> None:
    # migrate() and GET /fhir/metadata look for these under the working folder when the package
    # is installed (not a source checkout).
    copied = {args.split()[-1].rstrip("/") for args in instruction(dockerfile, "COPY")}
    assert instruction(dockerfile, "WORKDIR") == ["/app"]
    assert {"./migrations", "./profiles"} <= copied
    assert any(args.split()[0] == "alembic.ini" for args in instruction(dockerfile, "COPY"))
    for source in ("alembic.ini", "migrations", "profiles", "fhir_app", "pyproject.toml"):
        assert (ROOT / source).exists(), source


def test_dockerignore_keeps_what_the_image_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "*.db"} <= ignored
    assert not {"fhir_app", "migrations", "profiles", "alembic.ini", "README.md"} & ignored
