#!/usr/bin/env bash
# Install Detectron2's pure-Python sources into the given interpreter's site-packages,
# unless a detectron2 is already importable there (a source build with `_C` is kept).
#
# Detectron2 has no PyPI release; `sal-detectron2==0.7.2` is a wheel of upstream's
# Python sources (mid-2024) with a `_C` compiled for CPython 3.10 only. We install it
# without dependencies for 3.10, then drop the stray top-level `tools/` package and the
# `_C` extension that cannot load here. Without `_C`, use COCOEvaluator(use_fast_impl=False).
set -euo pipefail
PY=${1:-python}
if "$PY" -c "import detectron2" 2>/dev/null; then
    echo "detectron2 already importable: keeping it ($("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))'))"
    exit 0
fi
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PY" -m pip install -q --no-deps --target "$SITE" --upgrade --python-version 3.10 \
    --only-binary=:all: --implementation cp sal-detectron2==0.7.2
rm -rf "$SITE/tools" "$SITE"/detectron2/_C*.so
"$PY" -c "import detectron2; print('installed detectron2', detectron2.__version__)"
