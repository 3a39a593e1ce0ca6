"""The FHIR adapter: the only package that imports fhir.resources."""
