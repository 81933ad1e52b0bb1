from dataclasses import fields

import pytest
import torch

from inkfuse.config import DataConfig
from inkfuse.data import ImageDataset, build_dataset, fetch, list_datasets
from inkfuse.errors import ConfigError, DataError


def test_registry_matches_the_config_choices():
    choices = next(f for f in fields(DataConfig) if f.name == "name").metadata["choices"]
    assert [name for name, _ in list_datasets()] == list(choices)
    assert all(description and "\n" not in description for _, description in list_datasets())


def test_shapes_through_build_dataset():
    cfg = DataConfig(name="shapes", size=16, count=50, limit=20, max_objects=2)
    ds = build_dataset(cfg, seed=3)
    assert isinstance(ds, ImageDataset) and ds.images.shape == (20, 3, 16, 16)
    assert ds.labels.dtype == torch.int64 and ds.context is None and len(ds.captions) == 20
    assert ds.class_names == ["circle", "square", "triangle", "cross"] and ds.context_names == []
    cfg = DataConfig(name="shapes", size=16, count=20, max_objects=2, labels="context")
    context = build_dataset(cfg, seed=3)
    assert torch.equal(context.images, ds.images)  # limit keeps the first scenes of the seed
    assert context.labels is None and context.context.shape == (20, 12)
    bare = build_dataset(DataConfig(name="shapes", size=16, count=5, labels="none"))
    assert bare.labels is None and bare.context is None and bare.class_names == []


def test_fetch_needs_a_downloadable_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'mnsit'"):
        fetch("mnsit")
    with pytest.raises(DataError, match="'shapes' has nothing to download"):
        fetch("shapes")
