"""Derived results always match the stored inputs, whatever the concurrency (issue 8).

Many clients send transactions at once to a small pool of patients over the real HTTP server.
Afterwards, for every patient, the stored current outputs must equal what `$assess` derives from
that patient's stored current inputs: no patient may keep outputs derived from only some of the
transactions that were acknowledged. Before per-patient serialisation of derivations, PostgreSQL
(read committed) left some patients stale in this test; SQLite serialises writers and was always
consistent.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_support import Serve, post_json
from support.consistency import IncreasingClock, stale_patients

from fhir_app.fhir.samples import observation, transaction
from fhir_app.store import UnitOfWork

PATIENTS = tuple(f"cc-{letter}" for letter in "abcdef")
LEVELS = ("T5", "L1")
CLIENTS = 12
REQUESTS_PER_CLIENT = 6
RETRIES = 20
# (kind, possible values) of findings that move SINS components and the appearance.
FINDINGS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("pain", ("mechanical", "occasional-non-mechanical", "pain-free")),
    ("alignment", ("subluxation-translation", "de-novo-deformity", "normal-alignment")),
    ("height_loss", (0, 20, 65)),
    ("involvement", (10, 70)),
    ("posterior", ("left", "right", "none")),
    ("appearance", ("lytic", "mixed", "blastic")),
)
_EFFECTIVE = IncreasingClock()


def _request(rng: random.Random, client: int, number: int) -> dict[str, Any]:
    """A transaction of new findings for one patient of the pool, sometimes two."""
    patients = [PATIENTS[(client + number) % len(PATIENTS)]]
    if rng.random() < 0.2:
        patients.append(rng.choice(PATIENTS))
    resources = []
    for k in range(rng.randint(3, 6)):
        kind, values = rng.choice(FINDINGS)
        resources.append(
            observation(
                f"cc-{client}-{number}-{k}",
                rng.choice(patients),
                kind,
                rng.choice(values),
                level=rng.choice(LEVELS),
                effective=_EFFECTIVE(),
            )
        )
    return transaction(resources)


@pytest.mark.parametrize("seed", [7])
def test_concurrent_transactions_leave_outputs_derived_from_all_inputs(
    serve: Serve, make_uow: Callable[[], UnitOfWork], seed: int
) -> None:
    base = serve()
    failures: list[str] = []

    # Rounds: every client sends one transaction per round, the round's start released for all
    # at once, two clients per patient; so the last writes of each patient overlap, as stale
    # outputs survive only when a patient's last two transactions were in flight together.
    start = threading.Barrier(CLIENTS)

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with httpx.Client(base_url=f"{base}/", timeout=120) as http:
            for number in range(REQUESTS_PER_CLIENT):
                body = _request(rng, index, number)
                start.wait(timeout=120)
                # A 503 (a lost race, nothing stored) is answered by sending again, as the
                # Retry-After header asks; anything else but 200 is a failure.
                for _attempt in range(RETRIES):
                    response = post_json(http, "", body)
                    if response.status_code != 503:
                        break
                    assert response.headers.get("Retry-After")
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:300]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures

    stale = stale_patients(make_uow, PATIENTS)
    assert not stale, stale
