"""argparse types every pixelport CLI shares, so a flag is spelled and checked the same way everywhere."""

from __future__ import annotations

import argparse

from .contract import parse_hw


def hw_arg(text: str) -> tuple[int, int]:
    """`--size 512x1024` (or `512` for 512x512) -> (H, W); a one-line usage error otherwise."""
    try:
        return parse_hw(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
