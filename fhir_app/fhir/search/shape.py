"""`_elements` and `_summary`: the parts of a matched resource a searchset entry carries.

Which elements are in the summary of a type is R4's `isSummary` (read from the fhir.resources
models, the R4 structure definitions as code); `_summary=text` keeps the narrative and the
mandatory elements. A resource with elements left out is tagged SUBSETTED (search.html#summary),
so that no client takes it for the whole resource and writes it back.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

SUBSETTED: Final = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
# Always kept, with the type's mandatory elements (search.html#elements).
_KEPT: Final = frozenset({"resourceType", "id", "meta"})


def _model(rtype: str) -> Any:
    # Imported on first use: fhir.resources and pydantic take ~0.3 s to import, which every
    # process start (a bulk run, a CLI command) would pay for a search it may never serve.
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


@cache
def summary_elements(rtype: str) -> frozenset[str]:
    """The top-level elements of `rtype` marked isSummary in R4."""
    model = _model(rtype)
    names = set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            names.add(field.alias or name)
    return frozenset(names)


def mandatory_elements(rtype: str) -> frozenset[str]:
    """The top-level elements of `rtype` with a minimum cardinality of 1 in R4 (the vendored R4
    JSON schema: `Observation` has `status` and `code`). The fhir.resources models mark the
    required primitives only, so they are not asked."""
    from fhir_app.fhir.validation.schema import required_elements

    return required_elements().get(rtype, frozenset())


def subsetted(resource: dict[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    """`resource` with only the `keep` elements (and resourceType, id, meta), tagged SUBSETTED."""
    shown = {key: value for key, value in resource.items() if key in keep or key in _KEPT}
    meta = dict(shown.get("meta") or {})
    tags = [tag for tag in meta.get("tag", []) if tag.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    shown["meta"] = meta
    return shown


def shaped(
    resource: dict[str, Any], summary: str | None, elements: tuple[str, ...]
) -> dict[str, Any]:
    """A matched resource as `_summary` / `_elements` ask for it (unchanged when neither)."""
    rtype = str(resource.get("resourceType"))
    if elements:
        # search.html#elements: "Servers SHOULD always return mandatory elements whether they
        # are requested or not".
        return subsetted(resource, frozenset(elements) | mandatory_elements(rtype))
    if summary == "true":
        return subsetted(resource, summary_elements(rtype))
    if summary == "text":
        return subsetted(resource, mandatory_elements(rtype) | {"text"})
    if summary == "data":
        return subsetted(resource, frozenset(resource) - {"text"})
    return resource
