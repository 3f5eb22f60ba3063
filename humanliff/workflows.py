"""The commands as Python calls (``humanliff.fit``, ``humanliff.train``, ...): the CLI only parses and calls
these, so Python and the command line behave the same.

Each checks its outputs before any work (``humanliff.run_folder``: not an input, not a foreign folder, the
disk space), and a run folder is held locked while it runs and resumed from its checkpoint. ``config`` is
a ``Config``, a preset name or a YAML file, then ``overrides`` (``section.key=value``). Generation is
``humanliff.Pipeline``; export and ``run`` of engines are ``humanliff.export`` / ``humanliff.Pipeline``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from humanliff.config import Config, load_config
from humanliff.errors import HumanLiffError
from humanliff.run_folder import (
    check_count,
    ensure_space,
    guard_file_output,
    guard_output,
    guard_run_files,
    hold_run_folder,
)
from humanliff.store import parse_triplane_ref

ConfigSource = Config | str | Path | None
"""A ``Config``, a preset name (``demo``) or a YAML file; None: the defaults."""


def _config(config: ConfigSource, overrides: Sequence[str], data: str | Path | None) -> Config:
    cfg = config if isinstance(config, Config) else load_config(config)
    cfg = cfg.with_overrides(overrides)
    return cfg if data is None else dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data)))


def fit(stage: str, out: str | Path, *, config: ConfigSource = None, overrides: Sequence[str] = (),
        data: str | Path | None = None, store: str | Path | None = None, device: str | None = None,
        resume_anyway: bool = False) -> Path:
    """Fit tri-planes to the dataset ``data`` (default ``data.root``) into the run folder ``out``; returns the
    written store (``out/store_a`` or ``out/store_b``).

    ``stage``: ``"a"`` (shared decoder + planes) or ``"b"`` (per-subject planes with the frozen decoder of
    ``store``, default ``out/store_a``). ``config``: a ``Config``, preset name or YAML file, then
    ``overrides`` (``section.key=value``).
    """
    from humanliff.output_sizes import fit_bytes
    from humanliff.training.fit_a import fit_stage_a
    from humanliff.training.fit_b import fit_stage_b

    if stage not in ("a", "b"):
        raise HumanLiffError(f"--stage {stage}: use a or b")
    cfg = _config(config, overrides, data)
    guard_output(out, [cfg.data.root, store], replaced=False)
    ensure_space(out, fit_bytes(cfg, stage))
    with hold_run_folder(out):
        if stage == "a":
            return fit_stage_a(cfg, out, device, resume_anyway=resume_anyway)
        return fit_stage_b(cfg, store or Path(out) / "store_a", out, device, resume_anyway=resume_anyway)


def train(store: str | Path, out: str | Path, *, config: ConfigSource = None,
          overrides: Sequence[str] = (), device: str | None = None, resume_anyway: bool = False) -> Path:
    """Train the layered diffusion UNet on the tri-plane store ``store`` into the run folder ``out`` (resumed
    when it holds a checkpoint); returns ``out/ema.pt``, a source for ``humanliff.Pipeline.from_pretrained``
    (with ``store``)."""
    from humanliff.training.train import train as train_unet

    cfg = _config(config, overrides, None)
    guard_output(out, [store], replaced=False)
    with hold_run_folder(out):
        return train_unet(cfg, store, out, device, resume_anyway=resume_anyway)


def distill(teacher: str | Path, store: str | Path, out: str | Path, *, method: str | None = None,
            steps: int | None = None, overrides: Sequence[str] = (), device: str | None = None,
            teacher_samples: int = 0, resume_anyway: bool = False, max_minutes: float | None = None,
            init: str | Path | None = None) -> Path:
    """Distil the diffusion run ``teacher`` (folder or ``ema.pt``) into a student of ``steps`` UNet calls a
    layer in the run folder ``out``, starting from ``init``'s weights when given (see
    ``humanliff.training.distill.distill``); returns ``out/ema.pt``."""
    from humanliff.training.distill import distill as distill_run

    guard_output(out, [teacher, store, *([init] if init else [])], replaced=False)
    with hold_run_folder(out):
        return distill_run(teacher, store, out, method=method, steps=steps, overrides=tuple(overrides),
                           device=device, teacher_samples=teacher_samples, resume_anyway=resume_anyway,
                           max_seconds=None if max_minutes is None else 60.0 * max_minutes, init=init)


def synth_data(out: str | Path, *, config: ConfigSource = None, overrides: Sequence[str] = (), force: bool = False,
               subjects: int | None = None, views: int | None = None, resolution: int | None = None,
               seed: int | None = None, bodies: str | None = None, reuse: bool = False) -> tuple[Path, bool]:
    """Write synthetic layered humans in the SynBody layout to the dataset folder ``out``; the given values
    replace ``synth.*`` (an existing folder of ours needs ``force``). ``reuse`` keeps ``out`` when it is the
    complete dataset of these settings (an error when it holds another, unless ``force``). Returns ``(the
    dataset folder, whether it was kept)``."""
    from humanliff.config import validate
    from humanliff.data.synth import synthesize_from_config
    from humanliff.output_sizes import dataset_bytes

    cfg = _config(config, overrides, None)
    chosen = {"subjects": subjects, "views": views, "resolution": resolution, "seed": seed, "bodies": bodies}
    synth = dataclasses.replace(cfg.synth, **{k: v for k, v in chosen.items() if v is not None})
    validate(dataclasses.replace(cfg, synth=synth), "--subjects/--views/--resolution")
    if reuse:
        from humanliff.data.synth_record import reusable

        if reusable(out, synth, replace=force):
            return Path(out), True
    guard_output(out, force=force, needed_bytes=dataset_bytes(synth))
    return synthesize_from_config(synth, out), False


def check_data(root: str | Path, *, config: ConfigSource = None, overrides: Sequence[str] = (),
               layout: str | None = None) -> tuple[list[str], int, str]:
    """Validate the dataset ``root`` (``layout``, default ``data.layout``): ``(problems, subjects listed,
    layout)``; no problems means it loads."""
    from humanliff.data.check import check_dataset

    data_cfg = _config(config, overrides, root).data
    data_cfg = dataclasses.replace(data_cfg, layout=layout or data_cfg.layout)
    problems, n_subjects = check_dataset(data_cfg)
    return problems, n_subjects, data_cfg.layout


def preview_data(root: str | Path, out: str | Path, *, config: ConfigSource = None, overrides: Sequence[str] = (),
                 layout: str | None = None, views: int = 3, subjects: int = 8, tile: int = 96) -> Path:
    """Write a contact sheet PNG ``out`` of the dataset ``root``: ``subjects`` rows, layers x ``views``
    columns, ``tile`` px squares."""
    from humanliff.data.preview import contact_sheet

    guard_file_output(out, [root])
    data_cfg = _config(config, overrides, root).data
    return contact_sheet(dataclasses.replace(data_cfg, layout=layout or data_cfg.layout), out, views, subjects,
                         tile)


def render(ref: str, out: str | Path, *, config: ConfigSource = None, overrides: Sequence[str] = (),
           cameras: str | Path | None = None, camera_ids: str | None = None, views: int | None = None,
           size: int | None = None, device: str | None = None) -> Path:
    """Render the stored tri-plane ``STORE:SUBJECT:LAYER`` to ``out`` (PNG: views tiled; GIF / MP4: a frame a
    view) from the cameras of a ``cameras.json`` (``camera_ids`` e.g. ``"0,8,16"``) or ``views`` orbiting
    ones (default ``sample.turntable_frames``) of ``size`` px (default ``sample.image_size``)."""
    from humanliff.evaluation.recon import read_camera_file, render_triplane
    from humanliff.runtime.compute import default_device

    check_count("--views", views)
    check_count("--size", size, 8)
    guard_file_output(out, [parse_triplane_ref(ref).store, cameras])
    chosen = read_camera_file(cameras, camera_ids) if cameras else None
    return render_triplane(_config(config, overrides, None), ref, out, chosen, views or 0, size or 0,
                           device=default_device(device))


def eval_recon(store: str | Path, out: str | Path, *, config: ConfigSource = None, overrides: Sequence[str] = (),
               subjects: Sequence[str] = (), max_views: int = 0, device: str | None = None) -> dict:
    """PSNR / SSIM per layer of ``store``'s tri-planes on held-out views of ``data.root`` (``subjects``: the
    names, default all shared; ``max_views`` a subject and layer, 0: all); writes the run folder ``out``."""
    from humanliff.evaluation.recon import RECON_FILES, evaluate_recon
    from humanliff.runtime.compute import default_device

    check_count("--max-views", max_views, 0)
    cfg = _config(config, overrides, None)
    guard_output(out, [store, cfg.data.root], replaced=False)
    guard_run_files(out, RECON_FILES)
    with hold_run_folder(out):
        return evaluate_recon(cfg, store, out, subjects, max_views, default_device(device))


def eval_gen(generated: str | Path, store: str | Path, out: str | Path, *, config: ConfigSource = None,
             overrides: Sequence[str] = (), inception: str | Path | None = None, views: int = 4, size: int = 64,
             device: str | None = None) -> dict:
    """Generation quality per layer of the folder ``generated`` against ``store`` (see
    ``humanliff.evaluation.generation``), rendered with ``render.*``; writes the run folder ``out``."""
    from humanliff.evaluation.generation import GENERATION_FILES, evaluate_generation

    cfg = _config(config, overrides, None)
    guard_output(out, [generated, store, inception], replaced=False)
    guard_run_files(out, GENERATION_FILES)
    with hold_run_folder(out):
        return evaluate_generation(generated, store, out, render_cfg=cfg.render, inception=inception, views=views,
                                   size=size, device=device)


def import_store(stage_a: str | Path, out: str | Path, stage_b: Sequence[str | Path] = (), *,
                 config: ConfigSource = None, overrides: Sequence[str] = (), force: bool = False) -> Path:
    """Write a store ``out`` from the original code's stage-A ``NNNNNN.tar`` and stage-B
    ``<subject>_NNNNNN.tar`` files; subject names and boxes come from ``data.root``."""
    from humanliff.training.import_original import dataset_bounds, import_original

    cfg = _config(config, overrides, None)
    guard_output(out, [stage_a, *stage_b, cfg.data.root], force=force)
    subjects, bounds = dataset_bounds(cfg.data)
    return import_original(stage_a, out, subjects, bounds, cfg, stage_b)


def pack(unet: str | Path, store: str | Path, out: str | Path, *, subjects: int = 4, force: bool = False) -> Path:
    """Write a packed model folder ``out`` (fp16 EMA weights, the decoder and the first ``subjects`` of
    ``store``), a source for ``humanliff.Pipeline.from_pretrained``."""
    from humanliff.pretrained import pack_model

    check_count("--subjects", subjects)
    guard_output(out, [unet, store], force=force)
    return pack_model(unet, store, out, subjects)


def demo_preset(preset: ConfigSource, device: str | None) -> Config | str | Path:
    """``preset`` when given, else ``demo_gpu`` when ``device`` (default: any) is CUDA and available, else
    ``demo``."""
    if preset is not None:
        return preset
    import torch

    gpu = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    return "demo_gpu" if gpu else "demo"


def demo(out: str | Path = "demo_out", *, config: ConfigSource = None, overrides: Sequence[str] = (),
         device: str | None = None) -> dict:
    """The whole pipeline on built-in synthetic humans into ``out`` (resumed, never replaced); the config
    is ``demo_preset(config, device)``. Returns the summary of ``humanliff.demo.run_demo``."""
    from humanliff.demo import run_demo

    cfg = _config(demo_preset(config, device), overrides, None)
    guard_output(out, replaced=False)
    with hold_run_folder(out):
        return run_demo(cfg, out, device)
