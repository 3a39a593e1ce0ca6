"""The rules of FHIR R4 JSON that the official JSON schema leaves out, as data with their source.

`schema.py` writes them into the schema before it is compiled, so they are checked in the same
pass as the rest. Sources: FHIR R4 (4.0.1) json.html (JSON representation) and datatypes.html
(primitive types), and the value sets of the resources' required bindings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# The resource types the processor takes in (CONTRACT 3). Patient and Condition give context.
INPUT_TYPES: Final = ("Observation", "Condition", "ImagingStudy", "Patient")

# datatypes.html#string: "strings SHALL NOT exceed 1MB (1024*1024 characters) in size".
MAX_STRING_CHARACTERS: Final = 1024 * 1024

# datatypes.html#integer: a signed 32-bit integer; unsignedInt and positiveInt are its
# non-negative and positive ranges. The schema's patterns apply to strings only, so a JSON
# number such as 1.5 or 2**40 passes them: these ranges (with JSON type integer) replace them.
INTEGER_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "integer": (-(2**31), 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
}

# The primitive types whose value is a date (datatypes.html: "Dates SHALL be valid dates"):
# the schema's patterns let 2024-02-30 through; a format check reads the calendar.
CALENDAR_TYPES: Final = frozenset({"date", "dateTime", "instant"})

# Required bindings (FHIR R4 4.0.1) of `code` elements of the resources taken in, which the
# schema leaves as any code: (schema definition, element) -> codes. The value sets:
# observation-status, imagingstudy-status, administrative-gender, link-type.
REQUIRED_CODES: Final[Mapping[tuple[str, str], frozenset[str]]] = {
    ("Observation", "status"): frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("ImagingStudy", "status"): frozenset(
        {"registered", "available", "cancelled", "entered-in-error", "unknown"}
    ),
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Patient_Link", "type"): frozenset({"replaced-by", "replaces", "refer", "seealso"}),
}

# Data types R4B added (CodeableReference, RatioRange) that R4 does not have: the R4B schema
# lets an Extension carry them; an R4 Extension cannot.
R4B_ONLY_PROPERTIES: Final[Mapping[str, frozenset[str]]] = {
    "Extension": frozenset({"valueCodeableReference", "valueRatioRange"}),
}
