"""A SQL-on-FHIR v2 ViewDefinition evaluator: the whole official test suite passes (134/134).

https://sql-on-fhir.org/ig/ defines a ViewDefinition as a tabular projection of one resource type:
`where` filters resources, `select[]` holds `column[]` (name, FHIRPath `path`, optional
`collection`), nested `select[]`, `forEach` / `forEachOrNull` (one row per element of a
collection, the latter keeping one row when it is empty), `repeat` (one row per element reached
by following its paths recursively, depth first: `item` and its `item`s, and theirs) and
`unionAll[]` (rows of several selections of the same columns, concatenated). Columns of one
selection and its nested ones are combined as a cartesian product; `constant[]` values are
FHIRPath variables (`%name`), and `%rowIndex` is the 0-based index of the element that the
nearest enclosing forEach / forEachOrNull / repeat is on (0 outside any, and 0 on the row that
forEachOrNull keeps for an empty collection). FHIRPath is evaluated by fhirpathpy with the R4
model, so `value.ofType(integer)` reads `valueInteger`.

Functions beyond fhirpathpy's: `getResourceKey()` and `getReferenceKey([type])`; `join()` gives
"" on an empty collection (fhirpathpy gives empty); `lowBoundary([precision])` and
`highBoundary([precision])` (FHIRPath 3.0, experimental in the suite) on decimals, integers,
dates, dateTimes and times. Keys here are the bare logical ids (`p08`, not `Patient/p08`), so a
reference key equals the id of the resource it points to; a reference that names no `Type/id` (a
contained `#x`, a `urn:uuid:`) has no key.

Anything else (unknown keys in a selection or column, two of `forEach` / `forEachOrNull` /
`repeat`) is refused with ViewError rather than ignored, as is a column path that yields several
values without `collection: true` and a `where` path that yields something other than one
boolean. Resources are evaluated as they are given: picking current versions is the caller's job.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import cache
from itertools import product
from pathlib import Path
from typing import Any, Final

import fhirpathpy
import orjson
from antlr4 import CommonTokenStream, InputStream  # type: ignore[import-untyped]
from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import FP_DateTime, FP_Time, FP_Type, ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

JsonObject = dict[str, Any]
Row = dict[str, Any]
_Path = Callable[[Any, Mapping[str, Any]], list[Any]]

COLUMN_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SELECT_KEYS: Final = frozenset(
    {"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll"}
)
_ITERATIONS: Final = ("forEach", "forEachOrNull", "repeat")
ROW_INDEX: Final = "rowIndex"
_COLUMN_KEYS: Final = frozenset({"name", "path", "description", "collection", "type", "tag"})
_HISTORY: Final = re.compile(r"/_history/[^/]*$")


class ViewError(ValueError):
    """A ViewDefinition outside the supported subset, or data that breaks one of its columns."""


# --- key functions -------------------------------------------------------------------------


def _type_name(specifier: Any) -> str | None:
    # fhirpathpy hands a type argument over as a TypeInfo with `name`.
    name = getattr(specifier, "name", specifier)
    return name if isinstance(name, str) else None


def _resource_keys(inputs: list[Any], *specifier: Any) -> list[str]:
    wanted = _type_name(specifier[0]) if specifier else None
    return [
        item["id"]
        for item in inputs
        if isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and (wanted is None or item.get("resourceType") == wanted)
    ]


def reference_key(reference: str, resource_type: str | None = None) -> str | None:
    """The key (logical id) a reference points to, `Patient/p08/_history/2` -> `p08`.

    None for a reference without `Type/id` (contained `#x`, `urn:uuid:`) or of another type.
    """
    parts = _HISTORY.sub("", reference).split("/")
    if len(parts) < 2 or not parts[-2] or not parts[-1] or not parts[-2][0].isupper():
        return None
    if resource_type is not None and parts[-2] != resource_type:
        return None
    return parts[-1]


def _reference_keys(inputs: list[Any], *specifier: Any) -> list[str]:
    wanted = _type_name(specifier[0]) if specifier else None
    keys = (
        reference_key(item["reference"], wanted)
        for item in inputs
        if isinstance(item, dict) and isinstance(item.get("reference"), str)
    )
    return [key for key in keys if key is not None]


def _join(inputs: list[Any], separator: str = "") -> str:
    # FHIRPath 3.0 and the SQL-on-FHIR suite: joining nothing gives "", not an empty collection.
    if not all(isinstance(item, str) for item in inputs):
        raise ViewError(f"join() needs strings, got {inputs!r}")
    return separator.join(inputs)


_FUNCTIONS: Final = {
    "getResourceKey": {"fn": _resource_keys, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "getReferenceKey": {"fn": _reference_keys, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "join": {"fn": _join, "arity": {0: [], 1: ["String"]}},
}


# --- lowBoundary() / highBoundary() ----------------------------------------------------------

_DATE_TIME: Final = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)
_TIME: Final = re.compile(r"^T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")
# Digits of precision FHIRPath names for each cut of a date, dateTime and time.
_DATE_CUTS: Final = {4: 1, 6: 2, 8: 3}
_DATE_TIME_CUTS: Final = {4: 1, 6: 2, 8: 3, 10: 4, 12: 5, 14: 6, 17: 7}
_TIME_CUTS: Final = {2: 1, 4: 2, 6: 3, 9: 4}
# Without a timezone a moment may lie anywhere from UTC+14:00 (earliest) to UTC-12:00 (latest).
_EARLIEST_ZONE: Final = "+14:00"
_LATEST_ZONE: Final = "-12:00"


def _decimal_boundary(value: Decimal, precision: int | None, high: bool) -> Decimal | None:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN or infinity: no boundary
        return None
    half = Decimal(5).scaleb(exponent - 1)
    bound = value + half if high else value - half
    if precision is None:
        return bound
    if not 0 <= precision <= 28:
        return None
    return bound.quantize(
        Decimal(1).scaleb(-precision), rounding=ROUND_CEILING if high else ROUND_FLOOR
    )


def _fraction(digits: str | None, high: bool) -> str:
    return ((digits or "") + ("999" if high else "000"))[:3]


def _date_parts(text: str, high: bool) -> tuple[list[str], str | None] | None:
    """The seven parts of the earliest (latest) moment a partial date(Time) covers, and its zone."""
    match = _DATE_TIME.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    month = month or ("12" if high else "01")
    last_day = calendar.monthrange(int(year), int(month))[1]
    parts = [
        year,
        month,
        day or (f"{last_day:02d}" if high else "01"),
        hour or ("23" if high else "00"),
        minute or ("59" if high else "00"),
        second or ("59" if high else "00"),
        _fraction(fraction, high),
    ]
    return parts, zone


def _date_text(parts: list[str], cut: int) -> str:
    text = "-".join(parts[: min(cut, 3)])
    if cut > 3:
        text += "T" + ":".join(parts[3 : min(cut, 6)])
    if cut > 6:
        text += "." + parts[6]
    return text


def _time_boundary(text: str, precision: int | None, high: bool) -> str | None:
    match = _TIME.match(text)
    cut = _TIME_CUTS.get(9 if precision is None else precision)
    if match is None or cut is None:
        return None
    hour, minute, second, fraction = match.groups()
    parts = [hour, minute or ("59" if high else "00"), second or ("59" if high else "00")]
    time = ":".join(parts[:cut])
    return time + "." + _fraction(fraction, high) if cut > 3 else time


def _date_boundary(text: str, kind: str, precision: int | None, high: bool) -> str | None:
    found = _date_parts(text, high)
    cuts, default = (_DATE_CUTS, 8) if kind == "date" else (_DATE_TIME_CUTS, 17)
    cut = cuts.get(default if precision is None else precision)
    if found is None or cut is None:
        return None
    parts, zone = found
    if cut <= 3:
        return _date_text(parts, cut)
    return _date_text(parts, cut) + (zone or (_LATEST_ZONE if high else _EARLIEST_ZONE))


_TEMPORAL_TYPES: Final = {
    "date": "date",
    "dateTime": "dateTime",
    "instant": "dateTime",
    "time": "time",
}


def _typed(item: Any) -> tuple[str, Any] | None:
    """(kind, value) of one boundary input: its FHIR type when the model knows it."""
    if isinstance(item, ResourceNode):
        kind = _TEMPORAL_TYPES.get(item.path or "")
        if kind is not None and isinstance(item.data, str):
            return kind, item.data
        item = item.data
    if isinstance(item, FP_Time | FP_DateTime):
        # A literal: `@T10:30` is a time, `@2010-10` a date, `@2010-10-10T10` a dateTime.
        text = item.asStr or ""
        if isinstance(item, FP_Time):
            return "time", text
        return ("dateTime" if "T" in text else "date"), text
    if isinstance(item, bool):
        return None
    if isinstance(item, int | float | Decimal):
        return "decimal", Decimal(str(item))
    return None


def _boundary(high: bool) -> Callable[..., list[Any]]:
    def boundary(_ctx: Any, inputs: list[Any], precision: int | None = None) -> list[Any]:
        if len(inputs) > 1:
            raise ViewError(f"{'high' if high else 'low'}Boundary() needs one value, not a list")
        typed = _typed(inputs[0]) if inputs else None
        if typed is None:
            return []
        kind, value = typed
        if kind == "decimal":
            result: Any = _decimal_boundary(value, precision, high)
        elif kind == "time":
            result = _time_boundary(value, precision, high)
        else:
            result = _date_boundary(value, kind, precision, high)
        return [] if result is None else [result]

    return boundary


# fhirpathpy hands a user-defined function its inputs stripped of their FHIR type, and the
# boundary of `2010-10-10` differs as a date and as a dateTime: so these two go into its own
# registry (which receives typed nodes), only where fhirpathpy has no function of that name.
for _name, _high in (("lowBoundary", False), ("highBoundary", True)):
    invocation_registry.setdefault(
        _name, {"fn": _boundary(_high), "arity": {0: [], 1: ["Integer"]}}
    )


class _RaisingListener(ErrorListener):  # type: ignore[misc]
    """Turns the first syntax error of the FHIRPath grammar into a ViewError."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def syntaxError(  # the name antlr4 calls
        self, recognizer: Any, symbol: Any, line: int, column: int, message: str, error: Any
    ) -> None:
        raise ViewError(f"FHIRPath {self.path!r} does not parse at {column}: {message}")


