"""``synth.json``: the settings a synthetic dataset was written with, and whether a folder holds that dataset.

``data synth --reuse`` keeps a dataset (synthesized elsewhere, e.g. where anny is installed, and carried)
only when its record equals the requested settings and every subject reads back whole.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from humanliff.config import DataConfig, SynthConfig
from humanliff.data.files import attempt, read_subject_list
from humanliff.data.loader import load_subject, subject_list_path
from humanliff.errors import HumanLiffError

RECORD_FILE = "synth.json"


def write_synth_record(root: str | Path, cfg: SynthConfig) -> None:
    """Write ``cfg`` (subjects, views, resolution in px, seed, bodies) as ``<root>/synth.json``."""
    (Path(root) / RECORD_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=1, sort_keys=True) + "\n")


def read_synth_record(root: str | Path) -> dict | None:
    """The settings in ``<root>/synth.json``; None when it is missing or not a JSON object."""
    path = Path(root) / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def reuse_problems(root: str | Path, cfg: SynthConfig) -> list[str]:
    """Why ``root`` is not the complete dataset that ``cfg`` describes; empty when it is.

    Checks ``synth.json`` against ``cfg``, then reads every listed subject as ``data check`` does and
    checks it has ``cfg.views`` views of ``cfg.resolution`` px (a partial copy lacks some).
    """
    root = Path(root)
    record, wanted = read_synth_record(root), dataclasses.asdict(cfg)
    if record is None:
        return [f"{root / RECORD_FILE}: missing or unreadable (not a dataset of `data synth`)"]
    differ = [f"{key} {record.get(key)!r} (wanted {value!r})" for key, value in wanted.items()
              if record.get(key) != value]
    if differ:
        return [f"{root / RECORD_FILE}: written with other settings: {', '.join(differ)}"]
    problems: list[str] = []
    data_cfg = DataConfig(root=str(root), layout="synbody")
    names = attempt(problems, read_subject_list, subject_list_path(root, "synbody")) or []
    if names and len(names) != cfg.subjects:
        problems.append(f"{root / 'human_list.txt'}: lists {len(names)} subjects (wanted {cfg.subjects})")
    for name in names:
        subject = load_subject(data_cfg, name, problems)
        if subject is None:
            continue
        if len(subject.view_ids) != cfg.views or subject.image_size != (cfg.resolution, cfg.resolution):
            problems.append(f"{root / name}: {len(subject.view_ids)} views of {subject.image_size[1]}x"
                            f"{subject.image_size[0]} px (wanted {cfg.views} of {cfg.resolution}x{cfg.resolution})")
    return problems


def reusable(root: str | Path, cfg: SynthConfig, replace: bool = False) -> bool:
    """True when ``root`` is the complete dataset of ``cfg``; False when it is absent, or holds another and
    ``replace`` is set; otherwise a one-line ``HumanLiffError`` naming the first problem."""
    if not Path(root).exists():
        return False
    problems = reuse_problems(root, cfg)
    if problems and not replace:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise HumanLiffError(f"--reuse: {problems[0]}{more}; remove it, or add --force to replace it")
    return not problems
