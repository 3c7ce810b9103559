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
