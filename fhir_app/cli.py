"""The command line: `fhir-app assess | process | export | report | migrate | serve`.

Exit codes: 0 every input accepted, 1 some input rejected, 2 usage errors (bad options, missing
files, an --out folder that cannot be written, a FHIR_APP_* setting that cannot be used), as
CONTRACT section 5 says; beyond it, 3 the database cannot be used (unreachable, refusing, a
FHIR_APP_DATABASE_URL that cannot be parsed, a schema revision this version does not know) and
4 a ConceptMap cannot be used.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from fhir_app.bulk import (
    DEFAULT_CHUNK_RECORDS,
    DEFAULT_DERIVE_PATIENTS,
    BulkOptions,
    BulkProcessor,
    InputUnreadable,
    describe_rejection,
)
from fhir_app.config import InvalidSettings, Settings, get_settings
from fhir_app.domain.appearance import AppearanceSettings
from fhir_app.fhir import conceptmap
from fhir_app.fhir.inputs import InputRejected, JsonObject
from fhir_app.fhir.parse import iter_input_resources
from fhir_app.fhir.report.presented import page_of_patients
from fhir_app.service import (
    PROCESSOR_VERSION,
    FhirService,
    Rejection,
    ServiceError,
    assess,
)

app = typer.Typer(
    name="fhir-app",
    help="FHIR R4 processor for vertebral metastases: SINS and metastasis classification.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
# The database could not be used (unreachable, refusing, failing): outside the contract's 0/1/2.
EXIT_DATABASE = 3
EXIT_CONCEPT_MAP = 4


class Engine(StrEnum):
    """Where `process` runs: this machine through the database, or Apache Spark."""

    single = "single"
    spark = "spark"


Inputs = Annotated[
    list[Path],
    typer.Argument(
        help="Bundle JSON or NDJSON files of input resources (Observation, Condition, ...).",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]


def appearance_settings(settings: Settings) -> AppearanceSettings:
    """The domain's thresholds from the runtime settings."""
    return AppearanceSettings(
        lytic_max_hu=settings.ct_lytic_max_hu,
        blastic_min_hu=settings.ct_blastic_min_hu,
        bone_island_mean_hu=settings.bone_island_mean_hu,
        bone_island_max_hu=settings.bone_island_max_hu,
    )


def read_inputs(paths: list[Path]) -> Iterator[tuple[str, JsonObject | InputRejected]]:
    """Every resource of every file, labelled `file: where`. Raises InputUnreadable when a
    file cannot be read."""
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputUnreadable(path, exc) from exc
        for label, item in iter_input_resources(data, filename_hint=path.name):
            yield f"{path.name}: {label}", item


def check_readable(paths: list[Path]) -> None:
    """Exit 2 with one line when an input cannot be read at all: typer checks the permission,
    not a read error (EIO on /proc/self/mem, a directory behind a symlink, a lost mount)."""
    for path in paths:
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            unreadable(InputUnreadable(path, exc))


def unreadable(exc: InputUnreadable) -> NoReturn:
    """The one line and exit code (2, a usage error) of an input file that cannot be read."""
    typer.echo(
        f"error: file '{exc.path}' could not be read: {exc.cause.strerror or exc.cause}", err=True
    )
    raise typer.Exit(EXIT_USAGE)


def report_rejection(rejection: Rejection) -> None:
    """One clear line per issue on stderr."""
    for issue in rejection.issues:
        where = f" [{', '.join(issue.expression)}]" if issue.expression else ""
        typer.echo(f"rejected {rejection.label}: {issue.diagnostics}{where}", err=True)


