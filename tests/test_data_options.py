"""The data: section of a run's config, and --set into sections that are absent or null."""
from __future__ import annotations

import pytest

from pynas.config import apply_sets
from pynas.data.options import DataOptions, data_options, with_root


def test_a_path_or_nothing_is_a_root():
    assert data_options(None) == DataOptions()
    assert data_options("/data/imagenet") == DataOptions(root="/data/imagenet")


def test_a_mapping_is_checked_and_completed():
    options = data_options({"root": "/d", "train_fraction": 0.1, "val_fraction": 0.025, "workers": 4,
                            "colour_jitter": 0.4, "strict": True, "image_size": 128})
    assert (options.train_fraction, options.val_fraction, options.workers) == (0.1, 0.025, 4)
    assert options.loader == "auto" and options.strict and options.image_size == 128


@pytest.mark.parametrize("value, message", [
    ({"bogus": 1}, r"unknown key\(s\) bogus"),
    ({"train_fraction": 0}, r"data.train_fraction must be a number in \(0, 1\]"),
    ({"val_fraction": 1.5}, r"data.val_fraction must be a number in \(0, 1\]"),
    ({"valid_per_class": 0}, r"data.valid_per_class must be an int >= 1"),
    ({"loader": "disk"}, r"data.loader must be one of auto, device, stream"),
    ({"workers": True}, r"data.workers must be an int >= 1"),
    ({"colour_jitter": 1.0}, r"data.colour_jitter must be a number in \[0, 1\)"),
    ({"strict": "yes"}, r"data.strict must be true or false"),
    ({"root": 3}, r"data.root must be a path"),
    (5, r"data must be a path or a mapping"),
])
def test_bad_values_name_the_key(value, message):
    with pytest.raises(ValueError, match=message):
        data_options(value)


def test_data_flag_sets_the_root_and_keeps_the_other_keys():
    assert with_root({"train_fraction": 0.1}, "/d") == {"train_fraction": 0.1, "root": "/d"}
    assert with_root("/old", "/new") == {"root": "/new"}
    assert with_root({"strict": True}, None) == {"strict": True}
    assert with_root("/from/yaml", None) == {"root": "/from/yaml"}  # so --set data.<key> can add to it
    assert with_root(None, None) is None


def test_set_into_an_absent_or_null_section():
    assert apply_sets({}, ["data.strict=true"]) == {"data": {"strict": True}}
    assert apply_sets({"data": None}, ["data.workers=2"]) == {"data": {"workers": 2}}
    with pytest.raises(ValueError, match="'data' is not a section"):
        apply_sets({"data": "/root"}, ["data.workers=2"])


def test_set_values_read_exponents_as_numbers_and_refuse_broken_yaml(tmp_path):
    from pynas.config import apply_sets, load_yaml

    cfg = apply_sets({}, ["constraint.max_flops=60e6", "lr=1e-3", "a=3", "b=1.5E+3", "c=[1e-3, 2]", "d=abc",
                          "e=1_000", "f=.nan"])
    assert cfg["constraint"]["max_flops"] == 60e6 and isinstance(cfg["constraint"]["max_flops"], float)
    assert cfg["lr"] == 1e-3 and cfg["a"] == 3 and isinstance(cfg["a"], int) and cfg["b"] == 1500.0
    assert cfg["c"] == [1e-3, 2] and cfg["d"] == "abc" and cfg["e"] == 1000 and cfg["f"] != cfg["f"]
    with pytest.raises(ValueError, match=r"--set x: cannot read '\[1, 2' as a YAML value"):
        apply_sets({}, ["x=[1, 2"])
    (tmp_path / "c.yaml").write_text("lr: 3e-4\nepochs: 5\nname: 1e3x\n")
    assert load_yaml(tmp_path / "c.yaml") == {"lr": 3e-4, "epochs": 5, "name": "1e3x"}
