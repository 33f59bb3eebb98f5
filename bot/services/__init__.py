"""The domain: plain functions taking a Session. No Slack client, no Block Kit here; they
decide, store, and enqueue what must be sent (bot.services.outgoing)."""
