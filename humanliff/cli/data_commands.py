"""``humanliff data synth|check|preview`` and ``humanliff store import``: datasets and tri-plane stores."""

from __future__ import annotations

import sys

import click

from humanliff.cli.options import LAYOUT_NAMES, command, config_options, force_option
from humanliff.config import SYNTH_BODIES, Config


@click.group()
def data() -> None:
    """Create, check and preview multi-view layered datasets."""


layout_option = click.option("--layout", type=click.Choice(LAYOUT_NAMES), default=None,
                             help="Dataset layout (default: data.layout).")


@command("synth", data)
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
@click.option("--reuse", is_flag=True,
              help="Keep DIR when it is the complete dataset of these settings (its synth.json and every file); "
                   "without --force, an error when it holds another.")
def data_synth_command(cfg: Config, out_dir: str, force: bool, subjects: int | None, views: int | None,
                       resolution: int | None, seed: int | None, bodies: str | None, reuse: bool) -> None:
    """Write synthetic layered humans in the SynBody layout (body, +pants, +shirt, +shoes)."""
    from humanliff.workflows import synth_data

    path, kept = synth_data(out_dir, config=cfg, force=force, subjects=subjects, views=views,
                            resolution=resolution, seed=seed, bodies=bodies, reuse=reuse)
    click.echo(f"kept {path} (complete, same settings)" if kept else f"wrote {path}")


@command("check", data)
@config_options("data.layout=tightcap")
@click.argument("root", metavar="DIR")
@layout_option
def data_check_command(cfg: Config, root: str, layout: str | None) -> None:
    """Validate a dataset: list every problem found (exit code 1 if any)."""
    from humanliff.workflows import check_data

    problems, n_subjects, layout = check_data(root, config=cfg, layout=layout)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        click.echo(f"error: {len(problems)} problem(s) in {root}", err=True)
        sys.exit(1)
    click.echo(f"ok: {root} ({n_subjects} subjects, {layout} layout)")


@command("preview", data)
@config_options("data.image_scaling=0.5")
@click.argument("root", metavar="DIR")
@click.option("--out", required=True, metavar="PNG", help="Contact sheet to write.")
@layout_option
@click.option("--views", type=int, default=3, show_default=True, help="Views per layer.")
@click.option("--subjects", type=int, default=8, show_default=True, help="Rows (the first subjects).")
@click.option("--tile", type=int, default=96, show_default=True, help="Tile side in pixels.")
def data_preview_command(cfg: Config, root: str, out: str, layout: str | None, views: int, subjects: int,
                         tile: int) -> None:
    """Contact sheet of a dataset: subjects x layers, a few views each."""
    from humanliff.workflows import preview_data

    path = preview_data(root, out, config=cfg, layout=layout, views=views, subjects=subjects, tile=tile)
    click.echo(f"wrote {path}")


@click.group("store")
def store_group() -> None:
    """Tri-plane stores: import the original code's checkpoints."""


@command("import", store_group)
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
    from humanliff.workflows import import_store

    click.echo(f"wrote {import_store(stage_a, out, stage_b, config=cfg, force=force)}")
