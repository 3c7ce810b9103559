"""The rules that choose a layer's backend, as the README's Backends section
states them: the layer's ``backend=`` argument, then ``fastrnn.set_backend``,
then ``FASTRNN_BACKEND``, then ``auto``; ``layer.backend`` and
``layer.backend_reason`` say which backend runs and why.

Expected values come from NumPy loops written here from the Keras
definitions, or from the rules themselves; none of these tests compiles a
``cpu`` kernel (what ``auto`` picks is read from ``layer.backend``).
"""

import numpy as np
import pytest

import fastrnn

CPU = fastrnn.dispatch.available("cpu")[0]
needs_cpu = pytest.mark.skipif(not CPU, reason="cpu backend not available")


@pytest.fixture(autouse=True)
def _no_default(monkeypatch):
    """Each test starts and ends with neither set_backend nor FASTRNN_BACKEND."""
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
    fastrnn.set_backend(None)
    yield
    fastrnn.set_backend(None)


def _cube_tanh(v):
    """A Python activation (not a built-in name): only reference runs it."""
    return np.tanh(v) ** 3


def _simple_rnn(x, W, U, b, act, reverse=False):
    """Keras SimpleRNN written out: the last output, h' = act(x W + b + h U)."""
    h = np.zeros((x.shape[0], U.shape[0]))
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    for t in steps:
        h = act(x[:, t] @ W + b + h @ U)
    return h


def _random_weights(rng, layer):
    return [rng.uniform(-0.7, 0.7, w.shape) for w in layer.get_weights()]


# ---------------------------------------------------------------- Bidirectional copies


@pytest.mark.parametrize("act", [_cube_tanh, np.tanh, lambda v: np.sin(v)])
def test_bidirectional_of_a_layer_with_a_python_activation(act, rng):
    """Bidirectional rebuilt its two layers from the config, where a Python
    activation is only a name ("__main__._cube_tanh", "numpy.tanh"): it
    raised "unknown activation". It runs like the bare layer, on reference."""
    B, T, D, H = 3, 7, 5, 6
    x = rng.standard_normal((B, T, D))
    layer = fastrnn.SimpleRNN(H, activation=act, dtype="float64")
    bi = fastrnn.Bidirectional(layer)
    bi.build(x.shape)
    weights = _random_weights(rng, bi)
    bi.set_weights(weights)
    want = np.concatenate([_simple_rnn(x, *weights[:3], act),
                           _simple_rnn(x, *weights[3:], act, reverse=True)], axis=-1)
    np.testing.assert_allclose(bi(x), want, atol=1e-10)
    assert bi.forward_layer.cell.activation is act
    assert bi.backward_layer.cell.activation is act and bi.backward_layer.go_backwards
    assert bi.backend == "reference" and "Python callable" in bi.backend_reason


def test_bidirectional_keeps_the_python_callables_of_stacked_cells(rng):
    """The cells of an RNN (a stack here) keep their Python activations and
    initializers too; every other config entry is the template's."""
    B, T, D = 2, 4, 3

    def recurrent(v):
        return 1.0 / (1.0 + np.exp(-v))

    def orthogonal(shape, dtype="float32"):  # a built-in's name: it was replaced by Orthogonal
        return np.full(shape, 0.125, dtype)

    cells = [fastrnn.GRUCell(5, recurrent_activation=recurrent, dtype="float64"),
             fastrnn.LSTMCell(3, activation=_cube_tanh, recurrent_initializer=orthogonal,
                              dtype="float64")]
    layer = fastrnn.RNN(cells, return_sequences=True, backend="reference", dtype="float64")
    bi = fastrnn.Bidirectional(layer, merge_mode="sum")
    for sub, backwards in ((bi.forward_layer, False), (bi.backward_layer, True)):
        gru, lstm = sub.cells
        assert gru.recurrent_activation is recurrent and lstm.activation is _cube_tanh
        assert lstm.recurrent_initializer is orthogonal
        assert sub.go_backwards is backwards and not sub.built
        config, want = sub.get_config(), layer.get_config()
        want.update(go_backwards=backwards, zero_output_for_mask=True)  # (return_sequences)
        assert config == want
    x = rng.standard_normal((B, T, D))
    bi(x)
    for sub in (bi.forward_layer, bi.backward_layer):
        np.testing.assert_array_equal(sub.cells[1].recurrent_kernel, np.full((3, 12), 0.125))
        assert sub.backend == "reference" and "backend argument" in sub.backend_reason


