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


def test_mistakes_are_the_most_confident_wrong_predictions_with_every_paths_vote():
    from neas.ensemble.assess import mistakes

    # 2 paths, 4 images, 3 classes; the ensemble (mean logits) predicts 0, 1, 2, 1: images 2 and 3 are wrong,
    # image 3 (mean logits [0, 4.5, 0]) more confidently than image 2 ([0, 0, 1])
    a = torch.tensor([[3.0, 0, 0], [0, 2, 0], [0, 0, 1], [0, 5, 0]])
    b = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 0, 1], [0, 4, 1]])
    labels = torch.tensor([0, 1, 1, 2])
    out = mistakes(torch.stack([a, b]), labels, files=["a.png", "b.png", "c.png", "d.png"])
    assert out["of"] == 2 and [e["index"] for e in out["images"]] == [3, 2]
    first = out["images"][0]
    assert (first["label"], first["ensemble"], first["paths"]) == (2, 1, [1, 1])
    assert first["confidence"] == torch.tensor([0.0, 4.5, 0.5]).double().softmax(0).max().item()
    assert first["path_confidence"][1] == torch.tensor([0.0, 4, 1]).double().softmax(0).max().item()
    assert first["file"].endswith("d.png") and first["file"].startswith("/")  # absolute: the report reads it
    assert mistakes(torch.stack([a, b]), labels, count=1)["images"][0]["file"] is None
