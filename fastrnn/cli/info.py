"""``python -m fastrnn info``: what fastrnn will run on, and why.

Versions, the CPU and its vector features, the BLAS NumPy and SciPy use,
Numba's threading layer and thread counts, the instructions the cpu kernels
use to load and apply bfloat16 and int8 weights (from the assembly compiled
for this CPU), the GPU (through the ``cuda``
backend's ``describe()``), and the backend ``auto`` picks for a float32
LSTM with the dispatcher's reason.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

from .. import dispatch
from ..kernels import LSTMParams


def _version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        mod = sys.modules.get(name)
        return getattr(mod, "__version__", "not installed")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_features():
    try:
        from llvmlite import binding as ll

        name = ll.get_host_cpu_name()
        feats = ll.get_host_cpu_features()
        keep = ("avx512f", "avx512bw", "avx512vl", "avx512bf16", "avx512vnni", "avxvnni", "avx2",
                "fma", "avx", "sse4.2", "neon", "sve")
        have = [k for k in keep if feats.get(k)]
        return name, have
    except Exception as exc:  # pragma: no cover
        return f"unknown ({exc})", []


def _blas(mod):
    try:
        cfg = mod.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        blas = deps.get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def lines():
    """The report, as a list of ``(section, text)`` lines."""

    out = []
    add = lambda sec, text: out.append((sec, text))  # noqa: E731
    add("versions", f"python {platform.python_version()} ({sys.executable})")
    for name in ("fastrnn", "numpy", "numba", "llvmlite", "scipy", "onnxruntime", "torch"):
        add("versions", f"{name} {_version(name)}")

    cpu_model, feats = _cpu_features()
    add("cpu", f"{_cpu_name()}; {os.cpu_count()} logical CPUs")
    add("cpu", f"LLVM target {cpu_model}; features: {', '.join(feats) or 'none of avx/avx2/avx512'}")
    cpu_name_env = os.environ.get("NUMBA_CPU_NAME")
    if cpu_name_env:
        add("cpu", f"NUMBA_CPU_NAME={cpu_name_env} (kernels compiled for that target)")

    add("blas", f"numpy: {_blas(np)}")
    try:
        import scipy

        add("blas", f"scipy: {_blas(scipy)}")
    except ImportError:
        add("blas", "scipy: not installed")
    add("blas", "the cpu kernels never call BLAS (no BLAS thread spins beside them)")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            add("blas", f"{var}={os.environ[var]}")

    try:
        import numba

        cpu = dispatch.backend_module("cpu")
        layer = cpu.threading_layer(start=True)
        add("threads", f"numba threading layer: {layer} (configured: {numba.config.THREADING_LAYER}; "
                       f"priority: {', '.join(numba.config.THREADING_LAYER_PRIORITY)})")
        add("threads", f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}; "
                       f"fastrnn threads per call: {cpu.get_num_threads()} "
                       "(fastrnn.set_num_threads)")
        cache = numba.config.CACHE_DIR or "next to the sources (__pycache__)"
        add("threads", f"numba cache: {cache}")
        if layer == "workqueue":
            add("threads", "note: workqueue is slow to launch and not thread-safe; "
                           "install tbb or use a Numba build with OpenMP")
    except Exception as exc:
        add("threads", f"cpu backend unavailable: {exc}")

    try:
        cpu = dispatch.backend_module("cpu")
        if not cpu._packed_path_enabled():
            add("quantized", f"FASTRNN_CPU_GENERIC={os.environ['FASTRNN_CPU_GENERIC']!r}: the "
                             "generic kernels run every layer, quantized ones on their float32 "
                             "values, and the _dynamic modes run on reference; the packed "
                             "kernels would use:")
        simd = cpu.simd
        for fmt in ("float32", "bfloat16", "int8"):
            add("quantized", f"{fmt} weights: {simd.load_instructions(fmt)}")
        add("quantized", "bfloat16 and int8 are weights only: inputs, states and sums stay "
                         "float32")
        add("quantized", f"int8_dynamic (activations quantized per row and step): "
                         f"{simd.dot_instruction()} for the integer dot products")
        add("quantized", f"bfloat16_dynamic (activations rounded to bfloat16 per step): "
                         f"{simd.bf16_dot_instruction()} for the bfloat16 dot products")
    except Exception as exc:
        add("quantized", f"error: {type(exc).__name__}: {exc}")

    try:
        described = dispatch.backend_module("cuda").describe()
        if isinstance(described, str):
            described = described.splitlines()
        for text in described:
            add("gpu", text)
    except RuntimeError as exc:
        add("gpu", f"cuda: not installed ({exc})")
    except Exception as exc:
        add("gpu", f"cuda: {type(exc).__name__}: {exc}")

    z = np.zeros
    params = LSTMParams(z((8, 32), np.float32), z((8, 32), np.float32), z(32, np.float32))
    env = ("FASTRNN_BACKEND not set" if "FASTRNN_BACKEND" not in os.environ
           else f"FASTRNN_BACKEND={os.environ['FASTRNN_BACKEND']!r}")
    try:
        default = dispatch.get_backend()
        add("dispatch", f"default backend: {default} ({env})")
    except ValueError as exc:
        default = None
        add("dispatch", f"default backend: error: {exc}")
    try:
        # what "auto" itself picks, whatever the default says
        choice = dispatch._auto([params], on_device=False)
        add("dispatch", f"auto picks for a float32 LSTM: {choice.name} -- {choice.reason}")
    except Exception as exc:
        add("dispatch", f"auto: error: {type(exc).__name__}: {exc}")
    if default not in (None, "auto"):
        try:
            choice = dispatch.select("auto", [params])
            add("dispatch", f"layers with backend='auto' follow the default: {choice.name}")
        except Exception as exc:
            add("dispatch", f"layers with backend='auto' follow the default, which cannot run "
                            f"them: {exc}")
    for name in dispatch.BACKENDS:
        try:
            ok, why = dispatch.available(name)
            add("dispatch", f"{name}: {'available' if ok else 'unavailable'} ({why})")
        except Exception as exc:
            add("dispatch", f"{name}: error: {type(exc).__name__}: {exc}")
    return out


def main(argv=None):
    argparse.ArgumentParser(
        prog="python -m fastrnn info",
        description="Print the versions, CPU, BLAS, Numba threading layer, GPU and what "
                    "backend='auto' picks on this machine.").parse_args(argv)
    section = None
    for sec, text in lines():
        if sec != section:
            print(f"{sec}:")
            section = sec
        print(f"  {text}")
    return 0
