"""`GET /fhir/metadata`: the CapabilityStatement of `profiles/`, completed at runtime.

The statement is written once, in `profiles/CapabilityStatement-fhir-app.json`, next to the
profiles it names; the server adds what only it knows: `software` (its version) and
`implementation` (the base URL it is reached at).

The search declarations of every resource (`searchParam`, `searchInclude`, `searchRevInclude`)
are generated from the table of search parameters (fhir_app.fhir.search), the same table the
searches run from, so what is declared is exactly what works: profiles/build_profiles.py writes
them into the file, and the server puts them in again as it serves the statement, so that a
file older than the table cannot declare what does not work.
"""

from __future__ import annotations

import copy
import logging
import os
from functools import lru_cache
from pathlib import Path

from fhir_app.api.errors import ApiError
from fhir_app.fhir.inputs import JsonObject
from fhir_app.fhir.parse import load_json
from fhir_app.fhir.search import search_declarations
from fhir_app.service import PROCESSOR_VERSION

log = logging.getLogger("fhir_app.api")

CAPABILITY_FILE = "CapabilityStatement-fhir-app.json"
# Overrides the search below, for installations that keep profiles/ elsewhere.
PROFILES_ENV = "FHIR_APP_PROFILES_DIR"


def candidate_paths() -> list[Path]:
    """Where the statement may be: `$FHIR_APP_PROFILES_DIR`, the source tree (also an editable
    install), then `profiles/` under the working folder."""
    paths = []
    override = os.environ.get(PROFILES_ENV)
    if override:
        paths.append(Path(override) / CAPABILITY_FILE)
    package_root = Path(__file__).resolve().parents[2]
    paths.append(package_root / "profiles" / CAPABILITY_FILE)
    paths.append(Path.cwd() / "profiles" / CAPABILITY_FILE)
    return paths


@lru_cache(maxsize=1)
def stored_statement() -> JsonObject:
    """The statement as written in profiles/ (read once per process)."""
    searched = candidate_paths()
    for path in searched:
        if path.is_file():
            document = load_json(path.read_bytes())
            if isinstance(document, dict) and document.get("resourceType") == (
                "CapabilityStatement"
            ):
                return document
            log.error("%s is not a CapabilityStatement", path)
    log.error("no %s in %s", CAPABILITY_FILE, ", ".join(str(p) for p in searched))
    raise ApiError.plain(
        500, "The CapabilityStatement is not installed with this server; see the server log"
    )


SEARCH_KEYS = ("searchInclude", "searchRevInclude", "searchParam")


def with_search_declarations(statement: JsonObject) -> JsonObject:
    """A copy of `statement` whose resources declare exactly the searches of the table."""
    result = copy.deepcopy(statement)
    for rest in result.get("rest", []):
        resources = []
        for resource in rest.get("resource", []):
            kept = {k: v for k, v in resource.items() if k not in SEARCH_KEYS}
            declared = search_declarations(str(kept.get("type")))
            # Where FHIR puts them: after the conditional flags, before `operation`.
            later = {k: kept.pop(k) for k in ("operation",) if k in kept}
            resources.append({**kept, **declared, **later})
        rest["resource"] = resources
    return result


def capability_statement(base_url: str) -> JsonObject:
    """The statement with `software`, `implementation` and `kind` of this running server."""
    statement = with_search_declarations(stored_statement())
    # An `implementation` is allowed only on a statement about an instance (invariant cpb-15/16).
    statement["kind"] = "instance"
    statement["software"] = {"name": "fhir-app", "version": PROCESSOR_VERSION}
    statement["implementation"] = {
        "description": "fhir-app: SINS and metastasis classification for vertebral lesions",
        "url": base_url,
    }
    return statement
