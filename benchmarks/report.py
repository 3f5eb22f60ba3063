"""Benchmark results: rows of (section, name, value, unit, baseline, ratio), written as JSON and Markdown."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class Row:
    """One measured figure; ``baseline`` is the figure it is compared with (the original path's unless the row
    names another), if any."""

    section: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (for ``ms``/``s``/``MB`` units lower is better)."""
        if self.baseline is None or not self.value or not self.baseline:
            return None
        lower_is_better = self.unit in ("ms", "s", "min", "MB")
        return self.baseline / self.value if lower_is_better else self.value / self.baseline


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("HUMANLIFF_COMMIT", "unknown")


@dataclass
class Report:
    """Collects rows and rewrites ``<stem>.json`` / ``<stem>.md`` in every output folder after each row."""

    device: str
    out_dirs: list[Path]
    rows: list[Row] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        date = datetime.date.today().isoformat()
        slug = "".join(c if c.isalnum() else "-" for c in self.device).strip("-").lower()
        self.stem = f"{date}-{slug}"
        self.meta = {"device": self.device, "date": date, "commit": os.environ.get("HUMANLIFF_COMMIT", _commit()),
                     "torch": torch.__version__, "python": platform.python_version(), **self.meta}

    def add(self, section: str, name: str, value: float, unit: str, baseline: float | None = None,
            note: str = "") -> None:
        row = Row(section, name, float(value), unit, None if baseline is None else float(baseline), note)
        self.rows.append(row)
        ratio = f"  ({row.ratio:.2f}x vs baseline)" if row.ratio else ""
        print(f"[{section}] {name}: {value:.4g} {unit}{ratio} {note}", flush=True)
        self.write()

    def error(self, section: str, message: str) -> None:
        self.errors[section] = message
        print(f"[{section}] FAILED: {message}", flush=True)
        self.write()

    def markdown(self) -> str:
        m = self.meta
        lines = [f"# Benchmark: {m['device']}", "",
                 f"date {m['date']}, commit {m['commit']}, torch {m['torch']}, python {m['python']}", "",
                 "| section | measurement | ours | unit | baseline (original path unless named) | ratio | note |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            base = "" if r.baseline is None else f"{r.baseline:.4g}"
            ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
            lines.append(f"| {r.section} | {r.name} | {r.value:.4g} | {r.unit} | {base} | {ratio} | {r.note} |")
        for section, message in self.errors.items():
            lines.append(f"| {section} | failed | | | | | {message} |")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        payload = {"meta": self.meta, "rows": [asdict(r) | {"ratio": r.ratio} for r in self.rows],
                   "errors": self.errors}
        for out in self.out_dirs:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{self.stem}.json").write_text(json.dumps(payload, indent=1))
            (out / f"{self.stem}.md").write_text(self.markdown())
