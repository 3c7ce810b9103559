"""fastrnn's Keras-style layers against outputs of the real Keras 3.15 (TF backend).

The golden files in tests/data were produced by Keras itself on random
weights; every case is rebuilt from its recorded config through the public
API and run on every backend under test.
"""

import glob
import os

import numpy as np
import pytest

import fastrnn
from conftest import DATA, layer_backends, load_golden

CASES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(DATA, "keras_*.npz")))


def _flat(outputs):
    flat = []
    for o in outputs if isinstance(outputs, list) else [outputs]:
        if isinstance(o, list):
            flat.append(np.stack(o))  # nested LSTM [h, c] of a stacked cell
        else:
            flat.append(o)
    return flat


def test_all_keras_cases_present():
    assert len(CASES) >= 20


@pytest.mark.parametrize("backend", layer_backends())
@pytest.mark.parametrize("case", CASES)
def test_keras_golden(case, backend):
    meta, a = load_golden(case)
    layer = fastrnn.deserialize({"class_name": meta["layer"], "config": meta["config"]})
    if isinstance(layer, fastrnn.Bidirectional):
        for sub in (layer.forward_layer, layer.backward_layer):
            sub.backend_arg = backend
    else:
        layer.backend_arg = backend
    weights = [a[f"w{i}"] for i in range(sum(k.startswith("w") for k in a))]
    layer.set_weights(weights)
    kwargs = {}
    if "mask" in a:
        kwargs["mask"] = a["mask"]
    if "s0" in a:
        kwargs["initial_state"] = [a[f"s{i}"] for i in range(sum(k.startswith("s") for k in a))]
    x_before = a["x"].copy()
    got = _flat(layer(a["x"], **kwargs))
    np.testing.assert_array_equal(a["x"], x_before)  # inputs are never modified
    if "x2" in a:  # stateful: the second call continues from the first
        got = got + _flat(layer(a["x2"]))
    want = [a[f"y{i}"] for i in range(sum(k.startswith("y") for k in a))]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)
