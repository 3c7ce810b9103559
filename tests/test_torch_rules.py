"""Rules of the PyTorch converters, each checked against the live torch module.

* ``from_torch`` leaves the module it converts unchanged (a
  ``spectral_norm`` parametrization in training mode is read without its
  power iteration) and converts the weights its eval forward uses.
* Flags are booleans and sizes integers, as torch has them: ``"False"`` is
  not a flag (``bool("False")`` is True), ``True`` not a layer count, 2.5 not
  a ``proj_size``; ``dropout`` is a probability.
* A stream (and a layer) of a converted projected LSTM saves and loads
  exactly, and goes on as the original does.
"""

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastrnn  # noqa: E402
from fastrnn import serialization  # noqa: E402
from fastrnn._nest import flatten  # noqa: E402
from fastrnn.interop import from_torch, from_torch_state_dict, from_torch_weights  # noqa: E402
from fastrnn.interop.torch import TorchCell, TorchRecurrent  # noqa: E402
from fastrnn.streaming import load_stream  # noqa: E402
from torch.nn.utils.parametrizations import spectral_norm  # noqa: E402


def _module(cls, rng, dtype=torch.float64, **kw):
    torch.manual_seed(int(rng.integers(1 << 30)))
    m = getattr(torch.nn, cls)(**kw).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.7, 0.7, tuple(p.shape))))
    return m


def _flat(result):
    return [np.asarray(a) for a in flatten(list(result) if isinstance(result, tuple)
                                           else [result])]


# ----- from_torch changes nothing of the module ------------------------------------------

SPECTRAL = [
    ("GRU", dict(input_size=5, hidden_size=7), ["weight_hh_l0"]),
    ("LSTM", dict(input_size=3, hidden_size=6, num_layers=2, bidirectional=True, proj_size=2),
     ["weight_ih_l1", "weight_hh_l0_reverse", "weight_hr_l1"]),
    ("RNN", dict(input_size=4, hidden_size=5, nonlinearity="relu"), ["weight_ih_l0"]),
    ("LSTMCell", dict(input_size=3, hidden_size=5), ["weight_hh"]),
]


