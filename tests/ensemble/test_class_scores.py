import torch

from neas.ensemble.assess import class_scores


def test_per_class_top1_and_confusion_of_the_mean_of_the_path_logits():
    # 2 paths, 4 images, 3 classes; the ensemble (mean logits) predicts 0, 1, 1, 2
    a = torch.tensor([[3.0, 0, 0], [0, 2, 0], [0, 2, 1], [0, 0, 1]])
    b = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]])
    labels = torch.tensor([0, 1, 2, 2])
    out = class_scores(torch.stack([a, b]), labels, ["cat", "dog", "fox"])
    assert out["per_class"] == {"classes": ["cat", "dog", "fox"], "images": [1, 1, 2], "top1": [1.0, 1.0, 0.5]}
    assert out["confusion"]["matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_a_class_without_images_has_no_accuracy_and_names_default_to_indices():
    logits = torch.tensor([[[2.0, 0.0], [3.0, 0.0]]])
    out = class_scores(logits, torch.tensor([0, 0]))
    assert out["per_class"] == {"classes": ["0", "1"], "images": [2, 0], "top1": [1.0, None]}
    assert out["confusion"]["matrix"] == [[2, 0], [0, 0]]
