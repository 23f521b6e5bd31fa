"""Where residents' photos are kept: a local folder by default (`MEDIA_DIR`)."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
from pathlib import Path

__all__ = ["MediaStore"]

MAX_BYTES = 16 * 1024 * 1024  # WhatsApp's own limit for images is 5 MB; 16 MB covers all


class MediaStore:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    async def save(self, data: bytes, content_type: str) -> str:
        """Keep the bytes under a name derived from their content; returns the reference."""
        if len(data) > MAX_BYTES:
            raise ValueError(f"media of {len(data)} bytes is over the {MAX_BYTES} byte limit")
        extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
        name = hashlib.sha256(data).hexdigest()[:32] + extension
        path = self.folder / name
        await asyncio.to_thread(self._write, path, data)
        return f"media/{name}"

    @staticmethod
    def holds(ref: str) -> bool:
        """Whether a reference is already one of ours (not a provider's URL or file id)."""
        return ref.startswith("media/")

    def path(self, ref: str) -> Path:
        return self.folder / Path(ref).name

    async def delete(self, ref: str) -> None:
        """Remove a kept file (a resident asked to be forgotten); gone already is fine."""
        await asyncio.to_thread(self.path(ref).unlink, missing_ok=True)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
