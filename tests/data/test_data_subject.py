"""A subject's folder (fine-tuning, inversion): one captioned image is enough for it, while a
contrastive model's caption folder still needs two."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inkfuse.data.captions import folder_pairs
from inkfuse.data.subject import subject_images
from inkfuse.errors import DataError


def test_one_captioned_image_is_a_subject_but_not_a_clip_dataset(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "captions.csv").write_text("path,caption\na.png,a red circle\n")
    subject = subject_images(tmp_path, 8, 3, "unused")
    assert len(subject.images) == 1 and subject.captions == ["a red circle"]
    with pytest.raises(DataError, match="lists 1 captioned images; add at least 2"):
        folder_pairs(tmp_path, 8)
