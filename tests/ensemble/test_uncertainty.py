import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from neas.ensemble.uncertainty import CURVE_POINTS, calibration_errors, ood_metrics, ood_scores, selective_metrics
from neas.errors import NeasError


def _path_logits(k: int, n: int = 64, c: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, n, c, generator=torch.Generator().manual_seed(seed)) * 3


def test_perfectly_separated_scores():
    g = torch.Generator().manual_seed(0)
    score_in = torch.randn(200, generator=g)
    score_out = score_in.max() + 1 + torch.rand(50, generator=g)
    m = ood_metrics(score_in, score_out)
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}


def test_identical_distributions_give_chance_auroc():
    g = torch.Generator().manual_seed(1)
    m = ood_metrics(torch.randn(4000, generator=g), torch.randn(4000, generator=g))
    assert abs(m["auroc"] - 0.5) < 0.03  # standard error ~0.0065
    assert 0.9 < m["fpr95"] <= 1.0


@pytest.mark.parametrize("scale", [1.0, 80.0])  # 80: energies that a sigmoid would saturate into ties
def test_ood_metrics_against_sklearn(scale):
    rng = np.random.default_rng(2)
    score_in = np.round(rng.normal(0, 1, 700), 1) * scale - 40  # rounding makes ties, within and across sets
    score_out = np.round(rng.normal(0.7, 1, 300), 1) * scale - 40
    m = ood_metrics(torch.from_numpy(score_in), torch.from_numpy(score_out))
    y, s = np.r_[np.zeros(700), np.ones(300)], np.r_[score_in, score_out]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert m["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert m["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-6)
    assert m["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-6)
    assert all(isinstance(v, float) for v in m.values())


def test_ood_metrics_need_both_sets():
    with pytest.raises(NeasError, match="both sets"):
        ood_metrics(torch.randn(5), torch.empty(0))
    with pytest.raises(NeasError, match="both sets"):
        ood_metrics(torch.empty(0), torch.randn(5))


def test_single_path_scores_and_their_values():
    logits = _path_logits(1)
    scores = ood_scores(logits, temperature=2.0)
    assert set(scores) == {"msp", "entropy", "energy"}
    probs = (logits[0].double() / 2).softmax(-1)
    torch.testing.assert_close(scores["msp"], -probs.max(-1).values)
    torch.testing.assert_close(scores["entropy"], -(probs * probs.log()).sum(-1))
    torch.testing.assert_close(scores["energy"], -2 * torch.logsumexp(logits[0].double() / 2, -1))


def test_scores_grow_with_uncertainty():
    confident = torch.tensor([[[8.0, 0.0, 0.0]], [[9.0, 0.0, 0.0]]])  # (K=2, N=1, C=3)
    unsure = torch.tensor([[[1.0, 0.0, 0.5]], [[0.0, 1.0, 0.5]]])
    low, high = ood_scores(confident), ood_scores(unsure)
    for key in ("msp", "entropy", "energy", "mutual_information", "disagreement"):
        assert high[key][0] > low[key][0], key


def test_mutual_information_is_zero_exactly_when_paths_agree():
    same = _path_logits(1).expand(3, -1, -1)
    scores = ood_scores(same)
    assert torch.equal(scores["mutual_information"], torch.zeros(64, dtype=torch.float64))
    assert torch.equal(scores["disagreement"], torch.zeros(64, dtype=torch.float64))
    mi = ood_scores(_path_logits(3))["mutual_information"]
    assert (mi > 0).all()
    probs = _path_logits(3).double().softmax(-1)
    entropy = -(probs * probs.log()).sum(-1)
    mean = probs.mean(0)
    torch.testing.assert_close(mi, -(mean * mean.log()).sum(-1) - entropy.mean(0))


def test_disagreement_is_the_fraction_of_paths_off_the_ensemble_argmax():
    logits = torch.tensor([[[5.0, 0.0]], [[5.0, 0.0]], [[0.0, 1.0]]])  # ensemble picks class 0
    assert ood_scores(logits)["disagreement"].tolist() == [pytest.approx(1 / 3)]


def _reference_selective(conf: np.ndarray, correct: np.ndarray) -> dict:
    """Straightforward loop over distinct thresholds, highest first (AUGRC: see the fd-shifts test below)."""
    n, aurc, prev = len(conf), 0.0, 0.0
    points = []
    for t in sorted(set(conf.tolist()), reverse=True):
        accepted = conf >= t
        coverage = accepted.sum() / n
        wrong = (~correct[accepted]).sum()
        risk = wrong / accepted.sum()
        aurc += risk * (coverage - prev)
        prev = coverage
        points.append((coverage, risk))
    risk_at_80 = next(r for c, r in points if c >= 0.8)
    safe = [c for c, r in points if r <= 0.05]
    return {"aurc": aurc, "risk_at_80": risk_at_80, "coverage_at_5_risk": max(safe, default=0.0)}


@pytest.mark.parametrize("n", [50, 1000])
def test_selective_metrics_against_a_loop(n):
    rng = np.random.default_rng(n)
    conf = np.round(rng.uniform(0, 1, n), 1)  # heavy ties
    correct = rng.uniform(0, 1, n) < conf * 1.1
    m = selective_metrics(torch.from_numpy(conf), torch.from_numpy(correct))
    expected = _reference_selective(conf, correct)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-6), key
    assert len(m["curve"]["coverage"]) == len(m["curve"]["risk"]) == len(set(conf.tolist()))
    assert m["curve"]["coverage"][-1] == 1.0


