"""Segment one image on a Triton server and check it against the expected label map.

    python clients/examples/segment_one.py --url 127.0.0.1:8001 --model seg_unet IMAGE EXPECTED_LABELS.png
"""

import argparse
import sys

import cv2
import numpy as np

from clients import DenseClient, load_image

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("image")
parser.add_argument("expected", help="label PNG (class ids) at the image's size")
parser.add_argument("--url", default="127.0.0.1:8001")
parser.add_argument("--model", default="seg_unet")
parser.add_argument("--min-agreement", type=float, default=1.0, help="fraction of pixels that must match")
args = parser.parse_args()

# The client reads the model's contract (resize, classes, outputs) from the server itself.
with DenseClient(args.url, args.model) as client:
    labels = client.predict(load_image(args.image)).labels  # (H, W) class ids at the image's size

expected = cv2.imread(args.expected, cv2.IMREAD_UNCHANGED)
if expected is None or expected.shape != labels.shape:
    sys.exit(f"FAIL: expected labels {args.expected} unreadable or not {labels.shape}")
agreement = float(np.mean(labels == expected))
if agreement < args.min_agreement:
    sys.exit(f"FAIL: {agreement:.2%} of pixels agree, need {args.min_agreement:.2%}")
print(f"PASS ({agreement:.2%} of {labels.size} pixels agree)")
