"""The command line: ``python -m fastrnn <command> [options]`` (also ``fastrnn ...``).

Each command lives in its own module and is imported only when it runs, so
``python -m fastrnn info`` does not pay for the benchmark's imports.
Nothing in the library imports this package.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, one-line help); each module has main(argv) -> exit code
COMMANDS = {
    "info": ("fastrnn.cli.info", "versions, CPU, BLAS, threading layer, GPU, what 'auto' picks"),
    "bench": ("fastrnn.cli.bench", "time fastrnn against ONNX Runtime and PyTorch (--quick, "
              "--streaming, --contention, --json)"),
    "warmup": ("fastrnn.cli.warmup", "compile the common kernels into Numba's cache"),
    "predict": ("fastrnn.cli.predict", "score a Zarr or .npy array with a saved model, on Dask"),
}


def _usage():
    lines = ["usage: python -m fastrnn <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {entry[1]}" for name, entry in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """Run one command; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[name][0]).main(rest) or 0
