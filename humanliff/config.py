"""Configuration: dataclass defaults < ``configs/<preset>.yaml`` < ``--set section.key=value``.

Every section is a flat dataclass of JSON-serialisable scalars (and tuples of them). Unknown keys are
errors that name the key and the valid ones. The resolved config is written into every run directory
and checkpoint (``Config.to_dict``) and read back with ``Config.from_dict``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from humanliff.errors import HumanLiffError, InputFileError
from humanliff.runtime.compute import PRECISIONS
from humanliff.runtime.sampler_names import SAMPLER_NAMES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
"""Where the named presets (``preset_names``) live in a source checkout."""


@dataclass
class DataConfig:
    """Where the multi-view layered images are and how they are read."""

    root: str = "data/synthetic"
    """Dataset folder (holds ``human_list.txt``)."""
    layout: str = "synbody"
    """``synbody`` or ``tightcap``."""
    image_scaling: float = 1.0
    """Resize factor applied on load (the original: 0.5 for SynBody's 1024 px renders, 1.0 for TightCap)."""
    max_subjects: int = 0
    """Use the first N subjects of ``human_list.txt`` (0: all)."""
    holdout_every: int = 8
    """Every N-th view is held out of fitting and used by ``eval recon`` (0: no held-out views)."""
    canonical: bool = False
    """TightCap only: warp sample points to the canonical big pose through SMPL (needs the SMPL model)."""
    smpl_dir: str = "assets/models"
    """Folder of the SMPL / SMPL-X model files, used only where no bounds file exists."""


SYNTH_BODIES = ("primitives", "anny")
"""``synth.bodies`` choices (here so that the CLI lists them without importing the generator)."""


@dataclass
class SynthConfig:
    """The built-in synthetic layered humans (``humanliff data synth``)."""

    subjects: int = 8
    views: int = 32
    resolution: int = 128
    """Image side in pixels."""
    seed: int = 0
    bodies: str = "primitives"
    """``primitives`` (capsules and ellipsoids) or ``anny`` (realistic bodies and garments; needs the ``anny``
    extra)."""


@dataclass
class DecoderConfig:
    """The tri-plane decoder MLP."""

    kind: str = "fused"
    """``fused`` (tiny-cuda-nn shaped, fast) or ``seed`` (the original's layout, loads its weights)."""
    backend: str = "torch"
    """``torch`` (default, exportable) or ``tcnn`` (needs tinycudann)."""
    hidden: int = 64
    """Hidden width of the density network (16, 32, 64 or 128 for tcnn's FullyFusedMLP)."""
    density_layers: int = 2
    """Hidden layers of the density network."""
    geo_features: int = 15
    """Geometry features passed from the density network to the colour network."""
    color_hidden: int = 64
    color_layers: int = 1
    view_freqs: int = 4
    """Frequencies of the view-direction encoding (1, 2, 4, ... 2^(n-1))."""
    activation: str = "softplus"
    """``softplus`` or ``relu``."""


@dataclass
class RenderConfig:
    """Volume rendering of one tri-plane."""

    n_samples: int = 128
    """Coarse samples per ray (uniform in [near, far])."""
    n_importance: int = 128
    """Fine samples per ray (inverse-CDF of the coarse weights)."""
    perturb: bool = True
    """Stratified jitter of the coarse samples while fitting (never at evaluation)."""
    density_noise_std: float = 0.0
    """Std of the noise added to raw density while fitting; the original hard-codes 1.0 (bug B2)."""
    metric_intervals: bool = True
    """Alpha from metric interval lengths; ``false`` reproduces the original (bug B3)."""
    chunk: int = 0
    """Rays per renderer call when rendering whole images; 0 picks by device: 262144 on CUDA (a 512 x 512
    view in one call: 19.5 ms against 26.6 with 65536 on an H100; a few GB at 128 + 128 samples), 8192 on the CPU."""
    occupancy_resolution: int = 64
    """Cells per side of the occupancy grid used to skip empty space (0: off)."""
    occupancy_threshold: float = 1.0
    """Density (after softplus) below which a cell counts as empty."""
    occupancy_largest: bool = True
    """Keep only the largest connected group of occupied cells: floaters (haze) are not rendered."""
    fused_kernel: bool = True
    """Evaluate a FusedDecoder with the fused Triton kernel under bf16 on CUDA: frozen (rendering, occupancy
    grids, evaluation, generation, stage B) or trainable (stage A: the kernel's backward also gives the
    decoder's weight gradients); ``false`` keeps the torch path everywhere (``make_field``'s ``fused``)."""


@dataclass
class TriplaneConfig:
    """Tri-plane layout: [27, R, R] per layer, channel = plane*9 + group*3 + c."""

    resolution: int = 256
    channels: int = 27


@dataclass
class FitConfig:
    """Tri-plane fitting, stage A (shared decoder + planes) and stage B (frozen decoder, per subject)."""

    iterations_a: int = 200000
    iterations_b: int = 2000
    """Iterations per layer in stage B."""
    batch_images: int = 8
    """Images per step (stage A: per rank)."""
    rays_per_image: int = 2048
    foreground_fraction: float = 0.8
    """Fraction of rays drawn inside the mask; the rest inside the projected box, outside the mask."""
    lr_decoder: float = 5e-3
    lr_planes: float = 1e-1
    lr_decay: int = 500
    """The original's ``lrate_decay``: decoder lr x 0.1 every 600*N steps, planes x 0.5 every 60*N."""
    lr_decay_b: int = 500
    """Stage B: planes lr x 0.5 every N steps."""
    acc_weight: float = 0.1
    tv_weight: float = 1e-2
    l1_weight: float = 5e-4
    clamp: bool = True
    """Clamp planes to [-1, 1] after every step."""
    init_std: float = 0.1
    subjects_per_batch_b: int = 8
    """Stage B fits this many subjects at once."""
    precision: str = "bf16"
    """``bf16`` (autocast on CUDA) or ``fp32``."""
    compile: bool = False
    cuda_graph: bool = True
    """Stage A on one CUDA device without DDP: each step (draws, render, backward, both optimizers) is
    captured as a CUDA graph at the second step and replayed after."""
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0


@dataclass
class UNetConfig:
    """The layered diffusion UNet; keywords as the original ``UNetModel``."""

    model_channels: int = 192
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (8, 16, 32)
    """Downsample rates at which attention runs."""
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_heads: int = 4
    use_scale_shift_norm: bool = True
    dropout: float = 0.0
    num_classes: int = 4


@dataclass
class DiffusionConfig:
    """The diffusion process: linear betas, epsilon prediction, fixed-large variance."""

    steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


@dataclass
class TrainConfig:
    """Diffusion training."""

    steps: int = 300000
    batch_size: int = 8
    microbatch: int = 0
    """Split each batch into micro-batches of this size (gradient accumulation; 0: no split)."""
    lr: float = 5e-5
    lr_final: float = 1e-5
    lr_anneal_steps: int = 100000
    """Linear LR anneal from ``lr`` to ``lr_final`` over this many steps (the original's)."""
    weight_decay: float = 0.0
    ema_rate: float = 0.9999
    grad_clip: float = 1.0
    """Clip the gradient norm (0: off)."""
    precision: str = "bf16"
    compile: bool = False
    compile_scope: str = "model"
    """With ``compile``: ``model`` compiles the whole UNet as one graph; ``blocks`` compiles each residual and
    attention block on its own (identical blocks share their code, so the first step compiles far less)."""
    cuda_graph: bool = True
    """On one CUDA device (no DDP), replay each optimizer step (forward, backward, clipping, AdamW, EMA) as
    one captured CUDA graph from the second step on; the math is unchanged. Ignored on the CPU."""
    cond_noise: float = 0.0
    """Std of noise added to the conditioning layer while training (narrows the train/test gap, D5)."""
    checkpoint_every: int = 5000
    snapshot_every: int = 0
    """Also keep the EMA weights every this many steps as ``snapshots/ema_<step>.pt`` (complete ``ema.pt``
    files, e.g. to score a run along the way); 0: none."""
    log_every: int = 100
    seed: int = 0


MESH_LEVEL = 20.0
"""Default ``sample.mesh_level``, measured on the shipped default model (README, "Meshes")."""
MESH_KEEP = 0.05
"""Default ``sample.mesh_keep``."""
BACKGROUNDS = ("black", "white", "transparent")
"""``sample.background`` choices (``humanliff.outputs.images.composite``)."""


@dataclass
class DistillConfig:
    """Few-step distillation of a diffusion run into a student (``humanliff distill``; the optimizer
    settings are ``train``'s)."""

    method: str = "consistency"
    """``progressive`` (Salimans & Ho 2022), ``consistency`` (consistency distillation, Song et al. 2023) or
    ``dmd`` (distribution matching, Yin et al. 2024)."""
    steps: int = 4
    """UNet calls per layer of the student."""
    teacher_steps: int = 32
    """The teacher's grid: progressive halves it round by round down to ``steps``; consistency takes one
    teacher DDIM step between neighbours of it."""
    weight_cap: float = 100.0
    """Loss weight in epsilon space: ``clamp((1 - abar) / abar, 1, weight_cap)`` (Salimans & Ho's truncated
    SNR weighting of the x0 error, capped for an epsilon-predicting student)."""
    teacher: str = ""
    """The teacher's ema.pt (filled in by ``humanliff distill``)."""
    init: str = ""
    """An ema.pt the student starts from (e.g. a progressive student, for ``dmd``); empty: the teacher's weights."""
    fake_updates: int = 1
    """``dmd``: updates of the fake denoiser per student update (DMD2's two time-scale rule takes 5)."""
    regression: float = 0.0
    """``dmd``: weight of the student's epsilon regression onto the data beside distribution matching (DMD's
    first form; 0: DMD2's, none)."""


@dataclass
class SampleConfig:
    """Layered generation."""

    sampler: str = "dpmpp_sde"
    """``ddpm``, ``ddim``, ``dpmpp`` (deterministic DPM-Solver++(2M)) or ``dpmpp_sde`` (its stochastic form:
    the same cost, cleaner planes from small models); ``distilled`` for a student of ``humanliff distill``."""
    steps: int = 20
    eta: float = 0.0
    """DDIM eta (0: deterministic)."""
    keep_top: float = 0.16
    """Share of the box's height, from the top, that layer k keeps from layer k-1 (RePaint on the planes'
    height rows at every step; 0: off). 0.16: normalized y >= 0.68, where no garment of either synthetic
    dataset reaches (at R = 64 its kept texels shape only y >= 0.6875)."""
    strength: float = 0.5
    """Share of ``steps`` a layer above layer 0 runs, starting from the layer below's planes noised to that
    level (SDEdit) instead of from pure noise; 1: from noise, as the original. 0.5: on the shipped model
    (H200, 64 humans, dpmpp_sde 20, head band) containment 0.810 -> 0.865 and drift +5.6 dB for a 9.8 %
    larger Frechet distance, and 50 UNet calls a 4-layer human instead of 80."""
    batch: int = 4
    """Humans generated (``--humans``); human i uses ``seed + i`` whatever the batch."""
    seed: int = 0
    image_size: int = 512
    """Rendered view side in pixels."""
    views: int = 4
    """Views per human and layer in the contact sheet and view folders."""
    background: str = "black"
    """Background of the views and turntables: ``black``, ``white`` or ``transparent`` (PNG and GIF; the
    contact sheet, MP4 and viewer page show it white)."""
    turntable_frames: int = 36
    turntable_seconds: float = 3.0
    """Duration of one turn of the turntables (frames per second = turntable_frames / this)."""
    meshes: bool = True
    """Write each human's layer as a mesh (PLY and GLB); false: no marching cubes at all."""
    mesh_resolution: int = 256
    """Marching-cubes grid cells per side."""
    mesh_level: float = MESH_LEVEL
    """Iso-level of the meshes on the density (softplus of raw sigma). The original's level (raw sigma 0)
    is log 2 = 0.69, which wraps the shipped model's humans in a box of haze; see ``MESH_LEVEL``."""
    mesh_keep: float = MESH_KEEP
    """Drop mesh components with fewer faces than this share of the largest one's (0: keep all)."""
    precision: str = "bf16"
    """UNet and decoder compute precision on CUDA (the CPU runs fp32)."""
    compile: bool = True
    """On CUDA, compile the UNet (torch.compile, CUDA graphs; the first batch pays the compile time)."""


@dataclass
class Config:
    """Everything a run needs; sections as above."""

    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), ready for YAML or a checkpoint."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> Config:
        """Build from a nested dict; missing keys take defaults, unknown keys raise."""
        return _merge(cls(), values, source)

    def with_overrides(self, overrides: Iterable[str], source: str = "--set") -> Config:
        """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
        cfg = self
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or "." not in key:
                raise HumanLiffError(f"{source}: '{item}' is not of the form section.key=value")
            section, name = key.split(".", 1)
            cfg = _merge(cfg, {section: {name: _yaml_scalar(raw)}}, source)
        return cfg


def _yaml_scalar(raw: str) -> Any:
    """``raw`` read as YAML (``10``, ``false``, ``[1, 2]``); yaml is imported by the commands that read some
    (not by a plain ``humanliff run``)."""
    import yaml

    return yaml.safe_load(raw)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check and convert one YAML value to the field's type."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise HumanLiffError(f"{where}: expected a list, got {value!r}")
        (item_type, _) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, where) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise HumanLiffError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise HumanLiffError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HumanLiffError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise HumanLiffError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {annotation!r} at {where}")


@dataclass(frozen=True)
class Limit:
    """The allowed values of one config key: a range (``above``: strictly greater than ``low``) or choices."""

    low: float | None = None
    high: float | None = None
    above: bool = False
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (None when it is)."""
        if self.choices:
            return None if value in self.choices else f"one of {', '.join(self.choices)}"
        low_ok = self.low is None or (value > self.low if self.above else value >= self.low)
        if low_ok and (self.high is None or value <= self.high) and value == value:
            return None
        if self.high is None:
            return f"{'greater than' if self.above else 'at least'} {self.low:g}"
        return f"{'(' if self.above else '['}{self.low:g}, {self.high:g}]"