def test_bidirectional_keeps_an_initializer_function_named_like_a_built_in(rng):
    """A Python initializer is only its __name__ in a config: one named
    "glorot_uniform" was rebuilt as the built-in GlorotUniform, silently."""
    D, H = 3, 5
    drawn = rng.uniform(-0.3, 0.3, (D, H))

    def glorot_uniform(shape, dtype="float32"):
        return drawn.astype(dtype)

    bi = fastrnn.Bidirectional(fastrnn.SimpleRNN(H, kernel_initializer=glorot_uniform,
                                                 dtype="float64"))
    bi.build((None, 4, D))
    for sub in (bi.forward_layer, bi.backward_layer):
        assert sub.cell.kernel_initializer is glorot_uniform
        np.testing.assert_array_equal(sub.get_weights()[0], drawn)


def test_bidirectional_copies_keep_the_config_of_a_layer_without_callables():
    """The copies are still new layers of the template's config (unbuilt,
    new weights), the backward one with go_backwards flipped."""
    layer = fastrnn.LSTM(7, return_sequences=True, dtype="float64", backend="reference",
                         unit_forget_bias=False, recurrent_activation="hard_sigmoid",
                         input_dim=3, name="template")
    bi = fastrnn.Bidirectional(layer)
    for sub, backwards in ((bi.forward_layer, False), (bi.backward_layer, True)):
        want = layer.get_config()
        want.update(go_backwards=backwards, zero_output_for_mask=True)  # (return_sequences)
        assert sub.get_config() == want and sub is not layer and not sub.built


# ---------------------------------------------------------------- to("cpu")


def test_to_cpu_leaves_auto_free_to_pick_reference(rng):
    """to("cpu") was a request for the cpu backend: a layer with a Python
    activation then raised at every call. It only keeps NumPy inputs on the
    host, where auto runs that activation on reference."""
    B, T, D, H = 2, 6, 3, 5
    layer = fastrnn.SimpleRNN(H, activation=_cube_tanh, dtype="float64")
    x = rng.standard_normal((B, T, D))
    layer.build(x.shape)
    weights = _random_weights(rng, layer)
    layer.set_weights(weights)
    assert layer.to("cpu") is layer
    np.testing.assert_allclose(layer(x), _simple_rnn(x, *weights, _cube_tanh), atol=1e-10)
    assert layer.backend == "reference" and "Python callable" in layer.backend_reason


@needs_cpu
def test_to_cpu_does_not_override_set_backend_or_the_environment(monkeypatch):
    """After set_backend("reference") a to("cpu") layer ran on cpu, its
    reason saying "requested by the backend argument"."""
    layer = fastrnn.GRU(4).to("cpu")
    layer.build((None, 3, 2))
    assert layer.backend == "cpu"  # auto, on the host
    fastrnn.set_backend("reference")
    layer(np.ones((1, 3, 2), np.float32))
    assert layer.backend == "reference"
    assert "set_backend" in layer.backend_reason and "argument" not in layer.backend_reason
    fastrnn.set_backend(None)
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    other = fastrnn.SimpleRNN(3).to("cpu")
    other.build((None, 2, 4))
    assert other.backend == "reference" and "FASTRNN_BACKEND" in other.backend_reason
    # the layer's own argument still comes first
    mine = fastrnn.SimpleRNN(3, backend="cpu").to("cpu")
    mine.build((None, 2, 4))
    assert mine.backend == "cpu" and "backend argument" in mine.backend_reason


# ---------------------------------------------------------------- backend and backend_reason


@needs_cpu
def test_backend_says_what_the_next_call_runs_after_set_backend(monkeypatch, rng):
    """layer.backend kept the choice of the last call: after set_backend it
    named a backend the next call would not run."""
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    layer = fastrnn.SimpleRNN(6)
    layer.build(x.shape)
    fastrnn.set_backend("reference")
    layer(x)
    assert layer.backend == "reference"
    fastrnn.set_backend(None)
    assert layer.backend == "cpu" and layer.backend_reason.startswith("cpu: compiled")
    fastrnn.set_backend("reference")
    assert layer.backend == "reference" and "set_backend" in layer.backend_reason
    fastrnn.set_backend(None)
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert layer.backend == "reference" and "FASTRNN_BACKEND" in layer.backend_reason
    monkeypatch.delenv("FASTRNN_BACKEND")
    assert layer.backend == "cpu"


def test_backend_reason_follows_new_weights_without_a_call(rng):
    """quantize() (new weights) changed what the next call runs, and the
    reason still described the float weights until a call."""
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    layer = fastrnn.LSTM(7, backend="reference")
    layer(x)
    assert "int8" not in layer.backend_reason
    layer.quantize("int8")
    assert "int8" in layer.backend_reason
    layer(x)
    assert "int8" in layer.backend_reason


def test_backend_keeps_the_dropout_reason_of_the_last_call(rng):
    """A training call with dropout ran on reference and says so until
    something the choice depends on changes."""
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    layer = fastrnn.GRU(5, dropout=0.25, backend="reference")
    layer(x, training=True)
    assert layer.backend == "reference" and "dropout" in layer.backend_reason
    fastrnn.set_backend("cpu")  # (the layer's argument still decides)
    assert layer.backend == "reference" and "backend argument" in layer.backend_reason


