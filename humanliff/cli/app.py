"""The ``humanliff`` click group: global options and the commands of the ``*_commands`` modules."""

from __future__ import annotations

import sys

import click

from humanliff.cli import data_commands, eval_commands, export_commands, generation_commands, training_commands
from humanliff.console import setup_console


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


for _command in (
    data_commands.data, data_commands.store_group,
    training_commands.fit_command, training_commands.train_command, training_commands.distill_command,
    training_commands.model_group, training_commands.demo_command,
    generation_commands.generate_command, generation_commands.run_command, generation_commands.render_command,
    generation_commands.view_command,
    export_commands.export_command,
    eval_commands.eval_group,
):
    app.add_command(_command)