@pytest.mark.parametrize("cls,kw,names", SPECTRAL, ids=[c[0] for c in SPECTRAL])
def test_from_torch_leaves_a_spectral_norm_module_unchanged(cls, kw, names, rng):
    mod = _module(cls, rng, **kw)
    for name in names:
        spectral_norm(mod, name)  # in training mode, as a module is made
    assert mod.training
    twin = copy.deepcopy(mod)
    m = from_torch(mod)
    # every parameter and buffer (spectral_norm's _u, _v) bit-identical
    got, want = mod.state_dict(), twin.state_dict()
    assert list(got) == list(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert [(n, s.training) for n, s in mod.named_modules()] == \
        [(n, s.training) for n, s in twin.named_modules()]
    assert all(p.grad is None for p in mod.parameters())
    # the converted weights are those the module's eval forward uses
    cell = cls.endswith("Cell")
    x = rng.standard_normal((2, kw["input_size"]) if cell else (4, 2, kw["input_size"]))
    with torch.no_grad():
        want_out = twin.eval()(torch.from_numpy(x))
        again = mod.eval()(torch.from_numpy(x))
    want_flat = [t.numpy() for t in flatten(list(want_out) if isinstance(want_out, tuple)
                                            else [want_out])]
    again_flat = [t.numpy() for t in flatten(list(again) if isinstance(again, tuple)
                                             else [again])]
    for a, b in zip(again_flat, want_flat):
        np.testing.assert_array_equal(a, b)  # the module's own outputs are as before
    got_flat = _flat(m(x))
    assert len(got_flat) == len(want_flat)
    for g, w in zip(got_flat, want_flat):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


# ----- flags are booleans, sizes integers, dropout a probability -------------------------

NOT_FLAGS = ["False", "True", None, 2, 1.0]


@pytest.mark.parametrize("value", NOT_FLAGS, ids=repr)
def test_batch_first_must_be_true_or_false(value, rng):
    mod = _module("GRU", rng, input_size=4, hidden_size=6)
    with pytest.raises(TypeError):  # torch refuses it too
        torch.nn.GRU(4, 6, batch_first=value)
    message = f"batch_first: expected True or False, got {value!r}"
    with pytest.raises(TypeError, match=message):
        from_torch_state_dict(mod.state_dict(), batch_first=value)
    with pytest.raises(TypeError, match=message):
        from_torch_state_dict({"rnn." + k: v for k, v in
                               _module("GRUCell", rng, input_size=4, hidden_size=6)
                               .state_dict().items()}, prefix="rnn.", batch_first=value)
    with pytest.raises(TypeError, match=message):
        from_torch_weights("GRU", mod.weight_ih_l0, mod.weight_hh_l0, batch_first=value)
    with pytest.raises(TypeError, match=message):
        TorchRecurrent("GRU", 4, 6, batch_first=value)


@pytest.mark.parametrize("batch_first", [np.True_, np.False_, True, False], ids=repr)
def test_batch_first_flags_convert_as_torch_runs_them(batch_first, rng):
    mod = _module("GRU", rng, input_size=4, hidden_size=6, batch_first=bool(batch_first))
    x = rng.standard_normal((3, 5, 4))
    with torch.no_grad():
        want = [t.numpy() for t in mod(torch.from_numpy(x))]
    for m in (from_torch_state_dict(mod.state_dict(), batch_first=batch_first),
              from_torch_weights("GRU", mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0,
                                 mod.bias_hh_l0, batch_first=batch_first)):
        assert m.batch_first is bool(batch_first)
        for g, w in zip(_flat(m(x)), want):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


@pytest.mark.parametrize("arg", ["bias", "bidirectional"])
@pytest.mark.parametrize("value", ["False", None, 1.0], ids=repr)
def test_bias_and_bidirectional_must_be_true_or_false(arg, value, rng):
    message = f"{arg}: expected True or False, got {value!r}"
    with pytest.raises(TypeError, match=message):
        TorchRecurrent("LSTM", 3, 5, **{arg: value})
    if arg == "bias":
        with pytest.raises(TypeError):  # torch refuses it too
            torch.nn.LSTM(3, 5, bias=value)
        with pytest.raises(TypeError, match=message):
            TorchCell("LSTM", 3, 5, bias=value)
    if value is not None:  # (None: read from the weights)
        mod = _module("LSTM", rng, input_size=3, hidden_size=5)
        with pytest.raises(TypeError, match=message):
            from_torch_state_dict(mod.state_dict(), **{arg: value})
    if arg == "bidirectional":
        with pytest.raises(TypeError, match=message):
            from_torch_weights("LSTM", [_module("LSTM", rng, input_size=3, hidden_size=5)
                                        .weight_ih_l0], [np.zeros((20, 5))],
                               bidirectional=value)


@pytest.mark.parametrize("value", [2.5, True, "2", -1, 7], ids=repr)
def test_proj_size_must_be_an_integer_below_hidden_size(value):
    with pytest.raises((TypeError, ValueError)):  # torch refuses it too
        torch.nn.LSTM(4, 7, proj_size=value)
    with pytest.raises(ValueError, match=f"proj_size: expected 0 or an integer in "
                                         rf"\[1, hidden_size=7\), got {value!r}"):
        TorchRecurrent("LSTM", 4, 7, proj_size=value)


def test_state_dict_sizes_given_must_be_integers(rng):
    # a one-layer LSTM projected to 1: True == 1 and 6.0 == 6 would pass a comparison
    mod = _module("LSTM", rng, input_size=5, hidden_size=6, proj_size=1)
    sd = mod.state_dict()
    m = from_torch_state_dict(sd, num_layers=1, proj_size=1, hidden_size=np.int64(6))
    x = rng.standard_normal((4, 2, 5))
    with torch.no_grad():
        want = [t.numpy() for t in flatten(list(mod(torch.from_numpy(x))))]
    for g, w in zip(_flat(m(x)), want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)
    for arg, value in (("num_layers", True), ("proj_size", True), ("hidden_size", 6.0),
                       ("input_size", 5.0), ("num_layers", 0), ("proj_size", -1)):
        with pytest.raises(ValueError, match=rf"^{arg}: expected None \(read from the weights\) "
                                             rf"or a .*integer, got {value!r}$"):
            from_torch_state_dict(sd, **{arg: value})


@pytest.mark.parametrize("value", [5, -0.5, 1.0001, float("nan"), True, "0.1"], ids=repr)
def test_dropout_must_be_a_probability(value):
    with pytest.raises(ValueError):  # torch refuses it too
        torch.nn.LSTM(4, 6, num_layers=2, dropout=value)
    error = TypeError if isinstance(value, (bool, str)) else ValueError
    with pytest.raises(error, match=r"dropout: expected a number in \[0, 1\]"):
        TorchRecurrent("LSTM", 4, 6, num_layers=2, dropout=value)


@pytest.mark.parametrize("value", [0, 1, 0.5, np.float32(0.25)], ids=repr)
def test_dropout_torch_accepts_is_accepted(value, rng):
    mod = _module("LSTM", rng, input_size=4, hidden_size=6, num_layers=2,
                  dropout=value).eval()
    m = from_torch(mod)
    assert m.dropout == float(value)
    x = rng.standard_normal((3, 2, 4))
    with torch.no_grad():
        want = [t.numpy() for t in flatten(list(mod(torch.from_numpy(x))))]
    for g, w in zip(_flat(m(x)), want):  # the identity at inference
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


# ----- a converted projected LSTM saves and loads ------------------------------------------

PROJECTED = [(1, True, torch.float32), (2, False, torch.float64)]


@pytest.mark.parametrize("num_layers,bias,dtype", PROJECTED,
                         ids=["1-layer-float32", "2-layers-no-bias-float64"])
def test_projected_lstm_stream_saves_and_loads_exactly(num_layers, bias, dtype, rng, tmp_path):
    mod = _module("LSTM", rng, dtype=dtype, input_size=5, hidden_size=7, proj_size=3,
                  num_layers=num_layers, bias=bias, batch_first=True)
    m = from_torch(mod)
    x = rng.standard_normal((2, 9, 5)).astype(m.dtype)
    s = m.stream(batch_size=2)
    first = s(x[:, :4])
    path = s.save(tmp_path / "proj_stream.npz")
    loaded = load_stream(path)
    assert loaded.layer.get_config() == s.layer.get_config()
    for a, b in zip(loaded.layer.get_weights(), s.layer.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for a, b in zip(flatten(loaded.states), flatten(s.states)):
        np.testing.assert_array_equal(a, b)
    rest = s(x[:, 4:])
    np.testing.assert_array_equal(loaded(x[:, 4:]), rest)
    with torch.no_grad():
        want = mod(torch.from_numpy(x))[0].numpy()
    tol = 2e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), want, rtol=0, atol=tol)


