"""What the benchmarks and checks build to time: AdaRand with a seeded prior, a regularizer compiled."""
import torch

import adarand


def seeded_adarand(num_classes, dim, seed=0, total_steps=100, device="cpu"):
    """AdaRand for ``num_classes`` x ``dim`` features on ``device``, value checks off, its prior initialised
    from seeded statistics (means N(0, 1), standard deviations U(0.1, 1.1), drawn on the CPU)."""
    reg = adarand.build_regularizer("adarand", num_classes, dim, total_steps=total_steps,
                                    check_values=False).to(device)
    g = torch.Generator().manual_seed(seed)
    reg.prior.init_from_stats(torch.randn(num_classes, dim, generator=g).to(device),
                              (torch.rand(num_classes, dim, generator=g) + 0.1).to(device))
    return reg


def compile_regularizer(reg):
    """(forward, step): ``reg``'s forward and ``step`` under ``torch.compile(fullgraph=True)``, its value
    checks turned off (a host-side check would break the graph)."""
    for module in reg.modules():
        if hasattr(module, "check_values"):
            module.check_values = False
    return torch.compile(reg.forward, fullgraph=True), torch.compile(reg.step, fullgraph=True)
