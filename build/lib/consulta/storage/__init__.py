"""Persistence: SQLAlchemy models, migrations, repositories and conversation-state stores."""
