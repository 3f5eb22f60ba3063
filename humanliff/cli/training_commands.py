"""``humanliff fit``, ``train``, ``distill``, ``model pack`` and ``demo``: from images to a model."""

from __future__ import annotations

import click

from humanliff.cli.options import (
    DISTILL_METHODS,
    command,
    config_options,
    device_option,
    force_option,
    resume_option,
    set_option,
)
from humanliff.config import Config


@command("fit")
@config_options("fit.iterations_b=500")
@click.option("--stage", type=click.Choice(["a", "b"]), required=True,
              help="a: shared decoder + planes (torchrun for N GPUs); b: per-subject planes, frozen decoder.")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Run folder: checkpoints and the store (store_a or store_b); resumes from its checkpoint.")
@click.option("--store", default=None, metavar="STORE",
              help="Stage b: the stage-A store whose decoder is used (default: DIR/store_a).")
@device_option
@resume_option
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


@command("train")
@config_options("train.steps=1000")
@click.option("--store", required=True, metavar="STORE", help="Tri-plane store folder (from fit).")
@click.option("--out", "run_dir", required=True, metavar="RUN_DIR",
              help="Run folder (config.yaml, checkpoint.pt, ema.pt); resumes when it holds checkpoint.pt.")
@device_option
@resume_option
def train_command(cfg: Config, store: str, run_dir: str, device: str | None, resume_anyway: bool) -> None:
    """Train the layered diffusion UNet on a tri-plane store (under torchrun: one process per GPU)."""
    from humanliff.workflows import train

    click.echo(f"wrote {train(store, run_dir, config=cfg, device=device, resume_anyway=resume_anyway)}")


@command("distill")
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
@click.option("--init", default=None, metavar="RUN_OR_EMA",
              help="Start the student from this ema.pt, e.g. a progressive student for --method dmd "
                   "(default: distill.init, else the teacher).")
@click.option("--max-minutes", type=float, default=None, help="Stop early, with a checkpoint, after this long.")
@set_option("Override the teacher's config or the distillation's (e.g. --set train.steps=4000).")
@device_option
@resume_option
def distill_command(teacher: str, store: str, run_dir: str, steps: int | None, method: str | None,
                    teacher_samples: int, init: str | None, max_minutes: float | None, overrides: tuple[str, ...],
                    device: str | None, resume_anyway: bool) -> None:
    """Distil a diffusion run into a student that samples each layer in --steps calls (sampler 'distilled')."""
    from humanliff.workflows import distill

    path = distill(teacher, store, run_dir, method=method, steps=steps, overrides=overrides, device=device,
                   teacher_samples=teacher_samples, resume_anyway=resume_anyway, max_minutes=max_minutes,
                   init=init)
    click.echo(f"wrote {path}")


@click.group("model")
def model_group() -> None:
    """Packed models: a UNet's EMA weights with a small store (what the default model is)."""


@command("pack", model_group)
@click.option("--unet", "unet_ckpt", required=True, metavar="CKPT", help="A run's ema.pt (or its run folder).")
@click.option("--store", required=True, metavar="STORE", help="The tri-plane store the UNet was trained on.")
@click.option("--out", required=True, metavar="DIR",
              help="Packed model folder to write (an existing one needs --force).")
@force_option
@click.option("--subjects", type=int, default=4, show_default=True,
              help="Subjects of the store kept (the first is the reference box of generated humans).")
def model_pack_command(unet_ckpt: str, store: str, out: str, force: bool, subjects: int) -> None:
    """Write a compact model folder: fp16 EMA weights plus the decoder and the first subjects' planes."""
    from humanliff.workflows import pack

    click.echo(f"wrote {pack(unet_ckpt, store, out, subjects=subjects, force=force)}")


@command("demo")
@click.option("--out", "out_dir", default="demo_out", show_default=True, metavar="DIR",
              help="Demo folder; a re-run continues an interrupted demo there.")
@click.option("--config", "preset", default=None, metavar="PRESET|FILE",
              help="Preset or YAML file (default: demo_gpu when CUDA is available, else demo).")
@set_option("Override one config value; repeatable (e.g. --set train.steps=500).")
@device_option
def demo_command(out_dir: str, preset: str | None, overrides: tuple[str, ...], device: str | None) -> None:
    """The whole pipeline on built-in synthetic humans: data, fit A and B, eval, train, generate 4 humans."""
    from humanliff.workflows import demo, demo_preset

    preset = demo_preset(preset, device)
    click.echo(f"demo: config {preset}, output {out_dir}", err=True)
    click.echo(demo(out_dir, config=preset, overrides=overrides, device=device)["message"])