POSITIVE, NON_NEGATIVE, PROBABILITY = Limit(1), Limit(0), Limit(0.0, 1.0)
GREATER_THAN_0 = Limit(0.0, above=True)
PRECISION_CHOICES = Limit(choices=PRECISIONS)
LIMITS: dict[str, dict[str, Limit]] = {
    "data": {"image_scaling": GREATER_THAN_0, "max_subjects": NON_NEGATIVE, "holdout_every": NON_NEGATIVE,
             "layout": Limit(choices=("synbody", "tightcap"))},
    "synth": {"subjects": POSITIVE, "views": POSITIVE, "resolution": Limit(8)},
    "triplane": {"resolution": Limit(2), "channels": POSITIVE},
    "decoder": {"hidden": POSITIVE, "density_layers": POSITIVE, "geo_features": POSITIVE,
                "color_hidden": POSITIVE, "color_layers": POSITIVE, "view_freqs": NON_NEGATIVE},
    "render": {"n_samples": POSITIVE, "n_importance": NON_NEGATIVE, "density_noise_std": NON_NEGATIVE,
               "chunk": NON_NEGATIVE, "occupancy_resolution": NON_NEGATIVE,
               "occupancy_threshold": NON_NEGATIVE},
    "fit": {"iterations_a": NON_NEGATIVE, "iterations_b": NON_NEGATIVE, "batch_images": POSITIVE,
            "rays_per_image": POSITIVE, "foreground_fraction": PROBABILITY, "lr_decoder": GREATER_THAN_0,
            "lr_planes": GREATER_THAN_0, "lr_decay": POSITIVE, "lr_decay_b": POSITIVE,
            "acc_weight": NON_NEGATIVE, "tv_weight": NON_NEGATIVE, "l1_weight": NON_NEGATIVE,
            "init_std": NON_NEGATIVE, "subjects_per_batch_b": POSITIVE, "precision": PRECISION_CHOICES,
            "checkpoint_every": NON_NEGATIVE, "log_every": POSITIVE},
    "unet": {"model_channels": POSITIVE, "num_res_blocks": POSITIVE, "num_heads": POSITIVE,
             "dropout": Limit(0.0, 1.0), "num_classes": POSITIVE},
    "diffusion": {"steps": POSITIVE, "beta_start": Limit(0.0, 1.0, above=True),
                  "beta_end": Limit(0.0, 1.0, above=True)},
    "train": {"steps": POSITIVE, "batch_size": POSITIVE, "microbatch": NON_NEGATIVE, "lr": GREATER_THAN_0,
              "lr_final": NON_NEGATIVE, "lr_anneal_steps": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
              "ema_rate": PROBABILITY, "grad_clip": NON_NEGATIVE, "precision": PRECISION_CHOICES,
              "compile_scope": Limit(choices=("model", "blocks")), "cond_noise": NON_NEGATIVE,
              "checkpoint_every": POSITIVE, "snapshot_every": NON_NEGATIVE, "log_every": POSITIVE},
    "distill": {"method": Limit(choices=("progressive", "consistency", "dmd")), "steps": POSITIVE,
                "teacher_steps": Limit(2), "weight_cap": Limit(1.0), "fake_updates": POSITIVE,
                "regression": NON_NEGATIVE},
    "sample": {"sampler": Limit(choices=SAMPLER_NAMES), "steps": POSITIVE,
               "eta": NON_NEGATIVE, "batch": POSITIVE, "image_size": Limit(8), "views": POSITIVE,
               "turntable_frames": POSITIVE, "turntable_seconds": GREATER_THAN_0, "mesh_resolution": Limit(2),
               "mesh_level": GREATER_THAN_0, "mesh_keep": PROBABILITY, "background": Limit(choices=BACKGROUNDS),
               "precision": PRECISION_CHOICES, "keep_top": Limit(0.0, 0.5), "strength": Limit(0.0, 1.0, above=True)},
}
"""Allowed values of the config keys, checked wherever a config is read (``--set``, YAML, checkpoints)."""


