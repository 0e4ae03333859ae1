"""Tests for `xai_keras.config`: defaults, files, overrides and every kind of invalid input."""

from __future__ import annotations

import json

import pytest

from xai_keras.config import (
    Config,
    DataConfig,
    ModelConfig,
    TrainingConfig,
    apply_overrides,
    config_from_dict,
    load_config,
)
from xai_keras.errors import ConfigError


def test_defaults_load():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.data == DataConfig()
    assert cfg.model == ModelConfig()
    assert cfg.training == TrainingConfig()
    assert cfg.data.name == "shapes"
    assert cfg.training.optimizer == "adam"
    assert cfg.model.filters == [32, 64, 96, 128]


def test_to_dict_round_trips():
    cfg = load_config(overrides=["training.epochs=3", "model.filters=[8, 16]"])
    assert config_from_dict(cfg.to_dict()) == cfg


def test_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "data:\n"
        "  name: digits\n"
        "  image_size: 32\n"
        "  channels: 1\n"
        "model:\n"
        "  filters: [8, 16]\n"
        "  head: flatten\n"
        "training:\n"
        "  epochs: 2\n"
        "  learning_rate: 1  # an int is accepted for a float\n"
        "out_dir: runs/digits\n"
    )
    cfg = load_config(path)
    assert cfg.data.name == "digits"
    assert cfg.data.image_size == 32
    assert cfg.data.channels == 1
    assert cfg.model.filters == [8, 16]
    assert cfg.model.head == "flatten"
    assert cfg.training.epochs == 2
    assert cfg.training.learning_rate == 1.0
    assert isinstance(cfg.training.learning_rate, float)
    assert cfg.out_dir == "runs/digits"
    # Keys the file leaves out keep their defaults.
    assert cfg.training.batch_size == TrainingConfig().batch_size
    assert cfg.data.n_train == DataConfig().n_train


def test_json_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": {"dropout": 0.5}, "training": {"optimizer": "sgd"}}))
    cfg = load_config(str(path))
    assert cfg.model.dropout == 0.5
    assert cfg.training.optimizer == "sgd"


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    assert load_config(path) == Config()


def test_overrides_parse_values_as_yaml():
    cfg = load_config(
        overrides=[
            "training.epochs=3",
            "model.filters=[8,16]",
            "data.spurious_cue=true",
            "training.learning_rate=0.01",
            "out_dir=runs/a=b",  # only the first `=` splits
        ]
    )
    assert cfg.training.epochs == 3
    assert cfg.model.filters == [8, 16]
    assert cfg.data.spurious_cue is True
    assert cfg.training.learning_rate == 0.01
    assert cfg.out_dir == "runs/a=b"


def test_overrides_apply_after_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  epochs: 2\n  batch_size: 16\n")
    cfg = load_config(path, overrides=["training.epochs=5"])
    assert cfg.training.epochs == 5
    assert cfg.training.batch_size == 16


def test_apply_overrides_returns_a_new_config():
    cfg = Config()
    new = apply_overrides(cfg, ["training.epochs=1"])
    assert new.training.epochs == 1
    assert cfg.training.epochs == TrainingConfig().epochs


def test_unknown_top_level_key_names_key_and_allowed_keys():
    with pytest.raises(
        ConfigError,
        match=r"Unknown config key `trainig`. Allowed keys in `<root>`: "
        r"data, model, training, out_dir",
    ):
        config_from_dict({"trainig": {"epochs": 3}})


def test_unknown_nested_key_names_key_and_allowed_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"Unknown config key `training.epoch`") as info:
        load_config(path)
    message = str(info.value)
    assert "Allowed keys in `training`:" in message
    for key in ("optimizer", "learning_rate", "batch_size", "epochs", "seed"):
        assert key in message


def test_unknown_key_in_override():
    with pytest.raises(ConfigError, match=r"Unknown config key `model.filter`.*filters"):
        load_config(overrides=["model.filter=[8]"])


def test_unknown_section_in_override_lists_sections():
    with pytest.raises(
        ConfigError,
        match=r"Unknown config section `trainig` in override 'trainig.epochs=3'. "
        r"Sections: data, model, training",
    ):
        load_config(overrides=["trainig.epochs=3"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("training.epochs=abc", r"`training.epochs` must be int. .*epochs='abc' \(str\)"),
        ("training.epochs=2.5", r"`training.epochs` must be int. .*epochs=2.5 \(float\)"),
        ("training.epochs=true", r"`training.epochs` must be int. .*epochs=True \(bool\)"),
        ("training.learning_rate=fast", r"`training.learning_rate` must be float"),
        ("training.learning_rate=true", r"`training.learning_rate` must be float"),
        ("data.spurious_cue=1", r"`data.spurious_cue` must be bool"),
        ("data.name=5", r"`data.name` must be str"),
        ("model.filters=8", r"`model.filters` must be a list of int"),
        ("model.filters=[8, x]", r"`model.filters\[1\]` must be int. .*='x'"),
    ],
)
def test_wrong_type_names_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_section_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"config section `training.` must be a mapping"):
        config_from_dict({"training": 3})


