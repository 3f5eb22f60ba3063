"""The ``humanliff`` command line: thin click commands that build a config and call the library.

Every command takes ``--config PRESET|FILE`` and repeated ``--set section.key=value``; the precedence
is defaults < preset YAML < ``--set`` < the command's own options. Errors caused by the input are
printed as one line (``error: <file>: <problem>``) with exit code 1 and no traceback.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from humanliff.config import LIMITS, SYNTH_BODIES, Config, load_config, preset_names
from humanliff.console import ConsoleStream, setup_console
from humanliff.errors import HumanLiffError
from humanliff.run_folder import check_count, check_device, guard_file_output, guard_output, hold_run_folder

LAYOUT_NAMES = LIMITS["data"]["layout"].choices
"""``--layout`` choices: the keys of ``humanliff.data.loader.LAYOUTS`` (kept in the config so that the CLI
imports no data code; a test checks the two agree)."""
SAMPLER_NAMES = LIMITS["sample"]["sampler"].choices
"""``--sampler`` choices: the keys of ``humanliff.runtime.sampling.SAMPLERS`` (kept in the config so that
the CLI imports without torch; a test checks the two agree)."""
FORMAT_NAMES = ("tensorrt", "aoti", "torchscript", "onnx", "ep")
"""Engine formats in preference order: ``humanliff.runtime.formats.PREFERENCE`` (a test checks them)."""
DISTILL_METHODS = LIMITS["distill"]["method"].choices
"""``distill --method`` choices: the keys of ``humanliff.training.distill.METHODS`` (a test checks them)."""
UNET_LAYOUTS = ("parts", "whole", "both")
"""``export --unet-layout`` choices: ``humanliff.export.artifacts.UNET_LAYOUTS`` (a test checks them)."""


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


def _fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Check ``--device``, turn a ``HumanLiffError`` (or a full disk) into one ``error:`` line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_device(kwargs.get("device"))
            return fn(*args, **kwargs)
        except HumanLiffError as exc:
            _error(str(exc))
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:
                raise
            _error(f"{exc.filename or 'output'}: {exc.strerror}")

    return wrapper


force_option = click.option("--force", is_flag=True,
                            help="Replace --out when it exists (only a folder written by humanliff).")


def config_options(example: str, *, resolve: bool = True) -> Callable[..., Any]:
    """Add ``--config`` and ``--set`` (help with ``example``, an override that belongs to the command); the
    command receives ``cfg: Config``, or with ``resolve=False`` the raw ``preset`` and ``overrides``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--config", "preset", default=None, metavar="PRESET|FILE",
                      help=f"Preset name ({', '.join(preset_names())}) or a YAML file.")
        @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                      help=f"Override one config value; repeatable (e.g. --set {example}).")
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
    Few-step:  train -> distill -> generate --sampler distilled
    Deploy:    export -> run   (ONNX / AOTInductor / TensorRT engines, no training code)
    """
    sys.stderr = setup_console(sys.stderr, verbose)


@app.group()
def data() -> None:
    """Create, check and preview multi-view layered datasets."""


@app.group("eval")
def eval_group() -> None:
    """Evaluate reconstructions (recon: PSNR / SSIM on held-out views) and generations (gen: FID / KID,
    tri-plane Frechet distance, precision / recall, containment, identity drift, haze)."""


def generation_options(out_dir: str) -> Callable[..., Any]:
    """The options ``generate`` and ``run`` share, with the same names, forms and defaults (``--out``: the
    command's own folder, so that the two never replace each other's)."""
    options = [
        click.option("--out", "out_dir", default=out_dir, show_default=True, metavar="DIR",
                     help="Output folder (written when complete; an existing one needs --force)."),
        force_option,
        click.option("--humans", type=int, default=None, help="Humans to generate (default: sample.batch)."),
        click.option("--layers", "layer_spec", default=None, metavar="LO-HI",
                     help="Layers to generate, e.g. 0-3 or 0-1 (default: all; above --from's layer)."),
        click.option("--sampler", type=click.Choice(SAMPLER_NAMES), default=None,
                     help="Sampler (default: sample.sampler)."),
        click.option("--steps", type=int, default=None, help="Sampling steps per layer (default: sample.steps)."),
        click.option("--seed", type=int, default=None, help="Human i uses seed + i (default: sample.seed, 0)."),
        click.option("--views", type=int, default=None, help="Views per human and layer (default: sample.views)."),
        click.option("--size", type=int, default=None, help="Image side in pixels (default: sample.image_size)."),
        click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)."),
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _check_generation_counts(humans: int | None, steps: int | None, views: int | None, size: int | None) -> None:
    check_count("--humans", humans)
    check_count("--steps", steps)
    check_count("--views", views)
    check_count("--size", size, 8)


@command(app, "generate")
@click.option("--unet", "unet_ckpt", default=None, metavar="CKPT",
              help="A training run's ema.pt, its run folder or a packed model folder (default: the shipped "
                   "model in humanliff/assets/default, with its own settings).")
@click.option("--store", default=None, metavar="STORE",
              help="Tri-plane store the UNet was trained on: its decoder renders, its first subject's box frames "
                   "the humans (not needed for the shipped or a packed model).")
@config_options("sample.mesh_level=10", resolve=False)
@generation_options("generated")
@click.option("--from", "from_spec", default=None, metavar="STORE:SUBJECT:LAYER",
              help="Keep a fitted layer fixed (e.g. a body) and generate the layers above it.")
@click.option("--batch", "batch", type=int, default=None, hidden=True, help="Deprecated: --humans.")
def generate_command(unet_ckpt: str | None, store: str | None, preset: str | None, overrides: tuple[str, ...],
                     out_dir: str, force: bool, humans: int | None, layer_spec: str | None,
                     sampler: str | None, steps: int | None, seed: int | None, views: int | None,
                     size: int | None, device: str | None, from_spec: str | None, batch: int | None) -> None:
    """Generate layered humans with the torch models: layer 0 from noise, each next layer conditioned on the
    one below.

    Without --unet and --store the shipped default model is used. The settings are the model's own (the
    config its training recorded) unless --config is given, then --set, then the options. Writes the
    tri-planes, views, a contact sheet, turntables, meshes and viewer.html to --out.
    """
    from humanliff.pipeline import Pipeline, parse_from, resolve_layers

    if batch is not None:
        click.echo("warning: --batch is deprecated, use --humans", err=True)
    pipe = Pipeline.from_pretrained(unet_ckpt, store=store, device=device, config=preset,
                                    overrides=[*overrides, *as_overrides({"sample.views": views,
                                                                          "sample.image_size": size})])
    humans = humans if humans is not None else batch
    _check_generation_counts(humans, steps, views, size)
    start = parse_from(from_spec) if from_spec else None
    layers = resolve_layers(layer_spec, start)
    out = pipe.check_output(out_dir, humans, force=force, inputs=[start and start.store])
    result = pipe(humans, layers, sampler=sampler, steps=steps, seed=seed, start=start, progress=True)
    paths = result.save(out, force=force, progress=True)
    click.echo(f"wrote {paths['folder']} (contact sheet: {paths['contact_sheet']}; viewer: {paths['viewer']})")


@command(app, "distill")
@click.option("--teacher", required=True, metavar="RUN_OR_EMA", help="The diffusion run (folder or its ema.pt).")
@click.option("--store", required=True, metavar="STORE", help="The teacher's tri-plane store (from fit).")
@click.option("--out", "run_dir", required=True, metavar="RUN_DIR",
              help="Student run folder (config.yaml, checkpoint.pt, ema.pt); resumes when it holds checkpoint.pt.")
@click.option("--steps", type=int, default=None,
              help="UNet calls per layer of the student (default: distill.steps, 4).")
@click.option("--method", type=click.Choice(DISTILL_METHODS), default=None,
              help="Distillation method (default: distill.method).")
@click.option("--teacher-samples", type=int, default=0, show_default=True,
              help="Distil on this many humans sampled by the teacher (0: on the store's pairs).")
@click.option("--max-minutes", type=float, default=None, help="Stop early, with a checkpoint, after this long.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override the teacher's config or the distillation's (e.g. --set train.steps=4000).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu).")
@click.option("--resume-anyway", is_flag=True,
              help="Resume a checkpoint written with other training settings (seed, batch, lr, ...).")
def distill_command(teacher: str, store: str, run_dir: str, steps: int | None, method: str | None,
                    teacher_samples: int, max_minutes: float | None, overrides: tuple[str, ...], device: str | None,
                    resume_anyway: bool) -> None:
    """Distil a diffusion run into a student that samples each layer in --steps calls (sampler 'distilled')."""
    from humanliff.training.distill import distill

    guard_output(run_dir, [teacher, store], replaced=False)
    with hold_run_folder(run_dir):
        path = distill(teacher, store, run_dir, method=method, steps=steps, overrides=overrides, device=device,
                       teacher_samples=teacher_samples, resume_anyway=resume_anyway,
                       max_seconds=None if max_minutes is None else 60.0 * max_minutes)
    click.echo(f"wrote {path}")


@command(app, "train")
@config_options("train.steps=1000")
@click.option("--store", required=True, metavar="STORE", help="Tri-plane store folder (from fit).")
@click.option("--out", "run_dir", required=True, metavar="RUN_DIR",
              help="Run folder (config.yaml, checkpoint.pt, ema.pt); resumes when it holds checkpoint.pt.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu).")
@click.option("--resume-anyway", is_flag=True,
              help="Resume a checkpoint written with other training settings (seed, batch, lr, ...).")
def train_command(cfg: Config, store: str, run_dir: str, device: str | None, resume_anyway: bool) -> None:
    """Train the layered diffusion UNet on a tri-plane store (under torchrun: one process per GPU)."""
    from humanliff.workflows import train

    click.echo(f"wrote {train(store, run_dir, config=cfg, device=device, resume_anyway=resume_anyway)}")


@command(data, "synth")
@config_options("synth.bodies=anny")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Dataset folder to write (an existing one needs --force).")
@force_option
@click.option("--subjects", type=int, default=None, help="Number of humans (default: synth.subjects).")
@click.option("--views", type=int, default=None, help="Views per layer (default: synth.views).")
@click.option("--resolution", type=int, default=None, help="Image side, pixels (default: synth.resolution).")
@click.option("--seed", type=int, default=None, help="Random seed (default: synth.seed).")
@click.option("--bodies", type=click.Choice(SYNTH_BODIES), default=None,
              help="primitives, or anny bodies with mesh garments (needs humanliff[anny]; default: synth.bodies).")
def data_synth_command(cfg: Config, out_dir: str, force: bool, subjects: int | None, views: int | None,
                       resolution: int | None, seed: int | None, bodies: str | None) -> None:
    """Write synthetic layered humans in the SynBody layout (body, +pants, +shirt, +shoes)."""
    import dataclasses

    from humanliff.config import validate
    from humanliff.data.synth import synthesize_from_config
    from humanliff.output_sizes import dataset_bytes

    chosen = {"subjects": subjects, "views": views, "resolution": resolution, "seed": seed, "bodies": bodies}
    synth = dataclasses.replace(cfg.synth, **{k: v for k, v in chosen.items() if v is not None})
    validate(dataclasses.replace(cfg, synth=synth), "--subjects/--views/--resolution")
    guard_output(out_dir, force=force, needed_bytes=dataset_bytes(synth))
    click.echo(f"wrote {synthesize_from_config(synth, out_dir)}")


@command(data, "check")
@config_options("data.layout=tightcap")
@click.argument("root", metavar="DIR")
@click.option("--layout", type=click.Choice(LAYOUT_NAMES), default=None,
              help="Dataset layout (default: data.layout).")
def data_check_command(cfg: Config, root: str, layout: str | None) -> None:
    """Validate a dataset: list every problem found (exit code 1 if any)."""
    import dataclasses

    from humanliff.data.check import check_dataset

    data_cfg = dataclasses.replace(cfg.data, root=root, layout=layout or cfg.data.layout)
    problems, n_subjects = check_dataset(data_cfg)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        click.echo(f"error: {len(problems)} problem(s) in {root}", err=True)
        sys.exit(1)
    click.echo(f"ok: {root} ({n_subjects} subjects, {data_cfg.layout} layout)")


@command(data, "preview")
@config_options("data.image_scaling=0.5")
@click.argument("root", metavar="DIR")
@click.option("--out", required=True, metavar="PNG", help="Contact sheet to write.")
@click.option("--layout", type=click.Choice(LAYOUT_NAMES), default=None,
              help="Dataset layout (default: data.layout).")
@click.option("--views", type=int, default=3, show_default=True, help="Views per layer.")
@click.option("--subjects", type=int, default=8, show_default=True, help="Rows (the first subjects).")
@click.option("--tile", type=int, default=96, show_default=True, help="Tile side in pixels.")
def data_preview_command(cfg: Config, root: str, out: str, layout: str | None, views: int, subjects: int,
                         tile: int) -> None:
    """Contact sheet of a dataset: subjects x layers, a few views each."""
    import dataclasses

    from humanliff.data.preview import contact_sheet

    guard_file_output(out, [root])
    data_cfg = dataclasses.replace(cfg.data, root=root, layout=layout or cfg.data.layout)
    click.echo(f"wrote {contact_sheet(data_cfg, out, views, subjects, tile)}")


@command(app, "export")
@click.option("--unet", "unet_ckpt", required=True, metavar="CKPT",
              help="The training run's ema.pt (or its folder).")
@click.option("--store", required=True, metavar="STORE", help="Tri-plane store: its decoder and default box.")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Artifacts folder (written when complete; an existing one needs --force).")
@force_option
@click.option("--formats", default="auto", show_default=True, metavar="LIST",
              help="auto (CUDA: aoti,torchscript,ep; CPU: onnx,ep) or a comma-separated list of "
                   f"{', '.join(FORMAT_NAMES)}.")
@click.option("--engine-batch", "batch", type=int, default=1, show_default=True,
              help="Humans per UNet call the engines are tuned for (TensorRT profile, CUDA graphs).")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Compute dtype inside the engines (their inputs and outputs stay float32).")
@click.option("--unet-layout", type=click.Choice(UNET_LAYOUTS), default="parts", show_default=True,
              help="parts: four networks the runtime replays as a two-stream CUDA graph; whole: one graph.")
@click.option("--cxx", default=None, metavar="PATH",
              help="C++ compiler for AOTInductor (default: the first of $CXX, g++, c++, clang++ whose "
                   "packages load here).")
@click.option("--aoti-tuning", default="plain", show_default=True, help="Inductor settings: plain, frozen, autotune.")
@click.option("--opset", type=click.IntRange(18, 19), default=18, show_default=True, help="ONNX opset.")
@click.option("--device", default=None, help="Build and check on this device (default: cuda if available).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change the run's sample / render settings recorded as the runtime defaults; repeatable.")
def export_command(unet_ckpt: str, store: str, out_dir: str, force: bool, formats: str, batch: int, dtype: str,
                   unet_layout: str, cxx: str | None, aoti_tuning: str, opset: int, device: str | None,
                   overrides: tuple[str, ...]) -> None:
    """Export the UNet and the decoder to engines (checked against torch) plus a manifest."""
    import torch

    from humanliff.export.artifacts import export_artifacts, parse_formats
    from humanliff.output_sizes import artifacts_bytes

    check_count("--engine-batch", batch)
    written = parse_formats(formats, torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    guard_output(out_dir, [unet_ckpt, store], force=force,
                 needed_bytes=artifacts_bytes(unet_ckpt, store, written, unet_layout))

    manifest = export_artifacts(unet_ckpt, store, out_dir, formats, batch, dtype, overrides=overrides,
                                device=device, opset=opset, unet_layout=unet_layout, cxx=cxx,
                                aoti_tuning=aoti_tuning)
    for name, net in manifest["networks"].items():
        for fmt, art in net["artifacts"].items():
            check = art.get("check") or {}
            error = f", max rel err {check['max_rel_err']:.1e}" if "max_rel_err" in check else ""
            took = f", {art['export_s']:.1f} s" if "export_s" in art else ""
            size = f", {art['bytes'] / 1e6:.1f} MB" if "bytes" in art else ""
            why = f" ({art.get('error') or check.get('error')})" if art["status"] in ("failed", "not_run") else ""
            click.echo(f"{name}.{fmt}: {art['status']}{error}{took}{size}{why}")
    click.echo(f"wrote {out_dir}")


@command(app, "run")
@click.argument("artifacts", metavar="[ARTIFACTS]", required=False)
@generation_options("generated_rt")
@click.option("--engine", "engines", default=",".join(FORMAT_NAMES), show_default=True, metavar="LIST",
              help="Engine formats to try, best first.")
@click.option("--compile", "compile_", is_flag=True,
              help="On CUDA, compile ep (torch.export) engines with Inductor when they are what loads "
                   "(minutes at the first call); the other formats are compiled at export.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change a sample / render setting of the manifest; repeatable (e.g. --set sample.mesh_level=10).")
def run_command(artifacts: str | None, out_dir: str, force: bool, humans: int | None, layer_spec: str | None,
                sampler: str | None, steps: int | None, seed: int | None, views: int | None, size: int | None,
                device: str | None, engines: str, compile_: bool, overrides: tuple[str, ...]) -> None:
    """Generate layered humans from an artifacts folder (from export), without the training code.

    The same pipeline as generate, through the engines; the settings are the manifest's, then --set, then
    the options. Without ARTIFACTS, the default model is exported once per device type (--formats auto)
    into ~/.cache/humanliff.
    """
    import time

    from humanliff.pipeline import Pipeline, resolve_layers

    started = time.perf_counter()
    _check_generation_counts(humans, steps, views, size)
    if artifacts is None:
        from humanliff.export.default import default_artifacts

        artifacts = str(default_artifacts(device))
    prefer = [e.strip() for e in engines.split(",") if e.strip()]
    pipe = Pipeline.from_pretrained(artifacts, device=device, prefer=prefer, compile=compile_, engines_only=True,
                                    overrides=[
        *overrides, *as_overrides({"sample.views": views, "sample.image_size": size})])
    layers = resolve_layers(layer_spec, None)
    out = pipe.check_output(out_dir, humans, force=force)
    result = pipe(humans, layers, sampler=sampler, steps=steps, seed=seed, progress=True)
    paths = result.save(out, force=force, progress=True)
    pipe.close()
    used = ", ".join(f"{k}: {v}" for k, v in pipe.models.engines.items())
    click.echo(f"wrote {paths['folder']} ({used}; {time.perf_counter() - started:.2f} s)")


@command(app, "view")
@click.argument("target", metavar="TARGET")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; or forward the port over ssh).")
@click.option("--store", default=None, metavar="STORE",
              help="For a generation folder: the store whose decoder renders it live (default: the default "
                   "model's, when the tri-plane shape fits).")
@click.option("--mesh-resolution", type=click.IntRange(16, 512), default=128, show_default=True,
              help="For a store: marching-cubes grid per side of the meshes extracted.")
@click.option("--save-dir", default=".", show_default=True, metavar="DIR", help="Where 'save PNG' writes.")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
def view_command(target: str, port: int, host: str, store: str | None, mesh_resolution: int, save_dir: str,
                 device: str | None) -> None:
    """Show humans in the browser: a generation folder, a tri-plane store or STORE:SUBJECT.

    Per-layer meshes with a layer slider and overlays; on CUDA, the live volume rendering of the tri-planes.
    """
    from humanliff.viewer.scene import open_target
    from humanliff.viewer.server import start_viewer

    viewer = start_viewer(open_target(target, store, device, mesh_resolution), host, port, save_dir)
    click.echo(f"humanliff view: {viewer.url} (Ctrl-C to stop)")
    try:
        viewer.wait()
    except KeyboardInterrupt:
        click.echo("humanliff view: stopped", err=True)
    finally:
        viewer.close()


@command(app, "fit")
@config_options("fit.iterations_b=500")
@click.option("--stage", type=click.Choice(["a", "b"]), required=True,
              help="a: shared decoder + planes (torchrun for N GPUs); b: per-subject planes, frozen decoder.")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Run folder: checkpoints and the store (store_a or store_b); resumes from its checkpoint.")
@click.option("--store", default=None, metavar="STORE",
              help="Stage b: the stage-A store whose decoder is used (default: DIR/store_a).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu).")
@click.option("--resume-anyway", is_flag=True,
              help="Resume a checkpoint written with other fit settings (seed, batch, lr, ...).")
def fit_command(cfg: Config, stage: str, out_dir: str, store: str | None, device: str | None,
                resume_anyway: bool) -> None:
    """Fit tri-planes to the multi-view layered images of data.root (writes a tri-plane store)."""
    from humanliff.training import distributed
    from humanliff.workflows import fit

    path = fit(stage, out_dir, config=cfg, store=store, device=device, resume_anyway=resume_anyway)
    if distributed.is_main():
        click.echo(f"wrote {path}")
    if stage == "a":
        distributed.cleanup()


@command(app, "render")
@config_options("render.n_samples=64")
@click.argument("ref", metavar="STORE:SUBJECT:LAYER")
@click.option("--out", required=True, metavar="PATH", help="PNG (views tiled), GIF or MP4 (a frame a view).")
@click.option("--cameras", default=None, metavar="JSON",
              help="cameras.json (the dataset format); default: an orbit around the subject box.")
@click.option("--camera-ids", default=None, metavar="LIST", help="With --cameras: e.g. 0,8,16 (default all).")
@click.option("--views", type=int, default=None, help="Orbit views (default: sample.turntable_frames).")
@click.option("--size", type=int, default=None, help="Image side in pixels (default: sample.image_size).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu).")
def render_command(cfg: Config, ref: str, out: str, cameras: str | None, camera_ids: str | None,
                   views: int | None, size: int | None, device: str | None) -> None:
    """Render one stored tri-plane from given or orbiting cameras."""
    import torch

    from humanliff.evaluation.recon import read_camera_file, render_triplane

    check_count("--views", views)
    check_count("--size", size, 8)
    chosen = read_camera_file(cameras, camera_ids) if cameras else None

    dev = None if device is None else torch.device(device)
    guard_file_output(out, [ref.split(":")[0], cameras])
    click.echo(f"wrote {render_triplane(cfg, ref, out, chosen, views or 0, size or 0, device=dev)}")


@command(eval_group, "recon")
@config_options("render.n_samples=64")
@click.option("--store", required=True, metavar="STORE", help="Tri-plane store to evaluate (from fit).")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Folder for metrics.json and the PNG.")
@click.option("--subjects", default=None, metavar="LIST", help="Comma-separated names (default: all shared).")
@click.option("--max-views", type=int, default=0, show_default=True,
              help="Held-out views per subject and layer (0: all).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu).")
def eval_recon_command(cfg: Config, store: str, out_dir: str, subjects: str | None, max_views: int,
                       device: str | None) -> None:
    """PSNR / SSIM per layer of a store's tri-planes on held-out views of data.root."""
    import torch

    from humanliff.evaluation.recon import RECON_FILES, evaluate_recon
    from humanliff.run_folder import guard_run_files

    check_count("--max-views", max_views, 0)
    guard_output(out_dir, [store, cfg.data.root], replaced=False)
    guard_run_files(out_dir, RECON_FILES)
    names = [s.strip() for s in subjects.split(",") if s.strip()] if subjects else ()
    with hold_run_folder(out_dir):
        result = evaluate_recon(cfg, store, out_dir, names, max_views, torch.device(device) if device else None)
    for layer, values in result["layers"].items():
        click.echo(f"layer {layer}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    click.echo("wrote " + ", ".join(f"{out_dir}/{name}" for name in RECON_FILES))


@command(eval_group, "gen")
@config_options("render.occupancy_largest=true")
@click.argument("gen_dir", metavar="GEN_DIR")
@click.option("--store", required=True, metavar="STORE", help="Reference tri-plane store (the training data).")
@click.option("--inception", default=None, metavar="PATH",
              help="pt_inception-2015-12-05 weights for FID / KID (default: torch hub's checkpoints folder).")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Folder for metrics.json and renders.png.")
@click.option("--views", type=int, default=4, show_default=True, help="Orbit views per human and layer.")
@click.option("--size", type=int, default=64, show_default=True, help="Render side in pixels.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu).")
def eval_gen_command(cfg: Config, gen_dir: str, store: str, inception: str | None, out_dir: str, views: int,
                     size: int, device: str | None) -> None:
    """Generation quality per layer (FID/KID, tri-plane FD, precision/recall, containment, drift, haze)."""
    from humanliff.evaluation.generation import GENERATION_FILES, evaluate_generation, format_table
    from humanliff.run_folder import guard_run_files

    guard_output(out_dir, [gen_dir, store, inception], replaced=False)
    guard_run_files(out_dir, GENERATION_FILES)
    with hold_run_folder(out_dir):
        result = evaluate_generation(gen_dir, store, out_dir, render_cfg=cfg.render, inception=inception,
                                     views=views, size=size, device=device)
    if result["fid"] != "computed":
        click.echo(result["fid"])
    for line in format_table(result):
        click.echo(line)
    click.echo("wrote " + ", ".join(f"{out_dir}/{name}" for name in GENERATION_FILES))


@app.group("store")
def store_group() -> None:
    """Tri-plane stores: import the original code's checkpoints."""


@command(store_group, "import")
@config_options("data.root=data/synbody")
@click.argument("stage_a", metavar="STAGE_A_TAR")
@click.argument("stage_b", nargs=-1, metavar="[STAGE_B_TAR...]")
@click.option("--out", required=True, metavar="STORE",
              help="Store folder to write (an existing one needs --force).")
@force_option
def store_import_command(cfg: Config, stage_a: str, stage_b: tuple[str, ...], out: str, force: bool) -> None:
    """Import original checkpoints: the stage-A NNNNNN.tar (decoder, planes) and stage-B <subject>_NNNNNN.tar.

    Subject names and boxes come from data.root (human_list.txt, each subject's bounds.json or SMPL fit).
    """
    from humanliff.training.import_original import dataset_bounds, import_original

    guard_output(out, [stage_a, *stage_b, cfg.data.root], force=force)
    subjects, bounds = dataset_bounds(cfg.data)
    click.echo(f"wrote {import_original(stage_a, out, subjects, bounds, cfg, stage_b)}")


@app.group("model")
def model_group() -> None:
    """Packed models: a UNet's EMA weights with a small store (what the default model is)."""


@command(model_group, "pack")
@click.option("--unet", "unet_ckpt", required=True, metavar="CKPT", help="A run's ema.pt (or its run folder).")
@click.option("--store", required=True, metavar="STORE", help="The tri-plane store the UNet was trained on.")
@click.option("--out", required=True, metavar="DIR",
              help="Packed model folder to write (an existing one needs --force).")
@force_option
@click.option("--subjects", type=int, default=4, show_default=True,
              help="Subjects of the store kept (the first is the reference box of generated humans).")
def model_pack_command(unet_ckpt: str, store: str, out: str, force: bool, subjects: int) -> None:
    """Write a compact model folder: fp16 EMA weights plus the decoder and the first subjects' planes."""
    from humanliff.pretrained import pack_model

    check_count("--subjects", subjects)
    guard_output(out, [unet_ckpt, store], force=force)
    click.echo(f"wrote {pack_model(unet_ckpt, store, out, subjects)}")


@command(app, "demo")
@click.option("--out", "out_dir", default="demo_out", show_default=True, metavar="DIR",
              help="Demo folder; a re-run continues an interrupted demo there.")
@click.option("--config", "preset", default=None, metavar="PRESET|FILE",
              help="Preset or YAML file (default: demo_gpu when CUDA is available, else demo).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value; repeatable (e.g. --set train.steps=500).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu).")
def demo_command(out_dir: str, preset: str | None, overrides: tuple[str, ...], device: str | None) -> None:
    """The whole pipeline on built-in synthetic humans: data, fit A and B, eval, train, generate 4 humans."""
    import torch

    from humanliff.demo import run_demo

    if preset is None:
        gpu = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        preset = "demo_gpu" if gpu else "demo"
    cfg = load_config(preset, overrides)
    guard_output(out_dir, replaced=False)  # a demo folder is resumed, never replaced
    click.echo(f"demo: config {preset}, output {out_dir}", err=True)
    with hold_run_folder(out_dir):
        message = run_demo(cfg, out_dir, device)["message"]
    click.echo(message)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
