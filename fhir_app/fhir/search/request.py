"""A search request, parsed and checked against the table into a typed query (search.html).

A comma in a value is OR, a repeated parameter is AND. Modifiers: `:missing` (every parameter),
`:not` (tokens), `:exact` / `:contains` (strings), `:Type` (references). Dates take the prefixes
eq ne gt ge lt le sa eb. Result parameters: `_sort`, `_count`, `_total`, `_elements`,
`_summary`, `_include`, `_revinclude` (with `:iterate`). A parameter the type does not declare is
a 400 unless the caller asked for lenient handling, when it is ignored and left out of the
`used` parameters (the `self` link). A bad value of a declared parameter is always a 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Literal, cast

from fhir_app.fhir.inputs import Issue
from fhir_app.fhir.search.dates import InvalidDate, date_range
from fhir_app.fhir.search.index import REFERENCE, normalised
from fhir_app.fhir.search.parameters import SearchParameter, parameters_of, sort_keys_of

TotalMode = Literal["none", "estimate", "accurate"]
SummaryMode = Literal["true", "text", "data", "count", "false"]
StringMatch = Literal["start", "exact", "contains"]

DATE_PREFIXES: Final = ("eq", "ne", "gt", "ge", "lt", "le", "sa", "eb")
# Read by the API, not by the search: the response format.
FORMAT_PARAMETERS: Final = frozenset({"_format", "_pretty"})
TOTAL_MODES: Final = ("none", "estimate", "accurate")
SUMMARY_MODES: Final = ("true", "text", "data", "count", "false")
# Aidbox's spelling of `_total`, which fhirpy's `count()` sends: its values as `_total`'s.
TOTAL_METHODS: Final = {"count": "accurate", "estimate": "estimate", "none": "none"}
RESULT_PARAMETERS: Final = (
    "_sort",
    "_count",
    "_total",
    "_totalMethod",
    "_elements",
    "_summary",
    "_include",
    "_revinclude",
)
ELEMENT_NAME: Final = re.compile(r"[a-z][A-Za-z0-9]{0,63}")
# `\,` is a literal comma inside a value (search.html#escaping).
_UNESCAPED_COMMA: Final = re.compile(r"(?<!\\),")


class SearchError(Exception):
    """A search that cannot be run: an OperationOutcome with `status` (400)."""

    def __init__(self, issues: list[Issue], status: int = 400) -> None:
        super().__init__("; ".join(issue.diagnostics for issue in issues))
        self.issues = issues
        self.status = status


def refused(code: str, text: str, expression: str) -> SearchError:
    """One issue, 400."""
    return SearchError([Issue("error", code, text, (expression,))])


@dataclass(frozen=True, slots=True)
class TokenValue:
    """`system|code`; system None: any system, "": none; code None (`system|`): any code."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A reference by `id` (type None: any of the parameter's target types) or `Type/id`."""

    type: str | None
    id: str


@dataclass(frozen=True, slots=True)
class DateValue:
    """A date with its prefix, as the [low, high) range of its precision."""

    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True, slots=True)
class StringValue:
    """A string value; `text` is normalised except for `exact`."""

    match: StringMatch
    text: str


Value = TokenValue | ReferenceValue | DateValue | StringValue


@dataclass(frozen=True, slots=True)
class Clause:
    """One occurrence of a parameter: its values are alternatives (OR).

    `missing` set: `:missing=true|false` (no values). `negated`: `:not` (none of the values).
    """

    parameter: SearchParameter
    values: tuple[Value, ...] = ()
    missing: bool | None = None
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    """`_include` (follow `source`'s reference `parameter` out of the results) or `_revinclude`
    (`reverse`: the `source` resources whose `parameter` points at the results)."""

    source: str
    parameter: SearchParameter
    target: str | None = None
    reverse: bool = False
    iterate: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A checked search of one type. Clauses all hold (AND)."""

    resource_type: str
    clauses: tuple[Clause, ...] = ()
    # (key, descending); lastUpdated then id always break ties.
    sort: tuple[tuple[str, bool], ...] = ()
    count: int = 50
    offset: int = 0
    total: TotalMode | None = None
    summary: SummaryMode | None = None
    elements: tuple[str, ...] = ()
    includes: tuple[Include, ...] = ()
    # The parameters used, in order, for the `self` and paging links (paging left out).
    used: tuple[tuple[str, str], ...] = ()
    # Bounded to one patient's resources (the caller's patient context).
    compartment: str | None = None

    @property
    def counts_total(self) -> bool:
        """Whether `total` is computed (`_total=none` spares the count)."""
        return self.total != "none" or self.summary == "count"

    @property
    def page_size(self) -> int:
        """Entries per page; 0 with `_summary=count`."""
        return 0 if self.summary == "count" else self.count

    def bounded(self, patient: str) -> SearchQuery:
        """The same search within one patient's compartment."""
        return replace(self, compartment=patient)


