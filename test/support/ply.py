"""Independent binary PLY reader for tests (written for the tests, not the product's writer)."""

from __future__ import annotations

import numpy as np


def parse_ply(path) -> tuple[list[str], np.ndarray]:
    """Minimal binary little-endian PLY reader written for the test: header lines + structured vertex array."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    types = {"float": "<f4", "uchar": "u1", "double": "<f8", "int": "<i4"}
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    fields = [(line.split()[2], types[line.split()[1]]) for line in header if line.startswith("property")]
    data = np.frombuffer(raw[end:], dtype=np.dtype(fields), count=count)
    assert len(raw) == end + count * np.dtype(fields).itemsize  # nothing trailing
    return header, data
