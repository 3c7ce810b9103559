"""``python -m fastrnn warmup``: fill Numba's cache with the common kernels."""

from __future__ import annotations

import argparse
import time

import numba

from .. import dispatch
from ..kernels import PRECISIONS


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastrnn warmup",
                                     description=dispatch.warmup.__doc__.split("\n\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no line per kernel family")
    parser.add_argument("--precision", default="", metavar="FORMATS",
                        help="also the kernels of reduced-precision weights: "
                             f"{','.join(PRECISIONS)} (float32's are always compiled; "
                             "the same list as bench --precision)")
    opts = parser.parse_args(argv)
    precisions = [p.strip() for p in opts.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS + ("float32",)]
    if bad:
        parser.error(f"--precision: expected some of {', '.join(PRECISIONS)}, got "
                     f"{opts.precision!r}")
    t0 = time.perf_counter()
    done = dispatch.warmup(verbose=not opts.quiet,
                           precisions=[p for p in dict.fromkeys(precisions) if p != "float32"])
    cpu = dispatch.backend_module("cpu")
    print(f"compiled or loaded {len(done)} kernel families in {time.perf_counter() - t0:.1f} s "
          f"(cache: {numba.config.CACHE_DIR or 'next to the sources (__pycache__)'}; "
          f"threading layer: {cpu.threading_layer()})")
    return 0
