"""Security of the REST interface (issue 13, CONTRACT section 5 "Security (v2)").

- `scopes`: SMART on FHIR v2 scopes (`system/Observation.rs`, v1 `.read`/`.write`/`.*` mapped).
- `tokens`: bearer JWTs verified against the site's JWKS (joserfc), static tokens for loopback.
- `principal`: who calls (client id, subject, scopes, patient context) and the 401/429 gate.
- `guarded`: the service as one caller may use it: scopes and the patient compartment enforced.
- `audit`: an AuditEvent (IHE Basic Audit Log Patterns) per interaction.
- `headers`: security headers on every response; `access_log`: a log line without patient data.
- `throttle`: 429 after repeated failed authentication from one client address.
"""
