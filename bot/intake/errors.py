"""How processing a CRM delivery fails."""

from __future__ import annotations


class TryLater(Exception):
    """The CRM (or its settings) cannot be read now: the delivery is tried again later."""


class Unprocessable(Exception):
    """The delivery can never be processed (malformed): it is marked failed, or refused."""


class NotConfigured(Exception):
    """The CRM is not set up here (its settings are unset): nothing to read from it."""
