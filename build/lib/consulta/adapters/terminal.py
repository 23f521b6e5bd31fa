"""The terminal channel: `consulta chat` types messages and prints replies.

Besides text, a line `/loc LAT,LON [label]` shares a location pin and `/photo FILE` sends a
photo, so every question kind can be answered from a keyboard.
"""

from __future__ import annotations

import mimetypes
import re
import sys
from pathlib import Path
from typing import TextIO

from consulta.adapters.message import Attachment, Inbound, Outbound, Place, Sent

__all__ = ["CHANNEL", "TerminalSender", "parse_line"]

CHANNEL = "terminal"
_LOC = re.compile(r"^/loc\s+(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*(.*)$")


def parse_line(line: str, address: str) -> Inbound:
    text = line.strip()
    if match := _LOC.match(text):
        lat, lon, label = float(match[1]), float(match[2]), match[3].strip() or None
        return Inbound(CHANNEL, address, place=Place(lat, lon, label))
    if text.startswith("/photo "):
        path = Path(text.removeprefix("/photo ").strip()).expanduser().resolve()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Inbound(CHANNEL, address, attachments=(Attachment(path.as_uri(), kind),))
    return Inbound(CHANNEL, address, text=text)


class TerminalSender:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    async def send(self, message: Outbound) -> Sent:
        hint = {"location": "  [📍 /loc LAT,LON]", "photo": "  [📷 /photo FILE]"}
        print(f"\n{message.text}{hint.get(message.expects or '', '')}", file=self.out)
        self.out.flush()
        return Sent()
