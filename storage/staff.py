"""The planning team's accounts: who may read the dashboard and the API, and as what role."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import insert, select, update

from consulta.storage.models import StaffMember, utcnow
from consulta.storage.store import Store

__all__ = ["Staff"]


class Staff:
    """The planning team's accounts: bearer tokens, stored as hashes, shown once."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    async def add(self, name: str, role: str) -> str:
        """A new account; returns its token (never stored, never shown again)."""
        token = secrets.token_urlsafe(32)
        async with self.store.engine.begin() as conn:
            await conn.execute(
                insert(StaffMember).values(
                    name=name,
                    role=role,
                    token_hash=self._hash(token),
                    created_at=utcnow(),
                    revoked_at=None,
                )
            )
        return token

    async def authenticate(self, token: str) -> tuple[str, str] | None:
        """(name, role) of a valid, unrevoked token."""
        if not token:
            return None
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(StaffMember.name, StaffMember.role).where(
                        StaffMember.token_hash == self._hash(token),
                        StaffMember.revoked_at.is_(None),
                    )
                )
            ).one_or_none()
        return (row[0], row[1]) if row else None

    async def revoke(self, name: str) -> bool:
        async with self.store.engine.begin() as conn:
            result = await conn.execute(
                update(StaffMember)
                .where(StaffMember.name == name, StaffMember.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)

    async def all(self) -> list[tuple[str, str, datetime, datetime | None]]:
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    StaffMember.name,
                    StaffMember.role,
                    StaffMember.created_at,
                    StaffMember.revoked_at,
                ).order_by(StaffMember.name)
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]
