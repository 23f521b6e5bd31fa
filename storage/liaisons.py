"""Community liaisons: who they are (a phone number on any channel, or a Telegram chat id), their
territory and language — registered by staff, and recognised when they write on any channel.

Addresses are kept in one form so that the one person is found whatever channel they write on:
a phone number in E.164 (`+525512345678`; numbers without a country code are read in
`DEFAULT_REGION`, and WhatsApp's Mexican `+521…` form is the same number as `+52…`), a Telegram
chat id as its integer. How an address given by staff is read:

- `channel` telegram, or a negative integer: a chat id;
- a bare integer: a phone number when it is a valid one in `DEFAULT_REGION` (`5512345678`) or,
  from 11 digits, with a `+` before it (a spreadsheet lost it); a chat id otherwise — so a
  Telegram chat id that is also a valid phone number needs `channel` telegram;
- anything else (a leading `+`, spaces, dashes, parentheses): a phone number, which must be a
  valid one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import phonenumbers
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consulta.storage.models import Liaison, utcnow

__all__ = [
    "CHANNELS",
    "DEFAULT_REGION",
    "LANGUAGES",
    "LiaisonError",
    "LiaisonIn",
    "LiaisonInfo",
    "Liaisons",
    "canonical_address",
]

DEFAULT_REGION = "MX"
CHANNELS = ("whatsapp", "sms", "telegram")
LANGUAGES = ("es", "en", "fr")
PHONE_CHANNELS = ("whatsapp", "sms")

_CHAT_ID = re.compile(r"-?\d{1,19}")
_MX_MOBILE = re.compile(r"\+521(\d{10})")  # WhatsApp still writes Mexican mobiles this way


class LiaisonError(ValueError):
    """What staff gave cannot be used; the message says why, and nothing was changed."""


@dataclass(frozen=True)
class LiaisonIn:
    """A liaison as staff give one (the CLI, a CSV row, the API), before it is checked."""

    address: str
    name: str
    territory: str
    language: str | None = None
    channel: str | None = None


@dataclass(frozen=True)
class LiaisonInfo:
    """A registered liaison. `channel` None: recognised on any channel of their address."""

    id: int
    channel: str | None
    address: str
    name: str
    territory: str
    language: str | None
    added_at: datetime


_COLUMNS = (
    Liaison.id,
    Liaison.channel,
    Liaison.address,
    Liaison.name,
    Liaison.territory,
    Liaison.language,
    Liaison.added_at,
)


def _info(row: Sequence[object]) -> LiaisonInfo:
    info = LiaisonInfo(*row)  # type: ignore[arg-type]
    added = info.added_at
    aware = added.replace(tzinfo=UTC) if added.tzinfo is None else added.astimezone(UTC)
    return LiaisonInfo(**{**vars(info), "added_at": aware})


def _phone(text: str, region: str) -> str:
    """`text` as an E.164 phone number; LiaisonError when it is not a valid one."""
    candidate = text
    if candidate.isdigit() and len(candidate) >= 11:  # a spreadsheet dropped the "+"
        candidate = "+" + candidate
    mexican = _MX_MOBILE.fullmatch(re.sub(r"[\s().-]", "", candidate))
    if mexican:
        candidate = "+52" + mexican.group(1)
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        raise LiaisonError(f"not a phone number: {text!r}") from None
    if not phonenumbers.is_valid_number(number):
        raise LiaisonError(f"not a valid phone number: {text!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def canonical_address(
    address: str, channel: str | None = None, *, region: str = DEFAULT_REGION
) -> tuple[str, str | None]:
    """The address and channel a liaison is kept under (the module's docstring says how an
    address is read). Raises LiaisonError for an address that is neither."""
    text = address.strip().removeprefix("whatsapp:")
    if channel is not None and channel not in CHANNELS:
        raise LiaisonError(f"unknown channel {channel!r}: one of {', '.join(CHANNELS)}")
    if not text or "\x00" in text or len(text) > 64:
        raise LiaisonError(f"not an address: {address!r}")
    bare = _CHAT_ID.fullmatch(text) is not None
    if channel is None and bare and not text.startswith("-"):
        try:
            return _phone(text, region), None
        except LiaisonError:
            pass  # not a phone number: a chat id
    if channel == "telegram" or (channel is None and bare):
        if not bare:
            raise LiaisonError(f"a Telegram chat id is a whole number, not {address!r}")
        return str(int(text)), "telegram"
    return _phone(text, region), channel


class Liaisons:
    """The liaisons staff registered: added (or updated) one by one or from a file, listed,
    removed, and recognised by their address."""

    def __init__(self, engine: AsyncEngine, *, region: str = DEFAULT_REGION) -> None:
        self.engine = engine
        self.region = region

    def check(self, given: LiaisonIn) -> LiaisonIn:
        """`given` with its address in the kept form and its fields checked."""
        address, channel = canonical_address(given.address, given.channel, region=self.region)
        name, territory = given.name.strip(), given.territory.strip()
        if not name or len(name) > 128 or "\x00" in name:
            raise LiaisonError(f"{address}: a name of 1 to 128 characters is needed")
        if not territory or len(territory) > 64 or "\x00" in territory:
            raise LiaisonError(f"{address}: a territory code of 1 to 64 characters is needed")
        language = (given.language or "").strip().lower() or None
        if language is not None and language not in LANGUAGES:
            raise LiaisonError(
                f"{address}: unknown language {given.language!r}: one of {', '.join(LANGUAGES)}"
            )
        return LiaisonIn(address, name, territory, language, channel)

    async def add(self, given: LiaisonIn) -> tuple[LiaisonInfo, bool]:
        """Register a liaison, or update the one with the same address. Returns it, and whether
        it is new."""
        checked = self.check(given)
        async with self.engine.begin() as conn:
            created = await self._put(conn, checked)
            found = await conn.execute(select(*_COLUMNS).where(Liaison.address == checked.address))
            return _info(found.one()), created

    async def add_many(self, given: Sequence[LiaisonIn]) -> tuple[int, int]:
        """Register or update every liaison of a file, all of them or — when one cannot be
        used, or an address comes twice — none. Returns (added, updated)."""
        checked: dict[str, LiaisonIn] = {}
        for n, item in enumerate(given, start=1):
            try:
                one = self.check(item)
            except LiaisonError as exc:
                raise LiaisonError(f"row {n}: {exc}") from None
            if one.address in checked:
                raise LiaisonError(f"row {n}: {one.address} is already in an earlier row")
            checked[one.address] = one
        added = 0
        async with self.engine.begin() as conn:
            for one in checked.values():
                added += await self._put(conn, one)
        return added, len(checked) - added

    @staticmethod
    async def _put(conn: AsyncConnection, one: LiaisonIn) -> bool:
        values = {
            "channel": one.channel,
            "name": one.name,
            "territory": one.territory,
            "language": one.language,
        }
        changed = await conn.execute(
            update(Liaison).where(Liaison.address == one.address).values(**values)
        )
        if changed.rowcount:
            return False
        await conn.execute(insert(Liaison).values(address=one.address, added_at=utcnow(), **values))
        return True

    async def all(self, territory: str | None = None) -> list[LiaisonInfo]:
        """Every liaison (of one territory), by territory and name."""
        query = select(*_COLUMNS).order_by(Liaison.territory, Liaison.name, Liaison.id)
        if territory is not None:
            query = query.where(Liaison.territory == territory)
        async with self.engine.connect() as conn:
            return [_info(row) for row in await conn.execute(query)]

    async def remove(self, address: str) -> bool:
        """Stop recognising a liaison; False when no liaison has this address."""
        try:
            kept, _ = canonical_address(address, region=self.region)
        except LiaisonError:
            return False
        async with self.engine.begin() as conn:
            removed = await conn.execute(delete(Liaison).where(Liaison.address == kept))
            return bool(removed.rowcount)

    async def liaison_for(self, channel: str, address: str) -> LiaisonInfo | None:
        """The liaison writing from `address` on `channel` (a contact's channel and address as
        the store holds them: `+521…` on WhatsApp, a chat id on Telegram), or None."""
        try:
            kept, _ = canonical_address(
                address, "telegram" if channel == "telegram" else None, region=self.region
            )
        except LiaisonError:
            return None
        query = select(*_COLUMNS).where(
            Liaison.address == kept, or_(Liaison.channel.is_(None), Liaison.channel == channel)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _info(row)

    async def addresses(self, addresses: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (channel, address) pairs are liaisons' (for tagging many reports in
        one query)."""
        kept: dict[str, list[tuple[str, str]]] = {}
        for channel, address in addresses:
            try:
                key, _ = canonical_address(
                    address, "telegram" if channel == "telegram" else None, region=self.region
                )
            except LiaisonError:
                continue
            kept.setdefault(key, []).append((channel, address))
        if not kept:
            return set()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(Liaison.address, Liaison.channel).where(Liaison.address.in_(list(kept)))
            )
            found: set[tuple[str, str]] = set()
            for key, only in rows:
                found.update(pair for pair in kept[key] if only is None or pair[0] == only)
        return found
