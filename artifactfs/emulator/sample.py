"""Sample data for the demo and the tests: realistic files, fixed ids and timestamps.

Ids and times follow the providers' doc examples where they give one (``task_123``,
``abc123DEFghiJKL``, ``art_aBcDeF123``/``ver_xYz9012``, ``job_01abc123``), so what the
demo shows can be read side by side with the docs. Real file formats (CSV, PDF, PNG,
JSON) are generated here rather than stored as binaries.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

from .blobs import PatternBlob
from .state import DEFAULT_CREATOR, World

MIB = 1 << 20

GUMLOOP_AGENT = "abc123DEFghiJKL"
GUMLOOP_SESSIONS = ("ses_8h2k4m1n", "ses_3p9q7r2s")
GRACE = {
    "id": "user_7c2d9e",
    "first_name": "Grace",
    "last_name": "Hopper",
    "email": "grace@example.com",
    "profile_picture": None,
}


def seed(world: World) -> None:
    _sigmic(world)
    _gumloop(world)
    _vm0(world)
    _plangrep(world)


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


def _sigmic(world: World) -> None:
    put = world.put_sigmic_file
    put("task_123", "downloads/output.csv", csv_text(30), modified_at="2026-01-26T16:00:00.000Z")
    put(
        "task_123",
        "downloads/report.pdf",
        pdf_bytes("Quarterly report", ["Revenue grew 12% quarter on quarter.", "See output.csv for the data."]),
        modified_at="2026-01-26T16:01:00.000Z",
    )
    put("task_123", "uploads/data.csv", csv_text(60, start=100), modified_at="2026-01-26T15:50:00.000Z")
    put("task_123", "downloads/charts/q4.png", png_bytes(16, 16, 90), modified_at="2026-01-26T16:02:00.000Z")
    put("task_456", "downloads/model.bin", PatternBlob(8 * MIB, seed=456), modified_at="2026-01-27T09:15:00.000Z")
    put(
        "task_456",
        "downloads/notes.md",
        "# Training notes\n\n- 3 epochs, lr 3e-4\n- validation loss 0.412\n",
        modified_at="2026-01-27T09:16:00.000Z",
    )
    put(
        "task_456",
        "code/train.py",
        "import sys\n\n\ndef main() -> int:\n    print('training...')\n    return 0\n\n\nsys.exit(main())\n",
        modified_at="2026-01-27T09:00:00.000Z",
    )


def _gumloop(world: World) -> None:
    first, second = GUMLOOP_SESSIONS
    ada_no_picture = {**DEFAULT_CREATOR, "profile_picture": None}
    # (artifact_id, version_id, created_at, session, filename, content, extra keyword arguments)
    versions: list[tuple[str, str, str, str, str | None, bytes | str, dict[str, Any]]] = [
        ("art_aBcDeF123", "ver_mNo3456", "2026-05-14T10:05:00Z", first, "q4_sales_report.pdf",
         pdf_bytes("Q4 sales report (draft)", ["Draft numbers, not reviewed."]), {}),
        ("art_aBcDeF123", "ver_xYz9012", "2026-05-15T14:32:00Z", first, "q4_sales_report.pdf",
         pdf_bytes("Q4 sales report", ["Total revenue: 1.2M USD", "Top region: north"]), {}),
        ("art_gHiJkL456", "ver_aBc4567", "2026-05-15T14:30:11Z", first, "summary.txt",
         "Q4 revenue grew 12%; north led all regions.\n", {"metadata_size": False, "creator": ada_no_picture}),
        ("art_qRsTuV345", "ver_dEf5678", "2026-05-15T14:35:00Z", first, None,
         json.dumps({"rows": 120, "status": "ok"}, indent=2) + "\n", {"media_type": "application/json"}),
        ("art_pQrStU789", "ver_gHi6789", "2026-05-16T09:00:00Z", second, "chart.png",
         png_bytes(24, 12, 200), {"creator": None}),
        ("art_vWxYz0123", "ver_jKl7890", "2026-05-16T09:05:00Z", second, "report.md",
         "# Report (first run)\n", {"creator": GRACE}),
        ("art_kLmNoP234", "ver_mNo8901", "2026-05-16T09:10:00Z", second, "report.md",
         "# Report (second run)\n\nAll checks passed.\n", {"creator": GRACE}),
    ]  # fmt: skip
    for artifact_id, version_id, created_at, session, filename, content, extra in versions:
        world.put_gumloop_artifact(
            GUMLOOP_AGENT,
            filename,
            content,
            session,
            artifact_id=artifact_id,
            version_id=version_id,
            created_at=created_at,
            **extra,
        )


def _vm0(world: World) -> None:
    world.put_vm0_version(
        "output-results",
        {
            "README.md": "# output-results\n\nFirst run.\n",
            "results/summary.json": json.dumps({"accuracy": 0.91, "samples": 1000}, indent=2) + "\n",
        },
        message="Run output",
        created_at="2024-01-01T00:00:00Z",
    )
    world.put_vm0_version(
        "output-results",
        {
            "README.md": "# output-results\n\nSecond run, with plots.\n",
            "results/summary.json": json.dumps({"accuracy": 0.94, "samples": 1000}, indent=2) + "\n",
            "results/plots/loss.png": png_bytes(32, 16, 30),
            "logs/run.log": "".join(f"epoch {i} loss {1.0 / (i + 1):.4f}\n" for i in range(20)),
        },
        message="Latest output",
        created_at="2024-01-02T00:00:00Z",
    )
    world.put_vm0_version(
        "training-run",
        {
            "checkpoints/model.safetensors": PatternBlob(4 * MIB, seed=7),
            "config.yaml": "model: tiny-transformer\nlayers: 4\nlr: 0.0003\n",
            "metrics.csv": "step,loss\n" + "".join(f"{s},{2.0 / (s + 1):.5f}\n" for s in range(0, 1000, 50)),
        },
        message="Training checkpoint",
        created_at="2024-01-03T12:00:00Z",
    )


def _plangrep(world: World) -> None:
    output = {
        "job_id": "job_01abc123",
        "documents": [{"name": "floor-plan-A.pdf", "rooms": 7, "area_m2": 142.5}],
        "normalized": True,
    }
    world.put_plangrep_job(
        "job_01abc123",
        "completed",
        {
            "results/job_01abc123/normalized-output.json": json.dumps(output, indent=2) + "\n",
            "results/job_01abc123/summary.md": "# Job job_01abc123\n\n1 document, 7 rooms, 142.5 m².\n",
        },
        created_at="2026-03-10T08:00:00Z",
        completed_at="2026-03-10T08:02:30Z",
    )
    world.put_plangrep_job("job_02running", "running", created_at="2026-03-10T09:00:00Z")
    world.put_plangrep_job(
        "job_03failed",
        "failed",
        error="Input document could not be parsed",
        created_at="2026-03-10T09:30:00Z",
        completed_at="2026-03-10T09:30:05Z",
    )
