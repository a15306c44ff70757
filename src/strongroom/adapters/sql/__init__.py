"""The relational store on SQLAlchemy Core: SQLite by default, PostgreSQL when configured."""