def test_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"config section `<root>` must be a mapping"):
        load_config(path)


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("training.optimizer=adagrad", "one of 'adam', 'adamw', 'sgd', 'rmsprop'"),
        ("model.head=avg", "one of 'gap', 'flatten'"),
    ],
)
def test_literal_choice_error_lists_allowed_values(override, allowed):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert f"`{key}` must be {allowed}" in message
    assert f"Received: {key}='{value}'" in message


def test_missing_file():
    with pytest.raises(ConfigError, match=r"Config file not found: .*nope.yaml"):
        load_config("does/not/exist/nope.yaml")


def test_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path)


def test_invalid_yaml_is_one_line_with_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: 3\n bad: [1, 2\n")
    with pytest.raises(
        ConfigError,
        match=r"bad.yaml is not valid YAML at line 3, column 2: expected <block end>.*"
        r"\(the line reads ' bad: \[1, 2'\). Check the indentation",
    ) as info:
        load_config(path)
    assert "\n" not in str(info.value) and "^" not in str(info.value)


def test_invalid_json_is_one_line_with_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"training":\n  {"epochs": 3,}}')
    with pytest.raises(
        ConfigError, match=r"bad.json is not valid JSON at line 2, column 16: Expecting property"
    ) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"training:\n  optimizer: \xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml is not UTF-8 text \(byte 23"):
        load_config(path)


def test_cli_invalid_yaml_exits_2_with_one_line(tmp_path, capsys):
    from xai_keras.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("training:\n\tepochs: 3\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{path} is not valid YAML at line 2, column 1" in err
    assert not (tmp_path / "run").exists()


def test_image_size_too_small_for_conv_stack():
    filters = "model.filters=[8,16,32,64,128]"
    with pytest.raises(
        ConfigError,
        match=r"`data.image_size`=16 is too small for 5 conv blocks: the last block's feature "
        r"map would be 1x1. Use data.image_size >= 32 or fewer `model.filters`.",
    ):
        load_config(overrides=["data.image_size=16", filters])
    # The suggested size is enough.
    assert load_config(overrides=["data.image_size=32", filters]).data.image_size == 32


def test_override_without_equals_sign():
    with pytest.raises(
        ConfigError,
        match=r"An override must look like `section.key=value` .* Received: 'training.epochs'",
    ):
        load_config(overrides=["training.epochs"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("training.epochs=0", r"`training.epochs` must be > 0. Received: training.epochs=0"),
        ("training.batch_size=-8", r"`training.batch_size` must be > 0"),
        ("training.learning_rate=0", r"`training.learning_rate` must be > 0"),
        ("data.n_test=0", r"`data.n_test` must be > 0"),
        ("data.channels=2", r"`data.channels` must be 1 or 3. Received: 2"),
        ("model.filters=[]", r"`model.filters` must be a non-empty list of positive ints"),
        ("model.filters=[8,0]", r"`model.filters` must be a non-empty list of positive ints"),
        ("model.dropout=1.0", r"`model.dropout` must be in \[0, 1\)"),
        ("data.cue_strength=1.5", r"`data.cue_strength` must be in \[0, 1\]"),
    ],
)
def test_out_of_range_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_float_in_exponent_form_is_accepted():
    assert load_config(overrides=["training.learning_rate=1e-3"]).training.learning_rate == 1e-3


def test_object_scale_range_is_checked():
    from xai_keras.config import load_config

    assert load_config(None, ["data.object_scale=[0.1, 0.2]"]).data.object_scale == [0.1, 0.2]
    with pytest.raises(ConfigError, match="object_scale"):
        load_config(None, ["data.object_scale=[0.3, 0.2]"])
    with pytest.raises(ConfigError, match="object_scale"):
        load_config(None, ["data.object_scale=[0.1]"])


def test_builtin_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    from xai_keras.config import builtin_configs

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: they ship inside the package
    assert {"shapes", "shapes_shortcut"} <= set(builtin_configs())
    assert load_config("shapes", ["training.epochs=1"]).training.epochs == 1
    assert load_config("shapes_shortcut").data.spurious_cue is True
    with pytest.raises(ConfigError, match=r"built-in config name \(shapes, shapes_shortcut"):
        load_config("shapez")


def test_the_builtin_configs_are_package_data():
    import configparser
    from pathlib import Path

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert "configs/*.yaml" in setup["options.package_data"]["xai_keras"]
