"""PyTorch weights without their module (fastrnn.interop.torch_weights) against PyTorch.

``from_torch_state_dict`` with the module type read from the shapes or given
in any case, the errors that name the fix (wrong mode, prefix, cell vs layer),
``from_torch_weights`` on bare PyTorch-layout arrays, and unbatched frames in
a converted cell's stream. Expected values come from the live torch modules.
"""

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastrnn  # noqa: E402
from fastrnn.interop import from_torch, from_torch_state_dict, from_torch_weights  # noqa: E402

ATOL = 2e-5


def _module(kind, rng, **kw):
    torch.manual_seed(int(rng.integers(1 << 30)))
    m = getattr(torch.nn, kind)(**kw).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m


def _x(rng, *shape):
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _flat(result):
    if isinstance(result, (tuple, list)):
        return [y for item in result for y in _flat(item)]
    return [result.detach().numpy() if hasattr(result, "detach") else result]


def _assert_matches_torch(fm, module, x, hx=None):
    """fm(x) against the module itself, on the same input (and initial state)."""
    with torch.no_grad():
        thx = None if hx is None else (
            tuple(map(torch.from_numpy, hx)) if isinstance(hx, tuple) else torch.from_numpy(hx))
        want = _flat(module(torch.from_numpy(x), thx))
    got = _flat(fm(x, hx))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=ATOL)


# ----- from_torch_state_dict: the mode read from the shapes, in any case -----

INFER = [
    ("LSTM", dict(input_size=3, hidden_size=6, num_layers=2, bidirectional=True, proj_size=4)),
    ("GRU", dict(input_size=4, hidden_size=5, num_layers=2, bias=False)),
    ("LSTMCell", dict(input_size=3, hidden_size=5)),
    ("GRUCell", dict(input_size=6, hidden_size=3)),
]


@pytest.mark.parametrize("kind,kw", INFER, ids=[k for k, _ in INFER])
def test_state_dict_mode_read_from_shapes(kind, kw, rng):
    m = _module(kind, rng, **kw)
    sd = {"model.rnn." + k: v for k, v in m.state_dict().items()}
    fm = from_torch_state_dict(sd, prefix="model.rnn.")
    assert fm.mode == kind.replace("Cell", "")
    x = _x(rng, 2, kw["input_size"]) if "Cell" in kind else _x(rng, 5, 2, kw["input_size"])
    _assert_matches_torch(fm, m, x)


@pytest.mark.parametrize("kind,kw,mode", [
    ("LSTM", dict(input_size=3, hidden_size=4), "lstm"),
    ("GRU", dict(input_size=3, hidden_size=4), "gRu"),
    ("RNN", dict(input_size=3, hidden_size=4, nonlinearity="relu"), "rnn_relu"),
    ("RNN", dict(input_size=3, hidden_size=4), "rnn"),
    ("LSTMCell", dict(input_size=3, hidden_size=4), "lstmcell"),
    ("RNNCell", dict(input_size=3, hidden_size=4, nonlinearity="relu"), "RNNCELL_relu"),
])
def test_state_dict_mode_in_any_case(kind, kw, mode, rng):
    m = _module(kind, rng, **kw)
    fm = from_torch_state_dict(m.state_dict(), mode)
    x = _x(rng, 2, 3) if "Cell" in kind else _x(rng, 5, 2, 3)
    _assert_matches_torch(fm, m, x)


# ----- errors that name the fix -----

def _raises(exc, text, fn, *args, **kwargs):
    with pytest.raises(exc, match=re.escape(text)):
        fn(*args, **kwargs)


def test_wrong_mode_names_the_mode_the_shapes_fit(rng):
    gru = _module("GRU", rng, input_size=96, hidden_size=128).state_dict()
    _raises(ValueError, "mode: 'LSTM' means 4 gate blocks per unit, but "
            "state_dict['weight_hh_l0'] of shape (384, 128) holds 3 (hidden size 128): these "
            "are GRU weights: mode='GRU'", from_torch_state_dict, gru, "LSTM")
    lstm = _module("LSTM", rng, input_size=3, hidden_size=5, proj_size=2).state_dict()
    _raises(ValueError, "these are LSTM weights: mode='LSTM'", from_torch_state_dict, lstm,
            "gru")
    rnn = _module("RNN", rng, input_size=3, hidden_size=5).state_dict()
    _raises(ValueError, "mode: 'GRU' means 3 gate blocks per unit, but "
            "state_dict['weight_hh_l0'] of shape (5, 5) holds 1 (hidden size 5): these are RNN "
            "weights, and the weights do not record an RNN's nonlinearity: mode='RNN' (tanh) "
            "or mode='RNN_RELU' (relu)", from_torch_state_dict, rnn, "GRU")
    lstm_cell = _module("LSTMCell", rng, input_size=3, hidden_size=5).state_dict()
    _raises(ValueError, "mode: 'RNNCell' means 1 gate block per unit", from_torch_state_dict,
            lstm_cell, "RNNCell")