def check_syntax(path: str) -> None:
    """Raise ViewError unless `path` is one whole FHIRPath expression.

    fhirpathpy's own parser recovers from syntax errors and ignores trailing text (`id id`
    reads as `id`), so the expression is parsed here first against the same grammar, to the end.
    """
    listener = _RaisingListener(path)
    lexer = FHIRPathLexer(InputStream(path))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.entireExpression()  # type: ignore[no-untyped-call]


@cache
def _compiled(path: str, raw: bool) -> _Path:
    # `raw` keeps fhirpathpy's typed nodes, so a forEach element still knows it is, e.g., an
    # Observation.component and `value.ofType(CodeableConcept)` resolves on it.
    options: dict[str, Any] = {"userInvocationTable": _FUNCTIONS}
    if raw:
        options["returnRawData"] = True
    # fhirpathpy binds `$this` only inside a function's argument. The focus is always one item
    # here, so `select(path)` means the same as `path` and binds a leading `$this` to the focus.
    expression = f"select({path})" if "$this" in path else path
    check_syntax(path)
    try:
        function: _Path = fhirpathpy.compile(expression, models["r4"], options)
    except Exception as exc:  # fhirpathpy raises plain Exceptions on syntax errors
        raise ViewError(f"FHIRPath {path!r} does not parse: {exc}") from exc
    return function


