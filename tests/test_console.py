"""The command line's stderr: plain progress lines when it is not a terminal, errors on a fresh line."""

import io
import logging
import os
import warnings

from tqdm import tqdm

from humanliff.console import ConsoleStream, setup_console


def test_progress_bars_write_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    stream = ConsoleStream(out, plain=True)
    for _ in tqdm(range(3), desc="sampling", file=stream, mininterval=0, ncols=60):
        pass
    stream.write("\x1b[A\rlayers: 1/4\n")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("sampling:   0%") and lines[-2].startswith("sampling: 100%")
    assert lines[-1] == "layers: 1/4" and all(line.strip() for line in lines)
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue() and stream.fresh
    terminal = ConsoleStream(io.StringIO(), plain=False)
    terminal.write("\rsampling 50%")
    assert not terminal.fresh and terminal.getvalue() == "\rsampling 50%"


def test_setup_silences_torchvision_lines_and_future_warnings(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.setattr(logging.root, "handlers", [])
    stream = setup_console(io.StringIO(), verbose=False)
    assert stream.plain and os.environ["TQDM_MININTERVAL"] == "10"  # a StringIO is not a terminal
    assert logging.getLogger("torch.onnx._internal.exporter._registration").level == logging.ERROR
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit("old", FutureWarning, "x.py", 1, module="torch.onnx")
        warnings.warn_explicit("ours", FutureWarning, "y.py", 1, module="humanliff.cli")
    assert [str(w.message) for w in caught] == ["ours"]
