"""SMART on FHIR v2 scopes (hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

A scope is `<context>/<resource type or *>.<permissions>`: the context is `system` (a backend
service), `user` (what the signed-in user may see) or `patient` (one patient's compartment, named
by the token's `patient` claim); v2 permissions are a subset of `c r u d s` in that order (create,
read, update, delete, search); the v1 suffixes `read`, `write` and `*` mean `rs`, `cud` and
`cruds`. A scope with a query (`patient/Observation.rs?category=...`) grants only part of a type,
which this server cannot enforce: it grants nothing here rather than more than was meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PERMISSIONS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
CONTEXTS = ("system", "user", "patient")
_SCOPE = re.compile(
    r"(?P<context>system|user|patient)/(?P<type>[A-Z][A-Za-z]*|\*)\."
    r"(?P<perms>read|write|\*|c?r?u?d?s?)"
)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one scope grants: permissions on a resource type (or `*`) in a context."""

    context: str
    resource_type: str
    permissions: frozenset[str]

    def covers(self, resource_type: str, permission: str) -> bool:
        """True when this grant allows `permission` on `resource_type`."""
        return permission in self.permissions and self.resource_type in ("*", resource_type)


def parse_scope(text: str) -> Grant | None:
    """The grant of one scope, or None for a scope that grants no resource access here
    (`openid`, `launch/patient`, `offline_access`, granular scopes with a query)."""
    match = _SCOPE.fullmatch(text)
    if match is None or not match["perms"]:
        return None
    perms = V1_PERMISSIONS.get(match["perms"], match["perms"])
    return Grant(match["context"], match["type"], frozenset(perms))


@dataclass(frozen=True, slots=True)
class Scopes:
    """The grants of a token's `scope` claim."""

    grants: tuple[Grant, ...]

    @classmethod
    def parse(cls, scope: str | Iterable[str]) -> Scopes:
        """From the space-separated `scope` claim (or a list of scopes)."""
        items = scope.split() if isinstance(scope, str) else list(scope)
        return cls(tuple(g for g in (parse_scope(item) for item in items) if g is not None))

    def allows(self, resource_type: str, permission: str) -> bool:
        """True when some grant allows `permission` (one of `c r u d s`) on the type."""
        return any(grant.covers(resource_type, permission) for grant in self.grants)

    def without_context(self, context: str) -> Scopes:
        """The grants outside one context (patient/ grants are void without a patient claim)."""
        return Scopes(tuple(g for g in self.grants if g.context != context))


ALL = Scopes((Grant("system", "*", frozenset(PERMISSIONS)),))
