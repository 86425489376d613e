"""A tiny raster canvas that writes PNG files, so ``--plot FILE.png`` needs no plotting library.

It draws what benchmark charts need (filled rectangles, lines, dots and text in a built-in
5x7 pixel font, upper case) and encodes the image with zlib, as the PNG format specifies.
"""

from __future__ import annotations

import struct
import zlib

# 5x7 glyphs, one int per row from the top, bit 4 = leftmost pixel.
_FONT: dict[str, tuple[int, ...]] = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31), "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14), "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 31, 17, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14), "D": (28, 18, 17, 17, 17, 18, 28),
    "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14), "J": (7, 2, 2, 2, 2, 18, 12),
    "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16),
    "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14), "V": (17, 17, 17, 17, 17, 10, 4),
    "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    " ": (0, 0, 0, 0, 0, 0, 0), ".": (0, 0, 0, 0, 0, 12, 12),
    ",": (0, 0, 0, 0, 12, 4, 8), ":": (0, 12, 12, 0, 12, 12, 0),
    ";": (0, 12, 12, 0, 12, 4, 8), "~": (0, 0, 8, 21, 2, 0, 0),
    "/": (0, 1, 2, 4, 8, 16, 0), "=": (0, 0, 31, 0, 31, 0, 0),
    "-": (0, 0, 0, 31, 0, 0, 0), "+": (0, 4, 4, 31, 4, 4, 0),
    "_": (0, 0, 0, 0, 0, 0, 31), "%": (24, 25, 2, 4, 8, 19, 3),
    "(": (2, 4, 8, 8, 8, 4, 2), ")": (8, 4, 2, 2, 2, 4, 8),
    "*": (0, 4, 21, 14, 21, 4, 0), "<": (2, 4, 8, 16, 8, 4, 2),
    ">": (8, 4, 2, 1, 2, 4, 8), "[": (14, 8, 8, 8, 8, 8, 14),
    "]": (14, 2, 2, 2, 2, 2, 14), "?": (14, 17, 1, 2, 4, 0, 4),
    "!": (4, 4, 4, 4, 4, 0, 4), "'": (4, 4, 8, 0, 0, 0, 0),
    "|": (4, 4, 4, 4, 4, 4, 4), "#": (10, 10, 31, 10, 31, 10, 10),
}  # fmt: skip
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6


def parse_color(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` -> (r, g, b)."""
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def text_width(text: str, scale: int = 1) -> int:
    return len(text) * ADVANCE * scale


class Canvas:
    """An RGB image in memory; coordinates are pixels from the top-left corner."""

    def __init__(self, width: int, height: int, background: str = "#ffffff") -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(parse_color(background)) * (width * height))

    def _put(self, x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(rgb)

    def fill_rect(self, x: float, y: float, w: float, h: float, color: str) -> None:
        rgb = bytes(parse_color(color))
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(self.width, round(x + w)), min(self.height, round(y + h))
        if x1 <= x0:
            x1 = min(self.width, x0 + 1)  # keep hairline bars visible
        for row in range(y0, y1):
            start = (row * self.width + x0) * 3
            self.pixels[start : start + (x1 - x0) * 3] = rgb * (x1 - x0)

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str, width: int = 1) -> None:
        """A straight line (Bresenham), ``width`` pixels thick."""
        rgb = parse_color(color)
        ax, ay, bx, by = round(x1), round(y1), round(x2), round(y2)
        dx, dy = abs(bx - ax), -abs(by - ay)
        sx, sy = (1 if ax < bx else -1), (1 if ay < by else -1)
        err = dx + dy
        half = (width - 1) // 2
        while True:
            for ox in range(-half, width - half):
                for oy in range(-half, width - half):
                    self._put(ax + ox, ay + oy, rgb)
            if ax == bx and ay == by:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                ax += sx
            if e2 <= dx:
                err += dx
                ay += sy

    def dot(self, x: float, y: float, radius: float, color: str) -> None:
        rgb = parse_color(color)
        r = max(1, round(radius))
        cx, cy = round(x), round(y)
        for oy in range(-r, r + 1):
            for ox in range(-r, r + 1):
                if ox * ox + oy * oy <= r * r:
                    self._put(cx + ox, cy + oy, rgb)

    def text(
        self, x: float, y: float, text: str, color: str, scale: int = 1, anchor: str = "start"
    ) -> None:
        """Upper-case text whose baseline is at ``y``; ``anchor`` start, middle or end."""
        rgb = parse_color(color)
        shown = text.upper()
        width = text_width(shown, scale)
        left = round(x - (width / 2 if anchor == "middle" else width if anchor == "end" else 0))
        top = round(y) - GLYPH_H * scale
        for n, char in enumerate(shown):
            rows = _FONT.get(char, _FONT["?"])
            for r, bits in enumerate(rows):
                for c in range(GLYPH_W):
                    if bits & (1 << (GLYPH_W - 1 - c)):
                        for sy in range(scale):
                            for sx in range(scale):
                                gx = left + (n * ADVANCE + c) * scale + sx
                                self._put(gx, top + r * scale + sy, rgb)

    def to_png(self) -> bytes:
        """The image as PNG bytes (8-bit RGB, no filtering, zlib-compressed)."""
        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )
