"""``humanliff export``: a trained UNet and its store's decoder to engines, checked against torch."""

from __future__ import annotations

import click

from humanliff.cli.options import FORMAT_NAMES, UNET_LAYOUTS, command, force_option, set_option
from humanliff.run_folder import check_count, guard_output


@command("export")
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
@click.option("--static-batch", is_flag=True,
              help="UNet engines take exactly --engine-batch humans a call, shapes fixed at export (fewer are "
                   "padded); default: any batch from 1 to max(--engine-batch, 4).")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Compute dtype inside the engines (their inputs and outputs stay float32).")
@click.option("--unet-layout", type=click.Choice(UNET_LAYOUTS), default="parts", show_default=True,
              help="parts: four networks the runtime replays as a two-stream CUDA graph; whole: one graph.")
@click.option("--cxx", default=None, metavar="PATH",
              help="C++ compiler for AOTInductor (default: the first of $CXX, g++, c++, clang++ whose "
                   "packages load here).")
@click.option("--aoti-tuning", default="frozen", show_default=True, help="Inductor settings: plain, frozen, autotune.")
@click.option("--opset", type=click.IntRange(18, 19), default=18, show_default=True, help="ONNX opset.")
@click.option("--device", default=None, help="Build and check on this device (default: cuda if available).")
@set_option("Change the run's sample / render settings recorded as the runtime defaults; repeatable.")
def export_command(unet_ckpt: str, store: str, out_dir: str, force: bool, formats: str, batch: int,
                   static_batch: bool, dtype: str, unet_layout: str, cxx: str | None, aoti_tuning: str, opset: int,
                   device: str | None, overrides: tuple[str, ...]) -> None:
    """Export the UNet and the decoder to engines (checked against torch) plus a manifest."""
    from humanliff.export.artifacts import export_artifacts, parse_formats
    from humanliff.output_sizes import artifacts_bytes
    from humanliff.runtime.compute import default_device

    check_count("--engine-batch", batch)
    written = parse_formats(formats, default_device(device))
    guard_output(out_dir, [unet_ckpt, store], force=force,
                 needed_bytes=artifacts_bytes(unet_ckpt, store, written, unet_layout))
    manifest = export_artifacts(unet_ckpt, store, out_dir, formats, batch, dtype, overrides=overrides,
                                device=device, opset=opset, unet_layout=unet_layout, cxx=cxx,
                                aoti_tuning=aoti_tuning, static_batch=static_batch)
    for name, net in manifest["networks"].items():
        for fmt, art in net["artifacts"].items():
            check = art.get("check") or {}
            error = f", max rel err {check['max_rel_err']:.1e}" if "max_rel_err" in check else ""
            took = f", {art['export_s']:.1f} s" if "export_s" in art else ""
            size = f", {art['bytes'] / 1e6:.1f} MB" if "bytes" in art else ""
            why = f" ({art.get('error') or check.get('error')})" if art["status"] in ("failed", "not_run") else ""
            click.echo(f"{name}.{fmt}: {art['status']}{error}{took}{size}{why}")
    click.echo(f"wrote {out_dir}")
