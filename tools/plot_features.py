#!/usr/bin/env python
"""The paper's feature plots from run directories of tools/train_cls.py.

    python tools/plot_features.py RUN_DIR [RUN_DIR ...] --out-dir figures [--labels FT AdaRand] [--gaussian]

fig2_diagnostics.png: the paper's Fig. 2 measures per epoch, on training features (epoch means
of per-batch values, from metrics.jsonl): the norm of the mean feature, the pairwise entropy
estimate of Eq. 4 and the norm of the CE gradient w.r.t. the classifier weights, one line per
run. --gaussian adds this project's own extra measures on the validation features: the
Gaussian-fit entropy and mutual information I(Z;Y) (not the paper's estimators).
fig3_pca.png: 2-D PCA of each run's test features (features_test.pt), coloured by class (Fig. 3),
axes labelled with the variance each component explains, one class legend (ids past 20 classes).
"""
from adarand_projects.paper.plots import main

if __name__ == "__main__":
    main(description=__doc__)
