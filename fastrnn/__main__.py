"""Command line: ``python -m fastrnn <command> [options]``.

Each command lives in its own module and is imported only when it runs, so
``python -m fastrnn info`` does not pay for the benchmark's imports.
"""

import importlib
import sys

# command -> (module, function, one-line help)
COMMANDS = {
    "info": ("fastrnn.info", "main", "versions, CPU, BLAS, threading layer, GPU, what 'auto' picks"),
    "bench": ("fastrnn.bench", "main", "time fastrnn against ONNX Runtime and PyTorch (--quick, --streaming, --contention, --json)"),
    "warmup": ("fastrnn.kernels.cpu", "warmup_main", "compile the common kernels into Numba's cache"),
    "predict": ("fastrnn.dask", "predict_main", "score a Zarr or .npy array with a saved model, on Dask"),
}


def _usage():
    lines = ["usage: python -m fastrnn <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {entry[2]}" for name, entry in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
