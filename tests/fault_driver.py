"""Run ``humanliff`` commands in forked children, each optionally killed by ``HUMANLIFF_FAULT``.

Usage: ``python fault_driver.py JOBS.json`` where the file holds ``[{"args": [...], "fault": "point:k"
or null, "abort": "module:function" (optional: that function calls abort(), as a crashing C++ library
would)}, ...]``. Torch and the CLI are imported once here; every job runs in a fresh fork, in order.
Prints one JSON list: per job ``{"exit": code}`` or ``{"signal": number}``.
"""

import importlib
import json
import os
import sys

import torch

import humanliff.generate  # noqa: F401  (imported before forking, so that each child starts at once)
import humanliff.training.fit_a  # noqa: F401
import humanliff.training.fit_b  # noqa: F401
import humanliff.training.train  # noqa: F401
from humanliff.cli import app
from humanliff.io import FAULT_ENV


def run_job(args: list[str], fault: str | None, abort: str | None = None) -> dict[str, int]:
    """Fork, run the command in the child (killed at ``fault``, aborted in ``abort``), wait; the child's
    exit code or signal."""
    pid = os.fork()
    if pid == 0:
        os.environ.pop(FAULT_ENV, None)
        if fault:
            os.environ[FAULT_ENV] = fault
        if abort:
            module, name = abort.split(":")
            setattr(importlib.import_module(module), name, lambda *_, **__: os.abort())
        code = 0
        try:
            app.main(args, prog_name="humanliff", standalone_mode=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            code = 2
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"exit": os.WEXITSTATUS(status)}


def main() -> None:
    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    results = [run_job(job["args"], job.get("fault"), job.get("abort")) for job in jobs]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
