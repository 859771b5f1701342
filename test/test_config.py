"""Config loading: names resolve to shipped files, overrides merge, errors name the file."""

import pytest

from vit_perception.config import ConfigError, available_configs, load_config, parse_overrides


def test_shipped_configs_include_the_issue_names():
    names = set(available_configs())
    assert {"vit_s16_detr", "vit_b16_detr", "swin_t_detr"} <= names
    assert any("tiny" in n for n in names)


def test_overrides_merge_and_name_defaults_to_file_stem(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("classes: [a, b]\nmodel: {head: {num_queries: 7}}\n")
    cfg = load_config(f, ["train.lr=0.001", "model.head.hidden_dim=64"])
    assert cfg["name"] == "mine"
    assert cfg["classes"] == ["a", "b"]
    assert cfg["model"]["head"]["num_queries"] == 7 and cfg["model"]["head"]["hidden_dim"] == 64
    assert cfg["train"]["lr"] == 0.001
    assert cfg["loss"]["eos_coef"] == 0.1  # from the defaults


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown config 'nope'"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["novalue"])


def test_defaults_and_shipped_configs_are_in_range_and_edges_are_kept():
    from vit_perception.config_ranges import check_ranges
    from vit_perception.training.distill_options import DISTILL_DEFAULTS
    from vit_perception.training.options import TRAIN_DEFAULTS
    from vit_perception.training.pretrain_options import PRETRAIN_DEFAULTS

    check_ranges({"train": TRAIN_DEFAULTS, "pretrain": PRETRAIN_DEFAULTS,
                  "distill": DISTILL_DEFAULTS})
    for name in available_configs():
        load_config(name)
    # the edges of a range are allowed; None ("off") passes; one step past an edge does not
    load_config("vit_tiny_detr", ["pretrain.local_crops=0", "distill.teacher_threshold=1",
                                  "pretrain.global_scale=[1.0,1.0]", "train.ema_decay=0",
                                  "distill.teacher_nms_iou=null", "train.samples_per_epoch=1"])
    for bad in ("pretrain.global_size=0", "pretrain.teacher_temp=0", "train.batch_size=2.5",
                "distill.unlabelled_repeat=0", "pretrain.augment.hue=0.6"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config("vit_tiny_detr", [bad])