# --- the compiled view ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    path: str
    collection: bool
    type: str | None


@dataclass(frozen=True, slots=True)
class _Selection:
    columns: tuple[_Column, ...]
    selects: tuple[_Selection, ...]
    union: tuple[_Selection, ...]
    for_each: str | None
    or_null: bool
    repeat: tuple[str, ...] = ()

    def names(self) -> list[str]:
        """Every column this selection yields, in order (a union counts once)."""
        names = [c.name for c in self.columns]
        for select in self.selects:
            names.extend(select.names())
        if self.union:
            names.extend(self.union[0].names())
        return names


def _column(raw: Any) -> _Column:
    if not isinstance(raw, dict):
        raise ViewError(f"a column must be an object, not {raw!r}")
    unknown = set(raw) - _COLUMN_KEYS
    if unknown:
        raise ViewError(f"column {raw.get('name')!r}: unsupported {sorted(unknown)}")
    name, path = raw.get("name"), raw.get("path")
    if not isinstance(name, str) or not COLUMN_NAME.match(name):
        raise ViewError(f"column name {name!r} must match {COLUMN_NAME.pattern}")
    if not isinstance(path, str) or not path:
        raise ViewError(f"column {name!r} needs a FHIRPath `path`")
    kind = raw.get("type")
    return _Column(
        name, path, raw.get("collection") is True, kind if isinstance(kind, str) else None
    )


