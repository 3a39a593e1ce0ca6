"""The FHIR REST interface (FastAPI); the only package that imports fastapi or starlette."""

from fhir_app.api.app import create_app

__all__ = ["create_app"]
