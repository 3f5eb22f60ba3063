"""The artifacts manifest (``manifest.json``): a versioned schema written by export and read by the runtime.

Layout of version 2 (all keys required unless marked optional)::

    format: "humanliff-artifacts"        version: 2
    created: ISO time                    torch: version string of the exporting torch
    layers: int                          batch: int (the fixed batch of the TensorRT profile / CUDA graphs)
    compute_dtype: "fp32" | "fp16" | "bf16"   (network I/O float32 / int64; UNet parts pass the compute dtype)
    diffusion: {steps, beta_start, beta_end}
    triplane: {resolution, channels, layout}
    bounds: [[x, y, z], [x, y, z]]       world box of the default subject (min row, max row)
    cameras: {K: [V,3,3], R: [V,3,3], T: [V,3], image_size}
    decoder: the decoder config          render: the render config       sample: the sample config
    networks: {name: {inputs: [io], outputs: [io], dims: {symbol: [min, opt, max]},
                      artifacts: {format: artifact}}}     names: decoder, and unet or its parts
    unet: {layout: "whole" | "parts", networks: [names in call order], side_stream: [names]}  (optional)
    distilled: {method, rule, timesteps, teacher, teacher_steps}   (optional: a distilled student's
               schedule, ``runtime.schedule.DistilledSchedule``, copied from its ema.pt; sampler ``distilled``)

The UNet is one network ``unet`` (``x, timesteps, x_cond, y -> eps``) or its four parts ``unet.embed``
(``timesteps, y -> emb``), ``unet.encode`` (``x, emb -> h0..hN``), ``unet.encode_control``
(``x, x_cond, emb -> c0..cN``) and ``unet.decode`` (``emb, h0..hN, c0..cN -> eps``), connected by name;
``side_stream`` parts may run on a second CUDA stream. Version 1 had no ``unet`` key (the whole graph).

``io`` is ``{name, shape, dtype}`` with symbolic dims as strings (``"batch"``, ``"points"``), dtype one
of ``DTYPES``. An ``artifact`` is ``{status, files: {name: sha256}, bytes, export_s, device, check,
error?, load_s?, loader?, compiler?}`` with
``status`` one of ``ok`` (exported and checked against torch), ``unverified`` (exported, the check
could not run here), ``failed`` or ``not_run``; the runtime uses only ``ok`` and ``unverified`` ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.errors import InputFileError
from humanliff.runtime.files import read_json

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "humanliff-artifacts"
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 (one UNet network) is still read: its UNet is the whole graph."""
UNET_INPUTS = ("x", "timesteps", "x_cond", "y")
UNET_OUTPUT = "eps"
REQUIRED_KEYS = ("layers", "batch", "compute_dtype", "diffusion", "triplane", "bounds", "cameras", "decoder",
                 "render", "sample", "networks")