@app.command("assess")
def assess_command(
    inputs: Inputs,
    pretty: Annotated[bool, typer.Option(help="Indent the output Bundle.")] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Also write the report a person reads to this HTML file: one page, one section "
            "per patient.",
            dir_okay=False,
            writable=True,
        ),
    ] = None,
) -> None:
    """Derive SINS and the classification in memory and print the output Bundle (stores nothing)."""
    settings = get_settings()
    conceptmap.configure(settings.concept_map_dir)
    if html is not None and not html.parent.is_dir():
        typer.echo(f"error: --html {html}: the folder {html.parent} does not exist", err=True)
        raise typer.Exit(EXIT_USAGE)
    check_readable(inputs)
    try:
        result = assess(read_inputs(inputs), appearance_settings(settings))
    except InputUnreadable as exc:
        unreadable(exc)
    for rejection in result.rejections:
        report_rejection(rejection)
    if html is not None:
        try:
            html.write_text(page_of_outputs(result.outputs), encoding="utf-8")
        except OSError as exc:
            typer.echo(f"error: --html {html}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_USAGE) from exc
    option = orjson.OPT_INDENT_2 if pretty else 0
    sys.stdout.buffer.write(orjson.dumps(result.bundle(), option=option) + b"\n")
    raise typer.Exit(EXIT_REJECTED if result.rejections else EXIT_OK)


def page_of_outputs(outputs: list[JsonObject]) -> str:
    """The HTML page of every patient among the outputs, one section each, in patient order."""
    by_patient: dict[str, list[JsonObject]] = {}
    for resource in outputs:
        subject = resource.get("subject", {}).get("reference")
        if isinstance(subject, str):
            by_patient.setdefault(subject, []).append(resource)
    return page_of_patients([by_patient[p] for p in sorted(by_patient)], PROCESSOR_VERSION)


def make_service(settings: Settings, *, migrate: bool = True) -> FhirService:
    """A service on the configured database, migrated to the latest schema unless told not to."""
    from fhir_app.store import make_engine, uow_factory
    from fhir_app.store import migrate as migrate_schema

    if migrate:
        migrate_schema(settings.database_url)
    engine = make_engine(settings.database_url)
    return FhirService(uow_factory(engine), appearance_settings(settings))


def existing_database(settings: Settings) -> None:
    """Exit 3 with one line unless the configured database already holds fhir-app's schema.

    For the commands that only read what was stored (`export`, `report`): a mistyped SQLite
    path, or a database nothing was ever stored in, would otherwise be created and migrated on the
    spot and exported as empty with exit code 0, an extract that looks like a success.
    """
    from fhir_app.store import missing_database

    why = missing_database(settings.database_url)
    if why is not None:
        _no_database(settings, why)


def _no_database(settings: Settings, why: str) -> NoReturn:
    typer.echo(
        f"fhir-app: nothing to read at {redact(settings.database_url)}: {why}; check "
        "FHIR_APP_DATABASE_URL (`fhir-app process` or `fhir-app migrate` creates a database)",
        err=True,
    )
    raise typer.Exit(EXIT_DATABASE)


@app.command("process")
def process_command(
    inputs: Inputs,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for the NDJSON outputs.", file_okay=False, writable=True
        ),
    ],
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Worker processes that validate and derive (default: one per CPU for inputs "
            "of 2 MB or more; 0: all in this process).",
        ),
    ] = None,
    chunk_size: Annotated[
        int,
        typer.Option(min=1, help="Input records (lines, Bundle entries) per transaction."),
    ] = DEFAULT_CHUNK_RECORDS,
    derive_batch: Annotated[
        int,
        typer.Option(min=1, help="Patients derived per transaction."),
    ] = DEFAULT_DERIVE_PATIENTS,
    engine: Annotated[
        Engine,
        typer.Option(
            help="single: this machine, through the database (resumable). spark: on Apache "
            "Spark, no database; also writes DIR/lesions.parquet (needs fhir-app\\[spark], "
            "Java 17).",
        ),
    ] = Engine.single,
    master: Annotated[
        str | None,
        typer.Option(help="The Spark master URL (--engine spark; default local[*])."),
    ] = None,
) -> None:
    """Store the inputs, derive, and write DIR/<ResourceType>.ndjson for every patient touched.

    Streams input of any size, one transaction per chunk; run it again to resume after a crash.
    With --engine spark the same derivation runs on Spark, with no database.
    """
    conceptmap.configure(get_settings().concept_map_dir)
    check_readable(inputs)
    if engine is Engine.spark:
        process_on_spark(inputs, output_folder(out), master)
    if master is not None:
        typer.echo("error: --master needs --engine spark", err=True)
        raise typer.Exit(EXIT_USAGE)
    output_folder(out)
    from fhir_app.store import bulk_uow_factory, make_engine, migrate

    settings = get_settings()
    migrate(settings.database_url)
    processor = BulkProcessor(
        bulk_uow_factory(make_engine(settings.database_url)),
        appearance_settings(settings),
        options=BulkOptions(
            workers=workers, chunk_records=chunk_size, derive_patients=derive_batch
        ),
    )
    with _progress_bar() as bar:

        def report(outcome: JsonObject) -> None:
            for line in describe_rejection(outcome):
                if bar is None:
                    typer.echo(line, err=True)
                else:
                    bar.say(line)

        # Rejections come from the run's record, so a resumed run names those found before the
        # interruption too.
        try:
            result = processor.run(inputs, out, bar, on_rejection=report)
        except InputUnreadable as exc:
            unreadable(exc)
    counts = ", ".join(f"{n} {rtype}" for rtype, n in sorted(result.written.items()) if n)
    typer.echo(
        f"{result.accepted} accepted, {result.rejected} rejected; {result.patients} patients; "
        f"wrote {counts or 'no outputs'} to {out}",
        err=True,
    )
    raise typer.Exit(EXIT_REJECTED if result.rejected else EXIT_OK)


