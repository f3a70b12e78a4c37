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
