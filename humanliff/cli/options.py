"""What every command shares: clean one-line errors, ``--config`` / ``--set``, the common options and the
choices that come from the registries (read without torch, so that ``humanliff --help`` stays fast)."""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from humanliff.config import LIMITS, Config, load_config, preset_names
from humanliff.console import ConsoleStream
from humanliff.errors import HumanLiffError
from humanliff.run_folder import check_count, check_device
from humanliff.runtime.sampler_names import ETA_SAMPLERS, SAMPLER_NAMES, SCHEDULED

LAYOUT_NAMES = LIMITS["data"]["layout"].choices
"""``--layout`` choices: the keys of ``humanliff.data.loader.LAYOUTS`` (kept in the config so that the CLI
imports no data code; a test checks the two agree)."""
FORMAT_NAMES = ("tensorrt", "aoti", "torchscript", "onnx", "ep")
"""Engine formats in preference order: ``humanliff.runtime.formats.PREFERENCE`` (a test checks them)."""
DISTILL_METHODS = LIMITS["distill"]["method"].choices
"""``distill --method`` choices: the keys of ``humanliff.training.distill.METHODS`` (a test checks them)."""
UNET_LAYOUTS = ("parts", "whole", "both")
"""``export --unet-layout`` choices: ``humanliff.export.artifacts.UNET_LAYOUTS`` (a test checks them)."""
__all__ = ["DISTILL_METHODS", "FORMAT_NAMES", "LAYOUT_NAMES", "SAMPLER_NAMES", "UNET_LAYOUTS"]

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
"""OSErrors reported as one line (the temporary output is already removed by ``atomic_path``)."""


def _error(message: str) -> None:
    """Close any progress bar, print ``error: message`` at the start of a line, exit with code 1."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    fresh = not isinstance(sys.stderr, ConsoleStream) or sys.stderr.fresh
    click.echo(("" if fresh else "\n") + f"error: {message}", err=True)
    sys.exit(1)


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Import modules (torch, the pipeline) with the cyclic garbage collector paused, then, when some were
    new, freeze every object so far (``gc.freeze``): an import's objects live as long as the process, and
    otherwise each full collection, while importing, while running and once more at exit, scans all of
    torch's again (0.9 s of a small ``humanliff run`` on a CPU)."""
    if not gc.isenabled():
        yield
        return
    loaded = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > loaded:
            gc.freeze()
        gc.enable()


def _fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Check ``--device``, turn a ``HumanLiffError`` (or a full disk) into one ``error:`` line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with frozen_imports():  # torch's, for a --device
                check_device(kwargs.get("device"))
            return fn(*args, **kwargs)
        except HumanLiffError as exc:
            _error(str(exc))
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:
                raise
            _error(f"{exc.filename or 'output'}: {exc.strerror}")

    return wrapper


def command(name: str, group: click.Group | None = None) -> Callable[..., click.Command]:
    """``group.command(name)`` (no group: ``click.command``, listed in ``humanliff.cli.app.COMMANDS``) with
    clean one-line errors."""

    def decorate(fn: Callable[..., Any]) -> click.Command:
        return (group.command if group is not None else click.command)(name)(_fail_cleanly(fn))

    return decorate


force_option = click.option("--force", is_flag=True,
                            help="Replace --out when it exists (only a folder written by humanliff).")
device_option = click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
resume_option = click.option("--resume-anyway", is_flag=True,
                             help="Resume a checkpoint written with other settings (seed, batch, lr, ...).")


def set_option(help: str) -> Callable[..., Any]:
    """Repeated ``--set SECTION.KEY=VALUE`` into ``overrides`` (for commands whose config is not a preset)."""
    return click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help=help)


def config_options(example: str, *, resolve: bool = True) -> Callable[..., Any]:
    """Add ``--config`` and ``--set`` (help with ``example``, an override that belongs to the command); the
    command receives ``cfg: Config``, or with ``resolve=False`` the raw ``preset`` and ``overrides``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--config", "preset", default=None, metavar="PRESET|FILE",
                      help=f"Preset name ({', '.join(preset_names())}) or a YAML file.")
        @set_option(f"Override one config value; repeatable (e.g. --set {example}).")
        @functools.wraps(fn)
        def wrapper(*args: Any, preset: str | None, overrides: tuple[str, ...], **kwargs: Any) -> Any:
            if not resolve:
                return fn(*args, preset=preset, overrides=overrides, **kwargs)
            return fn(*args, cfg=load_config(preset, overrides), **kwargs)

        return wrapper

    return decorate


def as_overrides(values: dict[str, Any]) -> list[str]:
    """Options that stand for config keys (``{"sample.views": 2}``) as ``--set`` strings (None: not given)."""
    return [f"{key}={value}" for key, value in values.items() if value is not None]


def views_size_options(views_help: str, size_help: str, views: int | None = None,
                       size: int | None = None) -> Callable[..., Any]:
    """``--views`` and ``--size`` (image side in pixels), each with its help and default (None: the config's)."""
    shown = {"show_default": True} if views is not None else {}
    options = [click.option("--views", type=int, default=views, help=views_help, **shown),
               click.option("--size", type=int, default=size, help=size_help, **shown)]
    return _stack(options)


def _stack(options: list[Callable[..., Any]]) -> Callable[..., Any]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def generation_options(out_dir: str) -> Callable[..., Any]:
    """The options ``generate`` and ``run`` share, with the same names, forms and defaults (``--out``: the
    command's own folder, so that the two never replace each other's). ``--sampler``'s choices are the
    sampler registry's (``humanliff.runtime.sampler_names``)."""
    return _stack([
        click.option("--out", "out_dir", default=out_dir, show_default=True, metavar="DIR",
                     help="Output folder (written when complete; an existing one needs --force)."),
        force_option,
        click.option("--humans", type=int, default=None, help="Humans to generate (default: sample.batch)."),
        click.option("--layers", "layer_spec", default=None, metavar="LO-HI",
                     help="Layers to generate, e.g. 0-3 or 0-1 (default: all; above --from's layer)."),
        click.option("--sampler", type=click.Choice(SAMPLER_NAMES), default=None,
                     help=f"Sampler (default: sample.sampler; {', '.join(ETA_SAMPLERS)} takes --set sample.eta)."),
        click.option("--steps", type=int, default=None, help="Sampling steps per layer (default: sample.steps)."),
        click.option("--seed", type=int, default=None, help="Human i uses seed + i (default: sample.seed, 0)."),
        views_size_options("Views per human and layer (default: sample.views).",
                           "Image side in pixels (default: sample.image_size)."),
        device_option,
    ])


def asks_for_student(sampler: str | None, overrides: tuple[str, ...]) -> bool:
    """Whether ``--sampler`` (or else ``sample.sampler`` after the ``--set`` overrides, read as the config reads
    them) is a distilled student's sampler: without a model given, ``generate`` and ``run`` then use the
    default model's shipped student."""
    return (sampler or Config().with_overrides(overrides).sample.sampler) in SCHEDULED


def check_generation_counts(humans: int | None, steps: int | None, views: int | None, size: int | None) -> None:
    """Refuse counts below 1 (``--size`` below 8) before any model is loaded."""
    check_count("--humans", humans)
    check_count("--steps", steps)
    check_count("--views", views)
    check_count("--size", size, 8)
