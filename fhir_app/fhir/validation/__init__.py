"""Strict FHIR R4 validation (CONTRACT 3b): one validator for REST, bulk, Spark and `$assess`.

- `resource.validate_resource`: one resource, through the official FHIR JSON schema tightened to
  R4's rules (`schema`, `rules`, `calendar`) and compiled once per process with jsonschema-rs,
  after the control-character check (`text`).
- `bundle_rules.entry_issues`: what a Bundle's entries break together (duplicate fullUrls,
  dangling `urn:uuid:` references, a PUT whose url names another id).
- `models`: fhir.resources' R4B models as a validator, the reference the differential tests
  and bench/validate.py measure the gate against.
"""
