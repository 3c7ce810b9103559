"""What a Keras configuration (or a live Keras object) may say about
activations, initializers and dtypes, and what fastrnn makes of it: the same
numbers as Keras, or an error naming the argument — never a silent
substitute (an activation layer read as ``linear``, a misspelt initializer
key dropped, ``keras.ops.gelu`` run as the exact ``gelu``)."""

import json

import numpy as np
import pytest

import fastrnn
from fastrnn import activations, initializers


def _keras():
    return pytest.importorskip("keras")


def _np(x):
    return _keras().ops.convert_to_numpy(x)


def _keras_simple_rnn(rng, activation, units=4, features=3):
    """A built Keras SimpleRNN whose weights are large enough to drive the
    activation far from zero."""
    keras = _keras()
    layer = keras.layers.SimpleRNN(units, activation=activation, return_sequences=True)
    layer.build((None, None, features))
    layer.set_weights([2.0 * rng.standard_normal((features, units)).astype(np.float32),
                       rng.standard_normal((units, units)).astype(np.float32),
                       rng.standard_normal(units).astype(np.float32)])
    return layer


# ----------------------------------------------------------------- activations
def test_activation_layers_are_refused_unless_computed_exactly(tmp_path, rng):
    keras = _keras()
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    klayer = _keras_simple_rnn(rng, keras.layers.LeakyReLU(negative_slope=0.5))
    with pytest.raises(ValueError, match=r"activation: .*LeakyReLU\(negative_slope=0\.5\)"):
        fastrnn.from_keras(klayer)
    with pytest.raises(ValueError, match=r"activation: .*LeakyReLU"):
        fastrnn.SimpleRNN.from_config(klayer.get_config())
    model = keras.Sequential([keras.Input((5, 3)), klayer])
    model.save(tmp_path / "leaky.keras")
    with pytest.raises(ValueError, match=r"activation: .*LeakyReLU"):
        fastrnn.load_keras(str(tmp_path / "leaky.keras"))
    gru = keras.layers.GRU(3, recurrent_activation=keras.layers.ReLU(max_value=3.0))
    with pytest.raises(ValueError, match=r"recurrent_activation: .*ReLU\(max_value=3\.0"):
        fastrnn.GRU.from_config(gru.get_config())
    for layer in (keras.layers.PReLU(), keras.layers.Softmax(),
                  keras.layers.LeakyReLU(), keras.layers.ELU(alpha=0.5)):
        with pytest.raises(ValueError, match="activation: "):
            fastrnn.SimpleRNN.from_config(keras.layers.SimpleRNN(
                3, activation=layer).get_config())
    for bad in ({"foo": 1}, {}, {"class_name": "relu"},
                {"module": "keras.ops", "class_name": "function", "config": "gelu",
                 "registered_name": None}):
        with pytest.raises(ValueError, match="activation: "):
            activations.resolve(bad)
    # the layers a built-in activation computes exactly, with Keras's numbers
    for layer, name in ((keras.layers.LeakyReLU(negative_slope=0.2), "leaky_relu"),
                        (keras.layers.ReLU(), "relu"),
                        (keras.layers.ReLU(max_value=6.0), "relu6"),
                        (keras.layers.ELU(), "elu"),
                        (keras.layers.Activation("tanh"), "tanh")):
        klayer = _keras_simple_rnn(rng, layer)
        flayer = fastrnn.from_keras(klayer)
        assert flayer.get_config()["activation"] == name
        np.testing.assert_allclose(flayer(x), _np(klayer(x)), rtol=1e-5, atol=1e-5)


def test_serialised_activation_functions():
    keras = _keras()
    relu = keras.activations.serialize(keras.activations.relu)
    for config in (relu, keras.saving.serialize_keras_object(keras.activations.relu),
                   {"module": "keras.activations", "class_name": "function",
                    "config": "relu", "registered_name": "relu"}):
        assert activations.resolve(config) == activations.RELU
    with pytest.raises(ValueError, match="recurrent_activation: "):
        activations.resolve({"module": "builtins", "class_name": "function",
                             "config": "my_act", "registered_name": "function"},
                            "recurrent_activation")


