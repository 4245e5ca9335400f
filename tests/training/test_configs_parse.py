"""Every config parses with --print_config (Kinetics cells composed as base + norm overlay + cell); the paper cells
show the recipe; config mistakes fail before training, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gnvideo.cli import main
from gnvideo.training.optim import scaled_lr, steps_for_clips

from .conftest import REPO, cli_args

# configs/study/ holds `gnvideo demo --config` option files (tested in tests/demo), not LightningCLI configs.
# configs/kinetics400/ holds base.yaml, norm overlays norm_<norm>.yaml and cells <backbone>_<norm>_<cell>.yaml.
K400 = REPO / "configs" / "kinetics400"
CELLS = sorted(p.name for p in K400.glob("*.yaml") if p.name != "base.yaml" and not p.name.startswith("norm_"))
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")
                 if p.parent.name not in ("study", "kinetics400"))


def parts(cell: str) -> tuple[str, str, list[str]]:
    """(backbone, norm overlay, the rest) of a cell's name ``<backbone>_<norm>_<frames x stride>_<clips>...``: the norm
    is the first part naming an overlay (a backbone name may hold underscores: i3d_r50_nl5)."""
    words = cell.removesuffix(".yaml").split("_")
    i = next(i for i, w in enumerate(words) if i > 0 and (K400 / f"norm_{w}.yaml").is_file())
    return "_".join(words[:i]), words[i], words[i + 1:]


def compose(cell: str) -> list[str]:
    """The --config arguments of a Kinetics cell: base, the norm overlay named in the cell's file name, the cell."""
    return ["--config", str(K400 / "base.yaml"), "--config", str(K400 / f"norm_{parts(cell)[1]}.yaml"), "--config",
            str(K400 / cell)]


