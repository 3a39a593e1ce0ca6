"""Do a patient's stored outputs say what its stored inputs say? The check behind the
concurrency tests of issue 8: the stored current outputs of a patient must equal what `$assess`
derives from the patient's stored current inputs, and its newest Provenance must list them all."""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from fhir_app.fhir import outbound
from fhir_app.service import assess
from fhir_app.store import UnitOfWork

_HISTORY = re.compile(r"/_history/\d+")


class IncreasingClock:
    """Strictly increasing effective times, shared by threads: every new finding is the latest of
    its component, so every write changes what its patient's outputs must say."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1)
        self._guard = threading.Lock()

    def __call__(self) -> str:
        with self._guard:
            tick = next(self._ticks)
        moment = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(minutes=tick)
        return moment.isoformat().replace("+00:00", "Z")


def _normalised(resource: dict[str, Any]) -> Any:
    """An output as `comparable` sees it, with version-specific references made plain: `$assess`
    numbers every input version 1, the store numbers them as they were written."""
    text = orjson.dumps(outbound.comparable(resource), option=orjson.OPT_SORT_KEYS).decode()
    return orjson.loads(_HISTORY.sub("", text))


def _clinical(outputs: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    return {
        (r["resourceType"], r["id"]): _normalised(r)
        for r in outputs
        if r["resourceType"] != "Provenance" and r.get("status") != "entered-in-error"
    }


def stale_patients(make_uow: Callable[[], UnitOfWork], patients: Iterable[str]) -> list[str]:
    """A line for every patient whose stored outputs disagree with its stored inputs."""
    stale: list[str] = []
    for patient in patients:
        with make_uow() as uow:
            inputs = uow.resources.inputs_of_patient(patient)
            stored = uow.resources.outputs_of_patient(patient)
        derived = assess((f"{r.resource_type}/{r.resource_id}", dict(r.content)) for r in inputs)
        if derived.rejections:
            stale.append(f"{patient}: a stored input is refused by $assess")
        expected = _clinical(derived.outputs)
        actual = _clinical(dict(r.content) for r in stored)
        if expected != actual:
            differing = [
                f"{key[0]}/{key[1]}"
                for key in sorted(set(expected) | set(actual))
                if expected.get(key) != actual.get(key)
            ]
            stale.append(
                f"{patient}: stored outputs differ from $assess of its {len(inputs)} inputs: "
                + ", ".join(differing)
            )
        provenances = [r for r in stored if r.resource_type == "Provenance"]
        if inputs and not provenances:
            stale.append(f"{patient}: no Provenance")
            continue
        if provenances:
            newest = max(provenances, key=lambda r: (r.last_updated, r.version_id))
            entities = {_HISTORY.sub("", e["what"]["reference"]) for e in newest.content["entity"]}
            missing = {f"{r.resource_type}/{r.resource_id}" for r in inputs} - entities
            if missing:
                stale.append(f"{patient}: the newest Provenance misses {len(missing)} inputs")
    return stale