def process_on_spark(inputs: list[Path], out: Path, master: str | None) -> NoReturn:
    """`process --engine spark`: the Spark job (fhir_app.spark.job), its summary, its exit code."""
    try:
        from fhir_app.spark.job import DEFAULT_MASTER, process, spark_session
    except ImportError as exc:
        typer.echo(
            f"error: --engine spark needs pyspark ({exc}); install fhir-app[spark]", err=True
        )
        raise typer.Exit(EXIT_USAGE) from exc

    def report(outcome: JsonObject) -> None:
        for line in describe_rejection(outcome):
            typer.echo(line, err=True)

    settings = get_settings()
    with spark_session(master or DEFAULT_MASTER) as spark:
        result = process(spark, inputs, out, appearance_settings(settings), on_rejection=report)
    counts = ", ".join(f"{n} {rtype}" for rtype, n in sorted(result.written.items()) if n)
    typer.echo(
        f"{result.accepted} accepted, {result.rejected} rejected; {result.patients} patients; "
        f"wrote {counts or 'no outputs'} and {result.lesions} lesions (lesions.parquet) to {out}",
        err=True,
    )
    raise typer.Exit(EXIT_REJECTED if result.rejected else EXIT_OK)


class _BarProgress:
    """A rich progress bar on stderr: bytes read while ingesting, patients while deriving, and
    the rate of each (resources/s, patients/s)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._ingest: Any = None
        self._derive: Any = None
        self._resources = 0
        self._patients = 0

    def __enter__(self) -> _BarProgress:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    @staticmethod
    def _rate(count: int, task: Any) -> str:
        elapsed = task.elapsed or 0.0
        per_second = count / elapsed if elapsed > 0 else 0.0
        return f"{per_second:,.0f}/s"

    def say(self, line: str) -> None:
        """Print a line above the bar."""
        self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def ingest_started(self, total_bytes: int) -> None:
        """A bar over the bytes of the input files."""
        self._ingest = self._progress.add_task("ingest", total=total_bytes or None, count="")

    def ingested(self, resources: int, bytes_read: int) -> None:
        """Advance to `bytes_read`; show the resources taken in and their rate."""
        self._resources += resources
        task = self._progress.tasks[self._ingest]
        count = f"{self._resources:,} resources, {self._rate(self._resources, task)}"
        self._progress.update(self._ingest, completed=bytes_read, count=count)

    def derive_started(self, patients: int) -> None:
        """A bar over the patients queued for derivation."""
        if self._ingest is not None:
            self._progress.update(self._ingest, completed=self._progress.tasks[self._ingest].total)
        self._derive = self._progress.add_task("derive", total=patients or None, count="")

    def derived(self, patients: int) -> None:
        """Advance by `patients`; show their rate."""
        self._patients += patients
        task = self._progress.tasks[self._derive]
        count = f"{self._patients:,} patients, {self._rate(self._patients, task)}"
        self._progress.update(self._derive, advance=patients, count=count)


@contextmanager
def _progress_bar() -> Iterator[_BarProgress | None]:
    """A progress bar when stderr is a terminal; nothing otherwise (logs and pipes stay quiet)."""
    if not sys.stderr.isatty():
        yield None
        return
    with _BarProgress() as bar:
        yield bar


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema to the latest migration."""
    from fhir_app.store import migrate

    settings = get_settings()
    migrate(settings.database_url)
    typer.echo(f"database at the latest schema: {redact(settings.database_url)}", err=True)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8080,
    allow_unauthenticated_remote: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated-remote",
            help="Listen beyond loopback without bearer tokens (you said so explicitly).",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes; more than 1 uses every core (PostgreSQL, or SQLite in WAL).",
        ),
    ] = 1,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(help="TLS certificate (PEM) to serve HTTPS.", exists=True, dir_okay=False),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(help="TLS private key (PEM) of --ssl-certfile.", exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Serve the FHIR REST API (base /fhir)."""
    from fhir_app.api import create_app
    from fhir_app.api.server import run_server, server_config

    settings = get_settings()
    conceptmap.configure(settings.concept_map_dir)
    refusal = serve_refusal(host, settings, allow_unauthenticated_remote)
    if refusal is None and (ssl_certfile is None) != (ssl_keyfile is None):
        refusal = "--ssl-certfile and --ssl-keyfile go together"
    if refusal is None:
        refusal = listen_refusal(host, port)
    if refusal is not None:
        typer.echo(f"refusing to serve: {refusal}", err=True)
        raise typer.Exit(EXIT_USAGE)
    for warning in serve_warnings(settings):
        typer.echo(f"warning: {warning}", err=True)
    service = make_service(settings)  # migrates once, before any worker starts
    scheme = "https" if ssl_certfile else "http"
    typer.echo(f"fhir-app serving {scheme}://{host}:{port}/fhir on {redact(settings.database_url)}")
    # uvicorn's own access log prints the query string (patient ids): fhir_app.access instead.
    options: dict[str, Any] = {
        "log_level": "info",
        "access_log": False,
        "log_config": log_config(),
        "ssl_certfile": str(ssl_certfile) if ssl_certfile else None,
        "ssl_keyfile": str(ssl_keyfile) if ssl_keyfile else None,
    }
    if workers == 1:
        app = create_app(settings, service)
        run_server(server_config(app, settings, host=host, port=port, **options))
        return
    # Each worker process builds its own engine and app from the same environment.
    run_server(
        server_config(
            "fhir_app.cli:worker_app",
            settings,
            host=host,
            port=port,
            workers=workers,
            factory=True,
            **options,
        )
    )


# ---- serve: security checks and logging (issue 13) -------------------------------------------

MIN_STATIC_TOKEN_LENGTH = 32


def listen_refusal(host: str, port: int) -> str | None:
    """Why nothing can listen on host:port (a port in use, an address not on this machine), or
    None: checked before the database is touched and before "serving" is printed, so that a taken
    port is one line and the usage exit code, not uvicorn's start-up failure (exit 3, which is the
    database's code here)."""
    import socket

    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"cannot listen on {host}: {getattr(exc, 'strerror', None) or exc}"
    family, kind, protocol, _, address = found[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def serve_refusal(host: str, settings: Settings, allow_open: bool) -> str | None:
    """Why `serve` must not start with these settings on `host`, or None.

    Static tokens are for local use: shared secrets without scopes or expiry, so they are
    refused beyond loopback (use the site's identity provider, FHIR_APP_SMART_JWKS), and short
    ones are refused everywhere (guessable). No authentication at all beyond loopback needs
    --allow-unauthenticated-remote.
    """
    short = [t for t in settings.auth_tokens if len(t) < MIN_STATIC_TOKEN_LENGTH]
    if short:
        return (
            f"{len(short)} of FHIR_APP_AUTH_TOKENS are shorter than {MIN_STATIC_TOKEN_LENGTH} "
            "characters (guessable); use long random tokens, e.g. python -c "
            "'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if is_loopback(host):
        return None
    if settings.auth_tokens:
        return (
            f"static FHIR_APP_AUTH_TOKENS are for local use on loopback only, not on {host}: "
            "configure the site's identity provider (FHIR_APP_SMART_JWKS, _ISSUER, _AUDIENCE)"
        )
    open_anyway = allow_open or settings.allow_unauthenticated_remote
    if not settings.smart_jwks and not open_anyway:
        return (
            f"listening on {host} without authentication: anyone on the network could read and "
            "write. Set FHIR_APP_SMART_JWKS, or pass --allow-unauthenticated-remote if intended."
        )
    return None


def serve_warnings(settings: Settings) -> list[str]:
    """What `serve` starts with but should not (one line each)."""
    warnings = []
    if settings.smart_jwks and not settings.smart_token_url:
        warnings.append(
            "FHIR_APP_SMART_JWKS is set without FHIR_APP_SMART_TOKEN_URL: "
            "/.well-known/smart-configuration lacks token_endpoint, which SMART 2.x requires, "
            "so SMART clients cannot discover where to get tokens"
        )
    return warnings


def log_config() -> dict[str, Any]:
    """uvicorn's logging with the access lines of `fhir_app.access` (route templates only)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["fhir_app"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def worker_app() -> Any:
    """The app of one `serve --workers N` process (the schema is already migrated)."""
    from fhir_app.api import create_app

    settings = get_settings()
    return create_app(settings, make_service(settings, migrate=False))


def usage_error(exc: ServiceError) -> NoReturn:
    """Report a refused option on stderr and exit with the usage code."""
    for issue in exc.issues:
        typer.echo(f"error: {issue.diagnostics}", err=True)
    raise typer.Exit(EXIT_USAGE)


def output_folder(out: Path) -> Path:
    """`out`, refused (exit 2, one line) before any work when it exists and is not a folder, or
    cannot be created or written; nothing is created here (a command refused later, e.g. for
    its database, leaves no folder behind)."""
    if out.exists() and not out.is_dir():
        typer.echo(f"error: --out {out} exists and is not a folder", err=True)
        raise typer.Exit(EXIT_USAGE)
    # The nearest folder that exists: `out` itself, or where `mkdir -p` would start.
    existing = out.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = f"cannot be created: {existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        # access(2) also answers EROFS for a read-only file system, root included.
        problem = f"cannot be written: {existing} is not writable"
    else:
        return out
    typer.echo(f"error: --out {out} {problem}", err=True)
    raise typer.Exit(EXIT_USAGE)


@app.command("export")
def export_command(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for <ResourceType>.ndjson and manifest.json.")
    ],
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            help="Output types to export, comma-separated or repeated (default: every one of "
            "RiskAssessment, DiagnosticReport, Observation, Provenance).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only outputs last updated at or after this FHIR instant "
            "(e.g. 2025-01-31T12:00:00Z).",
        ),
    ] = None,
    flat: Annotated[
        bool,
        typer.Option(
            "--flat",
            help="Also write the lesion table (lesions.csv, lesions.parquet) of the patients "
            "in the export.",
        ),
    ] = False,
) -> None:
    """Export the current outputs as FHIR Bulk Data NDJSON, one file per type, with a manifest."""
    from fhir_app.export import export_request, export_to_folder

    try:
        request = export_request(types=types or (), since=since)
    except ServiceError as exc:
        usage_error(exc)
    folder = output_folder(out)
    existing_database(get_settings())
    service = make_service(get_settings())
    result = export_to_folder(service, request, folder, flat=flat)
    written = [f"{o['count']} {o['type']}" for o in result.manifest["output"]]
    if result.lesions is not None:
        written.append(f"{result.lesions} lesions (lesions.csv, lesions.parquet)")
    typer.echo(
        f"wrote {', '.join(written) or 'no outputs'} to {folder} "
        f"(transactionTime {result.manifest['transactionTime']})",
        err=True,
    )
    raise typer.Exit(EXIT_OK)


@app.command("report")
def report_command(
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for lesions-per-level.png and lesions.csv."),
    ] = Path("."),
) -> None:
    """Print population summaries of the current outputs; write the chart and the lesion table."""
    from rich.console import Console

    from fhir_app.analytics.lesions import write_csv
    from fhir_app.analytics.report import (
        lesions_per_level_chart,
        population_report,
        render_report,
    )
    from fhir_app.export import LESIONS_CSV, lesion_table

    folder = output_folder(out)
    existing_database(get_settings())
    service = make_service(get_settings())
    rows = lesion_table(service)
    Console().print(render_report(population_report(rows)))
    folder.mkdir(parents=True, exist_ok=True)
    chart = lesions_per_level_chart(rows, folder / "lesions-per-level.png")
    write_csv(rows, folder / LESIONS_CSV)
    typer.echo(f"wrote {chart} and {folder / LESIONS_CSV} ({len(rows)} lesions)", err=True)
    raise typer.Exit(EXIT_OK)


def main() -> None:
    """Console-script entry point: a database that cannot be used is a message and exit code 3,
    not a traceback (nothing half-stored: every unit of work rolled back, and `process` resumes
    from its last checkpoint when run again); a ConceptMap that cannot be used is a message naming
    the file and element and exit code 4, before anything is read or stored."""
    from fhir_app.store import DatabaseUrlError, TransientStoreError, store_error

    try:
        app()
    except InvalidSettings as error:
        # The operator's configuration: a usage error. The message names the variables only.
        typer.echo(f"fhir-app: invalid settings: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except DatabaseUrlError as error:
        # Not `redact(url)`: a URL that cannot be parsed cannot be trusted to redact either.
        typer.echo(f"fhir-app: the database cannot be used: {error}", err=True)
        sys.exit(EXIT_DATABASE)
    except conceptmap.ConceptMapError as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        typer.echo(f"fhir-app: a ConceptMap cannot be used: {first_line}", err=True)
        sys.exit(EXIT_CONCEPT_MAP)
    except Exception as error:  # only store faults are answered here; the rest re-raised
        fault = store_error(error)
        if fault is None:
            raise
        first_line = (str(fault).strip().splitlines() or [type(fault).__name__])[0]
        again = (
            " (it looks temporary: run the command again)"
            if isinstance(fault, TransientStoreError)
            else ""
        )
        typer.echo(
            f"fhir-app: the database at {redact(get_settings().database_url)} could not be used: "
            f"{first_line}{again}",
            err=True,
        )
        sys.exit(EXIT_DATABASE)


if __name__ == "__main__":
    main()