@needs_cpu
def test_bidirectional_backend_reason_names_both_halves_when_they_differ(rng):
    """Bidirectional reported its forward layer's backend and reason only,
    with a backward_layer running on another backend."""
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    bi = fastrnn.Bidirectional(fastrnn.SimpleRNN(4),
                               backward_layer=fastrnn.SimpleRNN(4, go_backwards=True,
                                                                backend="reference"))
    assert bi.backend is None and bi.backend_reason == "not built yet"
    bi.build(x.shape)
    assert bi.backend == "cpu"  # the forward layer's
    reason = bi.backend_reason
    assert reason.startswith("forward: cpu: ") and "; backward: reference: " in reason, reason
    fastrnn.set_backend("reference")  # both halves on reference now, for one reason each
    assert bi.backend == "reference"
    reason = bi.backend_reason
    assert "forward: reference: requested by fastrnn.set_backend" in reason, reason
    assert "backward: reference: requested by the backend argument" in reason, reason
    bi(x)
    fastrnn.set_backend(None)
    same = fastrnn.Bidirectional(fastrnn.GRU(3))
    same.build(x.shape)
    assert same.backend == "cpu" and not same.backend_reason.startswith("forward")
    assert same.backend_reason == same.forward_layer.backend_reason


# ---------------------------------------------------------------- the source of a request


@needs_cpu
def test_errors_and_reasons_name_where_a_request_came_from(monkeypatch):
    """They said "(fastrnn.set_backend / FASTRNN_BACKEND)", never which."""
    x = np.ones((1, 3, 2), np.float32)
    layer = fastrnn.SimpleRNN(4, activation=_cube_tanh)
    fastrnn.set_backend("cpu")
    with pytest.raises(ValueError, match=r"backend 'cpu' was requested by fastrnn\.set_backend "
                                         r"but .*callable") as info:
        layer(x)
    assert "FASTRNN_BACKEND" not in str(info.value)
    fastrnn.set_backend(None)
    monkeypatch.setenv("FASTRNN_BACKEND", "cpu")
    with pytest.raises(ValueError, match="backend 'cpu' was requested by the FASTRNN_BACKEND "
                                         "environment variable but") as info:
        layer(x)
    assert "set_backend" not in str(info.value)
    plain = fastrnn.GRU(3)
    plain.build((None, 3, 2))
    assert plain.backend_reason.startswith(
        "cpu: requested by the FASTRNN_BACKEND environment variable")
    fastrnn.set_backend("reference")  # set_backend comes before the environment
    assert plain.backend_reason.startswith("reference: requested by fastrnn.set_backend")


@pytest.mark.parametrize("bad", [1, True, 2.5, ["cpu"], b"cpu"])
def test_a_backend_that_is_not_a_str_is_a_type_error(bad):
    """set_backend(1) and backend=1 were a ValueError listing the names, as
    for a misspelt name; the type is wrong, not the value."""
    fastrnn.set_backend("reference")
    with pytest.raises(TypeError, match=r"fastrnn\.set_backend: name: expected a str or None, "
                                        rf"got {type(bad).__name__} "):
        fastrnn.set_backend(bad)
    assert fastrnn.get_backend() == "reference"  # unchanged
    with pytest.raises(TypeError, match=rf"backend: expected a str or None, got "
                                        rf"{type(bad).__name__} "):
        fastrnn.LSTM(3, backend=bad)
    with pytest.raises(TypeError, match="backend: expected a str or None"):
        fastrnn.Bidirectional(fastrnn.GRU(3), backend=bad)
    # a str that names no backend stays a ValueError, None the default
    with pytest.raises(ValueError, match="expected one of"):
        fastrnn.set_backend("tpu")
    with pytest.raises(ValueError, match="backend: expected one of"):
        fastrnn.Bidirectional(fastrnn.GRU(3), backend="tpu")
    assert fastrnn.SimpleRNN(2, backend=None).backend_arg == "auto"
    fastrnn.set_backend(None)
    assert fastrnn.get_backend() == "auto"


def test_bidirectional_keeps_a_users_initializer_subclass(rng):
    """A subclass of fastrnn.initializers.Initializer (the documented base)
    is no built-in: its config does not rebuild it, so the object is kept."""
    from fastrnn import initializers

    drawn = rng.uniform(-0.4, 0.4, (3, 5))

    class Drawn(initializers.Initializer):
        def generate(self, shape):
            return drawn

    bi = fastrnn.Bidirectional(fastrnn.SimpleRNN(5, kernel_initializer=Drawn(),
                                                 dtype="float64"))
    bi.build((None, 4, 3))   # was "unknown initializer class 'Drawn'"
    for sub in (bi.forward_layer, bi.backward_layer):
        np.testing.assert_array_equal(sub.get_weights()[0], drawn)
