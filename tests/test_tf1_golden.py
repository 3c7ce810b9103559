"""fastrnn.nn against golden vectors from real TensorFlow 2.21 ``tf.compat.v1``.

Each ``tests/data/tf1_*.npz`` holds the input, the TF1 variables in
``global_variables()`` order (names in its config) and every output: the
outputs, then each state element flattened (``LSTMStateTuple`` is
``(c, h)``). Every case runs on ``reference`` and on each backend of
``$FASTRNN_TEST_BACKENDS`` (default ``cpu``) that can run here; in CUDA's
simulator: ``NUMBA_ENABLE_CUDASIM=1 FASTRNN_TEST_BACKENDS=cuda pytest
tests/test_tf1_golden.py -k cuda``.
"""

import glob
import json
import os

import numpy as np
import pytest

from conftest import DATA, layer_backends
from fastrnn import dispatch, nn
from fastrnn import _nest
from fastrnn.nn import rnn_cell

CASES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(DATA, "tf1_*.npz")))
# reference, plus cpu (and cuda with FASTRNN_TEST_BACKENDS=cuda) where they run
BACKENDS = layer_backends()


def _cell(config):
    config = dict(config)
    cls = config.pop("class")
    if cls == "MultiRNNCell":
        return rnn_cell.MultiRNNCell([_cell(c) for c in config.pop("cells")], **config)
    return getattr(rnn_cell, cls)(**config)


def _built(config, batch, depth, weights):
    cell = _cell(config)
    cell.build((batch, depth))
    cell.set_weights(weights)
    return cell


def _skip_unsupported(backend, cells):
    """Skip, saying why, where a compiled backend lacks a configuration."""
    if backend == "reference":
        return
    module = dispatch.backend_module(backend)
    for cell in cells:
        for layer in getattr(cell, "cells", [cell]):
            ok, why = module.supports(layer._weights_for(np.float32).params)
            if not ok:
                pytest.skip(f"{backend} does not support this configuration: {why}")


def test_cases_found():
    assert len(CASES) >= 11, CASES


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_tf1_golden(case, backend):
    data = np.load(os.path.join(DATA, case + ".npz"))
    config = json.loads(str(data["config"]))
    x = data["x"]
    time_major = config["time_major"]
    batch = x.shape[1] if time_major else x.shape[0]
    depth = x.shape[2]
    weights = [data[f"w{i}"] for i in range(len(config["variables"]))]
    expected = [data[f"y{i}"] for i in range(sum(k.startswith("y") for k in data.files))]
    lengths = data["lengths"] if config["sequence_length"] else None
    kind = config["kind"]

    if "bidirectional" in kind:
        half = len(weights) // 2
        fw = _built(config["cell"], batch, depth, weights[:half])
        bw = _built(config["cell"], batch, depth, weights[half:])
        assert fw.variable_names == [
            v.split("/fw/", 1)[1][: -len(":0")] for v in config["variables"][:half]
        ]
        cells = [fw, bw]
    else:
        cell = _built(config["cell"], batch, depth, weights)
        suffix = [v.split("/", 1)[1][: -len(":0")] for v in config["variables"]]
        assert cell.variable_names == suffix
        cells = [cell]
    _skip_unsupported(backend, cells)

    steps = [x[:, t] for t in range(x.shape[1])]
    if kind == "dynamic":
        out, state = nn.dynamic_rnn(
            cell, x, sequence_length=lengths, dtype=np.float32, time_major=time_major,
            backend=backend,
        )
        got = [out] + _nest.flatten(state)
    elif kind == "bidirectional_dynamic":
        (out_fw, out_bw), (s_fw, s_bw) = nn.bidirectional_dynamic_rnn(
            fw, bw, x, sequence_length=lengths, dtype=np.float32, time_major=time_major,
            backend=backend,
        )
        got = [out_fw, out_bw] + _nest.flatten(s_fw) + _nest.flatten(s_bw)
    elif kind == "static":
        outs, state = nn.static_rnn(
            cell, steps, sequence_length=lengths, dtype=np.float32, backend=backend
        )
        assert len(outs) == x.shape[1]
        got = [np.stack(outs, axis=1)] + _nest.flatten(state)
    elif kind == "static_bidirectional":
        outs, s_fw, s_bw = nn.static_bidirectional_rnn(
            fw, bw, steps, sequence_length=lengths, dtype=np.float32, backend=backend
        )
        got = [np.stack(outs, axis=1)] + _nest.flatten(s_fw) + _nest.flatten(s_bw)
    else:  # pragma: no cover - a new kind of golden case
        pytest.fail(f"unknown golden kind {kind!r}")

    for c in cells:
        for layer in getattr(c, "cells", [c]):
            assert layer.last_backend.name == backend
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == np.float32, i
        assert g.shape == e.shape, (i, g.shape, e.shape)
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=0, err_msg=f"{case} y{i}")
    if lengths is not None:  # past a sequence's length TF1 outputs zeros
        outputs = got[:2] if kind == "bidirectional_dynamic" else got[:1]
        for o in outputs:
            o = o.transpose(1, 0, 2) if time_major and kind != "static" else o
            for b, n in enumerate(lengths):
                assert not o[b, n:].any()