def test_projected_lstm_layer_saves_and_loads_exactly(rng, tmp_path):
    mod = _module("LSTM", rng, dtype=torch.float32, input_size=3, hidden_size=5, proj_size=2)
    layer = from_torch(mod).layers[0]
    path = str(tmp_path / "proj_layer.fastrnn")
    fastrnn.save(layer, path)
    loaded = fastrnn.load(path)
    assert loaded.get_config() == layer.get_config()
    for a, b in zip(loaded.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    for a, b in zip(flatten(loaded(x)), flatten(layer(x))):
        np.testing.assert_array_equal(a, b)
    with torch.no_grad():
        want = mod(torch.from_numpy(x.transpose(1, 0, 2)))[0].numpy().transpose(1, 0, 2)
    np.testing.assert_allclose(flatten(loaded(x))[0], want, rtol=0, atol=2e-6)


def test_projected_cell_config_round_trips_through_json(rng):
    mod = _module("LSTM", rng, input_size=4, hidden_size=6, proj_size=5, bias=False)
    cell = from_torch(mod).layers[0].cell
    spec = json.loads(json.dumps(serialization.serialize(cell)))
    rebuilt = serialization.deserialize(spec, kinds=("cell",))
    assert type(rebuilt) is type(cell)
    assert rebuilt.get_config() == cell.get_config()
    assert rebuilt.state_size == [5, 6]


def test_error_messages_list_no_private_class(tmp_path):
    # (the projected cell is registered for fastrnn's own files; messages list
    # the classes a user may name)
    assert "_ProjLSTMCell" in serialization.names(("cell",))
    with pytest.raises(ValueError, match="expected one of") as got:
        fastrnn.deserialize({"class_name": "NoSuchCell", "config": {}})
    assert "_ProjLSTMCell" not in str(got.value) and "LSTMCell" in str(got.value)
