"""The ``humanliff`` command line: thin click commands that build a config and call the library.

Every command takes ``--config PRESET|FILE`` and repeated ``--set section.key=value``; the precedence
is defaults < preset YAML < ``--set`` < the command's own options. Errors caused by the input are
printed as one line (``error: <file>: <problem>``) with exit code 1 and no traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from humanliff.config import Config, load_config
from humanliff.errors import HumanLiffError


def _fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``HumanLiffError`` into one ``error:`` line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HumanLiffError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config`` and ``--set`` to a command; the command receives ``cfg: Config``."""

    @click.option("--config", "preset", default=None, metavar="PRESET|FILE",
                  help="Preset name (synbody, tightcap, demo, tiny) or a YAML file.")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override one config value; repeatable (e.g. --set fit.iterations_b=500).")
    @functools.wraps(fn)
    def wrapper(*args: Any, preset: str | None, overrides: tuple[str, ...], **kwargs: Any) -> Any:
        cfg: Config = load_config(preset, overrides)
        return fn(*args, cfg=cfg, **kwargs)

    return wrapper


def command(group: click.Group, name: str | None = None, **kwargs: Any) -> Callable[..., Any]:
    """``group.command`` with clean one-line errors."""

    def decorate(fn: Callable[..., Any]) -> Any:
        return group.command(name, **kwargs)(_fail_cleanly(fn))

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="humanliff")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def app(verbose: bool) -> None:
    """HumanLiff: layer-wise 3D human generation with tri-plane diffusion.

    \b
    Pipeline:  data synth -> fit --stage a -> fit --stage b -> train -> generate
    Deploy:    export -> run   (ONNX / AOTInductor / TensorRT engines, no training code)
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")


@app.group()
def data() -> None:
    """Create, check and preview multi-view layered datasets."""


@app.group("eval")
def eval_group() -> None:
    """Evaluate reconstructions and generations."""


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
