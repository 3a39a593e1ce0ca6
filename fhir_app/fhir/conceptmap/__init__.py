"""Code mapping as data (CONTRACT.md 3a): FHIR R4 ConceptMaps onto the contract's codes.

fhir-app reads the ConceptMaps it ships in `profiles/conceptmaps/` and, when the setting
`concept_map_dir` (`FHIR_APP_CONCEPT_MAP_DIR`) names one, a site's own folder. They are loaded and
checked once per process: `configure` at start-up (every entry point calls it, so a broken map
stops `serve`, `process`, `assess` and the API factory with a ConceptMapError naming the file and
element), or lazily by `active()` on first use (workers, tests).

`translate(raw)` gives the copy of an input that the inbound mapping reads: each coding a map
reaches gets the contract's coding added beside it. The input itself stays as received.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Final

from fhir_app.fhir.conceptmap.load import (
    ConceptMapError,
    DependsOn,
    LoadedMap,
    Row,
    Target,
    load_file,
    load_folder,
)
from fhir_app.fhir.conceptmap.translate import JsonObject, Translator

__all__ = [
    "ConceptMapError",
    "DependsOn",
    "LoadedMap",
    "Row",
    "Target",
    "Translator",
    "active",
    "configure",
    "install",
    "load_file",
    "load_translator",
    "shipped_folder",
    "translate",
]

SHIPPED_SUBFOLDER: Final = Path("profiles") / "conceptmaps"
# The same override as the CapabilityStatement's (fhir_app/api/capability.py).
PROFILES_ENV: Final = "FHIR_APP_PROFILES_DIR"

_lock = threading.Lock()
_active: Translator | None = None
# The site folder `_active` was configured for: `configure` is idempotent per folder, so the CLI's
# start-up check and the API factory after it load the maps once.
_configured_for: tuple[Path | None] | None = None


def shipped_folder() -> Path:
    """`conceptmaps/` of `$FHIR_APP_PROFILES_DIR` when set (as for the CapabilityStatement), else
    `profiles/conceptmaps` of the source tree, else of the working folder (as installed by the
    Dockerfile, which copies profiles/ next to the app)."""
    override = os.environ.get(PROFILES_ENV)
    if override:
        return Path(override) / SHIPPED_SUBFOLDER.name
    source_tree = Path(__file__).resolve().parents[3] / SHIPPED_SUBFOLDER
    return source_tree if source_tree.is_dir() else Path.cwd() / SHIPPED_SUBFOLDER


def load_translator(site_folder: Path | None) -> Translator:
    """The shipped maps, then the site's (whose rows replace shipped rows for the same code)."""
    maps = load_folder(shipped_folder())
    if site_folder is not None:
        maps += load_folder(site_folder)
    return Translator(maps)


def install(translator: Translator | None) -> None:
    """Make `translator` the one this process applies (None: load lazily on next use)."""
    global _active, _configured_for
    with _lock:
        _active = translator
        _configured_for = None


def configure(site_folder: Path | None) -> Translator:
    """Load and check every map now and make them this process's: the start-up check.

    Raises ConceptMapError for a broken map. Called again for the same folder, it keeps the maps
    already loaded.
    """
    global _active, _configured_for
    with _lock:
        if _active is not None and _configured_for == (site_folder,):
            return _active
    translator = load_translator(site_folder)
    with _lock:
        _active = translator
        _configured_for = (site_folder,)
    return translator


def active() -> Translator:
    """This process's translator; loaded on first use from the settings when none was configured."""
    global _active
    current = _active
    if current is not None:
        return current
    with _lock:
        if _active is None:
            from fhir_app.config import get_settings

            _active = load_translator(get_settings().concept_map_dir)
        return _active


def translate(raw: JsonObject) -> JsonObject:
    """The copy of `raw` the inbound mapping reads (see the module docstring)."""
    return active().translate(raw)
