"""One Spark session (local[2], loopback) for the Spark tests, or a clear skip without Spark.

The tests are marked `spark` (each module says so). They are skipped only when pyspark or Java
is missing; under CI (CI=true) with pyspark installed, a missing Java fails them instead, so that
CI cannot pass without having run them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MASTER = "local[2]"


def spark_missing() -> str | None:
    """Why Spark cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'fhir-app[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and (Path(java_home) / "bin/java").exists()):
        return "no Java runtime (pyspark needs Java 17: java on PATH or JAVA_HOME)"
    return None


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A SparkSession on local[2] bound to the loopback interface."""
    reason = spark_missing()
    if reason is not None:
        if os.environ.get("CI") == "true" and importlib.util.find_spec("pyspark") is not None:
            pytest.fail(f"CI has pyspark but cannot run Spark: {reason}")
        pytest.skip(reason)
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    from fhir_app.spark.job import spark_session

    with spark_session(MASTER) as session:
        yield session
