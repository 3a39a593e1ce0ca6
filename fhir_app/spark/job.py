"""The Spark job behind `fhir-app process INPUT... --out DIR --engine spark [--master URL]`.

The stages (the work of each is in fhir_app.spark.tasks, the single-machine path's own code):

1. Read and check. Every NDJSON file is cut into byte ranges (`split_bytes`, 32 MB by default); a
   first job counts the newlines of each range, so that every task knows its line numbers and a
   rejection is labelled `file: line N` as on the single path. A JSON document (a Bundle) is one
   task. Tasks parse, validate and map their records; the result is kept (memory, then disk).
2. Current inputs (shuffle 1, by `Type/id`): of an input sent several times, the last one, at the
   version the store would give it.
3. Derive (shuffle 2, range-partitioned and sorted by patient): each task derives its patients
   one after the other with `service.derive` and emits their outputs as NDJSON lines and their
   lesion rows. Every partition is computed in parallel and kept before anything is written.
4. Write. The driver streams the kept partitions one at a time (`toLocalIterator`) into
   `DIR/<Type>.ndjson`, `DIR/lesions.parquet` and `DIR/OperationOutcome.ndjson` (rejections in
   input order): the driver holds one partition, never the population.

No database: every input is taken as new, as in a first run of the single path on an empty
database, and every output is version 1, last updated at the start of the run (`assess` stamps
outputs the same way, `outbound.FirstVersion`). The files equal the single path's apart from the
timestamps the contract lets differ (`meta.lastUpdated`, `issued`, `Provenance.recorded`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, Final

import orjson
import pyarrow.parquet as pq
from pyspark import RDD, StorageLevel
from pyspark.sql import SparkSession

from fhir_app.analytics.lesions import LesionRow, arrow_schema, arrow_table
from fhir_app.domain.appearance import AppearanceSettings
from fhir_app.fhir.inputs import JsonObject
from fhir_app.fhir.stream import InputFormat, detect_format
from fhir_app.service import utcnow
from fhir_app.spark.tasks import (
    LESION,
    OUTPUT,
    Accepted,
    CurrentInput,
    Refused,
    Split,
    check_split,
    count_newlines,
    current_input,
    derive_patients,
    ndjson_splits,
)

DEFAULT_MASTER: Final = "local[*]"
DEFAULT_SPLIT_BYTES: Final = 32 * 1024 * 1024
# Input bytes per partition: of the checked inputs and of the two shuffles.
PARTITION_BYTES: Final = 64 * 1024 * 1024
LESIONS_PARQUET: Final = "lesions.parquet"
OPERATION_OUTCOME: Final = "OperationOutcome"
# Lesion rows per Parquet row group written by the driver.
LESION_BATCH: Final = 20_000
# Rejections per partition when they are sorted back into input order.
REJECTIONS_PER_PARTITION: Final = 50_000
_PARTIAL: Final = ".partial"


@dataclass(slots=True)
class SparkResult:
    """What a Spark run did: inputs accepted and refused, patients touched, lines written per
    output file and rows of the lesion table."""

    accepted: int = 0
    rejected: int = 0
    patients: int = 0
    written: dict[str, int] = field(default_factory=dict)
    lesions: int = 0


@contextmanager
def spark_session(master: str = DEFAULT_MASTER) -> Iterator[SparkSession]:
    """A SparkSession on `master`, stopped at the end.

    On a local master the driver binds the loopback interface (SPARK_LOCAL_IP=127.0.0.1) unless
    SPARK_LOCAL_IP says otherwise: a laptop or CI run has no business listening on the network.
    On a cluster the executors must reach the driver, so Spark's own choice stands there.
    Python workers run this interpreter unless PYSPARK_PYTHON names another.
    """
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName("fhir-app process")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


# --------------------------------------------------------------------------------- stages


def _splits(
    spark: SparkSession, paths: Sequence[Path], split_bytes: int, tasks: int
) -> list[Split]:
    """The splits of every input: byte ranges of NDJSON files (their line counts from one small
    job of at most `tasks` tasks), one split per JSON document."""
    ranges: list[tuple[int, str, str, int, int]] = []
    documents: list[Split] = []
    for source, path in enumerate(paths):
        where = str(path.resolve())
        if detect_format(path) is InputFormat.DOCUMENT:
            documents.append(Split(source, where, path.name, 0, path.stat().st_size, -1))
            continue
        for start, end in ndjson_splits(path, split_bytes):
            ranges.append((source, where, path.name, start, end))
    counts: list[int] = []
    if ranges:
        counts = (
            spark.sparkContext.parallelize(ranges, min(len(ranges), tasks))
            .map(lambda r: count_newlines(r[1], r[3], r[4]))
            .collect()
        )
    splits: list[Split] = []
    before = 0
    for (source, where, name, start, end), count in zip(ranges, counts, strict=True):
        if start == 0:
            before = 0
        splits.append(Split(source, where, name, start, end, before))
        before += count
    return sorted(splits + documents)


def _by_patient(entry: tuple[tuple[str, str], Iterable[Accepted]]) -> list[tuple[str, Any]]:
    item, version = current_input(entry[1])
    if item.patient is None:
        return []
    current = CurrentInput(item.resource_type, item.resource_id, version, item.text)
    return [(item.patient, current)]


def _check_all(splits: Sequence[Split], now: datetime, spark: SparkSession, tasks: int) -> RDD[Any]:
    """Every input checked; each of at most `tasks` tasks reads a run of consecutive splits."""
    sc = spark.sparkContext
    if not splits:
        return sc.emptyRDD()
    return sc.parallelize(splits, min(len(splits), tasks)).flatMap(partial(_check_one, now))


def _check_one(now: datetime, split: Split) -> Iterator[Accepted | Refused]:
    return check_split(split, now)


def _derive_partition(
    settings: AppearanceSettings, now: datetime, inputs: Iterable[tuple[str, CurrentInput]]
) -> Iterator[tuple[str, Any, Any]]:
    return derive_patients(inputs, settings, now)


def _tally(item: Accepted | Refused) -> tuple[int, int]:
    return (1, 0) if isinstance(item, Accepted) else (0, 1)


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]


# --------------------------------------------------------------------------------- the run


def process(
    spark: SparkSession,
    paths: Sequence[Path],
    out: Path,
    settings: AppearanceSettings | None = None,
    *,
    now: datetime | None = None,
    split_bytes: int = DEFAULT_SPLIT_BYTES,
    on_rejection: Callable[[JsonObject], None] | None = None,
) -> SparkResult:
    """Process the input files on Spark and write the outputs to `out` (see the module doc)."""
    settings = settings or AppearanceSettings()
    now = now or utcnow()
    sc = spark.sparkContext
    # Partitions by input size (two per core at least, for balance): a Python task costs tens of
    # milliseconds to schedule, so small inputs must not be cut finer than that.
    total_bytes = sum(path.stat().st_size for path in paths)
    partitions = max(2 * sc.defaultParallelism, -(-total_bytes // PARTITION_BYTES))
    splits = _splits(spark, paths, split_bytes, partitions)
    checked = _check_all(splits, now, spark, partitions).persist(StorageLevel.MEMORY_AND_DISK)
    derived: RDD[Any] | None = None
    try:
        result = SparkResult()
        result.accepted, result.rejected = checked.map(_tally).fold((0, 0), _add)
        accepted = checked.filter(lambda item: isinstance(item, Accepted))
        result.patients = (
            accepted.map(lambda item: item.patient).filter(lambda p: p is not None).distinct()
        ).count()
        current = (
            accepted.map(lambda item: ((item.resource_type, item.resource_id), item))
            .groupByKey(partitions)
            .flatMap(_by_patient)
        )
        derived = (
            current.sortByKey(numPartitions=partitions)
            .mapPartitions(partial(_derive_partition, settings, now))
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        derived.count()  # every partition derived in parallel before the driver reads any
        rejections: RDD[Any] = sc.emptyRDD()
        if result.rejected:
            rejections = (
                checked.filter(lambda item: isinstance(item, Refused))
                .map(lambda item: (item.order, item.outcome))
                .sortByKey(numPartitions=1 + result.rejected // REJECTIONS_PER_PARTITION)
                .values()
            )
        _write(out, derived.toLocalIterator(), rejections.toLocalIterator(), result, on_rejection)
        return result
    finally:
        checked.unpersist()
        if derived is not None:
            derived.unpersist()


class _Sinks:
    """The output files of a run, written as `.<name>.partial` and put in place at the end."""

    def __init__(self, out: Path, result: SparkResult) -> None:
        self.out = out
        self.result = result
        self.files: dict[str, IO[bytes]] = {}

    def line(self, resource_type: str, line: bytes) -> None:
        """Append one NDJSON line to `<resource_type>.ndjson`."""
        handle = self.files.get(resource_type)
        if handle is None:
            partial_file = self.out / f".{resource_type}.ndjson{_PARTIAL}"
            handle = self.files[resource_type] = partial_file.open("wb", buffering=1 << 20)
            self.result.written[resource_type] = 0
        handle.write(line + b"\n")
        self.result.written[resource_type] += 1

    def close(self) -> None:
        """Close every file."""
        for handle in self.files.values():
            handle.close()

    def put_in_place(self) -> None:
        """Replace the NDJSON files of an earlier run by this run's."""
        for stale in self.out.glob("*.ndjson"):
            stale.unlink()
        for resource_type in self.files:
            partial_file = self.out / f".{resource_type}.ndjson{_PARTIAL}"
            partial_file.replace(self.out / f"{resource_type}.ndjson")


def _write(
    out: Path,
    derived: Iterator[tuple[str, Any, Any]],
    rejections: Iterator[JsonObject],
    result: SparkResult,
    on_rejection: Callable[[JsonObject], None] | None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(f".*{_PARTIAL}"):
        leftover.unlink()
    sinks = _Sinks(out, result)
    lesions_partial = out / f".{LESIONS_PARQUET}{_PARTIAL}"
    writer = pq.ParquetWriter(lesions_partial, arrow_schema())
    batch: list[LesionRow] = []
    try:
        for kind, resource_type, payload in derived:
            if kind == OUTPUT:
                sinks.line(resource_type, payload)
            elif kind == LESION:
                batch.append(LesionRow(*payload))
                if len(batch) >= LESION_BATCH:
                    writer.write_table(arrow_table(batch))
                    result.lesions += len(batch)
                    batch = []
        if batch:
            writer.write_table(arrow_table(batch))
            result.lesions += len(batch)
        for outcome in rejections:
            sinks.line(OPERATION_OUTCOME, orjson.dumps(outcome))
            if on_rejection is not None:
                on_rejection(outcome)
    finally:
        writer.close()
        sinks.close()
    sinks.put_in_place()
    lesions_partial.replace(out / LESIONS_PARQUET)
