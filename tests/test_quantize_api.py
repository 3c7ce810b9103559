"""``quantize(mode)`` on cells, layers, Bidirectional, Sequential and
converted PyTorch modules: what a user calls.

The expected values are computed here, from the weights rounded by this
file's own scheme (bfloat16: nearest, ties to even, on the value; int8:
symmetric per output column) and run as float64 on the ``reference``
backend; the kernels' own quantization is tested in test_quantized.
"""

import os
import tempfile

import numpy as np
import pytest

import fastrnn
from fastrnn import models
from conftest import layer_backends

MODES = ("bfloat16", "int8", "int8_dynamic", "bfloat16_dynamic")
DYNAMIC = ("int8_dynamic", "bfloat16_dynamic")  # activations rounded too


def _bf16(w):
    """Nearest bfloat16 of each float32 in ``w``, ties to even (on the value)."""
    w = np.asarray(w, np.float64)
    out = np.zeros_like(w)
    nz = w != 0
    e = np.floor(np.log2(np.abs(w[nz])))
    ulp = 2.0 ** (e - 7)
    out[nz] = np.round(w[nz] / ulp) * ulp
    return out


def _int8(w):
    """Symmetric int8 per column of ``w (K, N)``: the values ``q * scale``."""
    w = np.asarray(w, np.float32)
    scale = (np.abs(w).max(axis=0) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, 1).astype(np.float64)
    q = np.clip(np.round(w / safe), -127, 127)
    return (q * scale).astype(np.float32)


def _rounded(w, mode):
    return _bf16(w) if mode == "bfloat16" else _int8(w)


def _rounded_weights(weights, mode, matrices=(0, 1)):
    """A cell's Keras weights with ``kernel`` and ``recurrent_kernel`` rounded."""
    return [_rounded(w, mode) if i in matrices else np.asarray(w) for i, w in enumerate(weights)]


def _layer(kind, units, **kw):
    return {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "simple": fastrnn.SimpleRNN}[kind](
        units, **kw)


def _expected(kind, units, weights, x, mask=None, **kw):
    """float64 reference run of ``weights`` (already rounded)."""
    ref = _layer(kind, units, backend="reference", dtype="float64", **kw)
    ref.set_weights([np.asarray(w, np.float64) for w in weights])
    return ref(x.astype(np.float64), mask=mask)


def _random_weights(layer, rng, scale=0.4):
    return [rng.uniform(-scale, scale, w.shape).astype(np.float32) for w in layer.get_weights()]


CASES = [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}), ("simple", {})]


@pytest.mark.parametrize("backend", layer_backends())
@pytest.mark.parametrize("mode", ("bfloat16", "int8"))
@pytest.mark.parametrize("kind,kw", CASES)
def test_layer_quantize_runs_the_rounded_weights(backend, mode, kind, kw, rng):
    """Weights-only modes: the quantized layer computes what float math on
    the rounded weights gives; ``get_weights`` returns those weights."""
    B, T, D, H = 3, 11, 7, 21
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    mask = np.ones((B, T), bool)
    mask[1, 7:] = False
    mask[2, 3:] = False
    layer = _layer(kind, H, return_sequences=True, backend=backend, **kw)
    layer.build(x.shape)
    weights = _random_weights(layer, rng)
    layer.set_weights(weights)
    assert layer.quantization_mode is None
    assert layer.quantize(mode) is layer
    assert layer.quantization_mode == mode and layer.cell.quantization_mode == mode
    rounded = _rounded_weights(weights, mode)
    for got, want in zip(layer.get_weights(), rounded):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    y = layer(x, mask=mask)
    np.testing.assert_allclose(y, _expected(kind, H, rounded, x, mask, return_sequences=True,
                                            **kw), atol=2e-5)
    # the rounding changed something: float weights give visibly other outputs
    assert np.abs(y - _expected(kind, H, weights, x, mask, return_sequences=True, **kw)).max() > 1e-5


