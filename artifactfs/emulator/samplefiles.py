"""Real file formats for sample data (CSV, PDF, PNG), generated rather than stored as binaries."""

from __future__ import annotations

import struct
import zlib

MIB = 1 << 20


def csv_text(rows: int, start: int = 0) -> str:
    regions = ("north", "south", "east", "west")
    lines = ["date,region,units,revenue_usd"]
    for i in range(start, start + rows):
        day = f"2025-{10 + i % 3:02d}-{1 + i % 28:02d}"
        lines.append(f"{day},{regions[i % 4]},{40 + (i * 37) % 160},{(i * 7919) % 90000 + 1000}.00")
    return "\n".join(lines) + "\n"


def pdf_bytes(title: str, lines: list[str]) -> bytes:
    """A one-page PDF with a correct xref table (opens in any viewer)."""
    text = [f"BT /F1 20 Tf 72 720 Td ({title}) Tj ET"]
    text += [f"BT /F1 11 Tf 72 {690 - 16 * i} Td ({line}) Tj ET" for i, line in enumerate(lines)]
    stream = "\n".join(text)
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        "/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def png_bytes(width: int, height: int, tint: int) -> bytes:
    """A valid RGB PNG with a gradient."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, tint)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
