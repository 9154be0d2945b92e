import argparse
import os

import pytest
import torch

from neas.cli import main
from neas.ensemble.official import load_official
from neas.errors import NeasError
from neas.space import make_divisible
from neas.space.presets import ARCH_PRESETS

# ---- the released layout, written from DESIGN.md §2-3 (not from our builders) ---------------
STAGES = [(24, 4, 2), (40, 4, 2), (80, 4, 2), (112, 4, 1), (160, 4, 2)]
KERNEL_EXP = {0: (3, 4), 1: (3, 6), 2: (5, 4), 3: (5, 6), 4: (7, 4), 5: (7, 6)}


def _bn(prefix, c):
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def _mbconv(prefix, cin, cout, op):
    k, e = KERNEL_EXP[op]
    mid = cin * e
    rd = make_divisible(0.25 * mid)
    shapes = {
        f"{prefix}.conv_pw.weight": (mid, cin, 1, 1),
        f"{prefix}.conv_dw.weight": (mid, 1, k, k),
        f"{prefix}.se.conv_reduce.weight": (rd, mid, 1, 1),
        f"{prefix}.se.conv_reduce.bias": (rd,),
        f"{prefix}.se.conv_expand.weight": (mid, rd, 1, 1),
        f"{prefix}.se.conv_expand.bias": (mid,),
        f"{prefix}.conv_pwl.weight": (cout, mid, 1, 1),
        f"{prefix}.conv_dwl.weight": (cout, 1, k, k),
    }
    for name, c in (("bn1", mid), ("bn2", mid), ("bn3", cout), ("bn4", cout)):
        shapes.update(_bn(f"{prefix}.{name}", c))
    return shapes


def released_shapes(arch_list, num_classes):
    s, k = arch_list[0], arch_list[1]
    shared_ids = arch_list[3 : 3 + s]
    private = (len(arch_list) - 3 - s) // k - 1
    layers = []  # (in, out, stride) of L1..L20
    cin = 16
    for cout, n, stride in STAGES:
        for j in range(n):
            layers.append((cin, cout, stride if j == 0 else 1))
            cin = cout
    shapes = {"conv_stem.weight": (16, 3, 3, 3), **_bn("bn1", 16)}
    ds = {
        "conv_dw.weight": (16, 1, 3, 3),
        "se.conv_reduce.weight": (8, 16, 1, 1),
        "se.conv_reduce.bias": (8,),
        "se.conv_expand.weight": (16, 8, 1, 1),
        "se.conv_expand.bias": (16,),
        "conv_pw.weight": (16, 16, 1, 1),
    }
    shapes.update({f"sharing_blocks.0.0.{n}": v for n, v in ds.items()})
    shapes.update(_bn("sharing_blocks.0.0.bn1", 16) | _bn("sharing_blocks.0.0.bn2", 16))
    j = 1
    for index, op in enumerate(shared_ids):
        if op != -1:
            shapes.update(_mbconv(f"sharing_blocks.0.{j}", *layers[index][:2], op))
            j += 1
    for p in range(k):
        start = 3 + s + p * (private + 1)
        ids = arch_list[start : start + private]
        j = 0
        for offset, op in enumerate(ids):
            if op != -1:
                shapes.update(_mbconv(f"blocks.{p}.0.{j}", *layers[s + offset][:2], op))
                j += 1
        shapes[f"blocks.{p}.0.{j}.conv.weight"] = (960, 160, 1, 1)
        shapes.update(_bn(f"blocks.{p}.0.{j}.bn1", 960))
        shapes.update(
            {
                f"conv_heads.{p}.weight": (1280, 960, 1, 1),
                f"conv_heads.{p}.bias": (1280,),
                f"classifiers.{p}.weight": (num_classes, 1280),
                f"classifiers.{p}.bias": (num_classes,),
            }
        )
    return shapes


def _random_state(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.05
    return out


@pytest.fixture(scope="module")
def released_m(tmp_path_factory):
    shapes = released_shapes(ARCH_PRESETS["neas-m"], 10)
    raw, ema = _random_state(shapes, 0), _random_state(shapes, 1)
    path = tmp_path_factory.mktemp("ckpt") / "neas_m.pth.tar"
    args = argparse.Namespace(model="neas_m", lr=0.064, opt="rmsproptf", epochs=350)
    torch.save(
        {
            "epoch": 349,
            "arch": "neas_m",
            "state_dict": {f"module.{k}": v for k, v in raw.items()},
            "state_dict_ema": ema,
            "optimizer": {"state": {}},
            "args": args,
        },
        path,
    )
    return path, raw, ema


def test_every_tensor_lands_where_it_belongs(released_m):
    path, raw, ema = released_m
    net = load_official(path, "neas-m", num_classes=10)
    own = net.state_dict()
    expected = {k: v for k, v in ema.items() if ".conv_dwl." not in k and ".bn4." not in k}
    assert set(own) == set(expected)
    for key, value in expected.items():
        assert torch.equal(own[key], value), key
    raw_net = load_official(path, "neas-m", num_classes=10, ema=False)
    assert torch.equal(raw_net.state_dict()["conv_stem.weight"], raw["conv_stem.weight"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(net(x), torch.stack(net.path_logits(x)).mean(0))


def test_another_architecture_lists_the_mismatches(released_m):
    with pytest.raises(NeasError, match="does not fit NEAS-L .*(missing|unexpected|shape mismatch)") as info:
        load_official(released_m[0], "neas-l", num_classes=10)
    assert "checkpoint (" in str(info.value)
    assert "vs model" in str(info.value)
    with pytest.raises(NeasError, match="shape mismatch"):
        load_official(released_m[0], "neas-m", num_classes=1000)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"conv_stem.weight": torch.zeros(1)}, "args": Evil()}, path)
    with pytest.raises(NeasError, match="refused"):
        load_official(path, "neas-m")
    assert not marker.exists()


def test_truncated_and_foreign_files(released_m, tmp_path):
    data = released_m[0].read_bytes()
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(NeasError, match="not a readable checkpoint|refused"):
        load_official(cut, "neas-m", num_classes=10)
    junk = tmp_path / "junk.pth.tar"
    junk.write_text('{"hello": 1}')
    with pytest.raises(NeasError, match="not a readable checkpoint|refused"):
        load_official(junk, "neas-m")
    with pytest.raises(NeasError, match="no such checkpoint file"):
        load_official(tmp_path / "missing.pth.tar", "neas-m")
    notdict = tmp_path / "list.pth.tar"
    torch.save([1, 2, 3], notdict)
    with pytest.raises(NeasError, match="not a checkpoint"):
        load_official(notdict, "neas-m")


def test_export_official_cli(released_m, tmp_path, capsys):
    code = main(
        [
            "export",
            "--official-checkpoint",
            str(released_m[0]),
            "--arch",
            "neas-m",
            "--format",
            "safetensors",
            "--out",
            str(tmp_path / "m.safetensors"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "max |difference|" in out
    from neas.ensemble.io import load_ensemble

    net, meta = load_ensemble(tmp_path / "m.safetensors")
    assert net.num_classes == 10
    assert meta.weights == "official"
    assert torch.equal(net.state_dict()["conv_stem.weight"], released_m[2]["conv_stem.weight"])
