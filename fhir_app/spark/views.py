"""The registry's ViewDefinitions (profiles/views/) over the Spark path's outputs.

The views run through the same evaluator as everywhere else (fhir_app.analytics.views), in the
executors: each task reads its part of `DIR/<resource>.ndjson` and evaluates the view over those
resources. A ViewDefinition projects one resource at a time (no view of profiles/views/ joins
two), so a partition of the resources gives exactly the rows of those resources and the union of
the partitions is the view. `view_frame` gives the rows as a DataFrame typed from the columns'
FHIR types, to query with Spark SQL (`createOrReplaceTempView`) or write as Parquet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Final

import orjson
from pyspark import RDD
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DecimalType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from fhir_app.analytics.views import compile_view, evaluate

# FHIR primitive types (a column's `type`) that are not text in a DataFrame.
_INTEGER_TYPES: Final = frozenset({"integer", "integer64", "positiveInt", "unsignedInt"})
# A FHIR decimal has at most 18 digits after the point in practice; 38 is Spark's widest.
_DECIMAL: Final = DecimalType(38, 18)


def _rows(view: Mapping[str, Any], lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    return iter(evaluate(view, (orjson.loads(line) for line in lines if line.strip())))


def view_rows(spark: SparkSession, folder: Path, view: Mapping[str, Any]) -> RDD[dict[str, Any]]:
    """The rows of a ViewDefinition over the outputs in `folder`, evaluated in the executors
    (dicts of column name to value, as `analytics.views.evaluate` gives them).

    Raises ViewError on the driver, before any task runs, for a view the evaluator refuses.
    """
    resource = compile_view(view).resource
    path = folder / f"{resource}.ndjson"
    if not path.exists():
        empty: RDD[dict[str, Any]] = spark.sparkContext.emptyRDD()
        return empty
    lines = spark.sparkContext.textFile(str(path.resolve()))
    return lines.mapPartitions(partial(_rows, dict(view)))


def _spark_type(fhir_type: str | None, collection: bool) -> DataType:
    kind: DataType
    if fhir_type == "boolean":
        kind = BooleanType()
    elif fhir_type in _INTEGER_TYPES:
        kind = LongType()
    elif fhir_type == "decimal":
        kind = _DECIMAL
    else:
        kind = StringType()
    return ArrayType(kind) if collection else kind


def view_schema(view: Mapping[str, Any]) -> StructType:
    """The DataFrame schema of a view: one nullable field per column, typed from its FHIR type
    (boolean, integer types, decimal; every other type is text)."""
    return StructType(
        [
            StructField(name, _spark_type(fhir_type, collection), nullable=True)
            for name, fhir_type, collection in compile_view(view).column_types()
        ]
    )


def _cell(value: Any, kind: DataType) -> Any:
    if value is None:
        return None
    if isinstance(kind, ArrayType):
        return [_cell(v, kind.elementType) for v in value]
    if isinstance(kind, StringType) and not isinstance(value, str):
        return str(value)
    if isinstance(kind, DecimalType) and not isinstance(value, Decimal):
        return Decimal(str(value))
    return value


def _typed(schema: StructType, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_cell(row[field.name], field.dataType) for field in schema.fields)


def view_frame(spark: SparkSession, folder: Path, view: Mapping[str, Any]) -> DataFrame:
    """The rows of `view_rows` as a DataFrame of `view_schema`."""
    schema = view_schema(view)
    rows = view_rows(spark, folder, view).map(partial(_typed, schema))
    return spark.createDataFrame(rows, schema)
