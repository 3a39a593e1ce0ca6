"""Fixtures of the ConceptMap tests."""

from __future__ import annotations

from conceptmap_support import fresh_translator

__all__ = ["fresh_translator"]