def _selection(raw: Any) -> _Selection:
    if not isinstance(raw, dict):
        raise ViewError(f"a select must be an object, not {raw!r}")
    unknown = set(raw) - _SELECT_KEYS
    if unknown:
        raise ViewError(f"select: unsupported {sorted(unknown)}")
    iterations = [key for key in _ITERATIONS if key in raw]
    if len(iterations) > 1:
        raise ViewError(f"a select has one of forEach, forEachOrNull or repeat, not {iterations}")
    if not any(raw.get(key) for key in ("column", "select", "unionAll")):
        raise ViewError("a select needs a column, select or unionAll")
    for_each = raw.get("forEach", raw.get("forEachOrNull"))
    if for_each is not None and not isinstance(for_each, str):
        raise ViewError(f"forEach / forEachOrNull must be a FHIRPath string, not {for_each!r}")
    repeat = raw.get("repeat", [])
    if "repeat" in raw and (
        not isinstance(repeat, list)
        or not repeat
        or not all(isinstance(path, str) and path for path in repeat)
    ):
        raise ViewError(f"repeat must be a list of FHIRPath strings, not {repeat!r}")
    selection = _Selection(
        tuple(_column(c) for c in raw.get("column", [])),
        tuple(_selection(s) for s in raw.get("select", [])),
        tuple(_selection(u) for u in raw.get("unionAll", [])),
        for_each,
        "forEachOrNull" in raw,
        tuple(repeat),
    )
    branches = [branch.names() for branch in selection.union]
    if any(names != branches[0] for names in branches):
        raise ViewError(f"unionAll branches must have the same columns: {branches}")
    return selection


