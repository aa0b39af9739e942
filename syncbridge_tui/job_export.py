"""A view's jobs written to a CSV or JSON file (the console's export, key x)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from core import reads
from core.db import Database
from core.records import Job

EXPORT_PAGE, EXPORT_CAP = 1000, 1_000_000


def export_jobs(db: Database, flt: reads.JobFilter, sort: str, path: Path) -> int:
    """Every job matching the view, streamed page by page (never all in memory)."""
    as_json = path.suffix.lower() == ".json"
    n = 0
    fields = list(Job.__dataclass_fields__)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = None if as_json else csv.DictWriter(out, fieldnames=fields)
        if writer is not None:
            writer.writeheader()
        else:
            out.write("[\n")
        while n < EXPORT_CAP:
            page = reads.list_jobs(db, flt, limit=EXPORT_PAGE, offset=n, sort=sort)
            for job in page:
                row = job.to_dict()
                if writer is not None:
                    writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v
                                     for k, v in row.items()})
                else:
                    out.write((",\n" if n else "") + json.dumps(row, ensure_ascii=False))
                n += 1
            if len(page) < EXPORT_PAGE:
                break
        if writer is None:
            out.write("\n]\n")
    return n
