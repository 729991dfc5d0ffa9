"""A small PNG decoder (zlib + numpy), so deploy needs no imaging library.

Reads every non-interlaced PNG: grayscale, RGB, palette, grayscale+alpha and RGBA at any legal
bit depth. Limits: Adam7-interlaced files are refused, 16-bit samples keep their high byte,
a grayscale/RGB tRNS colour key and gamma/colour-profile chunks are ignored. Rows are unfiltered
in pure Python, fine for digit-sized images (a megapixel photo takes seconds).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _paeth(a: int, b: int, c: int) -> int:
    """The PNG Paeth predictor: whichever of left, up, up-left is closest to left + up - up-left."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _none(cur: bytearray, prev: bytes, bpp: int) -> None:
    pass


def _sub(cur: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(bpp, len(cur)):
        cur[i] = (cur[i] + cur[i - bpp]) & 0xFF


def _up(cur: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(len(cur)):
        cur[i] = (cur[i] + prev[i]) & 0xFF


def _average(cur: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(len(cur)):
        left = cur[i - bpp] if i >= bpp else 0
        cur[i] = (cur[i] + ((left + prev[i]) >> 1)) & 0xFF


def _paeth_row(cur: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(len(cur)):
        left, upleft = (cur[i - bpp], prev[i - bpp]) if i >= bpp else (0, 0)
        cur[i] = (cur[i] + _paeth(left, prev[i], upleft)) & 0xFF


FILTERS: dict[int, Callable[[bytearray, bytes, int], None]] = {
    0: _none, 1: _sub, 2: _up, 3: _average, 4: _paeth_row}


def _chunks(data: bytes, source: str) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk up to IEND, CRC-checked."""
    if not data.startswith(SIGNATURE):
        raise ValueError(f"{source}: not a PNG file")
    chunks, pos = [], len(SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ValueError(f"{source}: truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(payload) != length or len(crc) != 4:
            raise ValueError(f"{source}: truncated PNG chunk {kind!r}")
        if zlib.crc32(kind + payload) != struct.unpack(">I", crc)[0]:
            raise ValueError(f"{source}: corrupt PNG (CRC mismatch in chunk {kind!r})")
        chunks.append((kind, payload))
        pos += 12 + length
        if kind == b"IEND":
            return chunks


def decode_png(data: bytes, source: str = "<png>") -> np.ndarray:
    """PNG bytes -> (height, width, channels) uint8; palettes become RGB (RGBA with tRNS)."""
    chunks = _chunks(data, source)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise ValueError(f"{source}: PNG without a valid IHDR header")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if colour not in CHANNELS or depth not in BIT_DEPTHS[colour] or width == 0 or height == 0:
        raise ValueError(f"{source}: invalid PNG header (colour type {colour}, bit depth {depth})")
    if interlace:
        raise ValueError(f"{source}: interlaced (Adam7) PNGs are not supported; "
                         f"save the image without interlacing")
    found = {kind: payload for kind, payload in chunks if kind in (b"PLTE", b"tRNS")}
    try:
        raw = zlib.decompress(b"".join(p for kind, p in chunks if kind == b"IDAT"))
    except zlib.error as exc:
        raise ValueError(f"{source}: corrupt PNG image data ({exc})") from None

    bits = CHANNELS[colour] * depth  # per pixel
    stride, bpp = (width * bits + 7) // 8, max(1, bits // 8)
    if len(raw) != height * (stride + 1):
        raise ValueError(f"{source}: PNG image data has {len(raw)} bytes, expected "
                         f"{height * (stride + 1)}")
    rows, prev = bytearray(), bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, cur = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind not in FILTERS:
            raise ValueError(f"{source}: unknown PNG filter type {kind} in row {y}")
        FILTERS[kind](cur, prev, bpp)
        rows += cur
        prev = cur
    packed = np.frombuffer(bytes(rows), dtype=np.uint8).reshape(height, stride)
    samples = _samples(packed, width, depth, CHANNELS[colour])  # (h, w, c) integers
    if colour == 3:
        return _apply_palette(samples[..., 0], found.get(b"PLTE"), found.get(b"tRNS"), source)
    if depth == 16:
        return (samples >> 8).astype(np.uint8)
    if depth < 8:  # stretch 1/2/4-bit gray to 0..255
        return (samples * (255 // (2 ** depth - 1))).astype(np.uint8)
    return samples.astype(np.uint8)


def _samples(packed: np.ndarray, width: int, depth: int, channels: int) -> np.ndarray:
    """Unfiltered rows (h, stride) -> samples (h, width, channels) as integers."""
    height = packed.shape[0]
    if depth == 8:
        return packed.reshape(height, width, channels).astype(np.int32)
    if depth == 16:
        return packed.view(">u2").reshape(height, width, channels).astype(np.int32)
    bits = np.unpackbits(packed, axis=1)[:, :width * depth].reshape(height, width, depth)
    weights = 1 << np.arange(depth - 1, -1, -1)  # most significant bit first
    return (bits.astype(np.int32) * weights).sum(-1)[..., None]


def _apply_palette(index: np.ndarray, plte: bytes | None, trns: bytes | None,
                   source: str) -> np.ndarray:
    """Palette indices (h, w) -> RGB (or RGBA when the palette has transparency)."""
    if plte is None or len(plte) % 3:
        raise ValueError(f"{source}: palette PNG without a valid PLTE chunk")
    palette = np.frombuffer(plte, dtype=np.uint8).reshape(-1, 3)
    if trns:
        alpha = np.full(len(palette), 255, dtype=np.uint8)
        given = np.frombuffer(trns[:len(palette)], dtype=np.uint8)
        alpha[:len(given)] = given
        palette = np.concatenate([palette, alpha[:, None]], axis=1)
    if index.max() >= len(palette):
        raise ValueError(f"{source}: palette index out of range")
    return palette[index]


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Decode the PNG at `path` to (height, width, channels) uint8."""
    return decode_png(Path(path).read_bytes(), str(path))
