"""fastrnn.from_torch / from_torch_state_dict against PyTorch itself.

Golden cases (tests/data/torch_*.npz, PyTorch 2.13) run through a module
rebuilt from each case's config with the golden weights; live tests compare
random configurations with the real modules (bidirectional, stacked,
proj_size, cells, PackedSequence, state dicts).
"""

import glob
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastrnn  # noqa: E402
from conftest import DATA, layer_backends, load_golden  # noqa: E402
from fastrnn.interop import from_torch, from_torch_state_dict  # noqa: E402

CASES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(DATA, "torch_*.npz")))
ATOL = 2e-5


def _rebuild(meta, arrays):
    args = dict(meta["args"])
    if meta.get("proj_size"):
        args["proj_size"] = meta["proj_size"]
    if meta.get("nonlinearity"):
        args["nonlinearity"] = meta["nonlinearity"]
    module = getattr(torch.nn, meta["module"])(**args)
    with torch.no_grad():
        for i, name in enumerate(meta["parameters"]):
            getattr(module, name).copy_(torch.from_numpy(arrays[f"w{i}"]))
    return module


def _flat(result):
    out, states = result
    return [out] + (list(states) if isinstance(states, tuple) else [states])


def _torch_flat(result):
    out, states = result
    states = list(states) if isinstance(states, tuple) else [states]
    return [t.detach().numpy() for t in [out] + states]


def test_all_torch_cases_present():
    assert len(CASES) >= 6


@pytest.mark.parametrize("backend", layer_backends())
@pytest.mark.parametrize("case", CASES)
def test_torch_golden(case, backend):
    meta, a = load_golden(case)
    m = from_torch(_rebuild(meta, a), backend=backend)
    hx = None
    if "h0" in a:
        hx = (a["h0"], a["c0"]) if "c0" in a else a["h0"]
    x_before = a["x"].copy()
    got = _flat(m(a["x"], hx))
    np.testing.assert_array_equal(a["x"], x_before)
    want = [a[f"y{i}"] for i in range(sum(k.startswith("y") for k in a))]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def _torch_module(kind, rng, **kw):
    torch.manual_seed(int(rng.integers(1 << 30)))
    m = getattr(torch.nn, kind)(**kw).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m


def _x(rng, *shape, dtype=np.float32):
    return rng.uniform(-1, 1, shape).astype(dtype)


LIVE = [
    ("LSTM", dict(input_size=5, hidden_size=7, num_layers=3, bidirectional=True, proj_size=3,
                  batch_first=True)),
    ("LSTM", dict(input_size=3, hidden_size=5, num_layers=2, dropout=0.3, proj_size=2)),
    ("LSTM", dict(input_size=4, hidden_size=9, bias=False, bidirectional=True)),
    ("GRU", dict(input_size=6, hidden_size=5, num_layers=2, bidirectional=True)),
    ("GRU", dict(input_size=3, hidden_size=7, bias=False, batch_first=True)),
    ("RNN", dict(input_size=4, hidden_size=6, num_layers=2, nonlinearity="relu",
                 bidirectional=True, batch_first=True)),
    ("RNN", dict(input_size=5, hidden_size=3)),
]


@pytest.mark.parametrize("kind,kw", LIVE, ids=[f"{k}{i}" for i, (k, _) in enumerate(LIVE)])
def test_live_parity(kind, kw, rng):
    m = _torch_module(kind, rng, **kw)
    fm = from_torch(m)
    B, T = 3, 6
    D = kw["input_size"]
    x = _x(rng, B, T, D) if kw.get("batch_first") else _x(rng, T, B, D)
    dirs = 2 if kw.get("bidirectional") else 1
    n = kw.get("num_layers", 1) * dirs
    H, P = kw["hidden_size"], kw.get("proj_size", 0)
    if kind == "LSTM":
        hx = (_x(rng, n, B, P or H), _x(rng, n, B, H))
        thx = tuple(torch.from_numpy(h) for h in hx)
    else:
        hx = _x(rng, n, B, H)
        thx = torch.from_numpy(hx)
    for h, th in ((None, None), (hx, thx)):
        with torch.no_grad():
            want = _torch_flat(m(torch.from_numpy(x), th))
        got = _flat(fm(x, h))
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


