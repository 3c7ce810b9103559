"""``python -m fastrnn warmup``: fill Numba's cache with the common kernels."""

from __future__ import annotations

import argparse
import time

import numba

from .. import dispatch


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastrnn warmup",
                                     description=dispatch.warmup.__doc__.split("\n\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no line per kernel family")
    opts = parser.parse_args(argv)
    t0 = time.perf_counter()
    done = dispatch.warmup(verbose=not opts.quiet)
    cpu = dispatch.backend_module("cpu")
    print(f"compiled or loaded {len(done)} kernel families in {time.perf_counter() - t0:.1f} s "
          f"(cache: {numba.config.CACHE_DIR or 'next to the sources (__pycache__)'}; "
          f"threading layer: {cpu.threading_layer()})")
    return 0
