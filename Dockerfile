# fhir-app: the FHIR REST API on port 8080.
#
#   docker build -t fhir-app .
#   docker run -p 8080:8080 -e FHIR_APP_PUBLIC_BASE_URL=https://fhir.example.org \
#     -e FHIR_APP_SMART_JWKS=https://idp.example.org/jwks \
#     -e FHIR_APP_SMART_ISSUER=https://idp.example.org fhir-app
#
# An identity provider is required: `fhir-app serve` refuses to listen on 0.0.0.0 without one
# (static FHIR_APP_AUTH_TOKENS are for loopback only; FHIR_APP_ALLOW_UNAUTHENTICATED_REMOTE=true
# serves without authentication on purpose). The schema is
# migrated at start. Without FHIR_APP_DATABASE_URL the data live in SQLite on the /data volume;
# docker-compose.yml runs it on PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from a scratch folder and remove it, so that only the installed package is imported.
COPY pyproject.toml README.md /tmp/src/
COPY fhir_app /tmp/src/fhir_app
RUN pip install /tmp/src && rm -rf /tmp/src

# Read from the working folder at run time: the migrations (fhir_app.store.migrate) and the
# CapabilityStatement in profiles/ (GET /fhir/metadata).
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
COPY profiles ./profiles

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin fhirapp \
    && mkdir /data && chown fhirapp /data
USER fhirapp

ENV FHIR_APP_DATABASE_URL=sqlite:////data/fhir-app.db \
    FHIR_APP_EXPORT_DIR=/data/exports
VOLUME ["/data"]
EXPOSE 8080

# GET /fhir/metadata is public even when tokens are set.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/fhir/metadata', timeout=4)"]

CMD ["fhir-app", "serve", "--host", "0.0.0.0", "--port", "8080"]
