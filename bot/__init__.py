"""Closeloop: a Slack bot that closes the feedback loop between sales and marketing."""
