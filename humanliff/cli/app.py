"""The ``humanliff`` click group: global options and the commands of the ``*_commands`` modules.

A command's module is imported only when the command is looked up (``humanliff run`` imports
``generation_commands`` alone); ``humanliff --help`` looks up every command for its short help.
"""

from __future__ import annotations

import importlib
import sys

import click

from humanliff.console import setup_console

COMMANDS = {
    "data": "data_commands.data", "store": "data_commands.store_group",
    "fit": "training_commands.fit_command", "train": "training_commands.train_command",
    "distill": "training_commands.distill_command", "model": "training_commands.model_group",
    "demo": "training_commands.demo_command",
    "generate": "generation_commands.generate_command", "run": "generation_commands.run_command",
    "render": "generation_commands.render_command", "view": "generation_commands.view_command",
    "export": "export_commands.export_command",
    "eval": "eval_commands.eval_group",
}
"""Command name -> ``module.attribute`` of its click command, the module under ``humanliff.cli``."""


class LazyGroup(click.Group):
    """A group whose ``COMMANDS`` are imported when looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, name = COMMANDS[cmd_name].split(".")
        return getattr(importlib.import_module(f"humanliff.cli.{module}"), name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
