import torch

from neas.nn import recalibrate_bn
from neas.space import EnsembleArch
from neas.supernet import Supernet


def test_recalibrated_stats_equal_a_direct_computation(tiny):
    torch.manual_seed(0)
    net = Supernet(tiny, 10)
    arch = EnsembleArch.sample(tiny, 1)
    batches = [torch.randn(8, 3, 32, 32) for _ in range(3)]
    # the stem BN sees the stem conv's output: compute its per-batch statistics directly
    with torch.no_grad():
        outs = [net.conv_stem(x) for x in batches]
    mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    net.bn1.running_mean.fill_(5.0)
    unused = next(m for op, m in net.layers[0].items() if op not in {str(p[0]) for p in arch.paths})
    before = unused.bn1.running_mean.clone()
    recalibrate_bn(lambda x: net(x, arch), net.used_modules(arch), batches, root=net)
    torch.testing.assert_close(net.bn1.running_mean, mean)
    torch.testing.assert_close(net.bn1.running_var, var)
    assert net.bn1.momentum == 0.1
    assert not net.training
    assert torch.equal(unused.bn1.running_mean, before)  # BNs the candidate does not use are untouched