@pytest.mark.parametrize("backend", layer_backends() + ["auto"])
@pytest.mark.parametrize("kind,kw", CASES)
def test_backend_reason_says_how_the_quantized_weights_run(backend, kind, kw, rng):
    """A quantized layer's backend_reason names its mode and says whether
    the weights run narrow or as float32 values (float32's speed: the cpu's
    generic kernels, cuda)."""
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    layer = _layer(kind, 7, backend=backend, **kw)
    layer(x)
    assert "int8" not in layer.backend_reason
    layer.quantize("int8")
    layer(x)
    reason = layer.backend_reason
    assert "int8 weights" in reason, reason
    narrow = layer.backend == "cpu" and (kind == "lstm" or (kind == "gru" and not kw))
    assert ("float32 values" in reason) == (layer.backend != "reference" and not narrow), reason


@pytest.mark.parametrize("backend", layer_backends())
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("mode", DYNAMIC)
def test_dynamic_layer_against_reference(backend, kind, mode, rng):
    """The dynamic modes round activations too: against the reference
    backend's rounding, and within their bound of float64."""
    B, T, D, H = 2, 9, 13, 19
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    layer = _layer(kind, H, return_sequences=True, backend=backend)
    layer.build(x.shape)
    weights = _random_weights(layer, rng)
    layer.set_weights(weights)
    if backend == "cuda":  # cuda refuses the dynamic modes, naming them
        layer.quantize(mode)
        with pytest.raises(ValueError, match=mode):
            layer(x)
        return
    ref = _layer(kind, H, return_sequences=True, backend="reference")
    ref.set_weights(weights)
    ref.quantize(mode)
    layer.quantize(mode)
    y = layer(x)
    np.testing.assert_allclose(y, ref(x), atol=2e-5)
    bound = 2.5e-2 if mode == "int8_dynamic" else 1e-2
    assert np.abs(y - _expected(kind, H, weights, x, return_sequences=True)).max() < bound


def test_set_weights_on_a_quantized_layer_quantizes_again(rng):
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    layer = fastrnn.GRU(10)
    layer.build(x.shape)
    layer.quantize("int8")
    new = _random_weights(layer, rng, 0.7)
    layer.set_weights(new)
    assert layer.quantization_mode == "int8"
    got = layer.get_weights()
    np.testing.assert_array_equal(got[0], _int8(new[0]))
    np.testing.assert_array_equal(got[1], _int8(new[1]))
    np.testing.assert_array_equal(got[2], new[2])  # biases stay float32
    np.testing.assert_allclose(layer(x), _expected("gru", 10, _rounded_weights(new, "int8"), x),
                               atol=2e-5)


@pytest.mark.parametrize("mode", ["int8", "int8_dynamic"])
def test_set_weights_that_int8_refuses_change_nothing(mode, rng):
    """Non-finite weights for an int8 layer are refused before anything
    changes: a layer's weights and output, and every cell of a stack (the
    bad matrix in its upper cell), stay as they were."""
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    layer = fastrnn.LSTM(6)
    stack = fastrnn.RNN([fastrnn.LSTMCell(6), fastrnn.GRUCell(5)])
    for obj, bad in ((layer, 1), (stack, 4)):
        obj.build(x.shape)
        obj.quantize(mode)
        before, weights = obj(x), obj.get_weights()
        new = [w * 0.5 for w in weights]
        new[bad][0, 0] = np.nan
        with pytest.raises(ValueError, match=r"set_weights: .*kernel: .*finite weights.*"
                                             r"nothing changed"):
            obj.set_weights(new)
        for got, want in zip(obj.get_weights(), weights):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(obj(x), before)


@pytest.mark.parametrize("mode", MODES)
def test_stacked_cells_and_bidirectional(mode, rng):
    x = rng.standard_normal((3, 8, 5)).astype(np.float32)
    stack = fastrnn.RNN([fastrnn.LSTMCell(9), fastrnn.GRUCell(7)], return_sequences=True)
    stack.build(x.shape)
    bi = fastrnn.Bidirectional(fastrnn.LSTM(6, return_sequences=True))
    bi.build(x.shape)
    for obj in (stack, bi):
        before = obj(x)
        ref_weights = obj.get_weights()
        obj.quantize(mode)
        assert obj.quantization_mode == mode
        cells = obj.cells if obj is stack else (obj.forward_layer.cells + obj.backward_layer.cells)
        assert all(c.quantization_mode == mode for c in cells)
        after = obj(x)
        assert 1e-5 < np.abs(after - before).max() < 5e-2
        if mode not in DYNAMIC:  # weights only: every kernel matrix rounded
            n = 3  # kernel, recurrent_kernel, bias per cell
            for i, (got, w) in enumerate(zip(obj.get_weights(), ref_weights)):
                want = _rounded(w, mode) if i % n < 2 else w
                np.testing.assert_array_equal(got, np.asarray(want, np.float32))


