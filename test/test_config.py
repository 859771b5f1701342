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
