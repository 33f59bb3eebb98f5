"""Pure Block Kit builders: data in, (text, blocks) out; user text is escaped here."""
