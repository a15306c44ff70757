"""The embedded default: SQLite in WAL mode with durable commits."""
