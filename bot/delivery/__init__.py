"""The one way out to Slack: the outbox's sender and the kinds of message it sends."""
