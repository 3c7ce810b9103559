"""``Bidirectional``: a recurrent layer run forwards and backwards, merged (Keras 3)."""

from __future__ import annotations

import numpy as np

from . import _device, _engine, dispatch, initializers, serialization
from ._engine import WEIGHTS_LOCK
from ._nest import flatten
from .cells import (StackedRNNCells, _pop_common, _weight_list, is_builtin,
                    quantization_mode_of, quantize_cells, stage_weights)
from .layers import RNN, _shape_kwargs


@serialization.register("rnn")
class Bidirectional:
    """Run a recurrent layer forwards and backwards and merge (Keras 3 ``Bidirectional``).

    Parameters
    ----------
    layer : RNN
        The forward layer's template. Like Keras, fastrnn builds two new
        layers from its config (``forward_layer`` and ``backward_layer``, the
        latter with ``go_backwards`` flipped): new weights, made when they
        are built; load weights with ``set_weights(forward weights +
        backward weights)``. Python callables among its cells' activations
        and initializers are kept as they are (a config only names them).
    merge_mode : {"concat", "sum", "mul", "ave", None}
        How to combine the two outputs; ``None`` returns both.
    backward_layer : RNN, optional
        A layer to use as is for the backward direction: the opposite
        ``go_backwards``, the same ``return_sequences``, ``return_state``,
        ``stateful`` and ``time_major``, and for ``sum``, ``mul`` and ``ave``
        the same output size.
    weights : list of arrays, optional
        Passed to ``set_weights`` once both layers exist.
    backend : str, optional
        Sets both layers' ``backend``.
    dtype : str, optional
        Checked, as any layer's; the layer computes and returns in its two
        layers' dtype (Keras too computes in theirs, then casts the outputs
        to this one). Give the wrapped layer ``dtype=``.

    ``backend`` and ``backend_reason`` say what the next call runs: the
    backend both layers run and why, or, where the two differ (a
    ``backward_layer`` of another backend or configuration), ``backend``
    is the forward layer's and ``backend_reason`` says each layer's,
    ``"forward: ...; backward: ..."``.

    Masked steps output zeros in both directions (with
    ``return_sequences``), and the backward sequence is flipped back so
    both line up in time. ``return_state`` returns
    ``[output, *forward_states, *backward_states]``.
    """

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None,
                 **kwargs):
        if not isinstance(layer, RNN):
            raise ValueError(f"layer: expected a fastrnn recurrent layer, got {layer!r}")
        if backward_layer is not None and not isinstance(backward_layer, RNN):
            raise ValueError(f"backward_layer: expected a fastrnn recurrent layer, "
                             f"got {backward_layer!r}")
        if merge_mode not in ("concat", "sum", "mul", "ave", None):
            raise ValueError(f"merge_mode: expected one of 'concat', 'sum', 'mul', 'ave', None; "
                             f"got {merge_mode!r}")
        backend = kwargs.pop("backend", None)
        if backend is not None:
            backend = dispatch._check_request(backend)
        # Keras's shape arguments (a first layer's, which Keras 2 writes on
        # the wrapper): the batch is a stateful pair's, the features build both
        batch, features = _shape_kwargs(kwargs, "Bidirectional")
        self.name, _ = _pop_common(kwargs, "Bidirectional")
        self.forward_layer = _copy(layer, layer.go_backwards)
        if backward_layer is None:
            backward_layer = _copy(layer, not layer.go_backwards)
        self.backward_layer = backward_layer
        if batch is not None:
            for sub in (self.forward_layer, self.backward_layer):
                if sub._declared_batch not in (None, batch):
                    raise ValueError(f"Bidirectional: the batch size is given twice, "
                                     f"differently: {batch} and the inner layer's "
                                     f"{sub._declared_batch}")
                sub._declared_batch = batch
        if self.forward_layer.go_backwards == self.backward_layer.go_backwards:
            raise ValueError("backward_layer: must have the opposite go_backwards of layer")
        for attr in ("stateful", "return_sequences", "return_state", "time_major"):
            if getattr(self.forward_layer, attr) != getattr(self.backward_layer, attr):
                raise ValueError(f"backward_layer: {attr} must equal the forward layer's")
        sizes = self.forward_layer.output_size, self.backward_layer.output_size
        if merge_mode in ("sum", "mul", "ave") and sizes[0] != sizes[1]:
            raise ValueError(f"backward_layer: merge_mode={merge_mode!r} combines the two "
                             f"outputs element by element, so both need the same size; the "
                             f"forward layer gives {sizes[0]}, the backward layer {sizes[1]}")
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
            if backend is not None:
                sub.backend_arg = backend
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self.time_major = layer.time_major
        self.dtype = layer.dtype
        if features is not None:
            for sub in (layer, self.backward_layer):  # (the copies are not built)
                given = sub.cells[0].input_dim if sub.built and sub.cells else None
                if given not in (None, features):
                    raise ValueError(f"Bidirectional: the input features are given twice, "
                                     f"differently: {features} and the inner layer's {given}")
            self.build((batch, None, features))
        if weights is not None:
            self.set_weights(weights)

    @property
    def built(self):
        return self.forward_layer.built and self.backward_layer.built

    def build(self, input_shape):
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)

    def get_weights(self):
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights):
        """Forward layer's weights then backward layer's, Keras order."""
        self._stage_weights(weights)()

    def _stage_weights(self, weights):
        weights = _weight_list(weights, "Bidirectional.set_weights")
        # each half takes its own layer's count: a backward_layer of other
        # settings (use_bias=False, say) takes another number of arrays
        nf, nb = self.forward_layer._n_weights(), self.backward_layer._n_weights()
        if len(weights) != nf + nb:
            raise ValueError(f"Bidirectional.set_weights: expected {nf + nb} arrays ({nf} of "
                             f"the forward layer, then {nb} of the backward layer), got "
                             f"{len(weights)}")
        # both halves checked before either layer changes, and put in together
        forward = stage_weights(self.forward_layer, weights[:nf])
        backward = stage_weights(self.backward_layer, weights[nf:])

        def commit():
            with WEIGHTS_LOCK:
                forward()
                backward()

        return commit

    def quantize(self, mode):
        """Quantize both directions' weights to ``mode``, together (see
        :meth:`fastrnn.LSTM.quantize`); returns the layer."""
        quantize_cells("Bidirectional", self._quantizable(), mode)
        return self

    @property
    def quantization_mode(self):
        """None, the mode of :meth:`quantize`, or ``"mixed"``."""
        return quantization_mode_of(self._quantizable())

    def _quantizable(self):
        return self.forward_layer._quantizable() + self.backward_layer._quantizable()

    @property
    def states(self):
        """The carried states of a stateful layer, as Keras: a tuple of the
        forward layer's then the backward layer's (their own arrays, as
        ``layer.states``); None before its first call or when not stateful."""
        fw, bw = self.forward_layer.states, self.backward_layer.states
        return tuple(list(fw) + list(bw)) if fw and bw else None

    def reset_states(self):
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    reset_state = reset_states

    def to(self, device):
        self.forward_layer.to(device)
        self.backward_layer.to(device)
        return self

    @property
    def backend(self):
        """The backend of the next call: both layers', or the forward
        layer's where they differ (``backend_reason`` names each); None
        before both are built."""
        fw, bw = self.forward_layer._current(), self.backward_layer._current()
        return fw.name if fw is not None and bw is not None else None

    @property
    def backend_reason(self):
        """Why: the reason of both layers, or ``"forward: <its reason>;
        backward: <its reason>"`` where they differ."""
        fw, bw = self.forward_layer._current(), self.backward_layer._current()
        if fw is None or bw is None:
            return "not built yet"
        if fw.reason == bw.reason:
            return fw.reason
        return f"forward: {fw.reason}; backward: {bw.reason}"

    def stream(self, *args, **kwargs):
        raise TypeError("Bidirectional layers cannot stream: the backward direction needs the "
                        "whole sequence (future frames) before it can emit anything")

    def __call__(self, inputs, mask=None, initial_state=None, training=False):
        return self._call(inputs, mask, initial_state, _device.training_flag(training), None)

    def _snapshot(self):
        """Both directions' weights, read together (None with the user's cells)."""
        fw, bw = self.forward_layer, self.backward_layer
        if fw.compiled and bw.compiled and fw.built and bw.built:
            weights = _engine.snapshot(fw.cells + bw.cells)
            n = len(fw.cells)
            _engine.check_stack(fw.cells, weights[:n])
            _engine.check_stack(bw.cells, weights[n:])
            return weights
        return None

    def _call(self, inputs, mask, initial_state, training, weights):
        """A call with both directions' ``weights`` (:meth:`_snapshot`; None: read now)."""
        fw, bw = self.forward_layer, self.backward_layer
        fw_state = bw_state = None
        if initial_state is not None:
            flat = flatten(initial_state)
            n_fw, n_bw = len(fw.state_sizes), len(bw.state_sizes)
            if len(flat) != n_fw + n_bw:
                raise ValueError(f"initial_state: expected {n_fw} forward states then {n_bw} "
                                 f"backward states ({n_fw + n_bw} arrays), got {len(flat)}")
            fw_state, bw_state = flat[:n_fw], flat[n_fw:]
        fw_args = fw._prepare(inputs, mask, fw_state)
        bw_args = bw._prepare(inputs, mask, bw_state, len(fw.state_sizes))
        # both directions' weights read together: a set_weights in another
        # thread changes both or neither for this call
        if weights is None:
            weights = self._snapshot()
        # both halves in the arrays they computed with (NumPy or CuPy), merged
        # there, and only the merged result turned back into the caller's kind
        # (a Numba device array or a PyTorch tensor has no concatenate or flip)
        results = []
        for layer, (x, m, states, xp, _), part in (
                (fw, fw_args, slice(0, len(fw.cells))),
                (bw, bw_args, slice(len(fw.cells), None))):
            out, new = layer._forward(x, m, states, training, xp,
                                      None if weights is None else weights[part])
            results.append(layer._finish(out, new, xp, _device.identity))
        xp, restore = fw_args[3], fw_args[4]
        y, y_rev = results
        states = []
        if self.return_state:
            states = _nested(restore, list(y[1:]) + list(y_rev[1:]))
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            axis = 0 if self.time_major else 1
            y_rev = xp.flip(y_rev, axis=axis)
        if self.merge_mode == "concat":
            output = xp.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = [y, xp.ascontiguousarray(y_rev)]
        output = [restore(o) for o in output] if isinstance(output, list) else restore(output)
        if self.return_state:
            return (output if isinstance(output, list) else [output]) + states
        return output

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        back = self.backward_layer.compute_output_shape(input_shape)
        states = back_states = []
        if self.return_state:
            shape, states = shape[0], list(shape[1:])
            back, back_states = back[0], list(back[1:])
        if self.merge_mode == "concat":
            shape = tuple(shape[:-1]) + (shape[-1] + back[-1],)
        elif self.merge_mode is None:
            shape = [shape, back]
        if self.return_state:
            return (shape if self.merge_mode is None else [shape]) + states + back_states
        return shape

    def get_config(self):
        return {"name": self.name, "trainable": True, "merge_mode": self.merge_mode,
                "layer": serialization.serialize(self.forward_layer),
                "backward_layer": serialization.serialize(self.backward_layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = serialization.deserialize(config.pop("layer"), kinds=("rnn",))
        backward = config.pop("backward_layer", None)
        if backward is not None:
            backward = serialization.deserialize(backward, kinds=("rnn",))
        return cls(layer, backward_layer=backward, **config)


# The cell arguments whose config holds a name for a Python callable: an
# activation's "module.qualname" and an initializer's __name__, which no
# config rebuilds (or rebuilds as a built-in that has that name).
_CALLABLE_ARGS = ("activation", "recurrent_activation", "kernel_initializer",
                  "recurrent_initializer", "bias_initializer")


def _copy(layer, go_backwards):
    """A new layer from ``layer``'s config with ``go_backwards``, as Keras
    makes Bidirectional's layers (unbuilt: new weights), with its built-in
    cells' Python callables put back into the config in place of their
    names. (``deserialize`` deep-copies the config: functions come back as
    themselves, a callable object as a copy, like the config's other values.)"""
    config = serialization.serialize(layer)
    outer = config["config"]
    outer["go_backwards"] = go_backwards
    # an RNN keeps its cell's config under "cell"; LSTM, GRU and SimpleRNN
    # hold their cell's arguments in their own config
    _put_callables_back(layer.cell, outer["cell"]["config"] if "cell" in outer else outer)
    return serialization.deserialize(config)


def _put_callables_back(cell, config):
    if isinstance(cell, StackedRNNCells):
        for sub, sub_config in zip(cell.cells, config["cells"]):
            _put_callables_back(sub, sub_config["config"])
    elif is_builtin(cell):
        for key in _CALLABLE_ARGS:
            value = getattr(cell, key, None)
            # (a built-in activation is a kernel code, and fastrnn's own
            # initializer classes rebuild from their config; a user's
            # Initializer subclass does not)
            if key in config and callable(value) \
                    and type(value) not in initializers._CLASSES.values():
                config[key] = value


def _nested(fn, value):
    """``fn`` on every array of a nested list (a stack's states), keeping its nesting."""
    if isinstance(value, (list, tuple)):
        return type(value)(_nested(fn, v) for v in value)
    return fn(value)
