"""Human-readable XHTML narratives of the outputs: what a surgeon reads first.

Each function returns the `text` element of one output (status `generated`). The narrative says
nothing that a Versioner may change afterwards (version, `final`/`amended`), so a stamped output
never contradicts its own narrative; only `preliminary` and a withdrawal are spelled out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any, Final

from fhir_app.domain.appearance import words
from fhir_app.domain.assessment import LevelAssessment, PatientSummary
from fhir_app.domain.noms import NomsInputs
from fhir_app.domain.sins import ComponentResult, SinsScore
from fhir_app.domain.sins_answers import ANSWER_WORDS, COMPONENT_WORDS
from fhir_app.fhir.outbound_terms import (
    DIFFERENTIAL_DISPLAY,
    PRIMARY_TUMOR_DISPLAY,
    RISK_PROBABILITY,
    SINS_CATEGORY_DISPLAY,
)

JsonObject = dict[str, Any]

XHTML_OPEN: Final = '<div xmlns="http://www.w3.org/1999/xhtml">'
WITHDRAWN_BANNER: Final = (
    "<p><b>Entered in error.</b> The findings this result was derived from have been withdrawn; "
    "disregard it.</p>"
)
PRELIMINARY: Final = " <i>Preliminary: findings are incomplete or not yet final.</i>"


def _e(text: str) -> str:
    return escape(text, quote=False)


def _text(body: str) -> JsonObject:
    return {"status": "generated", "div": f"{XHTML_OPEN}{body}</div>"}


def _items(sentences: Iterable[str]) -> str:
    items = "".join(f"<li>{_e(s)}</li>" for s in sentences)
    return f"<ul>{items}</ul>" if items else ""


def _score(sins: SinsScore) -> str:
    if sins.total is not None:
        return f"SINS {sins.total}"
    return f"SINS {sins.low}-{sins.high} ({sins.open_reason()})"


def _category(sins: SinsScore) -> str:
    return SINS_CATEGORY_DISPLAY[sins.category].lower() if sins.category else "category open"


def _finding_words(result: ComponentResult) -> str:
    if result.answer is not None:
        return f"{ANSWER_WORDS[result.answer]}. {result.explanation}"
    candidates = " / ".join(
        f"{ANSWER_WORDS[a]} ({p})" for a, p in zip(result.allows, result.points, strict=True)
    )
    if not result.known:
        return f"No finding; one of {candidates}."
    return f"Open: one of {candidates}. {result.explanation}"


def _points(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def sins_text(assessment: LevelAssessment, notes: Sequence[str], preliminary: bool) -> JsonObject:
    """The SINS Observation: the score sheet of the level, one row per component."""
    sins = assessment.sins
    rows = "".join(
        f"<tr><td>{_e(COMPONENT_WORDS[c.component])}"
        f"{' <b>(discordant)</b>' if c.discordance is not None else ''}</td>"
        f"<td>{_e(_finding_words(c))}</td>"
        f"<td>{_points(c.low, c.high)}</td></tr>"
        for c in sins.components
    )
    head = (
        f"<p><b>{_e(assessment.level.label)}: {_e(_score(sins))} of 18, "
        f"{_e(_category(sins))}</b>{PRELIMINARY if preliminary else ''}</p>"
    )
    table = (
        "<table><thead><tr><th>Component</th><th>Finding</th><th>Points</th></tr></thead>"
        f"<tbody>{rows}<tr><td><b>Total</b></td><td></td>"
        f"<td><b>{_points(sins.low, sins.high)}</b></td></tr></tbody></table>"
    )
    return _text(head + table + _items(notes))


def classification_text(assessment: LevelAssessment, preliminary: bool) -> JsonObject:
    """The classification Observation: appearance, likely primaries, differential, flags."""
    result = assessment.classification
    determined = result.appearance.determined
    look = (
        determined.value
        if determined is not None
        else f"appearance open ({words(result.appearance.allows)})"
    )
    parts = [
        f"<p><b>{_e(assessment.level.label)} lesion: {_e(look)}</b>"
        f"{PRELIMINARY if preliminary else ''}</p>"
    ]
    if result.likely_primaries:
        names = ", ".join(
            PRIMARY_TUMOR_DISPLAY.get(p, p)
            + (f" ({result.remark(p)})" if result.remark(p) is not None else "")
            for p in result.likely_primaries
        )
        parts.append(f"<p>Likely primaries, most typical first: {_e(names)}.</p>")
    if result.differential:
        names = ", ".join(DIFFERENTIAL_DISPLAY.get(d, d) for d in result.differential)
        parts.append(f"<p>Also consider: {_e(names)}.</p>")
    parts.append(_items(result.notes))
    return _text("".join(parts))


def risk_text(assessment: LevelAssessment, mitigation: str | None, preliminary: bool) -> JsonObject:
    """The RiskAssessment: category and likelihood of instability, what to do, and why."""
    sins = assessment.sins
    likelihood = (
        f", {RISK_PROBABILITY[sins.category][1].lower()}" if sins.category is not None else ""
    )
    parts = [
        f"<p><b>{_e(assessment.level.label)} spinal instability: {_e(_category(sins))} "
        f"(SINS {_points(sins.low, sins.high)}){_e(likelihood)}</b>"
        f"{PRELIMINARY if preliminary else ''}</p>"
    ]
    if mitigation:
        parts.append(f"<p><b>{_e(mitigation)}</b></p>")
    caveats = assessment.caveats()
    if caveats:
        parts.append("<p>Caveats:</p>" + _items(c.text for c in caveats))
    parts.append(f"<p>{_e(sins.rationale())}</p>")
    return _text("".join(parts))


def _consultation(sins: SinsScore) -> str:
    if sins.surgical_consultation:
        return "recommended"
    if sins.crosses_consultation_threshold:
        return "open"
    return "not indicated by SINS"


def report_text(summary: PatientSummary, preliminary: bool) -> JsonObject:
    """The DiagnosticReport: the conclusion, then one row per level, most unstable first."""
    rows = []
    for a in summary.levels:
        appearance = a.classification.appearance.determined
        rows.append(
            f"<tr><td>{_e(a.level.label)}</td>"
            f"<td>{_e(appearance.value if appearance else 'open')}</td>"
            f"<td>{_points(a.sins.low, a.sins.high)}</td>"
            f"<td>{_e(_category(a.sins))}</td>"
            f"<td>{_e(_consultation(a.sins))}</td>"
            f"<td>{_e(a.escc.value if a.escc is not None else 'unknown')}</td>"
            f"<td>{_e('; '.join(c.short for c in a.caveats()))}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>Level</th><th>Appearance</th><th>SINS</th><th>Category</th>"
        "<th>Surgical consultation</th><th>ESCC</th><th>Caveats</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else ""
    )
    head = (
        "<p><b>Vertebral metastasis assessment</b>"
        f"{PRELIMINARY if preliminary else ''}</p><p>{_e(summary.conclusion())}</p>"
    )
    return _text(head + table)


def noms_text(inputs: NomsInputs, preliminary: bool) -> JsonObject:
    """The NOMS inputs Observation: the four inputs, and that they are inputs, not a decision."""
    rows = (
        ("N (neurologic)", inputs.neurologic()),
        ("O (oncologic)", inputs.oncologic()),
        ("M (mechanical)", inputs.mechanical_words()),
        ("S (systemic)", inputs.systemic()),
    )
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return _text(
        f"<p><b>NOMS decision inputs</b>{PRELIMINARY if preliminary else ''}</p>"
        f"<table><tbody>{body}</tbody></table>"
        "<p>Inputs to the team's decision, not a treatment recommendation.</p>"
    )


def provenance_text(
    processor_version: str, targets: Sequence[str], sources: Sequence[str]
) -> JsonObject:
    """The Provenance: which processor derived which outputs from which inputs."""
    return _text(
        f"<p>Derived by fhir-app {_e(processor_version)} from {len(sources)} "
        f"input{'s' if len(sources) != 1 else ''}.</p>"
        f"<p>Outputs:</p>{_items(targets)}"
        + (f"<p>Inputs:</p>{_items(sources)}" if sources else "")
    )


def with_withdrawn_banner(text: JsonObject) -> JsonObject:
    """The same narrative opened by the entered-in-error banner (added once)."""
    div = str(text.get("div", f"{XHTML_OPEN}</div>"))
    if WITHDRAWN_BANNER in div:
        return dict(text)
    if div.startswith(XHTML_OPEN):
        div = XHTML_OPEN + WITHDRAWN_BANNER + div[len(XHTML_OPEN) :]
    else:
        # A narrative written elsewhere: wrap it rather than edit foreign markup.
        div = f"{XHTML_OPEN}{WITHDRAWN_BANNER}{div}</div>"
    return {"status": "generated", "div": div}
