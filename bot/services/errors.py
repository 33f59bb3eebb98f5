"""Errors a person can act on: their message is shown to them as it is."""


class DomainError(Exception):
    """A rule the user broke; the message is shown to them as is."""


class NotAllowed(DomainError):
    """The user may not do this (for example, acknowledging without being in marketing)."""
