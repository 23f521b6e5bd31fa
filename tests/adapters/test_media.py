"""The shared media checks: images known by their first bytes, sizes capped while reading."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from consulta.adapters import media
from consulta.adapters.media import MAX_BYTES, MediaRefused, check_size, image_type, read_capped
from consulta.storage.media import MAX_BYTES as STORE_MAX_BYTES
from tests.adapters.twilio_double import PNG


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\0\0\0\0" + b"".join(compatible)
    return (len(body) + 4).to_bytes(4, "big") + body + b"\0\0\0\x08meta"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xe0\0\x10JFIF", "image/jpeg"),
        (b"\xff\xd8\xff\xe1\0\x10Exif", "image/jpeg"),
        (PNG, "image/png"),
        (b"GIF89a\x01\0\x01\0", "image/gif"),
        (b"GIF87a\x01\0\x01\0", "image/gif"),
        (b"RIFF\x24\0\0\0WEBPVP8 ", "image/webp"),
        (_ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
        (_ftyp(b"mif1", b"heic"), "image/heif"),
        (_ftyp(b"avif", b"mif1"), "image/avif"),
    ],
)
def test_images_are_known_by_their_bytes(data: bytes, expected: str) -> None:
    assert image_type(data) == expected
    assert media.require_image(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<html><body>login</body></html>",
        b"%PDF-1.7",
        b"RIFF\x24\0\0\0WAVEfmt ",  # audio in the same container as WebP
        _ftyp(b"isom", b"mp42"),  # a video in the same container as HEIC
        b"OggS\0\x02",
        b"\xff\xd8",  # too short to be a JPEG
        b"MZ\x90\0",
    ],
)
def test_anything_else_is_not_an_image(data: bytes) -> None:
    assert image_type(data) is None
    with pytest.raises(MediaRefused, match="not an image"):
        media.require_image(data)


def test_the_limit_is_the_stores() -> None:
    assert MAX_BYTES == STORE_MAX_BYTES == 16 * 1024 * 1024


def test_a_declared_size_over_the_limit_is_refused_before_reading() -> None:
    check_size(None)
    check_size(MAX_BYTES)
    with pytest.raises(MediaRefused, match="over the"):
        check_size(MAX_BYTES + 1)


async def test_reading_stops_as_soon_as_the_limit_is_passed() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1000
            yield b"\0" * 1000

    with pytest.raises(MediaRefused, match="over the 5000 byte limit"):
        await read_capped(endless(), limit=5000)
    assert produced == 6000

    async def small() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    assert await read_capped(small(), limit=4) == b"abcd"
