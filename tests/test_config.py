"""Config precedence, presets and error messages."""

from pathlib import Path

import pytest
import yaml

from humanliff.config import Config, dump_config, load_config
from humanliff.errors import HumanLiffError, InputFileError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("preset", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_presets_load_every_value_they_set(preset):
    cfg = load_config(preset)
    written = yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text())
    assert written, preset
    for section, values in written.items():
        for key, value in values.items():
            loaded = getattr(getattr(cfg, section), key)
            assert (list(loaded) if isinstance(loaded, tuple) else loaded) == value, f"{preset}: {section}.{key}"


def test_precedence_defaults_preset_overrides():
    assert Config().fit.iterations_b == 2000
    assert load_config("tiny").fit.iterations_b == 2
    cfg = load_config("tiny", ["fit.iterations_b=7", "unet.channel_mult=[1,2,4]"])
    assert cfg.fit.iterations_b == 7
    assert cfg.unet.channel_mult == (1, 2, 4)


def test_exponent_without_dot_is_a_number():
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3
    with pytest.raises(HumanLiffError, match="lr: expected a number"):
        load_config(None, ["train.lr=fast"])


def test_round_trip(tmp_path):
    cfg = load_config("demo", ["render.perturb=false"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_names_it():
    with pytest.raises(HumanLiffError, match="unknown key 'iterationz'"):
        load_config(None, ["fit.iterationz=3"])


def test_wrong_type_names_key():
    with pytest.raises(HumanLiffError, match="iterations_b: expected an integer"):
        load_config(None, ["fit.iterations_b=abc"])


def test_missing_preset_names_file():
    with pytest.raises(InputFileError, match="nope.yaml: no such config"):
        load_config("nope")


def test_background_is_checked():
    with pytest.raises(HumanLiffError, match="sample.background='grey' is not allowed"):
        load_config(None, ["sample.background=grey"])