def test_rnn_nonlinearity_cannot_be_read_from_weights(rng):
    rnn = _module("RNN", rng, input_size=3, hidden_size=5).state_dict()
    _raises(ValueError, "mode: state_dict['weight_hh_l0'] of shape (5, 5) holds one gate block "
            "per unit: these are RNN weights, and the weights do not record an RNN's "
            "nonlinearity: mode='RNN' (tanh) or mode='RNN_RELU' (relu)",
            from_torch_state_dict, rnn)
    cell = _module("RNNCell", rng, input_size=3, hidden_size=5).state_dict()
    _raises(ValueError, "mode='RNNCell' (tanh) or mode='RNNCell_RELU' (relu)",
            from_torch_state_dict, cell)


def test_prefix_errors_suggest_the_prefixes_that_hold_weights(rng):
    lstm = _module("LSTM", rng, input_size=3, hidden_size=4).state_dict()
    sd = {"lstm." + k: v for k, v in lstm.items()}
    sd["fc.weight"] = torch.zeros(2, 4)
    _raises(ValueError, "state_dict: no recurrent weights under prefix 'lstm': no key "
            "'lstmweight_ih_l0' or 'lstmweight_ih'; did you mean prefix='lstm.'? (a prefix "
            "ends with its dot)", from_torch_state_dict, sd, "LSTM", prefix="lstm")
    _raises(ValueError, "state_dict: no recurrent weights at the top level (prefix=''): no key "
            "'weight_ih_l0' or 'weight_ih'; did you mean prefix='lstm.'?",
            from_torch_state_dict, sd, "LSTM")
    cell = _module("GRUCell", rng, input_size=3, hidden_size=4).state_dict()
    sd.update({"dec.cell." + k: v for k, v in cell.items()})
    _raises(ValueError, "recurrent weights are under prefix='dec.cell.' (a cell there: "
            "mode='LSTMCell'), prefix='lstm.'", from_torch_state_dict, sd, "LSTM",
            prefix="enc.")
    _raises(ValueError, "did you mean prefix='dec.cell.' (a cell there: mode='GRUCell')? (a "
            "prefix ends with its dot)", from_torch_state_dict, sd, "GRU", prefix="dec.cell")
    _raises(ValueError, "no key ends in weight_ih_l0 or weight_ih, so it holds no torch.nn LSTM, "
            "GRU, RNN or cell; its keys are ['fc.bias', 'fc.weight']", from_torch_state_dict,
            {"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}, "LSTM")
    _raises(TypeError, "prefix: expected a string", from_torch_state_dict, sd, "LSTM", prefix=3)


def test_cell_and_layer_checkpoints_name_the_other_mode(rng):
    cell = _module("LSTMCell", rng, input_size=3, hidden_size=4).state_dict()
    _raises(ValueError, "mode: 'LSTM' is a layer, but the keys at the top level (prefix='') are "
            "a cell's (weight_ih, weight_hh, no _l0): mode='LSTMCell'",
            from_torch_state_dict, cell, "LSTM")
    gru_cell = _module("GRUCell", rng, input_size=3, hidden_size=4).state_dict()
    _raises(ValueError, "a cell's (weight_ih, weight_hh, no _l0): these are GRU weights: "
            "mode='GRUCell'", from_torch_state_dict, gru_cell, "LSTM")
    layer = {"m." + k: v for k, v in
             _module("RNN", rng, input_size=3, hidden_size=4).state_dict().items()}
    _raises(ValueError, "mode: 'RNNCell_RELU' is a cell, but the keys under prefix 'm.' are a "
            "layer's (weight_ih_l0, weight_hh_l0, ...): mode='RNN_RELU'",
            from_torch_state_dict, layer, "RNNCell_RELU", prefix="m.")


def test_shape_and_key_errors_name_the_array(rng):
    sd = {k: v.numpy().copy() for k, v in
          _module("GRU", rng, input_size=3, hidden_size=4, num_layers=2).state_dict().items()}
    bad = dict(sd, weight_hh_l0=sd["weight_hh_l0"].T.copy())
    _raises(ValueError, "state_dict['weight_hh_l0']: shape (4, 12) fits no torch.nn recurrent "
            "module", from_torch_state_dict, bad, "GRU")
    _raises(ValueError, "it looks transposed", from_torch_state_dict, bad)
    bad = dict(sd, weight_ih_l1=sd["weight_ih_l1"][:, :3])
    _raises(ValueError, "state_dict['weight_ih_l1']: expected shape (12, 4) for GRU(input_size=3,"
            " hidden_size=4, bias=True, num_layers=2, bidirectional=False, proj_size=0), got "
            "(12, 3)", from_torch_state_dict, bad)
    bad = dict(sd, weight_ih_l0=sd["weight_ih_l0"].T.copy())  # (3, 12): the input size is 3
    _raises(ValueError, "state_dict['weight_ih_l0']: expected 12 rows (3 gate blocks of hidden "
            "size 4, as state_dict['weight_hh_l0']), got shape (3, 12) (transposed?",
            from_torch_state_dict, bad)
    bad = {k: v for k, v in sd.items() if k != "bias_hh_l1"}
    _raises(ValueError, "state_dict['bias_hh_l1']: missing for GRU(", from_torch_state_dict, bad)
    bad = dict(sd, weight_hr_l1=np.ones((2, 4), np.float32))
    _raises(ValueError, "state_dict['weight_hh_l0']: shape (12, 4) does not fit "
            "state_dict['weight_hr_l0']", from_torch_state_dict,
            dict(sd, weight_hr_l0=np.ones((2, 4), np.float32)))
    _raises(ValueError, "state_dict['weight_hr_l1']: unexpected for GRU(", from_torch_state_dict,
            bad)
    bad = dict(sd, bias_ih_l0=sd["bias_ih_l0"].astype(np.int64))
    _raises(TypeError, "state_dict['bias_ih_l0']: expected floating-point weights, got dtype "
            "int64", from_torch_state_dict, bad)
    _raises(ValueError, "hidden_size: given 5 but the weights say 4", from_torch_state_dict, sd,
            hidden_size=5)
    _raises(ValueError, "mode: expected one of LSTM, GRU, RNN, RNN_RELU", from_torch_state_dict,
            sd, "LSTMX")


# ----- from_torch_weights: bare arrays in PyTorch's layout -----

WEIGHTS = [
    ("LSTM", dict(input_size=5, hidden_size=7, num_layers=3, bidirectional=True, proj_size=3)),
    ("LSTM", dict(input_size=4, hidden_size=6, bias=False, batch_first=True)),
    ("GRU", dict(input_size=6, hidden_size=5, num_layers=2, bidirectional=True)),
    ("GRU", dict(input_size=3, hidden_size=7)),
    ("RNN", dict(input_size=4, hidden_size=6, num_layers=2, nonlinearity="relu")),
    ("RNN", dict(input_size=5, hidden_size=3, bidirectional=True)),
]


@pytest.mark.parametrize("kind,kw", WEIGHTS, ids=[f"{k}{i}" for i, (k, _) in enumerate(WEIGHTS)])
def test_weights_layers_match_torch(kind, kw, rng):
    m = _module(kind, rng, **kw)
    # module.all_weights: per layer and direction [w_ih, w_hh, (b_ih, b_hh), (w_hr)]
    per = [[w.detach().numpy().copy() for w in ws] for ws in m.all_weights]
    bias = kw.get("bias", True)
    args = dict(w_ih=[p[0] for p in per], w_hh=[p[1] for p in per])
    if bias:
        args.update(b_ih=[p[2] for p in per], b_hh=[p[3] for p in per])
    if kw.get("proj_size"):
        args["w_hr"] = [p[-1] for p in per]
    mode = {"RNN": "RNN_RELU" if kw.get("nonlinearity") == "relu" else "RNN"}.get(kind, kind)
    before = [a.copy() for a in args["w_hh"]]
    fm = from_torch_weights(mode, bidirectional=kw.get("bidirectional", False),
                            batch_first=kw.get("batch_first", False), **args)
    for a, b in zip(args["w_hh"], before):  # the caller's arrays are not changed
        np.testing.assert_array_equal(a, b)
    D = kw["input_size"]
    x = _x(rng, 3, 5, D) if kw.get("batch_first") else _x(rng, 5, 3, D)
    _assert_matches_torch(fm, m, x)
    dirs = 2 if kw.get("bidirectional") else 1
    n = kw.get("num_layers", 1) * dirs
    h0 = _x(rng, n, 3, kw.get("proj_size") or kw["hidden_size"])
    hx = (h0, _x(rng, n, 3, kw["hidden_size"])) if kind == "LSTM" else h0
    _assert_matches_torch(fm, m, x, hx)


@pytest.mark.parametrize("kind,mode,kw", [
    ("LSTMCell", "LSTMCell", {}), ("GRUCell", "grucell", {}),
    ("RNNCell", "RNNCell_RELU", dict(nonlinearity="relu")),
    ("GRUCell", "GRUCell", dict(bias=False)),
])
def test_weights_cells_match_torch(kind, mode, kw, rng):
    m = _module(kind, rng, input_size=5, hidden_size=6, **kw)
    p = dict(m.named_parameters())
    args = dict(w_ih=p["weight_ih"], w_hh=p["weight_hh"])  # torch tensors are taken too
    if kw.get("bias", True):
        args.update(b_ih=p["bias_ih"], b_hh=p["bias_hh"])
    fm = from_torch_weights(mode, **args)
    assert type(fm).__name__ == "TorchCell"
    x = _x(rng, 4, 5)
    _assert_matches_torch(fm, m, x)
    _assert_matches_torch(fm, m, x[2])  # unbatched, as torch


def test_weights_shipped_as_named_arrays(rng, tmp_path):
    """A model shipped as arrays under its own names (enc_w_ih, ...): the GRU gate
    order r, z, n is handled, and the type is read from the shapes."""
    m = _module("GRU", rng, input_size=9, hidden_size=11)
    np.savez(tmp_path / "g2p.npz", **{f"enc_{k}": v.detach().numpy() for k, v in
                                      zip(["w_ih", "w_hh", "b_ih", "b_hh"], m.parameters())})
    d = np.load(tmp_path / "g2p.npz")
    fm = fastrnn.from_torch_weights(None, d["enc_w_ih"], d["enc_w_hh"], d["enc_b_ih"],
                                    d["enc_b_hh"])
    assert fm.mode == "GRU"
    _assert_matches_torch(fm, m, _x(rng, 7, 2, 9))
    d64 = fastrnn.from_torch_weights("GRU", *(d[f"enc_{k}"].astype(np.float64)
                                              for k in ["w_ih", "w_hh", "b_ih", "b_hh"]))
    assert d64.dtype == np.float64


def test_weights_errors_name_the_argument(rng):
    per = [[w.detach().numpy() for w in ws] for ws in
           _module("GRU", rng, input_size=3, hidden_size=4, num_layers=2,
                   bidirectional=True).all_weights]
    w_ih, w_hh = [p[0] for p in per], [p[1] for p in per]
    b_ih, b_hh = [p[2] for p in per], [p[3] for p in per]
    _raises(ValueError, "b_hh: missing; PyTorch has both biases (b_ih, b_hh) or neither "
            "(bias=False), and only b_ih was given", from_torch_weights, "GRU", w_ih, w_hh, b_ih)
    _raises(ValueError, "w_hh: expected 4 array(s), one per layer and direction as in w_ih, "
            "got 3", from_torch_weights, "GRU", w_ih, w_hh[:3], bidirectional=True)
    _raises(ValueError, "w_ih: bidirectional=True takes one array per layer and direction "
            "(layer 0, layer 0 reverse, layer 1, ...), got 3, an odd number",
            from_torch_weights, "GRU", w_ih[:3], w_hh[:3], bidirectional=True)
    # without bidirectional=True, four arrays are four stacked layers: layer 1 reads 4 features
    _raises(ValueError, "w_ih[1]: expected shape (12, 4) for GRU(input_size=3, hidden_size=4, "
            "bias=True, num_layers=4", from_torch_weights, "GRU", w_ih, w_hh, b_ih, b_hh)
    _raises(ValueError, "mode: 'LSTM' means 4 gate blocks per unit, but w_hh[0] of shape "
            "(12, 4) holds 3 (hidden size 4): these are GRU weights: mode='GRU'",
            from_torch_weights, "LSTM", w_ih, w_hh, bidirectional=True)
    _raises(ValueError, "w_hh: shape (4, 12) fits no torch.nn recurrent module",
            from_torch_weights, "GRU", w_ih[0], w_hh[0].T)
    _raises(ValueError, "w_ih: a cell ('GRUCell') takes one array per argument, got a list of 4",
            from_torch_weights, "GRUCell", w_ih, w_hh)
    _raises(ValueError, "bidirectional: a cell has one direction", from_torch_weights,
            "GRUCell", w_ih[0], w_hh[0], bidirectional=True)
    _raises(ValueError, "w_hr: a cell has no projection", from_torch_weights, "LSTMCell",
            w_ih[0], w_hh[0], w_hr=np.ones((2, 4), np.float32))
    _raises(ValueError, "w_ih: expected an array or a non-empty list of arrays",
            from_torch_weights, "GRU", [], w_hh)
    _raises(ValueError, "w_ih: expected a 2-D array (gates * hidden_size, input_size), got "
            "shape (36,)", from_torch_weights, "GRU", w_ih[0].ravel(), w_hh[0])
    _raises(TypeError, "w_ih: expected floating-point weights, got dtype int64",
            from_torch_weights, "GRU", w_ih[0].astype(np.int64), w_hh[0])
    _raises(TypeError, "bidirectional: expected True or False", from_torch_weights, "GRU",
            w_ih, w_hh, bidirectional="yes")


def test_exports():
    assert fastrnn.from_torch_weights is from_torch_weights
    assert "from_torch_weights" in fastrnn.__all__
    assert "from_torch_weights" in fastrnn.interop.__all__


# ----- unbatched frames in a converted cell's stream -----

@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_stream_takes_unbatched_frames(kind, rng):
    cell = _module(kind, rng, input_size=5, hidden_size=7)
    stream = from_torch(cell).stream()
    xs = _x(rng, 6, 5)
    hx = None
    out = np.empty(7, np.float32)
    for t in range(6):
        with torch.no_grad():
            hx = cell(torch.from_numpy(xs[t]), hx)  # torch's own unbatched call
        h = hx[0] if kind == "LSTMCell" else hx
        got = stream(xs[t], out=out) if t % 2 else stream(xs[t])
        assert got.shape == (7,)
        if t % 2:
            assert got is out
        np.testing.assert_allclose(got, h.numpy(), atol=ATOL)
    states = stream.states
    assert all(s.shape == (1, 7) for s in states)  # the state stays batch-major
    if kind == "LSTMCell":
        np.testing.assert_allclose(states[1][0], hx[1].numpy(), atol=ATOL)
    before = stream.states
    _raises(ValueError, "x: expected an unbatched frame (features,) of shape (5,) "
            "(batch_size=1, 5 features), got shape (4,); the state is unchanged",
            stream, xs[0, :4])
    for a, b in zip(stream.states, before):
        np.testing.assert_array_equal(a, b)
    _raises(ValueError, "out: expected a writeable C-contiguous float32 array of shape (7,)", stream,
            xs[0], out=np.empty((1, 7), np.float32))
    _raises(ValueError, "got shape (5,) (an unbatched frame (features,) needs batch_size=1)",
            from_torch(cell).stream(2), xs[0])


def test_layer_stream_takes_unbatched_frames(rng):
    """A converted one-direction LSTM streamed frame by frame, unbatched, against
    torch's unbatched (time, features) call."""
    m = _module("LSTM", rng, input_size=4, hidden_size=5, num_layers=2)
    xs = _x(rng, 6, 4)
    with torch.no_grad():
        want = m(torch.from_numpy(xs))[0].numpy()
    stream = from_torch(m).stream()
    got = np.stack([stream(xs[t]) for t in range(6)])
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_a_refused_load_changes_nothing(rng):
    """A state_dict of the wrong shape was refused, but state_dict() and
    get_weights() (and so fastrnn.save) then gave the refused arrays while the
    kernels ran the old ones; a quantized two-layer module refusing NaN in its
    second layer kept the new first layer."""
    def u(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    m = from_torch_weights("LSTM", [u(16, 3), u(16, 4)], [u(16, 4), u(16, 4)],
                           [u(16), u(16)], [u(16), u(16)])
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    before, y0 = m.state_dict(), m(x)[0]
    for quantized in (False, True):
        if quantized:
            m.quantize("int8")
            before, y0 = m.state_dict(), m(x)[0]
        bad = dict(before, weight_hh_l0=np.zeros((16, 5), np.float32))
        with pytest.raises(ValueError, match="weight_hh_l0 expected shape"):
            m.load_state_dict(bad)
        if quantized:  # (int8 refuses NaN: in the second layer, after the first took its own)
            nan = dict(before, weight_hh_l0=before["weight_hh_l0"] * 2,
                       weight_hh_l1=np.full((16, 4), np.nan, np.float32))
            with pytest.raises(ValueError, match="NaN"):
                m.load_state_dict(nan)
        after = m.state_dict()
        assert after.keys() == before.keys()
        for k in before:
            np.testing.assert_array_equal(after[k], before[k])
        np.testing.assert_array_equal(m(x)[0], y0)
