"""HistoryCursor: the position a history page ends at travels in its `next` link and comes
back unchanged; anything else is a 400."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_app.service import HistoryCursor, ServiceError


@given(
    st.datetimes(timezones=st.just(UTC)),
    st.from_regex(r"[A-Z][a-z]{1,10}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
    st.integers(1, 10**6),
)
def test_a_history_cursor_survives_its_link(
    moment: datetime, rtype: str, rid: str, version: int
) -> None:
    cursor = HistoryCursor(moment, rtype, rid, version)
    token = cursor.token()
    assert token == quote(token, safe="-_")  # needs no escaping in a URL
    assert HistoryCursor.parse(token) == cursor


@pytest.mark.parametrize("token", ["", "x", "%%%", "YWJj", "MjAyNXxPYnN8aWR8eA"])
def test_a_cursor_no_page_wrote_is_400(token: str) -> None:
    with pytest.raises(ServiceError) as refused:
        HistoryCursor.parse(token)
    assert refused.value.status == 400