def split_values(text: str) -> list[str]:
    """The comma-separated alternatives of a value, `\\,` kept as a comma."""
    return [part.replace("\\,", ",") for part in _UNESCAPED_COMMA.split(text)]


def _whole(name: str, value: str, *, maximum: int | None = None) -> int:
    text = value.strip()
    if not text.isdigit():
        raise refused("invalid", f"{name}={value} is not a non-negative integer", name)
    number = int(text)
    return number if maximum is None else min(number, maximum)


def _token(parameter: SearchParameter, text: str) -> TokenValue:
    if parameter.index == "id" or "|" not in text:
        return TokenValue(None, text)
    system, _, code = text.partition("|")
    return TokenValue(system, code or None)


def _reference(parameter: SearchParameter, text: str, typed: str | None) -> ReferenceValue:
    if "/" not in text:
        return ReferenceValue(typed, text)
    found = REFERENCE.search(text)
    if found is None:
        raise refused(
            "invalid", f"{parameter.name}={text} is not a reference (Type/id or id)", parameter.name
        )
    if typed is not None and found["type"] != typed:
        raise refused(
            "invalid", f"{parameter.name}:{typed}={text} names another type", parameter.name
        )
    return ReferenceValue(found["type"], found["id"])


def _date(parameter: SearchParameter, text: str) -> DateValue:
    has_prefix = text[:2].isalpha()
    prefix = text[:2] if has_prefix else "eq"
    body = text[2:] if has_prefix else text
    if prefix not in DATE_PREFIXES:
        raise refused(
            "not-supported" if prefix == "ap" else "invalid",
            f"{parameter.name}={text}: the prefix {prefix!r} is not supported "
            f"({' '.join(DATE_PREFIXES)})",
            parameter.name,
        )
    try:
        low, high = date_range(body)
    except InvalidDate as exc:
        raise refused("invalid", f"{parameter.name}={text}: {exc}", parameter.name) from exc
    return DateValue(prefix, low, high)


def _value(parameter: SearchParameter, modifier: str | None, text: str) -> Value:
    if parameter.type == "token":
        return _token(parameter, text)
    if parameter.type == "reference":
        return _reference(parameter, text, modifier)
    if parameter.type == "date":
        return _date(parameter, text)
    if modifier == "exact":
        return StringValue("exact", text)
    return StringValue("contains" if modifier == "contains" else "start", normalised(text))


def clause(parameter: SearchParameter, modifier: str | None, value: str) -> Clause:
    """One parameter occurrence, checked (400 for a modifier or value it does not take)."""
    if modifier is not None and modifier not in parameter.modifiers:
        accepted = ", ".join(sorted(parameter.modifiers)) or "none"
        raise refused(
            "not-supported",
            f"{parameter.name}:{modifier} is not supported (modifiers: {accepted})",
            f"{parameter.name}:{modifier}",
        )
    if modifier == "missing":
        if value not in ("true", "false"):
            raise refused(
                "invalid", f"{parameter.name}:missing takes true or false", parameter.name
            )
        return Clause(parameter, missing=value == "true")
    values = tuple(_value(parameter, modifier, text) for text in split_values(value) if text)
    if not values:
        raise refused("invalid", f"{parameter.name} has no value", parameter.name)
    return Clause(parameter, values, negated=modifier == "not")


def include(rtype: str, value: str, *, reverse: bool, iterate: bool) -> Include:
    """One `_include` / `_revinclude` value, checked against the table."""
    name = "_revinclude" if reverse else "_include"
    parts = value.split(":")
    if len(parts) not in (2, 3) or "*" in parts:
        raise refused("not-supported", f"{name}={value}: use Type:parameter[:TargetType]", name)
    source, param_name = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    parameter = parameters_of(source).get(param_name)
    if parameter is None or parameter.type != "reference":
        raise refused(
            "not-supported",
            f"{name}={value}: {source} has no reference parameter {param_name!r}",
            name,
        )
    if target is not None and target not in parameter.targets:
        raise refused("invalid", f"{name}={value}: {param_name} cannot point to {target}", name)
    if not iterate:
        if not reverse and source != rtype:
            raise refused("invalid", f"{name}={value}: not a parameter of {rtype}", name)
        if reverse and rtype not in parameter.targets:
            raise refused("invalid", f"{name}={value}: {param_name} cannot point to {rtype}", name)
    return Include(source, parameter, target, reverse, iterate)


