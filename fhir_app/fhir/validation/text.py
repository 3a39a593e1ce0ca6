"""Control characters: FHIR R4 strings (datatypes.html#string) hold no character below U+0020
but tab, carriage return and line feed. PostgreSQL refuses U+0000 besides, so this check runs
before anything else reads an input (also on Bundle entries and request urls)."""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from fhir_app.fhir.inputs import Issue

CONTROL_CHARACTER: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
# How orjson writes those characters (`\u0000`, `\b`, `\f`). A cheap first gate over the
# serialised JSON: an escaped backslash before `b` or `f` matches too, so a hit is confirmed by
# walking the tree, which also finds where the character is.
_ESCAPED_CONTROL: Final = re.compile(rb"\\u00[01]|\\[bf]")
# Enough to locate the problem without letting one input make an outcome of any size.
MAX_CONTROL_CHARACTER_ISSUES: Final = 20


def control_character_issues(node: Any, path: str) -> list[Issue]:
    """`invalid` issues for every string (or object key) of `node` that holds a control
    character FHIR R4 forbids, each at its FHIRPath under `path`; none for clean JSON.

    It runs on every input, so the common case costs one orjson serialisation and one regex
    search; only a hit walks the tree.
    """
    try:
        clean = _ESCAPED_CONTROL.search(orjson.dumps(node)) is None
    except (TypeError, orjson.JSONEncodeError):
        clean = False  # not plain JSON (e.g. an integer orjson cannot write): walk it
    if clean:
        return []
    issues: list[Issue] = []
    _find_control_characters(node, path, issues)
    return issues


def _find_control_characters(node: Any, path: str, issues: list[Issue]) -> None:
    if len(issues) >= MAX_CONTROL_CHARACTER_ISSUES:
        return
    if isinstance(node, str):
        found = CONTROL_CHARACTER.search(node)
        if found is not None:
            issues.append(_control_character_issue(path, found.group(), "value"))
    elif isinstance(node, dict):
        for key, value in node.items():
            key_text = str(key)
            found = CONTROL_CHARACTER.search(key_text)
            if found is not None:
                shown = orjson.dumps(key_text).decode()
                issues.append(_control_character_issue(path, found.group(), f"key {shown}"))
                continue
            _find_control_characters(value, f"{path}.{key_text}", issues)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _find_control_characters(item, f"{path}[{index}]", issues)


def _control_character_issue(path: str, character: str, what: str) -> Issue:
    return Issue(
        "error",
        "invalid",
        f"{path}: {what} contains the control character U+{ord(character):04X}; FHIR R4 "
        "strings allow no control characters but tab, carriage return and line feed",
        (path,),
    )