def test_unbatched_input(rng):
    m = _torch_module("GRU", rng, input_size=3, hidden_size=4, num_layers=2)
    fm = from_torch(m)
    x = _x(rng, 5, 3)
    h0 = _x(rng, 2, 4)
    for h in (None, h0):
        with torch.no_grad():
            want = _torch_flat(m(torch.from_numpy(x), None if h is None else torch.from_numpy(h)))
        got = _flat(fm(x, h))
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=ATOL)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence(kind, batch_first, enforce_sorted, rng):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    kw = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
              batch_first=batch_first)
    if kind == "LSTM":
        kw["proj_size"] = 2
    m = _torch_module(kind, rng, **kw)
    fm = from_torch(m)
    B, T = 4, 7
    lengths = np.array([7, 5, 5, 1]) if enforce_sorted else np.array([3, 7, 1, 5])
    x = _x(rng, B, T, 3) if batch_first else _x(rng, T, B, 3)
    packed = pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                  batch_first=batch_first, enforce_sorted=enforce_sorted)
    with torch.no_grad():
        out, states = m(packed)
    got_out, got_states = fm(packed)
    assert type(got_out).__name__ == "PackedSequence"
    want_pad = pad_packed_sequence(out, batch_first=batch_first)[0].numpy()
    got_pad = pad_packed_sequence(got_out, batch_first=batch_first)[0].numpy()
    np.testing.assert_allclose(got_pad, want_pad, atol=ATOL)
    np.testing.assert_allclose(got_out.data.numpy(), out.data.numpy(), atol=ATOL)
    want_states = [s.numpy() for s in (states if isinstance(states, tuple) else [states])]
    got_states = list(got_states) if isinstance(got_states, tuple) else [got_states]
    for g, w in zip(got_states, want_states):
        np.testing.assert_allclose(g, w, atol=ATOL)
    # With initial states (in the caller's batch order, as PyTorch takes them).
    dirs, H = 2, kw["hidden_size"]
    h0 = _x(rng, 2 * dirs, B, kw.get("proj_size") or H)
    hx = (h0, _x(rng, 2 * dirs, B, H)) if kind == "LSTM" else h0
    thx = tuple(torch.from_numpy(h) for h in hx) if kind == "LSTM" else torch.from_numpy(hx)
    with torch.no_grad():
        out_h, states_h = m(packed, thx)
    got_h, got_states_h = fm(packed, hx)
    np.testing.assert_allclose(got_h.data.numpy(), out_h.data.numpy(), atol=ATOL)
    for g, w in zip(_flatten(got_states_h), _flatten(states_h), strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=ATOL)
    # The NumPy path: padded input plus lengths gives pad_packed's zeros.
    out2, states2 = fm(x, lengths=lengths)
    T_out = want_pad.shape[1 if batch_first else 0]
    np.testing.assert_allclose(out2[:, :T_out] if batch_first else out2[:T_out], want_pad,
                               atol=ATOL)
    states2 = list(states2) if isinstance(states2, tuple) else [states2]
    for g, w in zip(states2, want_states):
        np.testing.assert_allclose(g, w, atol=ATOL)


