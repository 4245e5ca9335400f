"""Every YAML under configs/ parses alone with --print_config; config mistakes fail before training, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gnvideo.cli import main

from .conftest import REPO, cli_args

# configs/study/ holds `gnvideo demo --config` option files (tested in tests/demo), not LightningCLI configs.
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "study")


def test_there_are_configs():
    names = {Path(c).name for c in CONFIGS}
    for norm in ("bn", "gn"):
        for cell in ("32x2_8clips", "32x2_4clips", "64x1_4clips"):
            assert f"i3d_r50_{norm}_{cell}.yaml" in names


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses_alone(config, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(REPO / config), "--print_config"])
    assert e.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["backbone"] and resolved["data"]["root"]
    assert "clips_per_device" not in resolved["model"]  # linked from data.clips_per_device
    assert resolved["checkpoint"]["save_last"] is True


def test_paper_grid_settings_match_the_file_name():
    for config in CONFIGS:
        name = Path(config).stem
        if not name.startswith("i3d_r50_") or name.endswith("_1gpu"):
            continue
        cfg = yaml.safe_load((REPO / config).read_text())
        _, _, norm, fxs, clips = name.split("_")
        frames, stride = map(int, fxs.split("x"))
        assert cfg["model"]["norm"] == norm
        assert (cfg["data"]["num_frames"], cfg["data"]["sampling_rate"]) == (frames, stride)
        assert cfg["data"]["clips_per_device"] == int(clips.removesuffix("clips"))
        total = cfg["data"]["clips_per_device"] * cfg["trainer"]["devices"] * cfg["trainer"]["accumulate_grad_batches"]
        assert cfg["trainer"]["max_steps"] * total == 400_000 * 64  # same number of clips as the Non-local recipe
        assert cfg["trainer"]["sync_batchnorm"] is False and cfg["trainer"]["devices"] == 8
        assert (cfg["data"]["test_num_clips"], cfg["data"]["test_num_crops"]) == (10, 3)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (["--model.backbone", "resnet_nope"], "model.backbone"),
        (["--model.norm", "batchy"], "model.norm"),
        (["--model.norm", "gn", "--model.norm_options", "{num_groups: 5}"], "model.norm_options.num_groups"),
        (["--model.norm", "sub_bn"], "model.norm_options.clips_per_group"),
        (["--data.root", "/nonexistent/kinetics"], "data.root"),
    ],
)
def test_config_errors_name_the_key(override, key, synthetic_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", *cli_args(synthetic_root, tmp_path / "runs"), *override])
    assert e.value.code != 0
    assert key in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