def test_keras_ops_gelu_is_not_the_exact_gelu(rng):
    """keras.ops.gelu defaults to the tanh approximation (keras.activations.gelu
    to the exact form): only Keras's activation functions become built-ins."""
    keras = _keras()
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    assert activations.resolve(keras.activations.gelu) == activations.GELU
    assert activations.resolve(keras.activations.swish) == activations.SILU
    assert activations.resolve(keras.ops.gelu) is keras.ops.gelu
    for fn in (keras.ops.gelu, keras.activations.gelu, keras.ops.relu):
        klayer = _keras_simple_rnn(rng, fn)
        flayer = fastrnn.SimpleRNN(4, activation=fn, return_sequences=True)
        flayer.set_weights(klayer.get_weights())
        np.testing.assert_allclose(flayer(x), _np(klayer(x)), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- initializers
def test_every_keras_initializer_alias_fastrnn_has():
    _keras()
    from keras.src.initializers import ALL_OBJECTS_DICT

    have = {cls.__name__ for cls in initializers._CLASSES.values()}
    checked = 0
    for alias, cls in ALL_OBJECTS_DICT.items():
        if cls.__name__ in have:
            assert type(initializers.get(alias)).__name__ == cls.__name__, alias
            assert type(initializers.get({"class_name": alias, "config": {}})).__name__ \
                == cls.__name__, alias
            checked += 1
    assert checked >= 30
    config = _keras().layers.LSTM(3).get_config()
    config["recurrent_initializer"]["class_name"] = "OrthogonalInitializer"
    config["kernel_initializer"] = {"class_name": "IdentityInitializer", "config": {"gain": 2.0}}
    layer = fastrnn.LSTM.from_config(config)
    assert isinstance(layer.cell.recurrent_initializer, initializers.Orthogonal)
    assert layer.cell.kernel_initializer.gain == 2.0


@pytest.mark.parametrize("identifier, pattern", [
    ({"class_name": "RandomNormal", "config": {"mean": 0.0, "stdev": 1.0, "seed": 1}},
     r"kernel_initializer: RandomNormal .*\['stdev'\]"),
    ({"class_name": "Constant", "config": {"vaule": 2.0}}, r"kernel_initializer: Constant .*vaule"),
    ({"class_name": "Zeros", "config": {"seed": 1}}, r"kernel_initializer: Zeros .*seed"),
    ({"class_name": "GlorotUniform", "config": {"seed": 1, "scale": 2.0}},
     r"kernel_initializer: GlorotUniform .*scale"),
])
def test_unknown_initializer_keys_are_type_errors(identifier, pattern):
    """Keras's cls(**config) raises TypeError for them; they were dropped."""
    with pytest.raises(TypeError, match=pattern):
        fastrnn.LSTM(3, kernel_initializer=identifier)


def test_variance_scaling_axes_scale_and_distribution_as_keras(rng):
    keras = _keras()
    shape = (5, 40)
    config = {"scale": 1.0, "mode": "fan_in", "distribution": "uniform", "seed": 3,
              "input_axes": [1], "output_axes": [0]}
    mine = initializers.get({"class_name": "VarianceScaling", "config": config})
    limit = np.sqrt(3.0 / 40)  # fan_in from input_axes: 40, not 5
    w = mine(shape)
    k = _np(keras.initializers.VarianceScaling(**config)(shape))
    for a in (w, k):
        assert np.abs(a).max() <= limit * (1 + 1e-6) and np.abs(a).max() > 0.8 * limit
    assert mine.get_config() == keras.initializers.VarianceScaling(**config).get_config()
    glorot = initializers.get({"class_name": "GlorotUniform",
                               "config": {"seed": 1, "input_axes": [1], "output_axes": [1]}})
    assert np.abs(glorot((5, 40))).max() <= np.sqrt(6.0 / 80) * (1 + 1e-6)
    assert json.loads(json.dumps(glorot.get_config())) == {"seed": 1, "input_axes": [1],
                                                           "output_axes": [1]}
    # Keras reads "normal" as "truncated_normal" (within two standard deviations)
    normal = initializers.VarianceScaling(distribution="normal", seed=0)
    assert normal.get_config()["distribution"] == \
        keras.initializers.VarianceScaling(distribution="normal").get_config()["distribution"]
    assert np.abs(normal((100, 100))).max() <= 2 * np.sqrt(1 / 100) / 0.87962566103423978
    for scale in (0, 0.0, -1.0):
        with pytest.raises(ValueError, match="scale"):
            keras.initializers.VarianceScaling(scale=scale)
        with pytest.raises(ValueError, match="scale"):
            initializers.VarianceScaling(scale=scale)
        with pytest.raises(ValueError, match="kernel_initializer: VarianceScaling: scale"):
            fastrnn.LSTM(3, kernel_initializer={"class_name": "VarianceScaling",
                                                "config": {"scale": scale}})


def test_orthogonal_needs_two_dimensions():
    keras = _keras()
    with pytest.raises(ValueError):
        keras.initializers.Orthogonal()((3,))
    with pytest.raises(ValueError, match=r"Orthogonal: .*\(3,\)"):
        initializers.Orthogonal()((3,))
    layer = fastrnn.SimpleRNN(3, bias_initializer="orthogonal")
    with pytest.raises(ValueError, match="bias_initializer: Orthogonal"):
        layer.build((None, 2, 4))


def test_constant_config_is_json_as_keras_writes_it(rng):
    keras = _keras()
    for value in (np.float32(2.5), np.array(2.5), 2.5, 3, np.arange(3.0)):
        config = initializers.Constant(value).get_config()
        assert json.loads(json.dumps(config)) == keras.initializers.Constant(value).get_config()
        again = initializers.get({"class_name": "Constant",
                                  "config": json.loads(json.dumps(config))})
        np.testing.assert_array_equal(again((2, 3)), initializers.Constant(value)((2, 3)))
    with pytest.raises(ValueError, match="Constant: value"):
        initializers.Constant("two")
    with pytest.raises(ValueError, match=r"bias_initializer: Constant: .*\(5,\).*\(12,\)"):
        fastrnn.LSTM(3, bias_initializer=initializers.Constant(np.arange(5.0))).build((1, 2, 4))


# ------------------------------------------------- initializer results, checked
def test_callable_initializer_results_are_checked_and_cast(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    wrong = fastrnn.SimpleRNN(3, kernel_initializer=lambda shape, dtype="float32":
                              np.full((4, 4), 0.1, np.float32))
    with pytest.raises(ValueError, match=r"kernel_initializer returned shape \(4, 4\), "
                                         r"expected \(4, 3\)"):
        wrong(x)
    assert not wrong.built
    wide = fastrnn.SimpleRNN(3, recurrent_initializer=lambda shape, dtype="float32":
                             rng.standard_normal(shape))  # float64 for a float32 layer
    wide.build((None, 3, 4))
    assert [w.dtype for w in wide.get_weights()] == [np.float32] * 3
    plain = fastrnn.SimpleRNN(3)
    plain.build((None, 3, 4))
    assert wide.backend == plain.backend  # (weights of mixed dtypes ran on reference)
    assert wide(x).dtype == np.float32


def test_keras_initializer_objects(rng):
    keras = _keras()
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    flayer = fastrnn.SimpleRNN(3, kernel_initializer=keras.initializers.GlorotUniform(seed=1),
                               recurrent_initializer=keras.initializers.Orthogonal(seed=2))
    y = flayer(x)
    klayer = keras.layers.SimpleRNN(3, kernel_initializer=keras.initializers.GlorotUniform(seed=1),
                                    recurrent_initializer=keras.initializers.Orthogonal(seed=2))
    klayer.build((None, 3, 4))
    for mine, theirs in zip(flayer.get_weights(), klayer.get_weights()):
        assert mine.dtype == np.float32
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(y, _np(klayer(x)), rtol=1e-5, atol=1e-6)
    torch = pytest.importorskip("torch")
    as_tensor = fastrnn.SimpleRNN(3, dtype="float64", kernel_initializer=lambda shape, dtype:
                                  torch.ones(shape, requires_grad=True))
    as_tensor.build((None, 3, 4))
    assert as_tensor.get_weights()[0].dtype == np.float64
    np.testing.assert_array_equal(as_tensor.get_weights()[0], np.ones((4, 3)))


# ---------------------------------------------------------- mixed precision
@pytest.mark.parametrize("policy, atol", [("mixed_float16", 5e-3), ("mixed_bfloat16", 5e-2)])
def test_mixed_precision_layers_load_as_float32(tmp_path, rng, policy, atol):
    """Keras keeps a mixed policy's weights in float32 and computes in half
    precision; fastrnn loads the float32 weights into a float32 layer."""
    keras = _keras()
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    mixed = keras.Sequential([keras.Input((5, 4)), keras.layers.LSTM(3, dtype=policy)])
    mixed.layers[0].set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                                 for w in mixed.layers[0].get_weights()])
    full = keras.Sequential([keras.Input((5, 4)), keras.layers.LSTM(3)])
    full.layers[0].set_weights(mixed.layers[0].get_weights())
    mixed.save(tmp_path / "mixed.keras")
    for model in (fastrnn.from_keras(mixed), fastrnn.load_keras(str(tmp_path / "mixed.keras"))):
        layer = model.layers[-1]
        assert layer.dtype == np.float32 and layer.get_config()["dtype"] == "float32"
        y = model(x)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, _np(full(x)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y, _np(mixed(x)).astype(np.float32), atol=atol)
    assert fastrnn.LSTM(3, dtype=policy).dtype == np.float32
    quantized = {"class_name": "QuantizedDTypePolicy",
                 "config": {"mode": "int8", "source_name": policy}}
    assert fastrnn.cells.resolve_dtype(quantized) == np.float32


def test_dense_reads_serialised_activations_as_the_recurrent_layers_do():
    """Dense and Activation: a keras.activations function by name, an
    activation layer a built-in computes exactly; a function of another
    module (keras.ops.gelu is tanh-approximated by default) is refused,
    not taken for the built-in of its name."""
    from fastrnn.models import Dense

    softmax = {"module": "keras.activations", "class_name": "function", "config": "softmax",
               "registered_name": None}
    assert Dense(3, activation=softmax).activation == "softmax"
    leaky = {"module": "keras.layers", "class_name": "LeakyReLU",
             "config": {"negative_slope": 0.2, "name": "leaky"}}
    assert Dense(3, activation=leaky).activation == "leaky_relu"
    with pytest.raises(ValueError, match="activation: .*keras.ops"):
        Dense(3, activation={"module": "keras.ops", "class_name": "function", "config": "gelu"})
    with pytest.raises(ValueError, match="activation: the Keras layer LeakyReLU"):
        Dense(3, activation=dict(leaky, config={"negative_slope": 0.5}))
