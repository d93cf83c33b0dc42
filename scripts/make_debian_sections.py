"""Rebuild core/data/resources/debian_sections.jsonl.gz from a Debian ``Packages`` list.

The text task ``debian_sections`` (package short description -> archive section) reads a pinned
snapshot, since apt lists change with every update. This script made it from Debian 12
(bookworm) main amd64 ``Packages`` (sha256 recorded in the file's first line):

    /usr/lib/apt/apt-helper cat-file \\
        /var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4 \\
        > /tmp/Packages
    python scripts/make_debian_sections.py /tmp/Packages
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sys
from pathlib import Path

SECTIONS = (
    "admin",
    "database",
    "editors",
    "electronics",
    "fonts",
    "games",
    "graphics",
    "mail",
    "math",
    "net",
    "science",
    "sound",
    "video",
    "web",
)
PER_SECTION = 250
OUT = Path(__file__).resolve().parents[1] / "core/data/resources/debian_sections.jsonl.gz"


def main(path: str) -> None:
    raw = Path(path).read_bytes()
    by_section: dict[str, dict[str, str]] = {s: {} for s in SECTIONS}
    for stanza in raw.decode("utf-8").split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        sec, desc = fields.get("Section", ""), fields.get("Description", "")
        sec = sec.split("/")[-1]  # contrib/games -> games
        if sec in by_section and desc and desc.lower() not in by_section[sec]:
            by_section[sec][desc.lower()] = fields["Package"]
    rng = random.Random(0)
    rows = []
    for sec in SECTIONS:
        items = sorted((pkg, d) for d, pkg in by_section[sec].items())
        rng.shuffle(items)
        rows += [{"package": p, "section": sec, "text": d} for p, d in items[:PER_SECTION]]
    header = {
        "source": "Debian 12 bookworm main amd64 Packages",
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        f.write((json.dumps(header) + "\n").encode())
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode())
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
