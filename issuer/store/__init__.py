"""Storage: SQLAlchemy 2 models, engines and repository functions (which never commit)."""
