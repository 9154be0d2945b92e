"""The report's grid of misclassified images (issue 39 item 2): read back from their files or from the
evaluated split, and a line instead of the grid when the data is gone."""

import numpy as np
import pytest
from PIL import Image

from neas.data.datasets import load_dataset
from neas.errors import NeasError
from neas.report.mistakes import mistake_images, mistakes_section


def _entry(index, label, file=None):
    return {
        "index": index,
        "file": file,
        "label": label,
        "ensemble": (label + 1) % 3,
        "confidence": 0.6,
        "paths": [(label + 1) % 3, label],
        "path_confidence": [0.7, 0.4],
    }


def _result(entries, source):
    return {"per_class": {"classes": ["a", "b", "c"]}, "mistakes": {"of": 9, "images": entries, "source": source}}


def test_images_of_an_image_folder_are_read_from_their_files_as_the_model_saw_them(tmp_path):
    files = []
    for i in range(2):
        files.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (24, 20), (100 * i, 50, 0)).save(files[-1])
    source = {"data": "imagefolder", "data_dir": str(tmp_path), "split": "test", "holdout": None, "input_size": 16}
    result = _result([_entry(0, 0, files[0]), _entry(5, 2, files[1])], source)
    images = mistake_images(result["mistakes"])
    assert [im.shape for im in images] == [(16, 16, 3)] * 2 and images[1][8, 8, 0] == 100
    section = mistakes_section(tmp_path, result)
    assert "mistakes.png" in section and "2 most confident mistakes (of 9) on the test split" in section
    assert (tmp_path / "mistakes.png").stat().st_size > 2000
    (tmp_path / "0.png").rename(tmp_path / "moved.png")  # the data moved since: a line, not a failure
    assert "(the misclassified images are not shown: cannot read image" in mistakes_section(tmp_path, result)


def test_images_without_files_come_from_the_evaluated_split_loaded_again(tmp_path):
    test = load_dataset("digits", "test", 16)
    source = {"data": "digits", "data_dir": None, "split": "test", "holdout": None, "input_size": 16}
    entries = [_entry(3, int(test.labels[3])), _entry(7, int(test.labels[7]))]
    images = mistake_images({"images": entries, "source": source})
    assert np.array_equal(images[1], test.images[7].permute(1, 2, 0).numpy())
    entries[1]["label"] = (entries[1]["label"] + 1) % 10  # not the image that was evaluated
    with pytest.raises(NeasError, match="digits/test no longer holds the images that were evaluated"):
        mistake_images({"images": entries, "source": source})
    assert mistakes_section(tmp_path, {"per_class": {"classes": ["a"]}, "mistakes": {"of": 0, "images": []}}) == ""
