"""``data check``: read a whole dataset and list every problem found, not just the first."""

from __future__ import annotations

from tqdm import tqdm

from humanliff.config import DataConfig
from humanliff.data.files import attempt, read_subject_list
from humanliff.data.loader import load_subject, subject_list_path


def check_dataset(data_cfg: DataConfig, progress: bool = True) -> tuple[list[str], int]:
    """Validate every subject of ``data_cfg.root``; returns ``(problems, number of subjects listed)``.

    Each problem is one line naming the file. Subjects are decoded one at a time, so memory stays at one.
    """
    problems: list[str] = []
    names = attempt(problems, read_subject_list, subject_list_path(data_cfg.root, data_cfg.layout),
                    data_cfg.max_subjects) or []
    for name in tqdm(names, desc="check", unit="subject", disable=not progress, leave=False):
        load_subject(data_cfg, name, problems)
    return problems, len(names)
