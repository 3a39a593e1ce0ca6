"""Registry and population analytics over the outputs fhir-app emits (CONTRACT.md section 4).

Reads the output resources as plain JSON (never through fhir.resources), so it can run over an
NDJSON export, a `$assess` Bundle or the store's current outputs alike:

- `lesions`: one flat row per (patient, level), with CSV and Parquet writers;
- `report`: population counts as data, a rich rendering and a chart of lesions per level;
- `views`: a SQL-on-FHIR v2 ViewDefinition evaluator for the views in `profiles/views/`.
"""
