"""The domain: plain functions taking a Session. No Slack client, no Block Kit here."""


class DomainError(Exception):
    """A rule the user broke; the message is shown to them as is."""


class NotAllowed(DomainError):
    """The user may not do this (for example, acknowledging without being in marketing)."""