@pytest.mark.parametrize("kind,kw", [
    ("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {"nonlinearity": "relu"}),
    ("RNNCell", {"bias": False}), ("GRUCell", {"bias": False}),
])
def test_cells(kind, kw, rng):
    m = _torch_module(kind, rng, input_size=5, hidden_size=7, **kw)
    fm = from_torch(m)
    x = _x(rng, 3, 5)
    if kind == "LSTMCell":
        hx = (_x(rng, 3, 7), _x(rng, 3, 7))
        thx = tuple(torch.from_numpy(h) for h in hx)
    else:
        hx = _x(rng, 3, 7)
        thx = torch.from_numpy(hx)
    for h, th, xi in ((None, None, x), (hx, thx, x), (None, None, x[1])):
        with torch.no_grad():
            want = m(torch.from_numpy(xi), th)
        got = fm(xi, h)
        want = [w.numpy() for w in (want if isinstance(want, tuple) else [want])]
        got = list(got) if isinstance(got, tuple) else [got]
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=ATOL)


def test_float64(rng):
    m = _torch_module("LSTM", rng, input_size=3, hidden_size=4, num_layers=2).double()
    fm = from_torch(m)
    x = _x(rng, 5, 2, 3, dtype=np.float64)
    with torch.no_grad():
        want = _torch_flat(m(torch.from_numpy(x)))
    got = _flat(fm(x))
    for g, w in zip(got, want):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, w, atol=1e-10)


@pytest.mark.parametrize("kind,kw,mode", [
    ("LSTM", dict(input_size=3, hidden_size=6, num_layers=2, bidirectional=True, proj_size=4),
     "LSTM"),
    ("GRU", dict(input_size=4, hidden_size=5, bias=False), "GRU"),
    ("RNN", dict(input_size=4, hidden_size=5, nonlinearity="relu"), "RNN_RELU"),
    ("LSTMCell", dict(input_size=3, hidden_size=5), "LSTMCell"),
])
def test_state_dict(kind, kw, mode, rng):
    m = _torch_module(kind, rng, **kw)
    sd = {"encoder.rnn." + k: v for k, v in m.state_dict().items()}
    sd["encoder.other.weight"] = torch.zeros(2)
    fm = from_torch_state_dict(sd, mode, prefix="encoder.rnn.")
    ref = from_torch(m)
    assert fm.get_config() == ref.get_config()
    x = _x(rng, 4, 2, kw["input_size"]) if "Cell" not in kind else _x(rng, 2, kw["input_size"])
    got, want = fm(x), ref(x)
    for g, w in zip(_flatten(got), _flatten(want)):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="hidden_size"):
        from_torch_state_dict(sd, mode, prefix="encoder.rnn.", hidden_size=99)
    with pytest.raises(ValueError, match="weight_ih"):
        from_torch_state_dict(sd, mode)


def _flatten(x):
    if isinstance(x, (tuple, list)):
        return [y for item in x for y in _flatten(item)]
    return [x]