def _resolved(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as e:
        main(["fit", *args, "--print_config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_there_are_configs():
    for norm in ("bn", "gn"):
        for cell in ("32x2_8clips", "32x2_4clips", "64x1_4clips"):
            assert f"i3d_r50_{norm}_{cell}.yaml" in CELLS
    for norm in ("bn", "gn"):
        assert f"i3d_r50_nl5_{norm}_32x2_8clips.yaml" in CELLS
    for cell in CELLS:
        assert (K400 / f"norm_{parts(cell)[1]}.yaml").is_file(), cell
        assert len((K400 / cell).read_text().splitlines()) <= 15, f"{cell}: a cell is a few lines"


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses_alone(config, capsys):
    resolved = _resolved(["--config", str(REPO / config)], capsys)
    assert resolved["model"]["backbone"] and resolved["data"]["root"]
    assert "clips_per_device" not in resolved["model"]  # linked from data.clips_per_device
    assert resolved["checkpoint"]["save_last"] is True


@pytest.mark.parametrize("cell", CELLS)
def test_kinetics_cell_composes(cell, capsys):
    resolved = _resolved(compose(cell), capsys)
    assert resolved["model"]["backbone"] == parts(cell)[0]
    assert resolved["model"]["nesterov"] is True and resolved["model"]["no_weight_decay"] == "norm"
    assert resolved["data"]["holdout_fraction"] > 0  # checkpoint choice on held-out training videos
    assert resolved["checkpoint"]["save_last"] is True


@pytest.mark.parametrize("cell", [c for c in CELLS if c.startswith("i3d_r50_")])
def test_paper_cells_show_the_recipe_and_keep_steps_x_batch(cell, capsys):
    """--print_config of every paper cell: ImageNet source, Nesterov, precise BN for BN cells; LR and steps are
    computed from the total batch so that every cell sees the recipe's 400k x 64 clips."""
    r = _resolved(compose(cell), capsys)
    name = Path(cell).stem
    _, norm, (fxs, *rest) = parts(cell)
    m, d, t = r["model"], r["data"], r["trainer"]
    assert m["norm"] == {"subbn": "sub_bn"}.get(norm, norm)
    bn = m["norm"] in ("bn", "sub_bn")
    assert m["pretrained_2d"] == ("torchvision_resnet50" if bn else "timm_resnet50_gn")
    assert m["nesterov"] is True and m["momentum"] == 0.9 and m["weight_decay"] == 1e-4
    assert r["precise_bn"]["num_batches"] == (200 if bn else 0)
    assert m["inflate_mode"] == "mean" and m["head_pool"] == "local" and d["mean_std"] is None  # follows the weights
    frames, stride = map(int, fxs.split("x"))
    assert (d["num_frames"], d["sampling_rate"]) == (frames, stride)
    if not name.endswith("_1gpu"):
        assert d["clips_per_device"] == int(rest[0].removesuffix("clips"))
        assert t["devices"] == 8
    total = d["clips_per_device"] * t["devices"] * t["num_nodes"] * t["accumulate_grad_batches"]
    assert t["max_steps"] == -1  # from model.train_clips
    assert steps_for_clips(m["train_clips"], total) * total == 400_000 * 64  # the Non-local recipe's clips
    assert scaled_lr(m["base_lr"], total, m["base_batch_size"]) == pytest.approx(0.01 * total / 64)
    assert t["sync_batchnorm"] is False
    assert (d["test_num_clips"], d["test_num_crops"], d["test_crop_size"]) == (10, 3, 256)


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_nonlocal_cells_are_the_plain_cells_with_the_nl_backbone(norm, capsys):
    """The NL cell resolves to its plain cell's config but for the backbone: same recipe, data, init and schedule."""
    plain = _resolved(compose(f"i3d_r50_{norm}_32x2_8clips.yaml"), capsys)
    nl = _resolved(compose(f"i3d_r50_nl5_{norm}_32x2_8clips.yaml"), capsys)
    assert (plain["model"].pop("backbone"), nl["model"].pop("backbone")) == ("i3d_r50", "i3d_r50_nl5")
    assert nl == plain


def test_nonlocal_cells_init_from_a_plain_checkpoint_in_the_comment():
    for norm in ("bn", "gn"):
        text = (K400 / f"i3d_r50_nl5_{norm}_32x2_8clips.yaml").read_text()
        assert f"--model.init_from runs/i3d_r50_{norm}_32x2_8clips/version_0/checkpoints/last.ckpt" in text


def test_a_cell_alone_is_not_a_run(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(K400 / "i3d_r50_bn_32x2_8clips.yaml")])
    assert e.value.code != 0 and "data.root" in capsys.readouterr().err  # data.root comes from base.yaml


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


def test_readme_kinetics_section_matches_the_configs():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Kinetics-400"):text.index("## Normalization layers")]
    for cell in CELLS:
        stem = cell.removesuffix(".yaml")
        assert stem in section or ("i3d_r50_{bn,gn}_" in section and stem.startswith("i3d_r50_")), cell
    for overlay in ("base.yaml", "norm_bn.yaml", "norm_gn.yaml", "norm_subbn.yaml"):
        assert f"`{overlay}`" in section
    for norm, source in (("bn", "torchvision_resnet50"), ("gn", "timm_resnet50_gn")):
        cfg = yaml.safe_load((K400 / f"norm_{norm}.yaml").read_text())
        assert cfg["model"]["pretrained_2d"] == source and f"`pretrained_2d: {source}`" in section
        assert f"`precise_bn.num_batches: {cfg['precise_bn']['num_batches']}`" in section
    base = yaml.safe_load((K400 / "base.yaml").read_text())
    assert base["model"]["train_clips"] == 25_600_000 and "25.6M (400k iterations × 64 clips)" in section
    assert base["model"]["nesterov"] is True and "**Nesterov**" in section
    assert f"`holdout_fraction` {base['data']['holdout_fraction']}" in section
    assert "--ckpt_path last" in section and "--ckpt_path best" not in section