def _constants(view: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for constant in view.get("constant", []):
        name = constant.get("name") if isinstance(constant, dict) else None
        if not isinstance(name, str) or not COLUMN_NAME.match(name):
            raise ViewError(f"constant name {name!r} must match {COLUMN_NAME.pattern}")
        if name == ROW_INDEX:
            raise ViewError(f"constant name {name!r} is reserved for the row index")
        value_keys = [k for k in constant if k.startswith("value")]
        if len(value_keys) != 1:
            raise ViewError(f"constant {name!r} needs exactly one value[x]")
        values[name] = constant[value_keys[0]]
    return values


@dataclass(frozen=True, slots=True)
class CompiledView:
    """A checked ViewDefinition, ready to run over resources."""

    name: str | None
    resource: str
    where: tuple[str, ...]
    root: _Selection
    constants: Mapping[str, Any]

    @property
    def columns(self) -> list[str]:
        """The column names of every row, in order."""
        return self.root.names()

    def column_types(self) -> list[tuple[str, str | None, bool]]:
        """(name, FHIR type or None, collection) of every column, in order (a union counts once:
        its first branch, as for the names)."""
        found: list[tuple[str, str | None, bool]] = []

        def walk(selection: _Selection) -> None:
            found.extend((c.name, c.type, c.collection) for c in selection.columns)
            for select in selection.selects:
                walk(select)
            if selection.union:
                walk(selection.union[0])

        walk(self.root)
        return found


def compile_view(view: Mapping[str, Any]) -> CompiledView:
    """Check a ViewDefinition against the supported subset and compile its FHIRPath."""
    resource = view.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ViewError("a ViewDefinition needs `resource`, the FHIR resource type it projects")
    selects = view.get("select")
    if not isinstance(selects, list) or not selects:
        raise ViewError("a ViewDefinition needs at least one select")
    where = []
    for clause in view.get("where", []):
        path = clause.get("path") if isinstance(clause, dict) else None
        if not isinstance(path, str) or not path:
            raise ViewError(f"a where clause needs a FHIRPath `path`, not {clause!r}")
        where.append(path)
    root = _Selection((), tuple(_selection(s) for s in selects), (), None, False)
    names = root.names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ViewError(f"column names must be unique in a view: {duplicates}")
    compiled = CompiledView(view.get("name"), resource, tuple(where), root, _constants(view))
    _compile_paths(compiled)
    return compiled


def _compile_paths(view: CompiledView) -> None:
    # Parse every path once up front, so a bad expression fails before any row is produced.
    for path in view.where:
        _compiled(path, False)
    pending = [view.root]
    while pending:
        selection = pending.pop()
        if selection.for_each is not None:
            _compiled(selection.for_each, True)
        for path in selection.repeat:
            _compiled(path, True)
        for column in selection.columns:
            _compiled(column.path, False)
        pending.extend(selection.selects)
        pending.extend(selection.union)


# --- running it ----------------------------------------------------------------------------


def _value(value: Any, column: _Column) -> Any:
    if isinstance(value, FP_Type):
        return str(value)
    if column.type == "integer" and isinstance(value, Decimal) and value == value.to_integral():
        return int(value)
    return value


def _cell(column: _Column, focus: Any, variables: Mapping[str, Any]) -> Any:
    values = _compiled(column.path, False)(focus, variables)
    if column.collection:
        return [_value(v, column) for v in values]
    if len(values) > 1:
        raise ViewError(
            f"column {column.name!r} ({column.path}) gave {len(values)} values; "
            "mark it `collection: true` or narrow the path"
        )
    return _value(values[0], column) if values else None


def _repeated(paths: tuple[str, ...], node: Any, constants: Mapping[str, Any]) -> list[Any]:
    """Every element reached from `node` by the paths, recursively, depth first (node excluded)."""

    def children(parent: Any) -> list[Any]:
        return [child for path in paths for child in _compiled(path, True)(parent, constants)]

    # An explicit stack rather than recursion, so a deeply nested questionnaire cannot exhaust
    # Python's recursion limit; children go on reversed so they come off in document order.
    found: list[Any] = []
    stack = children(node)[::-1]
    while stack:
        element = stack.pop()
        found.append(element)
        stack.extend(children(element)[::-1])
    return found


def _foci(selection: _Selection, node: Any, constants: Mapping[str, Any]) -> list[Any]:
    if selection.for_each is not None:
        return list(_compiled(selection.for_each, True)(node, constants))
    if selection.repeat:
        return _repeated(selection.repeat, node, constants)
    return [node]


def _rows(
    selection: _Selection, node: Any, constants: Mapping[str, Any], row_index: int = 0
) -> list[Row]:
    iterates = selection.for_each is not None or bool(selection.repeat)
    foci = _foci(selection, node, constants)
    rows: list[Row] = []
    for index, focus in enumerate(foci):
        # The row index is the element's position in this iteration, or the enclosing one's.
        position = index if iterates else row_index
        variables = {**constants, ROW_INDEX: position}
        parts: list[list[Row]] = []
        if selection.columns:
            parts.append([{c.name: _cell(c, focus, variables) for c in selection.columns}])
        parts.extend(_rows(select, focus, constants, position) for select in selection.selects)
        if selection.union:
            parts.append(
                [r for branch in selection.union for r in _rows(branch, focus, constants, position)]
            )
        for combination in product(*parts):
            row: Row = {}
            for part in combination:
                row.update(part)
            rows.append(row)
    if selection.or_null and not foci:
        # The kept row: nulls, except what this selection's own columns give on no element at
        # all (`%rowIndex` is 0 there, a literal is itself), as the reference implementation does.
        row = dict.fromkeys(selection.names())
        variables = {**constants, ROW_INDEX: 0}
        row.update({c.name: _cell(c, [], variables) for c in selection.columns})
        rows.append(row)
    return rows


def _included(view: CompiledView, resource: JsonObject) -> bool:
    variables = {**view.constants, ROW_INDEX: 0}
    for path in view.where:
        result = _compiled(path, False)(resource, variables)
        if result == []:
            return False
        if len(result) != 1 or not isinstance(result[0], bool):
            raise ViewError(f"where path {path!r} must give one boolean, gave {result!r}")
        if not result[0]:
            return False
    return True


def evaluate(view: Mapping[str, Any] | CompiledView, resources: Iterable[JsonObject]) -> list[Row]:
    """The rows of a ViewDefinition over resources (other resource types are skipped).

    Each row is a dict of column name to value in the view's column order: str, int, bool,
    Decimal (a FHIR decimal), None when the path gives nothing, a list for `collection` columns.
    Raises ViewError for a view outside the supported subset or a column with several values.
    """
    compiled = view if isinstance(view, CompiledView) else compile_view(view)
    rows: list[Row] = []
    for resource in resources:
        if resource.get("resourceType") != compiled.resource or not _included(compiled, resource):
            continue
        rows.extend(_rows(compiled.root, resource, compiled.constants))
    return rows


def load_views(directory: Path | str) -> dict[str, JsonObject]:
    """Every `ViewDefinition-*.json` in a folder, by the view's `name`."""
    views: dict[str, JsonObject] = {}
    for path in sorted(Path(directory).glob("ViewDefinition-*.json")):
        view = orjson.loads(path.read_bytes())
        name = view.get("name")
        if not isinstance(name, str):
            raise ViewError(f"{path.name}: a ViewDefinition needs a `name`")
        if name in views:
            raise ViewError(f"{path.name}: a second view named {name!r}")
        views[name] = view
    return views


def column_names(view: Mapping[str, Any]) -> Sequence[str]:
    """The column names of a view's rows, in order."""
    return compile_view(view).columns
