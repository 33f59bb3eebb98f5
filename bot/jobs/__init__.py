"""The work the scheduler's minute tick runs (bot.jobs.tick), and the commands that share it."""
