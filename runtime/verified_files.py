"""Artifact files whose sha256 was checked once, so that later loads of the same files only ``stat`` them.

The record, ``verified-artifacts.json`` in the cache folder (``humanliff.runtime.formats.base.cache_dir``),
maps a file's absolute path to its identity when it matched its manifest's digest: device, inode, size,
modification and status-change times in ns, and the digest. Any write to the file, a copy, a move or a
reset of its modification time changes that identity (the status-change time cannot be set back), so the
file is hashed again. At the original size the UNet's files are about 1 GB, whose hashing took 1.2 s on a
2-core CPU (2026-12-03).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from humanliff.runtime.formats.base import cache_dir
from humanliff.runtime.manifest import check_files

RECORD_NAME = "verified-artifacts.json"
MAX_ENTRIES = 512
"""Files remembered; the oldest entries are dropped beyond it."""
_LOCK = threading.Lock()


def _identity(path: Path, digest: str) -> list[Any]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest]


def _read(record: Path) -> dict[str, list[Any]]:
    try:
        entries = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write(record: Path, entries: dict[str, list[Any]]) -> None:
    """Replace the record atomically; a cache that cannot be written is only a slower next load."""
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(dict(list(entries.items())[-MAX_ENTRIES:])))
        os.replace(tmp, record)
    except OSError:
        pass


def verified_files(artifacts_dir: str | Path, artifact: Mapping[str, Any]) -> list[Path]:
    """``check_files`` (every file present and matching its recorded sha256; the paths), skipping the hash of
    a file whose identity is unchanged since it last matched the same digest."""
    paths = [Path(artifacts_dir) / name for name in artifact["files"]]
    digests = list(artifact["files"].values())
    record = cache_dir() / RECORD_NAME
    try:
        before = [_identity(p, d) for p, d in zip(paths, digests, strict=True)]
    except OSError:
        before = None  # a missing file: check_files names it
    if before is not None:
        with _LOCK:
            known = _read(record)
        if all(known.get(str(p.resolve())) == i for p, i in zip(paths, before, strict=True)):
            return paths
    paths = check_files(artifacts_dir, artifact)
    after = [_identity(p, d) for p, d in zip(paths, digests, strict=True)]
    if before == after:  # not written to while it was hashed
        _remember(record, list(zip(paths, after, strict=True)))
    return paths


def _remember(record: Path, identities: list[tuple[Path, list[Any]]]) -> None:
    with _LOCK:
        entries = _read(record)
        for path, identity in identities:
            key = str(path.resolve())
            entries.pop(key, None)
            entries[key] = identity
        _write(record, entries)


def remember_written(artifacts_dir: str | Path, manifest: Mapping[str, Any]) -> None:
    """Record every artifact file of ``manifest`` (just written to ``artifacts_dir`` by an export, which
    hashed each file as it wrote it) with its digest, so that the first load skips the hashing too."""
    identities = []
    for network in manifest["networks"].values():
        for artifact in network["artifacts"].values():
            for name, digest in artifact.get("files", {}).items():
                path = Path(artifacts_dir) / name
                identities.append((path, _identity(path, digest)))
    _remember(cache_dir() / RECORD_NAME, identities)
