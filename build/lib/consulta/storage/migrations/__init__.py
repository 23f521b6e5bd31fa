"""Alembic migrations of the Consulta schema (`consulta db upgrade`)."""
