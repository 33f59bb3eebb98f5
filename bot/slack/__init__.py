"""Slack's Web API as Closeloop uses it: clients and pacing, directory reads, history reads."""