def test_sequential_quantizes_its_recurrent_layers_only(rng):
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    model = fastrnn.Sequential([fastrnn.LSTM(8, return_sequences=True),
                                fastrnn.Bidirectional(fastrnn.GRU(6)), models.Dense(3)])
    model.layers[0].build(x.shape)
    model.layers[1].build((4, 6, 8))
    dense = [rng.standard_normal((12, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    model.layers[2].set_weights(dense)
    assert model.quantize("bfloat16") is model
    assert model.quantization_mode == "bfloat16"
    np.testing.assert_array_equal(model.layers[2].get_weights()[0], dense[0])  # Dense: float32
    assert model.layers[0].quantization_mode == model.layers[1].quantization_mode == "bfloat16"
    assert model(x).shape == (4, 3)
    with pytest.raises(ValueError, match="no recurrent layer"):
        fastrnn.Sequential([models.Dense(3)]).quantize("int8")


@pytest.mark.parametrize("mode", ("bfloat16", "int8"))
def test_one_step_cell_call(mode, rng):
    cell = fastrnn.LSTMCell(13)
    cell.build(6)
    weights = _random_weights(cell, rng)
    cell.set_weights(weights)
    cell.quantize(mode)
    x = rng.standard_normal((2, 6)).astype(np.float32)
    states = [rng.standard_normal((2, 13)).astype(np.float32) for _ in range(2)]
    y, new = cell(x, states)
    ref = fastrnn.LSTMCell(13, dtype="float64")
    ref.set_weights([np.asarray(w, np.float64) for w in _rounded_weights(weights, mode)])
    y64, new64 = ref(x.astype(np.float64), [s.astype(np.float64) for s in states])
    np.testing.assert_allclose(y, y64, atol=2e-6)
    np.testing.assert_allclose(new[1], new64[1], atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_stream_of_a_quantized_layer(mode, rng):
    """A stream runs the quantized weights: frame by frame on the stream
    kernels (the layer is on "auto") as the layer over the whole sequence
    on the reference backend (same mode)."""
    T, D, H = 12, 5, 17
    x = rng.standard_normal((1, T, D)).astype(np.float32)
    layer = fastrnn.LSTM(H, return_sequences=True)
    layer.build(x.shape)
    weights = _random_weights(layer, rng)
    layer.set_weights(weights)
    stream = layer.stream()
    stream(x[:, 0])  # the stream notices the change of weights below
    stream.reset()
    layer.quantize(mode)
    frames = np.stack([stream(x[:, t]) for t in range(T)], axis=1)
    assert stream.backend == "stream", stream.backend_reason  # (not the reference's kernels)
    ref = fastrnn.LSTM(H, return_sequences=True, backend="reference")
    ref.set_weights(weights)
    ref.quantize(mode)
    np.testing.assert_allclose(frames, ref(x), atol=2e-5)


@pytest.mark.parametrize("mode", MODES)
def test_save_load_keeps_the_compact_weights_exactly(mode, rng):
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    model = fastrnn.Sequential([fastrnn.GRU(9, return_sequences=True),
                                fastrnn.Bidirectional(fastrnn.LSTM(6))])
    model.layers[0].build(x.shape)
    model.layers[1].build((2, 7, 9))
    model.quantize(mode)
    y = model(x)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.fastrnn")
        fastrnn.save(model, path)
        back = fastrnn.load(path)
    assert back.quantization_mode == mode
    cells = model._quantizable()
    again = back._quantizable()
    assert len(cells) == len(again) == 3
    for a, b in zip(cells, again):
        qa, qb = a._quantized, b._quantized
        for name in ("kernel", "recurrent_kernel", "kernel_scale", "recurrent_scale"):
            u, v = getattr(qa, name), getattr(qb, name)
            assert (u is None) == (v is None)
            if u is not None:
                assert u.dtype == v.dtype
                np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(back(x), y)
    # and the loaded model re-quantizes new weights in its mode
    assert back.layers[0].cells[0].quantization_mode == mode


@pytest.mark.parametrize("mode", MODES)
def test_a_quantized_cell_or_stack_saves_and_loads_quantized(mode, rng):
    """A cell alone, and a StackedRNNCells (whose mode is the cells'), keep
    the compact weights through a file, as a layer does (the file's
    quantized entry was left out: the cells came back float32)."""
    x = rng.standard_normal((2, 5)).astype(np.float32)
    for cell in (fastrnn.LSTMCell(6), fastrnn.GRUCell(6),
                 fastrnn.StackedRNNCells([fastrnn.LSTMCell(6), fastrnn.GRUCell(4)])):
        cell.build((None, 5))
        if mode.endswith("_dynamic") or not isinstance(cell, fastrnn.StackedRNNCells):
            cell.quantize(mode)
        else:  # (the stack's cells, one each way)
            cell.cells[0].quantize(mode)
        states = ([rng.standard_normal((2, 6)).astype(np.float32) for _ in range(2)]
                  if isinstance(cell, fastrnn.LSTMCell) else
                  rng.standard_normal((2, 6)).astype(np.float32)
                  if isinstance(cell, fastrnn.GRUCell) else
                  [[rng.standard_normal((2, 6)).astype(np.float32) for _ in range(2)],
                   rng.standard_normal((2, 4)).astype(np.float32)])
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.fastrnn")
            fastrnn.save(cell, path)
            back = fastrnn.load(path)
        assert back.quantization_mode == cell.quantization_mode != None  # noqa: E711
        for a, b in zip(cell._quantizable(), back._quantizable()):
            assert a.quantization_mode == b.quantization_mode
            if a.quantization_mode is not None:
                for u, v in zip(a._quantized.arrays(), b._quantized.arrays()):
                    assert u.dtype == v.dtype
                    np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(back(x, states)[0], cell(x, states)[0])


def test_unquantized_files_load_as_before():
    """A file written before quantization existed (pinned in tests/data)."""
    path = os.path.join(os.path.dirname(__file__), "data", "pinned", "model_v1.fastrnn")
    model = fastrnn.load(path)
    assert model.quantization_mode is None


def test_a_hostile_quantized_entry_is_refused(rng):
    import json
    import zipfile

    layer = fastrnn.LSTM(4)
    layer.build((1, 2, 3))
    layer.quantize("int8")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "l.fastrnn")
        fastrnn.save(layer, path)
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        header = json.loads(members["fastrnn.json"])
        entry = header["object"]["quantized"][0]
        import hashlib

        names = list(entry["arrays"])
        for arrays, message in (
                # the scales where the int8 kernels belong: wrong dtype and shape
                (names[2:] + names[:2], r"quantized\[0\]: int8 weights expected int8 "
                                        r"\(3, 16\), got float32 \(16,\)"),
                # one array named for all four
                ([names[0]] * 4, r"array '\w+' is named twice")):
            entry["arrays"] = arrays
            obj = json.dumps(header["object"], sort_keys=True).encode()
            if "object_sha256" in header:
                header["object_sha256"] = hashlib.sha256(obj).hexdigest()
            members["fastrnn.json"] = json.dumps(header).encode()
            bad = os.path.join(d, "bad.fastrnn")
            with zipfile.ZipFile(bad, "w") as z:
                for n, b in members.items():
                    z.writestr(n, b)
            with pytest.raises(ValueError, match=message):
                fastrnn.load(bad)


@pytest.mark.parametrize("mode", ("bfloat16", "int8"))
def test_torch_module_quantize(mode, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    module = torch.nn.GRU(6, 11, num_layers=2, bidirectional=True, batch_first=True)
    converted = fastrnn.from_torch(module)
    x = rng.standard_normal((2, 9, 6)).astype(np.float32)
    assert converted.quantize(mode) is converted
    assert converted.quantization_mode == mode
    sd = converted.state_dict()
    for name, p in module.named_parameters():
        w = p.detach().numpy()
        if name.startswith("weight"):
            # PyTorch's rows are the output columns: rounded per row
            want = _rounded(w.T, mode).T.astype(np.float32)
        else:
            want = w
        np.testing.assert_array_equal(sd[name], want, err_msg=name)
    # the float module with the rounded weights is what the quantized one computes
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(sd[name]))
        want = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(converted(x)[0], want, atol=2e-5)
    # load_state_dict quantizes the new weights
    converted.load_state_dict({k: v * 1.5 for k, v in sd.items()})
    assert converted.quantization_mode == mode


def test_bad_calls_are_clear_errors():
    layer = fastrnn.LSTM(5)
    with pytest.raises(ValueError, match="LSTM.quantize: the LSTMCell is not built"):
        layer.quantize("int8")
    layer.build((1, 2, 3))
    with pytest.raises(ValueError, match=r"mode expected one of 'bfloat16', 'int8', 'int8_dynamic', 'bfloat16_dynamic', got 'int4'"):
        layer.quantize("int4")
    with pytest.raises(ValueError, match="mode expected one of"):
        layer.quantize(8)
    wide = fastrnn.GRU(5, dtype="float64")
    wide.build((1, 2, 3))
    with pytest.raises(ValueError, match="only float32 weights can be quantized; the GRUCell is float64"):
        wide.quantize("bfloat16")
    layer.quantize("bfloat16")
    with pytest.raises(ValueError, match="already quantized to 'bfloat16'"):
        layer.quantize("int8")
    simple = fastrnn.SimpleRNN(4)
    simple.build((1, 2, 3))
    with pytest.raises(ValueError, match="int8_dynamic.*not a SimpleRNN"):
        simple.quantize("int8_dynamic")
    with pytest.raises(ValueError, match="'bfloat16_dynamic' covers LSTM .*not a SimpleRNN; "
                                         "use 'bfloat16'"):
        simple.quantize("bfloat16_dynamic")
    assert simple.quantization_mode is None  # nothing changed

    class MyCell:
        state_size = 3
        output_size = 3

        def __call__(self, x, states):
            return states[0], states

    with pytest.raises(TypeError, match="MyCell is not a built-in fastrnn cell"):
        fastrnn.RNN(MyCell()).quantize("int8")
    # a stack is checked whole before any cell changes
    stack = fastrnn.RNN([fastrnn.LSTMCell(4), fastrnn.SimpleRNNCell(3)])
    stack.build((1, 2, 3))
    with pytest.raises(ValueError, match="SimpleRNN"):
        stack.quantize("int8_dynamic")
    assert stack.quantization_mode is None


def test_trained_classifier_keeps_its_predictions():
    """A small LSTM classifier trained here with PyTorch on noisy sequence
    prototypes (10 classes, 8 steps of 8 features, as sklearn's digits read
    row by row): quantized, its predicted class is unchanged on >= 99.5% of
    held-out samples."""
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(7)
    protos = g.standard_normal((10, 8, 8)).astype(np.float32)

    def sample(n):
        y = g.integers(0, 10, n)
        return (protos[y] + 0.9 * g.standard_normal((n, 8, 8))).astype(np.float32), y

    torch.manual_seed(7)
    lstm = torch.nn.LSTM(8, 32, batch_first=True)
    head = torch.nn.Linear(32, 10)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-2)
    for _ in range(150):
        xb, yb = sample(128)
        out = head(lstm(torch.from_numpy(xb))[0][:, -1])
        loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = sample(2000)
    w = head.weight.detach().numpy().T
    b = head.bias.detach().numpy()
    converted = fastrnn.from_torch(lstm)
    float_class = (converted(x)[0][:, -1] @ w + b).argmax(axis=1)
    assert (float_class == y).mean() > 0.9  # it learned the task
    for mode in MODES:
        q = fastrnn.from_torch(lstm).quantize(mode)
        same = ((q(x)[0][:, -1] @ w + b).argmax(axis=1) == float_class).mean()
        assert same >= 0.995, f"{mode}: {same:.4f} of predictions unchanged"


@pytest.mark.parametrize("mode", MODES)
def test_stream_files_keep_the_compact_weights(tmp_path, mode, rng):
    layer = fastrnn.GRU(14)
    layer.build((1, None, 6))
    layer.quantize(mode)
    stream = layer.stream()
    x = rng.standard_normal((1, 9, 6)).astype(np.float32)
    stream(x[:, :4])
    path = stream.save(str(tmp_path / "s.npz"))
    back = fastrnn.streaming.load_stream(path)
    assert back.layer.quantization_mode == mode
    for u, v in zip(layer.cell._quantized.arrays(), back.layer.cell._quantized.arrays()):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(back(x[:, 4:]), stream(x[:, 4:]))
