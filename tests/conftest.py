import os
import zlib

# Keras 3 runs on PyTorch in the parity tests: TensorFlow is never needed.
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

from fastrnn import dispatch

DATA = os.path.join(os.path.dirname(__file__), "data")


def fast_backends():
    """Backends compared against reference: $FASTRNN_TEST_BACKENDS (default cpu)."""
    names = os.environ.get("FASTRNN_TEST_BACKENDS", "cpu").split(",")
    return [n.strip() for n in names if n.strip()]


def layer_backends():
    """reference plus every fast backend under test that can run here."""
    out = ["reference"]
    for name in fast_backends():
        if name not in out and dispatch.available(name)[0]:
            out.append(name)
    return out


@pytest.fixture
def rng(request):
    # A different stream per test, repeatable per test name.
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


def load_golden(name):
    import json

    d = np.load(os.path.join(DATA, name + ".npz"))
    arrays = {k: d[k] for k in d.files if k != "config"}
    return json.loads(str(d["config"])), arrays


@pytest.fixture(params=["one thread", "rows split", "panels split"])
def threading(request, monkeypatch):
    """The three ways a ``cpu`` call uses the cores (thresholds lowered so
    that a small call takes each): rows split from
    ``threads._BATCH_SPLIT_MIN`` rows up, panels split below."""
    from fastrnn.kernels.cpu import threads

    cpu = dispatch.backend_module("cpu")
    if request.param == "one thread":
        cpu.set_num_threads(1)
    else:
        monkeypatch.setattr(threads, "_MIN_PARALLEL_WORK", 0)
        monkeypatch.setattr(threads, "_MIN_SPLIT_STEP_WORK", 0)
        cpu.set_num_threads(2)
    yield request.param
    cpu.set_num_threads(None)