def test_aurc_without_ties_is_the_mean_selective_risk():
    rng = np.random.default_rng(3)
    conf, correct = rng.permutation(500) / 500, rng.uniform(0, 1, 500) < 0.7
    wrong = (~correct[np.argsort(-conf)]).cumsum()
    m = selective_metrics(torch.from_numpy(conf), torch.from_numpy(correct))
    assert m["aurc"] == pytest.approx((wrong / np.arange(1, 501)).mean(), abs=1e-9)
    # the trapezoid between consecutive images' generalized risks, from (0, 0)
    assert m["augrc"] == pytest.approx(((wrong + np.r_[0, wrong[:-1]]) / 2 / 500).mean(), abs=1e-12)
    assert len(m["curve"]["risk"]) <= CURVE_POINTS and all(isinstance(v, float) for v in m["curve"]["risk"])
    assert m["curve"]["coverage"][-1] == 1.0


def _fd_shifts_augrc(conf: np.ndarray, correct: np.ndarray) -> float:
    """AUGRC as Traub et al.'s fd-shifts computes it (``generalized_risk_stats`` + ``evaluate_auc``), written
    from its description: sort ascending, drop the least confident image one at a time, add a point
    (coverage, errors kept / N) only where the next confidence differs (a block of ties leaves together),
    end at (0, 0), integrate by the trapezoid rule."""
    order = np.argsort(conf, kind="stable")
    conf, residual = conf[order], (~correct[order]).astype(float)
    n, errors = len(conf), residual.sum()
    coverages, risks = [1.0], [errors / n]
    for i in range(n - 1):
        errors -= residual[i]
        if conf[i] != conf[i + 1]:
            coverages.append((n - i - 1) / n)
            risks.append(errors / n)
    coverages.append(0.0)
    risks.append(0.0)
    return float(-np.trapezoid(risks, coverages))  # coverages fall, so the integral is negated


@pytest.mark.parametrize("decimals", [None, 2, 1])  # distinct, tied, heavily tied confidences
def test_augrc_is_traub_et_als_trapezoid_not_a_right_riemann_sum(decimals):
    rng = np.random.default_rng(7)
    conf = rng.uniform(0, 1, 3000)
    conf = conf if decimals is None else np.round(conf, decimals)
    correct = rng.uniform(0, 1, 3000) < 0.2 + 0.7 * conf
    augrc = selective_metrics(torch.from_numpy(conf), torch.from_numpy(correct))["augrc"]
    assert augrc == pytest.approx(_fd_shifts_augrc(conf, correct), abs=1e-12)
    # and their closed form: pi^2 / 2 + pi (1 - pi) (1 - AUROC_f), AUROC_f of confidence for right vs wrong
    error = 1 - correct.mean()
    closed = error**2 / 2 + error * (1 - error) * (1 - roc_auc_score(correct, conf))
    assert augrc == pytest.approx(closed, abs=1e-12)


def test_selective_metrics_edge_cases():
    perfect = selective_metrics(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, True, True]))
    assert perfect["aurc"] == 0.0 and perfect["coverage_at_5_risk"] == 1.0
    hopeless = selective_metrics(torch.tensor([0.9, 0.8]), torch.tensor([False, False]))
    assert hopeless["coverage_at_5_risk"] == 0.0 and hopeless["risk_at_80"] == 1.0
    with pytest.raises(NeasError):
        selective_metrics(torch.empty(0), torch.empty(0, dtype=torch.bool))


def test_selective_thresholds_are_inclusive():
    conf = torch.arange(20, 0, -1).double()  # distinct, accepted in this order
    correct = torch.ones(20, dtype=torch.bool)
    correct[[0, 16, 19]] = False  # the 17th image is the first one past 80% coverage
    m = selective_metrics(conf, correct)
    assert m["risk_at_80"] == 1 / 16  # exactly 80% coverage counts
    correct = torch.ones(20, dtype=torch.bool)
    correct[19] = False  # all 20 accepted: risk exactly 0.05
    assert selective_metrics(conf, correct)["coverage_at_5_risk"] == 1.0


def test_calibration_errors_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.3, 0.7]])
    labels = torch.tensor([0, 0, 1, 1])  # confidences 0.9 right, 0.6 wrong, 0.8 wrong, 0.7 right
    # 2 equal-mass bins: {0.6 wrong, 0.7 right} |0.5 - 0.65|, {0.8 wrong, 0.9 right} |0.5 - 0.85|
    assert calibration_errors(probs, labels, n_bins=2)["adaptive_ece"] == pytest.approx(0.5 * 0.15 + 0.5 * 0.35)
    # 3 bins over 4 images hold positions [0, 1), [1, 2), [2, 4)
    three = calibration_errors(probs, labels, n_bins=3)
    assert three["adaptive_ece"] == pytest.approx(0.25 * 0.6 + 0.25 * 0.3 + 0.5 * 0.35)
    # equal-width bins [0.5, 0.75) and [0.75, 1]: the worst is |0.5 - 0.85|
    assert calibration_errors(probs, labels, n_bins=4)["mce"] == pytest.approx(0.35, abs=1e-6)
    with pytest.raises(NeasError):
        calibration_errors(probs, labels[:3])
