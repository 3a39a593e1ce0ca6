"""Real calendar dates: FHIR R4 date, dateTime and instant values "SHALL be valid dates"
(datatypes.html), which the schema's patterns cannot say (they let 2024-02-30 through)."""

from __future__ import annotations

import calendar
import re
from typing import Final

# The date part the patterns already allow: year, then optionally month, then optionally day.
_DATE: Final = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def is_real_date(value: str) -> bool:
    """False when `value` names a day its month does not have (2023-02-29, 2024-04-31).

    Only the calendar is judged: the shape is the schema pattern's business, so a value this
    cannot read is left to it (True).
    """
    found = _DATE.match(value)
    if found is None or found.group(3) is None:
        return True
    month = int(found.group(2))
    if not 1 <= month <= 12:
        return True  # the pattern refuses it
    return 1 <= int(found.group(3)) <= calendar.monthrange(int(found.group(1)), month)[1]
