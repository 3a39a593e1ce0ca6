"""The report a person reads (CONTRACT 4d v2): `DiagnosticReport.presentedForm`.

Plain data first: `view` builds a `ReportView` from the outputs the outbound mapping emitted for one
patient; `picture` draws the spine from it (PNG); `page` renders the self-contained HTML page with
Jinja2; `presented` wraps both as FHIR Attachments. Nothing clinical is decided here: every
sentence, category and caveat is read from the emitted resources.
"""
