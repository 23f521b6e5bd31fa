"""Persistence: SQLAlchemy models and migrations; the store (contacts, messages, turns) and,
beside it, replies, groups, exports, data rights, staff and reporting; conversation state."""
