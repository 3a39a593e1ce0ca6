"""A SQL-on-FHIR v2 ViewDefinition evaluator, for the subset the views in `profiles/views/` use.

https://sql-on-fhir.org/ig/ defines a ViewDefinition as a tabular projection of one resource type:
`where` filters resources, `select[]` holds `column[]` (name, FHIRPath `path`, optional
`collection`), nested `select[]`, `forEach` / `forEachOrNull` (one row per element of a
collection, the latter keeping a row of nulls when it is empty) and `unionAll[]` (rows of several
selections of the same columns, concatenated). Columns of one selection and its nested ones are
combined as a cartesian product; `constant[]` values are FHIRPath variables (`%name`). FHIRPath is
evaluated by fhirpathpy with the R4 model, so `value.ofType(integer)` reads `valueInteger`.

Supported functions beyond FHIRPath: `getResourceKey()` and `getReferenceKey([type])`. Keys here
are the bare logical ids (`p08`, not `Patient/p08`), so a reference key equals the id of the
resource it points to; a reference that names no `Type/id` (a contained `#x`, a `urn:uuid:`) has
no key.

Anything outside this subset (`repeat`, unknown keys in a selection or column, two of `forEach` /
`forEachOrNull`) is refused with ViewError rather than ignored, as is a column path that yields
several values without `collection: true` and a `where` path that yields something other than one
boolean. Resources are evaluated as they are given: picking current versions is the caller's job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from itertools import product
from pathlib import Path
from typing import Any, Final

import fhirpathpy
import orjson
from antlr4 import CommonTokenStream, InputStream  # type: ignore[import-untyped]
from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
from fhirpathpy.engine.nodes import FP_Type
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

JsonObject = dict[str, Any]
Row = dict[str, Any]
_Path = Callable[[Any, Mapping[str, Any]], list[Any]]

COLUMN_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SELECT_KEYS: Final = frozenset({"column", "select", "forEach", "forEachOrNull", "unionAll"})
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


_FUNCTIONS: Final = {
    "getResourceKey": {"fn": _resource_keys, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "getReferenceKey": {"fn": _reference_keys, "arity": {0: [], 1: ["TypeSpecifier"]}},
}


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
    if "forEach" in raw and "forEachOrNull" in raw:
        raise ViewError("a select has either forEach or forEachOrNull, not both")
    if not any(raw.get(key) for key in ("column", "select", "unionAll")):
        raise ViewError("a select needs a column, select or unionAll")
    for_each = raw.get("forEach", raw.get("forEachOrNull"))
    if for_each is not None and not isinstance(for_each, str):
        raise ViewError(f"forEach / forEachOrNull must be a FHIRPath string, not {for_each!r}")
    selection = _Selection(
        tuple(_column(c) for c in raw.get("column", [])),
        tuple(_selection(s) for s in raw.get("select", [])),
        tuple(_selection(u) for u in raw.get("unionAll", [])),
        for_each,
        "forEachOrNull" in raw,
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


def _cell(column: _Column, focus: Any, constants: Mapping[str, Any]) -> Any:
    values = _compiled(column.path, False)(focus, constants)
    if column.collection:
        return [_value(v, column) for v in values]
    if len(values) > 1:
        raise ViewError(
            f"column {column.name!r} ({column.path}) gave {len(values)} values; "
            "mark it `collection: true` or narrow the path"
        )
    return _value(values[0], column) if values else None


def _rows(selection: _Selection, node: Any, constants: Mapping[str, Any]) -> list[Row]:
    foci = (
        [node]
        if selection.for_each is None
        else _compiled(selection.for_each, True)(node, constants)
    )
    rows: list[Row] = []
    for focus in foci:
        parts: list[list[Row]] = []
        if selection.columns:
            parts.append([{c.name: _cell(c, focus, constants) for c in selection.columns}])
        parts.extend(_rows(select, focus, constants) for select in selection.selects)
        if selection.union:
            parts.append([r for branch in selection.union for r in _rows(branch, focus, constants)])
        for combination in product(*parts):
            row: Row = {}
            for part in combination:
                row.update(part)
            rows.append(row)
    if selection.or_null and not foci:
        rows.append(dict.fromkeys(selection.names()))
    return rows


def _included(view: CompiledView, resource: JsonObject) -> bool:
    for path in view.where:
        result = _compiled(path, False)(resource, view.constants)
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
