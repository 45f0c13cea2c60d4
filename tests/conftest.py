"""Shared fixtures. Helpers that tests import live in ``tests/support.py``."""

from __future__ import annotations