USABLE_STATUS = ("ok", "unverified")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """One named engine input or output: shape with symbolic dims as strings, dtype ``float32``/``int64``."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TensorSpec:
        return cls(str(value["name"]), tuple(value["shape"]), str(value["dtype"]))

    def resolve(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """Concrete shape with the symbols replaced by ``dims``."""
        return tuple(dims[d] if isinstance(d, str) else d for d in self.shape)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(artifacts_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``artifacts_dir/manifest.json``; one-line ``InputFileError`` naming it on failure."""
    path = Path(artifacts_dir) / MANIFEST_NAME
    if not path.is_file():
        raise InputFileError(path, "no artifacts manifest here (run `humanliff export` first)")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputFileError(path, f"not a {MANIFEST_FORMAT} manifest")
    if manifest.get("version") not in READABLE_VERSIONS:
        raise InputFileError(path, f"unknown manifest version {manifest.get('version')!r} "
                                   f"(this runtime reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise InputFileError(path, f"manifest lacks {', '.join(missing)}")
    for name, net in manifest["networks"].items():
        for key in ("inputs", "outputs", "dims", "artifacts"):
            if key not in net:
                raise InputFileError(path, f"network '{name}' lacks '{key}'")
    check_unet_parts(manifest, path)
    return manifest


def unet_layout(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """How the UNet is exported: ``{layout: "whole" | "parts", networks: [...], side_stream: [...]}``."""
    return dict(manifest.get("unet", {"layout": "whole", "networks": ["unet"], "side_stream": []}))


def check_unet_parts(manifest: Mapping[str, Any], source: str | Path) -> None:
    """Check that the UNet's networks connect: each input is a UNet input or an earlier part's output.

    The last network must produce ``eps``; every shared name must agree on shape and dtype.
    """
    layout = unet_layout(manifest)
    nets = manifest["networks"]
    known = {name: None for name in UNET_INPUTS}
    for name in layout["networks"]:
        if name not in nets:
            raise InputFileError(source, f"UNet part '{name}' is not among the networks")
        for spec in nets[name]["inputs"]:
            if spec["name"] not in known:
                raise InputFileError(source, f"UNet part '{name}' needs '{spec['name']}', which no earlier "
                                             "part produces")
            seen = known[spec["name"]]
            if seen is not None and (seen["shape"], seen["dtype"]) != (spec["shape"], spec["dtype"]):
                raise InputFileError(source, f"UNet part '{name}' takes '{spec['name']}' as {spec['shape']} "
                                             f"{spec['dtype']}, produced as {seen['shape']} {seen['dtype']}")
        known.update({spec["name"]: spec for spec in nets[name]["outputs"]})
    last = nets[layout["networks"][-1]]["outputs"] if layout["networks"] else []
    if [s["name"] for s in last] != [UNET_OUTPUT]:
        raise InputFileError(source, f"the UNet's last part must produce only '{UNET_OUTPUT}'")


def write_manifest(artifacts_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` (format and version filled in) into ``artifacts_dir``."""
    path = Path(artifacts_dir) / MANIFEST_NAME
    body = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, **manifest}
    path.write_text(json.dumps(body, indent=1))
    return path


@dataclass(frozen=True)
class NetworkSpec:
    """A network's engine interface as the manifest records it: inputs, outputs, symbol ranges."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: Mapping[str, tuple[int, int, int]]
    """Symbol -> (min, opt, max) size."""

    def to_json(self) -> dict[str, Any]:
        return {"inputs": [s.to_json() for s in self.inputs], "outputs": [s.to_json() for s in self.outputs],
                "dims": {k: list(v) for k, v in self.dims.items()}}


def network_spec(manifest: Mapping[str, Any], network: str) -> NetworkSpec:
    """The :class:`NetworkSpec` of one network of a manifest."""
    net = manifest["networks"][network]
    return NetworkSpec(tuple(TensorSpec.from_json(v) for v in net["inputs"]),
                       tuple(TensorSpec.from_json(v) for v in net["outputs"]),
                       {k: tuple(v) for k, v in net["dims"].items()})


def usable_formats(manifest: Mapping[str, Any], network: str) -> list[str]:
    """Formats of ``network`` whose artifact exported (status ``ok`` or ``unverified``)."""
    arts = manifest["networks"][network]["artifacts"]
    return [fmt for fmt, art in arts.items() if art.get("status") in USABLE_STATUS]


def check_files(artifacts_dir: str | Path, artifact: Mapping[str, Any]) -> list[Path]:
    """Check that every file of an artifact exists and matches its recorded sha256; return the paths."""
    paths = []
    for name, digest in artifact["files"].items():
        path = Path(artifacts_dir) / name
        if not path.is_file():
            raise InputFileError(path, f"artifact listed in {MANIFEST_NAME} is missing")
        if sha256_file(path) != digest:
            raise InputFileError(path, f"sha256 differs from {MANIFEST_NAME}: the artifact was altered")
        paths.append(path)
    return paths


def check_feeds(source: str | Path, spec: NetworkSpec, feeds: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Check feeds against the spec (names, ranks, static dims, one size per symbol within its range).

    Returns the symbol sizes; ``source`` names the file in the one-line error.
    """
    names = [s.name for s in spec.inputs]
    if sorted(feeds) != sorted(names):
        raise InputFileError(source, f"inputs {sorted(feeds)} do not match the manifest's {names}")
    dims: dict[str, int] = {}
    for inp in spec.inputs:
        shape = tuple(feeds[inp.name].shape)
        ok = len(shape) == len(inp.shape)
        for want, got in zip(inp.shape, shape, strict=False):
            ok = ok and (dims.setdefault(want, got) if isinstance(want, str) else want) == got
        if not ok:
            raise InputFileError(source, f"input '{inp.name}' has shape {list(shape)}, the manifest says "
                                         f"{list(inp.shape)}" + (f" with {dims}" if dims else ""))
    for name, size in dims.items():
        low, _, high = spec.dims.get(name, (1, size, size))
        if not low <= size <= high:
            raise InputFileError(source, f"{name} = {size} is outside the exported range [{low}, {high}]")
    return dims
