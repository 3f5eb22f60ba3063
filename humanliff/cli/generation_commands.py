"""``humanliff generate``, ``run``, ``render`` and ``view``: humans from a model, its engines or a store."""

from __future__ import annotations

import click

from humanliff.cli.options import (
    FORMAT_NAMES,
    as_overrides,
    asks_for_student,
    check_generation_counts,
    command,
    config_options,
    device_option,
    frozen_imports,
    generation_options,
    set_option,
    views_size_options,
)
from humanliff.config import Config


@command("generate")
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

    Without --unet and --store the shipped default model is used (with --sampler distilled, its shipped
    distilled student: a few UNet calls a layer). The settings are the model's own (the
    config its training recorded) unless --config is given, then --set, then the options. Writes the
    tri-planes, views, a contact sheet, turntables, meshes and viewer.html to --out.
    """
    with frozen_imports():
        from humanliff.pipeline import Pipeline, parse_from, resolve_layers

    if batch is not None:
        click.echo("warning: --batch is deprecated, use --humans", err=True)
    humans = humans if humans is not None else batch
    check_generation_counts(humans, steps, views, size)
    start = parse_from(from_spec) if from_spec else None
    layers = resolve_layers(layer_spec, start)
    if unet_ckpt is None and store is None and asks_for_student(sampler, overrides):
        unet_ckpt = "default-distilled"
    pipe = Pipeline.from_pretrained(unet_ckpt, store=store, device=device, config=preset,
                                    overrides=[*overrides, *as_overrides({"sample.views": views,
                                                                          "sample.image_size": size})])
    out = pipe.check_output(out_dir, humans, force=force, inputs=[start and start.store])
    result = pipe(humans, layers, sampler=sampler, steps=steps, seed=seed, start=start, progress=True)
    paths = result.save(out, force=force, progress=True)
    click.echo(f"wrote {paths['folder']} (contact sheet: {paths['contact_sheet']}; viewer: {paths['viewer']})")


@command("run")
@click.argument("artifacts", metavar="[ARTIFACTS]", required=False)
@generation_options("generated_rt")
@click.option("--engine", "engines", default=",".join(FORMAT_NAMES), show_default=True, metavar="LIST",
              help="Engine formats to try, best first.")
@click.option("--compile", "compile_", is_flag=True,
              help="On CUDA, compile ep (torch.export) engines with Inductor when they are what loads "
                   "(minutes at the first call); the other formats are compiled at export.")
@set_option("Change a sample / render setting of the manifest; repeatable (e.g. --set sample.mesh_level=10).")
def run_command(artifacts: str | None, out_dir: str, force: bool, humans: int | None, layer_spec: str | None,
                sampler: str | None, steps: int | None, seed: int | None, views: int | None, size: int | None,
                device: str | None, engines: str, compile_: bool, overrides: tuple[str, ...]) -> None:
    """Generate layered humans from an artifacts folder (from export), without the training code.

    The same pipeline as generate, through the engines; the settings are the manifest's, then --set, then
    the options. Without ARTIFACTS, the default model (with --sampler distilled, its distilled student) is
    exported once per device type (--formats auto) into ~/.cache/humanliff.
    """
    import time

    with frozen_imports():
        from humanliff.pipeline import Pipeline, resolve_layers

    started = time.perf_counter()
    check_generation_counts(humans, steps, views, size)
    layers = resolve_layers(layer_spec, None)
    if artifacts is None:
        from humanliff.export.default import default_artifacts

        artifacts = str(default_artifacts(device, distilled=asks_for_student(sampler, overrides)))
    prefer = [e.strip() for e in engines.split(",") if e.strip()]
    pipe = Pipeline.from_pretrained(artifacts, device=device, prefer=prefer, compile=compile_, engines_only=True,
                                    overrides=[*overrides, *as_overrides({"sample.views": views,
                                                                          "sample.image_size": size})])
    out = pipe.check_output(out_dir, humans, force=force)
    result = pipe(humans, layers, sampler=sampler, steps=steps, seed=seed, progress=True)
    paths = result.save(out, force=force, progress=True)
    pipe.close()
    used = ", ".join(f"{k}: {v}" for k, v in pipe.models.engines.items())
    click.echo(f"wrote {paths['folder']} ({used}; {time.perf_counter() - started:.2f} s)")


@command("render")
@config_options("render.n_samples=64")
@click.argument("ref", metavar="STORE:SUBJECT:LAYER")
@click.option("--out", required=True, metavar="PATH", help="PNG (views tiled), GIF or MP4 (a frame a view).")
@click.option("--cameras", default=None, metavar="JSON",
              help="cameras.json (the dataset format); default: an orbit around the subject box.")
@click.option("--camera-ids", default=None, metavar="LIST", help="With --cameras: e.g. 0,8,16 (default all).")
@views_size_options("Orbit views (default: sample.turntable_frames).",
                    "Image side in pixels (default: sample.image_size).")
@device_option
def render_command(cfg: Config, ref: str, out: str, cameras: str | None, camera_ids: str | None,
                   views: int | None, size: int | None, device: str | None) -> None:
    """Render one stored tri-plane from given or orbiting cameras."""
    from humanliff.workflows import render

    path = render(ref, out, config=cfg, cameras=cameras, camera_ids=camera_ids, views=views, size=size,
                  device=device)
    click.echo(f"wrote {path}")


@command("view")
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
@device_option
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