def _sort_keys(rtype: str, value: str) -> list[tuple[str, bool]]:
    allowed = sort_keys_of(rtype)
    keys = []
    for text in split_values(value):
        key = text.strip().removeprefix("-")
        if key not in allowed:
            raise refused(
                "not-supported",
                f"_sort={value}: {rtype} sorts by {', '.join(allowed)} (- for descending)",
                "_sort",
            )
        keys.append((key, text.strip().startswith("-")))
    return keys


@dataclass(slots=True)
class _Parsed:
    clauses: list[Clause]
    used: list[tuple[str, str]]
    unknown: list[str]
    includes: list[Include]
    sort: list[tuple[str, bool]]
    elements: list[str]
    count: int
    offset: int = 0
    total: TotalMode | None = None
    summary: SummaryMode | None = None


def _result_parameter(parsed: _Parsed, rtype: str, name: str, value: str) -> bool:
    """Read a result parameter into `parsed`; False when `name` is none."""
    base, _, modifier = name.partition(":")
    if base in ("_include", "_revinclude") and modifier in ("", "iterate"):
        parsed.includes.extend(
            include(rtype, text, reverse=base == "_revinclude", iterate=modifier == "iterate")
            for text in split_values(value)
        )
    elif name == "_sort":
        parsed.sort = _sort_keys(rtype, value)
    elif name == "_total":
        if value not in TOTAL_MODES:
            raise refused("invalid", f"_total={value}: one of {', '.join(TOTAL_MODES)}", name)
        parsed.total = cast(TotalMode, value)
    elif name == "_totalMethod":
        if value not in TOTAL_METHODS:
            raise refused(
                "invalid", f"_totalMethod={value}: one of {', '.join(TOTAL_METHODS)}", name
            )
        parsed.total = cast(TotalMode, TOTAL_METHODS[value])
    elif name == "_summary":
        if value not in SUMMARY_MODES:
            raise refused("invalid", f"_summary={value}: one of {', '.join(SUMMARY_MODES)}", name)
        parsed.summary = cast(SummaryMode, value)
    elif name == "_elements":
        for element in split_values(value):
            if not ELEMENT_NAME.fullmatch(element.strip()):
                raise refused("invalid", f"_elements: {element!r} is not an element name", name)
            parsed.elements.append(element.strip())
    else:
        return False
    return True


def parse_search(
    rtype: str,
    items: Iterable[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    lenient: bool = False,
) -> SearchQuery:
    """The typed query of `rtype?items`; SearchError (400) for what cannot be run.

    Empty values are ignored (search.html). `_count` above `max_count` is lowered to it.
    """
    declared = parameters_of(rtype)
    if not declared:
        raise refused("not-supported", f"{rtype} cannot be searched", rtype)
    parsed = _Parsed([], [], [], [], [], [], default_count)
    for name, value in items:
        if name in FORMAT_PARAMETERS or value == "":
            continue
        base, _, modifier = name.partition(":")
        if name == "_count":
            parsed.count = _whole(name, value, maximum=max_count)
            continue
        if name == "_offset":
            parsed.offset = _whole(name, value)
            continue
        if not _result_parameter(parsed, rtype, name, value):
            if base not in declared:
                parsed.unknown.append(name)
                continue
            parsed.clauses.append(clause(declared[base], modifier or None, value))
        parsed.used.append((name, value))
    if parsed.unknown and not lenient:
        supported = " ".join(sorted(declared))
        raise SearchError(
            [
                Issue(
                    "error",
                    "not-supported",
                    f"search parameter {name!r} is not supported on {rtype} (supported: "
                    f"{supported}; and {' '.join(RESULT_PARAMETERS)}; send "
                    "Prefer: handling=lenient to have unknown parameters ignored)",
                    (name,),
                )
                for name in parsed.unknown
            ]
        )
    if parsed.summary is not None and parsed.elements:
        raise refused("invalid", "_summary and _elements cannot be combined", "_elements")
    return SearchQuery(
        resource_type=rtype,
        clauses=tuple(parsed.clauses),
        sort=tuple(parsed.sort),
        count=parsed.count,
        offset=parsed.offset,
        total=parsed.total,
        summary=parsed.summary,
        elements=tuple(parsed.elements),
        includes=tuple(parsed.includes),
        used=tuple(parsed.used),
    )


def criteria_query(rtype: str, items: Sequence[tuple[str, str]], *, count: int) -> SearchQuery:
    """The query of conditional criteria (If-None-Exist, conditional update and delete):
    strict, search parameters only; result parameters are refused."""
    query = parse_search(rtype, items, default_count=count, max_count=count)
    if query.includes or query.summary or query.elements or query.sort:
        raise refused("invalid", "conditional criteria take search parameters only", rtype)
    return replace(query, count=count, offset=0)
