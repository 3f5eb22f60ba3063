"""A tiny generation folder for the viewer tests: a capsule figure per human, each layer wider and recoloured."""

import torch

from humanliff.config import load_config
from humanliff.outputs.writer import write_generation

LAYER_COLOURS = torch.tensor([[0.9, 0.7, 0.55], [0.2, 0.35, 0.85], [0.85, 0.2, 0.2], [0.6, 0.6, 0.65]])
SETTINGS = ["sample.image_size=48", "sample.views=2", "sample.turntable_frames=8", "sample.mesh_resolution=24",
            "render.occupancy_resolution=0", "render.chunk=0",
            "render.n_samples=24", "render.n_importance=8"]
BOUNDS = torch.tensor([[-0.4, -0.9, -0.25], [0.4, 0.9, 0.25]])


def figure_field(planes):
    """Layer ``k`` (planes' mean ``k + 4 * human``): a capsule of radius growing with ``k``, coloured by layer,
    its left side lit and a bump on its front (so turning it changes the picture)."""
    code = int(round(float(planes.mean())))
    layer, human = code % 4, code // 4
    radius = 0.25 + 0.08 * layer + 0.04 * human

    def field(points, viewdirs=None):
        x, y, z = points.unbind(-1)
        axis = torch.sqrt(x ** 2 + (z / 0.8) ** 2) + torch.relu(y.abs() - 0.5)
        bump = 0.35 * torch.exp(-((x ** 2 + (y - 0.3) ** 2) / 0.02)) * (z > 0)
        sigma_raw = 400.0 * (radius + bump - axis)[..., None]
        if viewdirs is None:
            return None, sigma_raw
        colour = LAYER_COLOURS[layer].to(points) * (0.7 + 0.3 * (x > 0).float())[..., None]
        return torch.logit(colour.clamp(0.02, 0.98)), sigma_raw

    return field


def tiny_generation(out, humans=2):
    """Write a generation folder of ``humans`` figures with layers 0..3 (viewer.html included)."""
    cfg = load_config("tiny", SETTINGS)
    codes = torch.arange(4)[:, None] + 4 * torch.arange(humans)[None]
    planes = codes[..., None, None, None].float().expand(4, humans, 27, 4, 4).contiguous()
    return write_generation(out, planes, [0, 1, 2, 3], figure_field, BOUNDS, cfg.sample, cfg.render,
                            progress=False)
