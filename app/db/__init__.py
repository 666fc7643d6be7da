"""Database tables, sessions, repositories and migrations (SQLite and PostgreSQL)."""
