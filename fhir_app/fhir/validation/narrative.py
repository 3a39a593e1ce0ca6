"""Narrative XHTML: FHIR R4 `Narrative.div` is one well-formed XHTML `<div>` in the XHTML namespace
(txt-1) with some content, text or an image (txt-2). The full list of allowed elements and
attributes (txt-1) is not checked: well-formedness and the root are what a reader relies on."""

from __future__ import annotations

from typing import Final
from xml.etree import ElementTree

XHTML_DIV: Final = "{http://www.w3.org/1999/xhtml}div"
_IMAGE: Final = "{http://www.w3.org/1999/xhtml}img"


def is_xhtml_div(value: str) -> bool:
    """True when `value` is a well-formed XHTML div with non-whitespace text or an image.

    It must start with `<div`: no XML declaration, DOCTYPE or entity declarations (R4 allows
    none, and they are how an XML parser is made to expand text without bound).
    """
    if not value.lstrip().startswith("<div"):
        return False
    try:
        root = ElementTree.fromstring(value)
    except ElementTree.ParseError:
        return False
    if root.tag != XHTML_DIV:
        return False
    return any(text.strip() for text in root.itertext()) or root.find(f".//{_IMAGE}") is not None
