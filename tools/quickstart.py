#!/usr/bin/env python
"""AdaRand in a hand-written training loop: the library on its own, in seconds on a CPU.

A small network is "pre-trained" on one synthetic task, its class statistics initialise
the prior, and it is then fine-tuned on a few samples of a related task with plain
fine-tuning and with AdaRand, printing the losses. Shows the four calls a training loop
needs: build_regularizer, init_from_stats, reg(features, labels), reg.step(...).
"""
import argparse

import torch
from torch import nn

import adarand


def make_task(num_classes, dim, per_class, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 2
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centers[labels] + torch.randn(len(labels), dim, generator=g), labels


class Net(nn.Module):
    def __init__(self, dim, feat_dim, num_classes):
        super().__init__()
        self.extractor = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, feat_dim), nn.ReLU())
        self.head = nn.Linear(feat_dim, num_classes)

    def forward(self, x):
        features = self.extractor(x)
        return features, self.head(features)


def fine_tune(method, pretrained, x, y, num_classes, steps, seed):
    torch.manual_seed(seed)
    model = Net(x.shape[1], 32, num_classes)
    model.extractor.load_state_dict(pretrained.extractor.state_dict())
    reg = adarand.build_regularizer(method, num_classes=num_classes, feat_dim=32, **(
        {"total_steps": steps} if "total_steps" in adarand.regularizer_options(method) else {}))
    if reg.needs_stats:  # Eq. 9-10: class statistics of the pre-trained extractor on the target data
        model.eval()
        reg.init_from_stats(adarand.compute_class_stats(model.extractor, [(x, y)], num_classes, progress=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        features, logits = model(x)
        ce = nn.functional.cross_entropy(logits, y)
        reg_loss = reg(features, y, logits=logits, classifier_weight=model.head.weight)
        optimizer.zero_grad()
        (ce + reg_loss).backward()
        optimizer.step()
        reg.step(features.detach(), y)  # AdaRand: running means + one prior update
        if step % max(steps // 5, 1) == 0 or step == steps - 1:
            print(f"  [{method:>8}] step {step:3d}  ce {ce.item():.4f}  reg {reg_loss.item():.4f}")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    num_classes, dim = 5, 20
    torch.manual_seed(0)
    pretrained = Net(dim, 32, num_classes)
    x_src, y_src = make_task(num_classes, dim, 100, seed=1)
    opt = torch.optim.Adam(pretrained.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(pretrained(x_src)[1], y_src).backward()
        opt.step()
    x, y = make_task(num_classes, dim, 4, seed=2)  # 4 samples per class: the small-data regime
    x_test, y_test = make_task(num_classes, dim, 200, seed=2)
    for method in ("none", "adarand"):
        print(f"fine-tuning with '{method}' on {len(y)} samples:")
        model = fine_tune(method, pretrained, x, y, num_classes, args.steps, seed=0)
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test)[1].argmax(1) == y_test).float().mean().item()
        print(f"  test accuracy: {accuracy:.3f}")


if __name__ == "__main__":
    main()
