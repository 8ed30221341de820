"""Install the AdaRand package from ``plugin/adarand`` (import name ``adarand``).

``import adarand`` (prior, regularizers, kernels, ``adarand.attach``) needs only torch. The research code
beside it (benchmarks, studies, the paper's tables) installs as ``adarand_projects`` from ``projects/``. The trainers'
extras are optional: ``pip install -e .[cls,det]``; so are the framework integrations:
``pip install -e .[lightning]`` / ``.[transformers]`` (``adarand.integrations``).
"""
from setuptools import find_packages, setup

CLASSIFICATION = ["torchvision", "fvcore", "yacs", "tqdm", "tensorboard", "matplotlib", "scipy", "pillow",
                  "submitit>=1.5",  # submitit: tools/reproduce.py --launch
                  "open_clip_torch==3.3.0"]  # the clip:* backbones (QuickGELU towers tested)
DETECTION = [
    # detectron2 itself is installed by tools/install_detectron2.sh (see README).
    "fvcore", "iopath", "yacs", "pycocotools", "omegaconf>=2.1,<2.4", "hydra-core", "termcolor",
    "tabulate", "cloudpickle", "matplotlib", "setuptools<81", "pillow",
    "scipy",  # SBD's cls/*.mat labels (voc_2012_sem_seg_train_aug)
    # detectron2.utils.visualizer (and PointRend, tools/visualize.py) import cv2. The headless
    # wheel: the same cv2 without Qt/GTK/X11, so it installs and runs on servers and CI with no
    # display libraries. Pinned: an abi3 wheel (any CPython >= 3.7) built against numpy 2.
    "opencv-python-headless==4.14.0.94",
]
DEMO = ["scikit-learn", "scikit-image"]
# adarand.integrations.lightning / .transformers; timm only for the docs/integrations.md example.
# Pinned to the versions tested with torch 2.14.1.
LIGHTNING = ["lightning==2.6.6"]
TRANSFORMERS = ["transformers==5.25.0", "accelerate==1.15.0"]
TIMM = ["timm==1.0.31"]
TEST = ["pytest", "pytest-timeout"]

setup(
    name="adarand",
    version="0.1.0",
    description="Adaptive random feature regularization (AdaRand, CVPR 2024) for fine-tuning, "
    "with RandReg/PtR, FNP, a classification trainer and a Detectron2 plugin",
    # Two packages: the library (plugin/adarand) and the research code beside it
    # (projects/adarand_projects: benchmarks, studies, the paper's tables), which imports the library.
    package_dir={"": "plugin", "adarand_projects": "projects/adarand_projects"},
    packages=find_packages("plugin") + find_packages("projects"),
    package_data={"adarand_projects.paper": ["paper_results.json"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "tqdm"],
    extras_require={
        "cls": CLASSIFICATION,
        "det": DETECTION,
        "demo": DEMO,
        "test": TEST,
        "lightning": LIGHTNING,
        "transformers": TRANSFORMERS,
        "timm": TIMM,
        "all": sorted(set(CLASSIFICATION + DETECTION + DEMO + TEST + LIGHTNING + TRANSFORMERS + TIMM)),
    },
)