def test_errors(rng):
    fm = from_torch(_torch_module("LSTM", rng, input_size=3, hidden_size=4, num_layers=2))
    with pytest.raises(ValueError, match="3 features"):
        fm(_x(rng, 5, 2, 4))
    with pytest.raises(ValueError, match="h_0 expected shape"):
        fm(_x(rng, 5, 2, 3), (_x(rng, 1, 2, 4), _x(rng, 2, 2, 4)))
    with pytest.raises(ValueError, match="tuple"):
        fm(_x(rng, 5, 2, 3), _x(rng, 2, 2, 4))
    with pytest.raises(ValueError, match="lengths"):
        fm(_x(rng, 5, 2, 3), lengths=np.array([0, 3]))
    with pytest.raises(TypeError, match="floating"):
        fm(np.ones((5, 2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="unsupported module"):
        from_torch(torch.nn.Linear(2, 3))
    with pytest.raises(TypeError, match="bidirectional"):
        from_torch(_torch_module("GRU", rng, input_size=3, hidden_size=4,
                                 bidirectional=True)).stream(1)


def test_stream_matches_whole_sequence(rng):
    pytest.importorskip("fastrnn.streaming")
    m = _torch_module("LSTM", rng, input_size=3, hidden_size=5, num_layers=2, proj_size=2,
                      batch_first=True)
    fm = from_torch(m)
    x = _x(rng, 2, 6, 3)
    want = fm(x)[0]
    try:
        s = fm.stream(2)
    except (ImportError, NotImplementedError) as exc:  # streaming engine not in this tree yet
        pytest.skip(f"streaming unavailable: {exc}")
    got = np.stack([np.asarray(s(x[:, t])).reshape(2, -1) for t in range(6)], axis=1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_readme_example(tmp_path, monkeypatch, capsys):
    import re

    readme = os.path.join(os.path.dirname(__file__), "..", "README.md")
    text = open(readme, encoding="utf-8").read()
    section = text.split("## Interop: models trained elsewhere", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README interop example", "exec"), {})
    assert "(3, 10, 8) (4, 3, 4) True" in capsys.readouterr().out


def test_exports():
    assert fastrnn.from_torch is not None and fastrnn.from_torch_state_dict is not None


def test_subclasses(rng):
    """A subclass that keeps torch's forward converts as its base class (it
    was refused with an error about an argument the user never passed); one
    that overrides forward is refused, since its numbers are unknown."""
    class MyLSTM(torch.nn.LSTM):
        pass

    class Doubling(torch.nn.GRU):
        def forward(self, x, h=None):
            return super().forward(2 * x, h)

    torch.manual_seed(0)
    module = MyLSTM(3, 5, batch_first=True)
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(fastrnn.from_torch(module)(x)[0], want, atol=2e-6)
    with pytest.raises(TypeError, match="Doubling overrides forward"):
        fastrnn.from_torch(Doubling(3, 4))


@pytest.mark.parametrize("how", ["pruned", "weight_norm", "pruned cell"])
def test_modules_that_keep_their_weights_under_other_names(how, rng):
    """Pruning and weight norm keep the parameters under other names and
    give the weights the forward uses as attributes: those are converted."""
    from torch.nn.utils import parametrizations, prune

    torch.manual_seed(3)
    if how == "pruned cell":
        m = torch.nn.GRUCell(4, 5)
        prune.l1_unstructured(m, "weight_hh", amount=0.5)
        x = rng.standard_normal((3, 4)).astype(np.float32)
    else:
        m = torch.nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True)
        if how == "pruned":
            prune.l1_unstructured(m, "weight_hh_l0", amount=0.5)
        else:
            m = parametrizations.weight_norm(m, "weight_ih_l1")
        x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(x))
    want = (want if how == "pruned cell" else want[0]).numpy()
    got = from_torch(m)(x)
    got = got if how == "pruned cell" else got[0]
    np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.parametrize("how", ["pruned checkpoint", "pruned update", "spectral_norm",
                                 "weight_norm (old)"])
def test_hook_computed_weights_are_the_next_forwards(how, rng):
    """Pruning, spectral_norm and the old weight_norm set the weight
    attributes in a forward pre-hook: converted before the next forward (a
    restored checkpoint, an update, a fresh module) they were stale."""
    from torch.nn.utils import prune

    torch.manual_seed(5)
    if how.startswith("pruned"):
        m = torch.nn.LSTM(3, 4)
        prune.l1_unstructured(m, "weight_hh_l0", amount=0.5)
        if how == "pruned checkpoint":
            src = torch.nn.LSTM(3, 4)
            prune.l1_unstructured(src, "weight_hh_l0", amount=0.5)
            m.load_state_dict(src.state_dict())
        else:
            with torch.no_grad():
                m.weight_hh_l0_orig.add_(0.5)
    elif how == "spectral_norm":
        m = torch.nn.utils.spectral_norm(torch.nn.GRU(3, 4), "weight_hh_l0")
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (deprecated for the parametrization)
            m = torch.nn.utils.weight_norm(torch.nn.RNN(3, 4), "weight_ih_l0")
        with torch.no_grad():
            m.weight_ih_l0_g.mul_(1.7)
    m.eval()
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    got = from_torch(m)(x)[0]  # converted first: the attributes are stale now
    with torch.no_grad():
        want = m(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.parametrize("kind", ["layer", "cell"])
def test_pruned_state_dict_gives_orig_times_mask(kind, rng):
    """A pruned module's state dict holds weight_orig and weight_mask (it was
    'missing weight_hh_l0', or 'no recurrent weights' for a cell)."""
    from torch.nn.utils import prune

    torch.manual_seed(2)
    m = torch.nn.LSTM(3, 4, num_layers=2) if kind == "layer" else torch.nn.GRUCell(3, 4)
    names = ["weight_hh_l0", "weight_ih_l1"] if kind == "layer" else ["weight_ih"]
    for name in names:
        prune.l1_unstructured(m, name, amount=0.4)
    x = rng.standard_normal((5, 2, 3) if kind == "layer" else (2, 3)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(x))
    want = (want[0] if kind == "layer" else want).numpy()
    got = from_torch_state_dict(m.state_dict())(x)
    np.testing.assert_allclose(got[0] if kind == "layer" else got, want, atol=ATOL)


def test_hooks_the_converted_module_would_not_run_are_refused():
    m = torch.nn.GRU(3, 4)
    handle = m.register_forward_pre_hook(lambda mod, args: (2 * args[0],))
    with pytest.raises(TypeError, match="GRU has a forward pre-hook"):
        from_torch(m)
    handle.remove()
    m.register_forward_hook(lambda mod, args, out: (out[0] * 0, out[1]))
    with pytest.raises(TypeError, match="GRU has a forward hook"):
        from_torch(m)


def test_tensors_without_array_data_name_their_argument():
    meta = torch.nn.LSTM(3, 4, device="meta")
    with pytest.raises(TypeError, match="weight_ih_l0: cannot read this tensor"):
        from_torch(meta)
    sd = torch.nn.GRU(3, 4).state_dict()
    sd["weight_hh_l0"] = sd["weight_hh_l0"].to_sparse()
    with pytest.raises(TypeError, match="weight_hh_l0: cannot read this tensor"):
        from_torch_state_dict(sd)
    with pytest.raises(TypeError, match="input: cannot read this tensor"):
        from_torch(torch.nn.GRU(3, 4))(torch.empty(5, 2, 3, device="meta"))


def test_hx_as_pytorch_takes_it(rng):
    """An LSTMCell's hx is a tuple of float states, an unbatched input's
    states are unbatched (a stacked array, integers and batched states were
    taken)."""
    torch.manual_seed(1)
    cell = from_torch(torch.nn.LSTMCell(3, 4))
    x = rng.standard_normal((2, 3)).astype(np.float32)
    h = rng.standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="hx: an LSTMCell expects a tuple"):
        cell(x, np.stack([h, h]))
    with pytest.raises(TypeError, match="hx: h expected floating point"):
        cell(x, (h.astype(int), h.astype(int)))
    with pytest.raises(ValueError, match=r"hx: h expected shape \(4,\) for an unbatched"):
        cell(x[0], (h[:1], h[:1]))
    lstm = from_torch(torch.nn.LSTM(3, 4))
    xs = rng.standard_normal((5, 3)).astype(np.float32)
    h3 = rng.standard_normal((1, 1, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="hx: h_0 expected 2 dimensions"):
        lstm(xs, (h3, h3))
    out, (h_n, c_n) = lstm(xs, (h3[:, 0], h3[:, 0]))
    assert out.shape == (5, 4) and h_n.shape == (1, 4)


def test_quantized_module_refusal_names_the_module():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.LSTM(4, 5)),
                                                   {torch.nn.LSTM}, dtype=torch.qint8)
    with pytest.raises(TypeError, match=r"torch\.ao\.nn\.quantized\..*LSTM; expected "
                                        r"torch\.nn\.LSTM.*convert the float module"):
        from_torch(q[0])
