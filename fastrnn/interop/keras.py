"""Live Keras 3 objects -> fastrnn, with the same config and weights.

``from_keras(obj)`` takes

* a recurrent layer: ``LSTM``, ``GRU``, ``SimpleRNN``, ``RNN`` over a cell
  or a ``StackedRNNCells`` (a list of cells), ``Bidirectional``; or a cell
  (``LSTMCell``, ``GRUCell``, ``SimpleRNNCell``, ``StackedRNNCells``);
* one of the non-recurrent layers of :mod:`fastrnn.models` (``Dense``,
  ``Embedding``, ...);
* a ``Sequential`` or functional model made of those layers (a linear
  chain, each layer reading the first output of the one before: not a
  state a recurrent layer returns with ``return_state=True``), returned as
  a :class:`fastrnn.models.Sequential`.

The layer's ``get_config()`` is rebuilt by fastrnn and its
``get_weights()`` loaded; a stateful layer's current states are copied too.
Every layer and cell must be of Keras's own class: a subclass, or a user's
class named like a built-in, may override ``call``, which a config does not
carry, and is refused; so is a layer Keras quantized (``model.quantize``).
Keras is imported only when this function runs.
"""

from __future__ import annotations

import numpy as np

from .. import serialization
from ..bidirectional import Bidirectional
from ..layers import RNN
from ..models import layer_from_config
from .keras_file import _recurrent_parts, build_model, check_not_quantized


def _copy_states(klayer, flayer):
    """Carry a stateful Keras layer's current states into the fastrnn layer."""
    if isinstance(flayer, Bidirectional):
        _copy_states(klayer.forward_layer, flayer.forward_layer)
        _copy_states(klayer.backward_layer, flayer.backward_layer)
        return
    if not isinstance(flayer, RNN) or not flayer.stateful:
        return
    states = getattr(klayer, "states", None)
    if not states or any(s is None for s in states):
        return
    flat = []
    for s in states:
        flat += list(s) if isinstance(s, (list, tuple)) else [s]
    arrays = [np.array(_numpy(s), dtype=flayer.dtype) for s in flat]
    if len(arrays) == len(flayer.state_sizes):
        flayer.states = arrays


def _check_own_class(obj, keras):
    """Refuse a live Keras object, or one nested in it (a cell, a stack's cells, a
    Bidirectional's layers, a TimeDistributed's layer, a model's layers), whose class is
    not Keras's own: a subclass, or a user's class named like a built-in, may override
    ``call``, and its config alone would rebuild the built-in without that code."""
    cls = type(obj)
    public = getattr(keras.layers, cls.__name__, None) or getattr(keras, cls.__name__, None)
    if not cls.__module__.startswith("keras.") or public is not None and public is not cls:
        raise ValueError(
            f"from_keras: layer {getattr(obj, 'name', None)!r} is a "
            f"{cls.__module__}.{cls.__qualname__}, not one of Keras's own classes (a subclass "
            "or a custom class): fastrnn runs only Keras's built-in layers and cells and "
            "cannot run its call")
    inner = [getattr(obj, a, None) for a in ("cell", "forward_layer", "backward_layer", "layer")]
    for sub in inner + list(getattr(obj, "cells", None) or []) + (
            list(obj.layers) if isinstance(obj, keras.Model) else []):
        if isinstance(sub, keras.layers.Layer):
            _check_own_class(sub, keras)


def _numpy(v):
    import keras

    return keras.ops.convert_to_numpy(v)


def from_keras(obj, backend=None):
    """Convert a live Keras 3 layer, cell or model to fastrnn.

    Parameters
    ----------
    obj : keras.layers.Layer or keras.Model
        See the module docstring for what is supported.
    backend : str, optional
        fastrnn backend for the recurrent layers (``"auto"``, ``"cpu"``,
        ``"cuda"``, ``"reference"``).

    Returns
    -------
    A fastrnn layer or cell, or a :class:`fastrnn.models.Sequential`.

    Raises
    ------
    ValueError
        An unsupported layer (named) or model structure; a layer or cell of a
        class that is not Keras's own (a subclass or a custom class); a layer
        with a Keras quantized dtype policy; a layer called with a ``mask=``
        other than the one Keras propagates to it.
    """
    import keras

    if isinstance(obj, keras.Model):
        if type(obj).__name__ not in ("Functional", "Sequential"):
            raise ValueError(f"from_keras: subclassed model {type(obj).__name__!r} is not "
                             "supported (only Sequential and functional models have a config "
                             "fastrnn can rebuild)")
        _check_own_class(obj, keras)
        model_config = {"class_name": "Sequential" if isinstance(obj, keras.Sequential)
                        else "Functional", "config": obj.get_config()}

        def weights_of(entry, _group, _layer):
            name = entry.get("name") or entry["config"]["name"]
            return obj.get_layer(name).get_weights()

        model = build_model(model_config, weights_of, backend)
        for flayer in model.layers:
            try:
                _copy_states(obj.get_layer(flayer.name), flayer)
            except ValueError:
                pass
        return model
    if not isinstance(obj, keras.layers.Layer):
        raise TypeError(f"from_keras: expected a Keras layer or model, got "
                        f"{type(obj).__name__}")
    _check_own_class(obj, keras)
    name = type(obj).__name__
    entry = {"class_name": name, "config": obj.get_config()}
    check_not_quantized(entry)
    if name in serialization.names(("cell",)):
        result = serialization.deserialize(entry, kinds=("cell",))
    else:
        result = layer_from_config(entry)
    weights = obj.get_weights()
    if weights:
        result.set_weights(weights)
    if backend is not None:
        for sub in _recurrent_parts(result):
            sub.backend_arg = backend
    _copy_states(obj, result)
    return result
