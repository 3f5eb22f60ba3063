"""``humanliff eval recon|gen``: reconstruction and generation quality."""

from __future__ import annotations

import click

from humanliff.cli.options import command, config_options, device_option, views_size_options
from humanliff.config import Config


@click.group("eval")
def eval_group() -> None:
    """Evaluate reconstructions (recon: PSNR / SSIM on held-out views) and generations (gen: FID / KID,
    tri-plane Frechet distance, precision / recall, containment, identity drift, haze)."""


@command("recon", eval_group)
@config_options("render.n_samples=64")
@click.option("--store", required=True, metavar="STORE", help="Tri-plane store to evaluate (from fit).")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Folder for metrics.json and the PNG.")
@click.option("--subjects", default=None, metavar="LIST", help="Comma-separated names (default: all shared).")
@click.option("--max-views", type=int, default=0, show_default=True,
              help="Held-out views per subject and layer (0: all).")
@device_option
def eval_recon_command(cfg: Config, store: str, out_dir: str, subjects: str | None, max_views: int,
                       device: str | None) -> None:
    """PSNR / SSIM per layer of a store's tri-planes on held-out views of data.root."""
    from humanliff.evaluation.recon import RECON_FILES
    from humanliff.workflows import eval_recon

    names = [s.strip() for s in subjects.split(",") if s.strip()] if subjects else ()
    result = eval_recon(store, out_dir, config=cfg, subjects=names, max_views=max_views, device=device)
    for layer, values in result["layers"].items():
        click.echo(f"layer {layer}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    click.echo("wrote " + ", ".join(f"{out_dir}/{name}" for name in RECON_FILES))


@command("gen", eval_group)
@config_options("render.occupancy_largest=true")
@click.argument("gen_dir", metavar="GEN_DIR")
@click.option("--store", required=True, metavar="STORE", help="Reference tri-plane store (the training data).")
@click.option("--inception", default=None, metavar="PATH",
              help="pt_inception-2015-12-05 weights for FID / KID (default: torch hub's checkpoints folder).")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Folder for metrics.json and renders.png.")
@views_size_options("Orbit views per human and layer.", "Render side in pixels.", views=4, size=64)
@device_option
def eval_gen_command(cfg: Config, gen_dir: str, store: str, inception: str | None, out_dir: str, views: int,
                     size: int, device: str | None) -> None:
    """Generation quality per layer (FID/KID, tri-plane FD, precision/recall, containment, drift, haze)."""
    from humanliff.evaluation.generation import GENERATION_FILES, format_table
    from humanliff.workflows import eval_gen

    result = eval_gen(gen_dir, store, out_dir, config=cfg, inception=inception, views=views, size=size,
                      device=device)
    if result["fid"] != "computed":
        click.echo(result["fid"])
    for line in format_table(result):
        click.echo(line)
    click.echo("wrote " + ", ".join(f"{out_dir}/{name}" for name in GENERATION_FILES))
