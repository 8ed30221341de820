"""Small regularizer cases shared by the tests: C classes, D features, batches of B, every method's name,
seeded class statistics and float64 builders."""
import torch

from adarand import ClassStatsAccumulator, build_regularizer

C, D, B = 4, 6, 12
NAMES = ["none", "fnp", "randreg-uniform", "randreg-normal", "randreg-pretrained", "randreg-cp",
         "adarand", "adarand-no-mean", "adarand-no-dist", "ptr"]


def make_stats(seed=0):
    g = torch.Generator().manual_seed(seed)
    acc = ClassStatsAccumulator(C)
    acc.update(torch.randn(40, D, generator=g) * 2 + 1, torch.arange(40) % C)
    return acc.finalize(extractor="test")


def batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, D, generator=g, dtype=dtype).requires_grad_(True)
    y = torch.randint(0, C, (B,), generator=g)
    head = torch.randn(C, D, generator=g, dtype=dtype)
    return f, y, f.detach() @ head.T, head


def build(name, **options):
    reg = build_regularizer(name, num_classes=C, feat_dim=D, **options).double()
    if reg.needs_stats:
        reg.init_from_stats(make_stats())
    return reg


def enable_ptr(reg):
    """``reg`` with PtR's term on from the first call (it waits for the epoch CE to fall below its threshold);
    the other regularizers have no such switch."""
    if hasattr(reg, "enabled"):
        reg.enabled.fill_(True)
    return reg


def build_exact(name, **options):
    """:func:`build` whose runs compare exactly: no noise (a prior's sigma zeroed), PtR's term on."""
    reg = build(name, **options)
    if hasattr(reg, "prior"):
        reg.prior.sigma.zero_()
    return enable_ptr(reg)