def check_value(section: str, key: str, value: Any, where: str) -> None:
    """Raise one line naming ``section.key`` and the allowed values when ``value`` is not allowed."""
    limit = LIMITS.get(section, {}).get(key)
    problem = limit.problem(value) if limit is not None else None
    if problem is not None:
        raise HumanLiffError(f"{where}: {section}.{key}={value!r} is not allowed (allowed: {problem})")


def validate(cfg: Config, where: str = "config") -> Config:
    """Check every key of ``cfg`` (e.g. after ``dataclasses.replace``); returns ``cfg``."""
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            check_value(section, key, value, where)
    return cfg


def _merge(obj: Any, values: Mapping[str, Any], where: str, section: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with ``values`` merged in, recursively (``section``: the name of
    ``obj`` in ``Config``, whose keys are checked against ``LIMITS``)."""
    inner = f"{where}: {section}" if section else where
    if not isinstance(values, Mapping):
        raise HumanLiffError(f"{inner}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {}
    for key, value in values.items():
        if key not in names:
            raise HumanLiffError(f"{inner}: unknown key '{key}' (valid: {', '.join(names)})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value or {}, where, key)
        else:
            changes[key] = _coerce(value, hints[key], f"{inner}: {key}")
            if section:
                check_value(section, key, changes[key], where)
    return dataclasses.replace(obj, **changes)


def preset_path(preset: str | Path) -> Path:
    """Resolve a preset name (``demo``) or a YAML path to an existing file."""
    path = Path(preset)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise InputFileError(path, f"no such config (presets: {', '.join(preset_names())})")
    return path


def preset_names() -> list[str]:
    """The named presets in ``configs/`` (``default``, ``demo``, ``demo_gpu``, ``synbody``, ...), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(preset: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the preset's YAML (name or path), then ``section.key=value`` overrides."""
    cfg = Config()
    if preset is not None:
        import yaml

        path = preset_path(preset)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputFileError(path, f"not valid YAML ({exc.__class__.__name__})") from exc
        cfg = _merge(cfg, values, str(path))
    return cfg.with_overrides(overrides)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    import yaml

    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
