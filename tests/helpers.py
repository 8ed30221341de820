"""Independent float64 references of the equations, written from DESIGN.md, not from the package."""
import math

import torch


def ref_ema(running_mean, features, labels, alpha):
    """Eq. 14-15 with an explicit loop over classes."""
    out = running_mean.double().clone()
    for c in range(out.shape[0]):
        rows = features.double()[labels == c]
        if len(rows):
            out[c] = alpha * out[c] + (1 - alpha) * rows.mean(0)
    return out


def ref_prior_loss(mu, running_mean, use_mean=True, use_dist=True):
    """Eq. 11-13 with explicit loops over classes and class pairs."""
    mu = mu.double()
    num_classes = mu.shape[0]
    loss = 0 * mu.sum()
    if use_mean:
        terms = [(1 - torch.cosine_similarity(mu[c], running_mean[c].double(), dim=0)) ** 2 for c in range(num_classes)]
        loss = loss + torch.stack(terms).mean()
    if use_dist and num_classes > 1:
        pairs = [torch.cosine_similarity(mu[a], mu[b], dim=0) ** 2
                 for a in range(num_classes) for b in range(num_classes) if a != b]
        loss = loss + torch.stack(pairs).mean()
    return loss


def ref_regression(features, targets):
    return ((features.double() - targets.double()) ** 2).mean()


def ref_gaussian_entropy(z):
    z = z.double().numpy()
    import numpy as np

    cov = np.cov(z, rowvar=False)
    d = z.shape[1]
    return 0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * np.linalg.slogdet(cov)[1]


def ref_regression_active(features, targets, labels, num_classes):
    """Mean of (f - t)^2 over the rows whose label is in [0, C), by an explicit row loop; 0 without any."""
    rows = [((features[i].double() - targets[i].double()) ** 2) for i in range(features.shape[0])
            if 0 <= int(labels[i]) < num_classes]
    if not rows:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(rows).mean()
