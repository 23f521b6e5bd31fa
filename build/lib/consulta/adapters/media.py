"""Residents' photos as a channel hands them over: at most `MAX_BYTES`, read in bounded chunks,
and kept only when their bytes are an image (JPEG, PNG, GIF, WebP, HEIC/HEIF, AVIF), whatever
the sender's Content-Type says. Shared by every adapter that downloads media."""

from __future__ import annotations

from collections.abc import AsyncIterable

__all__ = [
    "CHUNK",
    "MAX_BYTES",
    "MediaRefused",
    "check_size",
    "image_type",
    "read_capped",
    "require_image",
]

# The same limit as storage.media.MAX_BYTES (the store refuses more); WhatsApp's own limit for
# images is 5 MB, Telegram's for bots' downloads 20 MB.
MAX_BYTES = 16 * 1024 * 1024
CHUNK = 64 * 1024

# ISO base media file brands of still images: HEIC/HEIF (iPhones' photos) and AVIF.
_HEIF_BRANDS = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevc": "image/heic-sequence",
    b"hevx": "image/heic-sequence",
    b"hevm": "image/heic-sequence",
    b"hevs": "image/heic-sequence",
    b"mif1": "image/heif",
    b"msf1": "image/heif-sequence",
    b"avif": "image/avif",
    b"avis": "image/avif",
}


class MediaRefused(ValueError):
    """A download we will not keep: off the provider's host, too large, or not an image.

    Its message names the reason, never the URL (whose query may be a signed credential) nor
    the resident."""


def image_type(data: bytes) -> str | None:
    """The image type `data` is by its first bytes (magic numbers), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":  # ISO BMFF: the major brand, then compatible ones to box end
        end = min(int.from_bytes(data[:4], "big"), len(data), 64)
        brands = [data[8:12]] + [data[i : i + 4] for i in range(16, end - 3, 4)]
        for brand in brands:
            if brand in _HEIF_BRANDS:
                return _HEIF_BRANDS[brand]
    return None


def require_image(data: bytes) -> str:
    """The image type of `data`; raises `MediaRefused` when it is not an image."""
    found = image_type(data)
    if found is None:
        raise MediaRefused(f"the file is not an image ({len(data)} bytes)")
    return found


def check_size(size: int | None, limit: int = MAX_BYTES) -> None:
    """Refuse a file the sender says is larger than `limit`, before downloading it."""
    if size is not None and size > limit:
        raise MediaRefused(f"the file is {size} bytes, over the {limit} byte limit")


async def read_capped(chunks: AsyncIterable[bytes], limit: int = MAX_BYTES) -> bytes:
    """Everything `chunks` yields, stopping with `MediaRefused` as soon as it passes `limit`,
    so an endless or lying response costs at most `limit` bytes of memory."""
    kept = bytearray()
    async for chunk in chunks:
        kept += chunk
        if len(kept) > limit:
            raise MediaRefused(f"the file is over the {limit} byte limit")
    return bytes(kept)
