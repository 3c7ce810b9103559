"""PyTorch recurrent modules as fastrnn objects, with PyTorch's calling convention.

``from_torch(module)`` converts ``torch.nn.LSTM``, ``GRU``, ``RNN`` and the
cells ``LSTMCell``, ``GRUCell``, ``RNNCell``; ``from_torch_state_dict`` and
``from_torch_weights`` (:mod:`fastrnn.interop.torch_weights`) build the same
objects from a checkpoint or from bare arrays, without torch. The result
runs on NumPy arrays and returns what the module returns:

* ``m(x, hx=None)`` -> ``(output, h_n)`` (GRU, RNN) or
  ``(output, (h_n, c_n))`` (LSTM), ``output (batch, time, dirs * H_out)``
  when ``batch_first`` else ``(time, batch, dirs * H_out)``, states
  ``(num_layers * num_directions, batch, H_out)`` (``H_out = proj_size`` for
  a projected LSTM's ``h``). Unbatched inputs ``(time, features)`` work as
  in PyTorch.
* Cells: ``cell(x (batch, features), hx=None)`` -> ``h'`` or ``(h', c')``.

Variable lengths: pass a ``torch.nn.utils.rnn.PackedSequence`` (the output
is a ``PackedSequence`` too, states are NumPy arrays), or padded NumPy input
with ``lengths=`` (outputs past each length are zeros, as
``pad_packed_sequence`` gives; the final states are those at each sequence's
last valid step; the reverse direction reads each sequence within its own
length).

``dropout`` between layers is a training-time operation and is the
identity here (converted modules are for inference).

Weight conversion (PyTorch -> fastrnn / Keras layout): ``kernel =
weight_ih.T``, ``recurrent_kernel = weight_hh.T``; LSTM gates are i, f, g, o
in both, and the two biases are summed; GRU gates r, z, n are reordered to
Keras's z, r, h with ``bias (2, 3H) = [bias_ih, bias_hh]`` and
``reset_after=True``; ``weight_hr (P, H)`` becomes ``projection (H, P)``.

torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import numbers
import re

import numpy as np

from .. import _engine, serialization
from .._device import flag
from .._engine import WEIGHTS_LOCK
from .._nest import flatten
from ..cells import (GRUCell, LSTMCell, SimpleRNNCell, StackedRNNCells, quantization_mode_of,
                     quantize_cells)
from ..layers import RNN
from ._torch_cells import _ProjLSTMCell

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
_CELL_MODES = {"LSTMCell": "LSTM", "GRUCell": "GRU", "RNNCell": None}


def _to_numpy(t, argument):
    """A torch tensor or array-like -> NumPy array (detached, on the host)."""
    if hasattr(t, "detach") and hasattr(t, "cpu"):
        try:
            t = t.detach().cpu()
            if str(t.dtype) in ("torch.float16", "torch.bfloat16"):
                t = t.float()
            return t.numpy()
        except (TypeError, RuntimeError, NotImplementedError) as exc:
            # a meta tensor (no data), a sparse layout, a dtype NumPy lacks
            raise TypeError(f"{argument}: cannot read this tensor as an array "
                            f"({type(exc).__name__}: {exc}); expected a dense tensor of "
                            f"float32 or float64 values with data (device "
                            f"{getattr(t, 'device', '?')}, dtype {getattr(t, 'dtype', '?')}, "
                            f"layout {getattr(t, 'layout', '?')})") from exc
    try:
        return np.asarray(t)
    except Exception as exc:  # noqa: BLE001 - reported with the argument's name
        raise TypeError(f"{argument}: expected an array or a torch tensor, got "
                        f"{type(t).__name__}") from exc


def _is_int(value):
    """An integer, and not a bool (``True`` is not a size)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_sizes(sizes):
    """``{argument: value}`` of sizes that must be positive integers."""
    for arg, v in sizes.items():
        if not _is_int(v) or v <= 0:
            raise ValueError(f"{arg}: expected a positive integer, got {v!r}")


def _check_proj_size(proj_size, hidden_size):
    if not _is_int(proj_size) or proj_size < 0 or (proj_size and proj_size >= hidden_size):
        raise ValueError(f"proj_size: expected 0 or an integer in [1, hidden_size="
                         f"{hidden_size}), got {proj_size!r}")
    return int(proj_size)


def _check_dropout(dropout):
    """As torch: a real number in [0, 1] (a probability), not a bool."""
    if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout: expected a number in [0, 1], got {dropout!r}")
    if not 0 <= dropout <= 1:  # (NaN too)
        raise ValueError(f"dropout: expected a number in [0, 1] (the probability of zeroing "
                         f"an element), got {dropout!r}")
    return float(dropout)


def _gru_reorder(w):
    """PyTorch GRU gate blocks r, z, n (first axis) -> Keras z, r, h."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def _param_names(mode, num_layers, bidirectional, bias, proj_size, cell=False):
    """Parameter names in ``named_parameters()`` order."""
    if cell:
        return ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    names = []
    for layer in range(num_layers):
        for suffix in ([""] + (["_reverse"] if bidirectional else [])):
            s = f"_l{layer}{suffix}"
            names += [f"weight_ih{s}", f"weight_hh{s}"]
            if bias:
                names += [f"bias_ih{s}", f"bias_hh{s}"]
            if proj_size:
                names.append(f"weight_hr{s}")
    return names


def _keras_weights(mode, arrays, suffix, bias, proj_size):
    """fastrnn (Keras-layout) weights of one layer/direction from PyTorch arrays."""
    w_ih, w_hh = arrays["weight_ih" + suffix], arrays["weight_hh" + suffix]
    if mode == "GRU":
        weights = [_gru_reorder(w_ih).T, _gru_reorder(w_hh).T]
        if bias:
            weights.append(np.stack([_gru_reorder(arrays["bias_ih" + suffix]),
                                     _gru_reorder(arrays["bias_hh" + suffix])]))
        return weights
    weights = [w_ih.T, w_hh.T]
    if bias:
        weights.append(arrays["bias_ih" + suffix] + arrays["bias_hh" + suffix])
    if proj_size:
        weights.append(arrays["weight_hr" + suffix].T)
    return weights


def _expected_shape(name, mode, input_size, hidden_size, proj_size, bidirectional, cell):
    """PyTorch's shape of parameter ``name`` (``weight_ih_l1_reverse``, ``bias_hh``, ...)."""
    H, P = hidden_size, proj_size
    G = _GATES[mode] * H
    out = P or H
    if cell:
        in_dim = input_size
    else:
        layer = int(re.fullmatch(r"\w+_l(\d+)(_reverse)?", name).group(1))
        dirs = 2 if bidirectional else 1
        in_dim = input_size if layer == 0 else dirs * out
    kind = re.match(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)", name).group(1)
    return {"weight_ih": (G, in_dim), "weight_hh": (G, out), "bias_ih": (G,),
            "bias_hh": (G,), "weight_hr": (P, H)}[kind]


def _make_cell(mode, hidden_size, bias, proj_size, dtype):
    common = dict(use_bias=bias, dtype=dtype)
    if mode == "LSTM":
        if proj_size:
            return _ProjLSTMCell(hidden_size, proj_size, **common)
        return LSTMCell(hidden_size, **common)
    if mode == "GRU":
        return GRUCell(hidden_size, reset_after=True, **common)
    return SimpleRNNCell(hidden_size, activation="relu" if mode == "RNN_RELU" else "tanh",
                         **common)


class _TorchConverted:
    """Shared weight handling: PyTorch-named arrays are the source of truth."""

    _is_cell = False

    def _init_weights(self, state):
        names = self.parameter_names
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"{type(self).__name__}: state_dict is missing {missing}; "
                             f"expected {names}")
        arrays = {}
        for n in names:
            a = _to_numpy(state[n], n)
            if a.dtype.kind != "f":
                raise TypeError(f"{n}: expected floating-point weights, got {a.dtype}")
            arrays[n] = np.array(a, dtype=self.dtype)
        self._check_shapes(arrays)
        old = getattr(self, "_arrays", None)
        with WEIGHTS_LOCK:  # every layer's new weights, seen together
            self._arrays = arrays
            try:
                self._load_cells()
            except BaseException:  # (a layer refused them: all as before)
                if old is not None:
                    self._arrays = old
                    self._load_cells()
                raise

    def _expected_shape(self, name):
        return _expected_shape(name, self.mode, self.input_size, self.hidden_size,
                               self.proj_size, not self._is_cell and self.bidirectional,
                               self._is_cell)

    def _check_shapes(self, arrays):
        for n in self.parameter_names:
            want = self._expected_shape(n)
            if arrays[n].shape != want:
                raise ValueError(f"{type(self).__name__}: {n} expected shape {want}, got "
                                 f"{arrays[n].shape}")

    def state_dict(self):
        """The weights as ``{PyTorch name: array}`` (copies), ``named_parameters``
        order; a quantized module's ``weight_ih`` / ``weight_hh`` are the
        float values its kernels compute with."""
        arrays = self._current_arrays()
        return {n: arrays[n].copy() for n in self.parameter_names}

    def get_weights(self):
        """The weights in ``named_parameters()`` order (PyTorch layout; see
        :meth:`state_dict`)."""
        arrays = self._current_arrays()
        return [arrays[n].copy() for n in self.parameter_names]

    # ----- reduced precision -----
    def quantize(self, mode):
        """Quantize every layer's ``weight_ih`` / ``weight_hh`` to ``mode``
        (``"bfloat16"``, ``"int8"``: one scale per output row, as PyTorch's
        ``quantize_dynamic``, ``"int8_dynamic"`` or ``"bfloat16_dynamic"``),
        in place and together;
        returns the module. Biases and ``weight_hr`` stay float32. See
        :meth:`fastrnn.LSTM.quantize` for the scheme and the errors;
        ``load_state_dict`` / ``set_weights`` then quantize the new weights."""
        quantize_cells(type(self).__name__, self._quantizable(), mode)
        return self

    @property
    def quantization_mode(self):
        """None, the mode of :meth:`quantize`, or ``"mixed"``."""
        return quantization_mode_of(self._quantizable())

    def _quantizable(self):
        return [layer.cells[0] for layer, _ in self._suffixed_layers()]

    def _current_arrays(self):
        """The PyTorch-named arrays, with a quantized cell's matrices as the
        float values it computes with (the Keras layout turned back)."""
        if self.quantization_mode is None:
            return self._arrays
        arrays = dict(self._arrays)
        for layer, suffix in self._suffixed_layers():
            cell = layer.cells[0]
            for name, w in (("weight_ih", cell.kernel), ("weight_hh", cell.recurrent_kernel)):
                t = np.asarray(w).T  # (gates, inputs); a GRU's z, r, h back to r, z, n
                arrays[name + suffix] = np.ascontiguousarray(
                    _gru_reorder(t) if self.mode == "GRU" else t, dtype=self.dtype)
        return arrays

    def set_weights(self, weights):
        """Load weights in ``named_parameters()`` order (PyTorch layout)."""
        weights = list(weights)
        names = self.parameter_names
        if len(weights) != len(names):
            raise ValueError(f"{type(self).__name__}.set_weights: expected {len(names)} arrays "
                             f"{names}, got {len(weights)}")
        self._init_weights(dict(zip(names, weights)))

    def load_state_dict(self, state_dict):
        """Load ``{PyTorch name: tensor or array}`` (extra keys are an error)."""
        extra = sorted(set(state_dict) - set(self.parameter_names))
        if extra:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected keys {extra}")
        self._init_weights(state_dict)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()
                         if k not in ("mode", "dtype", "backend"))
        return f"{type(self).__name__}({args})"


def _prepare_input(x, dtype):
    x = _to_numpy(x, "input")
    if x.dtype.kind != "f":
        raise TypeError(f"input: expected a floating-point array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=dtype)


@serialization.register("torch")
class TorchRecurrent(_TorchConverted):
    """A converted ``torch.nn.LSTM`` / ``GRU`` / ``RNN``: see the module docstring.

    Parameters
    ----------
    mode : {"LSTM", "GRU", "RNN_TANH", "RNN_RELU"}
    input_size, hidden_size, num_layers, bias, batch_first, dropout,
    bidirectional, proj_size
        As in PyTorch: sizes are integers, flags ``True`` or ``False``
        (``"False"`` is a ``TypeError``), ``dropout`` a number in [0, 1]
        (recorded, and the identity at inference), ``proj_size`` LSTM only.
    dtype : {"float32", "float64"}
    backend : str
        fastrnn backend for the layers (``"auto"``, ``"cpu"``, ``"cuda"``,
        ``"reference"``).
    state_dict : dict, optional
        ``{name: array}`` in PyTorch layout; random weights otherwise.
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 dtype="float32", backend="auto", state_dict=None):
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        _check_sizes(dict(input_size=input_size, hidden_size=hidden_size,
                          num_layers=num_layers))
        proj_size = _check_proj_size(proj_size, hidden_size)
        if proj_size and mode != "LSTM":
            raise ValueError(f"proj_size: only LSTM supports a projection, got mode {mode!r}")
        self.mode = mode
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.bias = int(num_layers), flag(bias, "bias")
        self.batch_first, self.dropout = flag(batch_first, "batch_first"), _check_dropout(dropout)
        self.bidirectional, self.proj_size = flag(bidirectional, "bidirectional"), proj_size
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}")
        self.backend = backend
        dirs = 2 if self.bidirectional else 1
        self._layers = []
        for i in range(self.num_layers * dirs):
            cell = _make_cell(mode, self.hidden_size, self.bias, proj_size, self.dtype)
            self._layers.append(RNN(cell, return_sequences=True, return_state=True,
                                    go_backwards=bool(i % dirs), zero_output_for_mask=True,
                                    backend=backend, dtype=self.dtype.name))
        if state_dict is None:
            state_dict = self._random_state()
        self._init_weights(state_dict)

    # ----- structure -----
    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def parameter_names(self):
        return _param_names(self.mode, self.num_layers, self.bidirectional, self.bias,
                            self.proj_size)

    def _random_state(self):
        # PyTorch's default: U(-1/sqrt(H), 1/sqrt(H)).
        rng = np.random.default_rng()
        k = 1.0 / np.sqrt(self.hidden_size)
        return {n: rng.uniform(-k, k, self._expected_shape(n)) for n in self.parameter_names}

    def _suffixed_layers(self):
        """``(layer, parameter-name suffix)`` of each layer and direction."""
        dirs = self.num_directions
        return [(layer, f"_l{i // dirs}" + ("_reverse" if i % dirs else ""))
                for i, layer in enumerate(self._layers)]

    def _load_cells(self):
        for layer, suffix in self._suffixed_layers():
            layer.set_weights(_keras_weights(self.mode, self._arrays, suffix, self.bias,
                                             self.proj_size))

    @property
    def layers(self):
        """The fastrnn layers run, ``[l0, l0_reverse, l1, ...]`` (each ``return_sequences``)."""
        return list(self._layers)

    def _state_shape(self, batch):
        n = self.num_layers * self.num_directions
        h = (n, batch, self.proj_size or self.hidden_size)
        return (h, (n, batch, self.hidden_size)) if self.mode == "LSTM" else (h,)

    # ----- call -----
    def __call__(self, input, hx=None, lengths=None):  # noqa: A002 - PyTorch's name
        """Run the module: ``(output, h_n)`` or ``(output, (h_n, c_n))``.

        Parameters
        ----------
        input : array ``(batch, time, input_size)`` if ``batch_first`` else ``(time, batch,
            input_size)``, ``(time, input_size)`` unbatched, or a ``PackedSequence``.
        hx : ``h_0`` or ``(h_0, c_0)`` (LSTM), ``(num_layers * num_directions, batch, H)``
            (``H = proj_size`` for a projected ``h_0``); zeros when ``None``.
        lengths : int array ``(batch,)``, optional
            Valid steps per sequence of a padded input (each in ``[1, time]``).
        """
        packed = None
        if type(input).__name__ == "PackedSequence":
            if lengths is not None:
                raise ValueError("lengths: not allowed with a PackedSequence input "
                                 "(it carries its own lengths)")
            packed = input
            input, lengths = self._unpack(input)
        x = _prepare_input(input, self.dtype)
        unbatched = x.ndim == 2
        if unbatched:
            x = x[:, None, :] if not self.batch_first else x[None]
        if x.ndim != 3:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise ValueError(f"input: expected a 3D array {layout} or 2D (time, features), "
                             f"got shape {tuple(np.shape(input))}")
        if not self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        B, T, D = x.shape
        if D != self.input_size:
            raise ValueError(f"input: expected {self.input_size} features (input_size), got "
                             f"shape {tuple(np.shape(input))}")
        if T == 0:
            raise ValueError("input: the sequence is empty (time 0)")
        mask = None
        if lengths is not None:
            lengths = np.asarray(_to_numpy(lengths, "lengths"))
            if lengths.shape != (B,) or lengths.dtype.kind not in "iu":
                raise ValueError(f"lengths: expected {B} integers (batch,), got shape "
                                 f"{lengths.shape} dtype {lengths.dtype}")
            if lengths.min() < 1 or lengths.max() > T:
                raise ValueError(f"lengths: expected values in [1, {T}], got "
                                 f"min {lengths.min()} max {lengths.max()}")
            mask = np.arange(T)[None, :] < lengths[:, None]
        states = self._initial_states(hx, B, unbatched)
        out, h_n, c_n = self._run(x, mask, states)
        if packed is not None:
            return self._repack(out, packed), self._final(h_n, c_n, False)
        if not self.batch_first:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        if unbatched:
            out = out[:, 0] if not self.batch_first else out[0]
        return out, self._final(h_n, c_n, unbatched)

    forward = __call__

    def _final(self, h_n, c_n, unbatched):
        if unbatched:
            h_n = h_n[:, 0]
            c_n = c_n[:, 0] if c_n is not None else None
        return (h_n, c_n) if self.mode == "LSTM" else h_n

    def _initial_states(self, hx, batch, unbatched):
        if hx is None:
            return None
        shapes = self._state_shape(batch)
        if self.mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("hx: an LSTM expects a tuple (h_0, c_0)")
            parts = list(hx)
        else:
            parts = [hx]
        out = []
        for name, part, shape in zip(("h_0", "c_0"), parts, shapes):
            a = _to_numpy(part, name)
            if unbatched:  # as torch: an unbatched input takes unbatched states
                if a.ndim != 2:
                    raise ValueError(f"hx: {name} expected 2 dimensions (num_layers * "
                                     f"num_directions, hidden) for an unbatched input, got "
                                     f"shape {a.shape}")
                a = a[:, None, :]
            if a.shape != shape:
                raise ValueError(f"hx: {name} expected shape {shape}, got {a.shape}")
            if a.dtype.kind != "f":
                raise TypeError(f"hx: {name} expected floating point, got {a.dtype}")
            out.append(np.ascontiguousarray(a, dtype=self.dtype))
        return out

    def _run(self, x, mask, states):
        """Every layer (both directions of each, when bidirectional) over ``x (B, T, D)``:
        ``(outputs, h_n, c_n)`` with ``h_n``/``c_n`` stacked as PyTorch does."""
        dirs = self.num_directions
        cells = [layer.cell for layer in self._layers]
        weights = _engine.snapshot(cells)  # one set for the whole module
        module = _engine.select_for(weights, self.backend).module
        packs = [w.packed(module) for w in weights]
        B = x.shape[0]
        inp, hs, cs = x, [], []
        for layer_index in range(self.num_layers):
            i = layer_index * dirs
            init = []
            for d in range(dirs):
                if states is None:
                    init.append([np.zeros((B, n), self.dtype)
                                 for n in flatten(cells[i + d].state_size)])
                else:
                    init.append([np.ascontiguousarray(s[i + d]) for s in states])
            if dirs == 2:
                out_f, out_b, st_f, st_b = _engine.run_pair(
                    module, packs[i:i + 1], packs[i + 1:i + 2], inp, init[0], init[1], mask,
                    True, True)
                inp = np.concatenate([out_f, out_b], axis=-1)
                finals = [st_f, st_b]
            else:
                inp, st = _engine.run_cells(module, packs[i:i + 1], inp, init[0], mask, False,
                                            True, True)
                finals = [st]
            for st in finals:
                hs.append(st[0])
                if self.mode == "LSTM":
                    cs.append(st[1])
        h_n = np.stack(hs)
        c_n = np.stack(cs) if cs else None
        return np.ascontiguousarray(inp), h_n, c_n

    # ----- PackedSequence -----
    def _unpack(self, packed):
        import torch
        from torch.nn.utils.rnn import pad_packed_sequence

        padded, lengths = pad_packed_sequence(packed, batch_first=self.batch_first)
        with torch.no_grad():
            return padded.detach().cpu().numpy(), lengths.numpy().astype(np.int64)

    def _repack(self, out, packed):
        """Batch-major padded outputs -> a PackedSequence laid out like ``packed``."""
        import torch
        from torch.nn.utils.rnn import PackedSequence

        order = packed.sorted_indices
        order = np.arange(out.shape[0]) if order is None else order.cpu().numpy()
        rows = []
        for t, n in enumerate(packed.batch_sizes.tolist()):
            rows.append(out[order[:n], t])
        data = torch.from_numpy(np.ascontiguousarray(np.concatenate(rows, axis=0)))
        return PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                              packed.unsorted_indices)

    # ----- streaming -----
    def stream(self, batch_size=1, **kwargs):
        """A stream (see ``fastrnn.RNN.stream``) over the stacked layers, unidirectional only.

        It takes and returns fastrnn's batch-major layout: ``(batch, features)`` frames
        or ``(batch, time, features)`` chunks, with the state carried between calls; a
        stream of batch 1 also takes unbatched ``(features,)`` frames. ``stream.save(path)``
        and ``fastrnn.streaming.load_stream(path)`` round-trip it exactly (a projected
        LSTM's too).
        """
        if self.bidirectional:
            raise TypeError("stream: a bidirectional module cannot stream: the reverse "
                            "direction needs the whole sequence (future frames) first")
        cells = [layer.cell for layer in self._layers]
        cell = cells[0] if len(cells) == 1 else StackedRNNCells(cells)
        layer = RNN(cell, return_sequences=True, backend=self.backend, dtype=self.dtype.name)
        return layer.stream(batch_size, **kwargs)

    # ----- config -----
    def get_config(self):
        return {"mode": self.mode, "input_size": self.input_size,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "bias": self.bias, "batch_first": self.batch_first, "dropout": self.dropout,
                "bidirectional": self.bidirectional, "proj_size": self.proj_size,
                "dtype": self.dtype.name, "backend": self.backend}

    @classmethod
    def from_config(cls, config, state_dict=None):
        return cls(**config, state_dict=state_dict)


@serialization.register("torch")
class TorchCell(_TorchConverted):
    """A converted ``torch.nn.LSTMCell`` / ``GRUCell`` / ``RNNCell``.

    ``cell(input (batch, input_size) or (input_size,), hx=None)`` returns
    ``h'`` (GRU, RNN) or ``(h', c')`` (LSTM), as PyTorch does.
    """

    _is_cell = True

    def __init__(self, mode, input_size, hidden_size, bias=True, dtype="float32",
                 backend="auto", state_dict=None):
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        _check_sizes(dict(input_size=input_size, hidden_size=hidden_size))
        self.mode = mode
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.bias = flag(bias, "bias")
        self.proj_size = 0
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}")
        self.backend = backend
        cell = _make_cell(mode, self.hidden_size, self.bias, 0, self.dtype)
        self._layer = RNN(cell, return_state=True, backend=backend, dtype=self.dtype.name)
        if state_dict is None:
            rng = np.random.default_rng()
            k = 1.0 / np.sqrt(self.hidden_size)
            state_dict = {n: rng.uniform(-k, k, self._expected_shape(n))
                          for n in self.parameter_names}
        self._init_weights(state_dict)

    @property
    def parameter_names(self):
        return _param_names(self.mode, 1, False, self.bias, 0, cell=True)

    def _suffixed_layers(self):
        return [(self._layer, "")]

    def _load_cells(self):
        self._layer.set_weights(_keras_weights(self.mode, self._arrays, "", self.bias, 0))

    @property
    def layer(self):
        """The one-step fastrnn layer the cell runs."""
        return self._layer

    def __call__(self, input, hx=None):  # noqa: A002 - PyTorch's name
        if self.backend == "auto" and type(input) is np.ndarray and input.ndim == 2 \
                and input.dtype == self.dtype and hx is not None \
                and (self.mode != "LSTM" or type(hx) in (tuple, list)):
            # arrays already as the cell takes them: its own call checks the rest
            parts = list(hx) if self.mode == "LSTM" else [hx]
            B = input.shape[0]
            if all(type(p) is np.ndarray and p.dtype == self.dtype
                   and p.shape == (B, self.hidden_size) for p in parts):
                _, new = self._layer.cell(input, parts)
                return tuple(new) if self.mode == "LSTM" else new[0]
        x = _prepare_input(input, self.dtype)
        unbatched = x.ndim == 1
        if unbatched:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"input: expected shape (batch, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(np.shape(input))}")
        B = x.shape[0]
        init = None
        if hx is not None:
            if self.mode == "LSTM" and not isinstance(hx, (tuple, list)):
                raise TypeError(f"hx: an LSTMCell expects a tuple (h, c), got "
                                f"{type(hx).__name__}")
            parts = list(hx) if self.mode == "LSTM" else [hx]
            if self.mode == "LSTM" and len(parts) != 2:
                raise ValueError("hx: an LSTMCell expects a tuple (h, c)")
            init = []
            for name, p in zip(("h", "c"), parts):
                a = _to_numpy(p, name)
                if a.dtype.kind != "f":
                    raise TypeError(f"hx: {name} expected floating point, got dtype {a.dtype}")
                if unbatched:  # as torch: an unbatched input takes unbatched states
                    if a.ndim != 1:
                        raise ValueError(f"hx: {name} expected shape ({self.hidden_size},) for "
                                         f"an unbatched input, got {a.shape}")
                    a = a[None]
                if a.shape != (B, self.hidden_size):
                    raise ValueError(f"hx: {name} expected shape {(B, self.hidden_size)}, "
                                     f"got {a.shape}")
                init.append(np.ascontiguousarray(a, dtype=self.dtype))
        if self.backend == "auto":
            cell = self._layer.cell
            _, new = cell(x, init if init is not None else cell.get_initial_state(B))
        else:
            new = self._layer(x[:, None, :], initial_state=init)[1:]
        states = [s[0] if unbatched else s for s in new]
        return tuple(states) if self.mode == "LSTM" else states[0]

    forward = __call__

    def stream(self, batch_size=1, **kwargs):
        """A stream of this cell over frames (see ``fastrnn.RNN.stream``).

        Frames are ``(batch, input_size)``, or in a stream of batch 1 unbatched
        ``(input_size,)`` as the cell takes them (then the output is
        ``(hidden_size,)``; ``stream.states`` stay ``(1, hidden_size)``).
        """
        layer = RNN(self._layer.cell, return_sequences=True, backend=self.backend,
                    dtype=self.dtype.name)
        return layer.stream(batch_size, **kwargs)

    def get_config(self):
        return {"mode": self.mode, "input_size": self.input_size,
                "hidden_size": self.hidden_size, "bias": self.bias,
                "dtype": self.dtype.name, "backend": self.backend}

    @classmethod
    def from_config(cls, config, state_dict=None):
        return cls(**config, state_dict=state_dict)


def _module_mode(module):
    import torch

    nn = torch.nn
    # the torch class the module is (a subclass converts as its base)
    for base in (nn.LSTMCell, nn.GRUCell, nn.RNNCell, nn.LSTM, nn.GRU, nn.RNN):
        if isinstance(module, base):
            if type(module).forward is not base.forward:
                raise TypeError(f"from_torch: {type(module).__name__} overrides forward() of "
                                f"torch.nn.{base.__name__}; fastrnn reproduces "
                                f"torch.nn.{base.__name__}'s own computation only, so it "
                                "cannot tell what this module computes")
            name = base.__name__
            break
    if name in ("RNN", "RNNCell"):
        return "RNN_RELU" if getattr(module, "nonlinearity", "tanh") == "relu" else "RNN_TANH"
    return name.replace("Cell", "")


def from_torch(module, backend="auto"):
    """Convert a PyTorch recurrent module to a fastrnn object with its calling convention.

    Parameters
    ----------
    module : torch.nn.LSTM, GRU, RNN, LSTMCell, GRUCell or RNNCell
        float32 or float64 weights compute in their dtype; float16 and
        bfloat16 in float32. Pruned, ``weight_norm``-ed and
        ``spectral_norm``-ed modules convert with the weights their next
        forward uses (in eval mode), and the module is left unchanged
        (``spectral_norm``'s buffers, every training flag); a subclass that overrides ``forward``,
        and any other forward hook or pre-hook, is a ``TypeError``: the
        converted module runs neither.
    backend : str
        fastrnn backend for the converted layers.

    Returns
    -------
    TorchRecurrent or TorchCell
        ``m(x, hx=None)`` on NumPy arrays, returning what the module returns
        (see :mod:`fastrnn.interop.torch`).
    """
    import torch

    nn = torch.nn
    if isinstance(module, (nn.LSTMCell, nn.GRUCell, nn.RNNCell)):
        dtype = _weights_dtype(module)
        return TorchCell(_module_mode(module), module.input_size, module.hidden_size,
                         bias=module.bias, dtype=dtype, backend=backend,
                         state_dict=_effective(module, _param_names(
                             None, 1, False, module.bias, 0, cell=True)))
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        dtype = _weights_dtype(module)
        return TorchRecurrent(
            _module_mode(module), module.input_size, module.hidden_size,
            num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
            dropout=module.dropout, bidirectional=module.bidirectional,
            proj_size=getattr(module, "proj_size", 0), dtype=dtype, backend=backend,
            state_dict=_effective(module, _param_names(
                None, module.num_layers, module.bidirectional, module.bias,
                getattr(module, "proj_size", 0))))
    kind = type(module)
    raise TypeError(f"from_torch: unsupported module {kind.__module__}.{kind.__qualname__}; "
                    "expected torch.nn.LSTM, GRU, RNN, LSTMCell, GRUCell or RNNCell (a "
                    "quantized module: convert the float module, then quantize the result)")


def _effective(module, names):
    """``{name: tensor}`` of the weights the module's next forward computes
    with. Parametrizations (``torch.nn.utils.parametrizations``) compute
    them when the attributes are read. Pruning (``torch.nn.utils.prune``),
    ``spectral_norm`` and the old ``weight_norm`` keep the parameters under
    other names and set the attributes in a forward pre-hook, so those may
    be stale (a ``load_state_dict`` or an update since the last forward):
    their weights are computed here, as the hook computes them in eval
    mode. Any other hook is refused: the converted module runs none.

    Nothing of the module changes: a parametrization is read in eval mode
    (``spectral_norm``'s in training mode would run a power iteration and
    write its ``_u`` / ``_v`` buffers), its modules' training flags are set
    back as they were, and no autograd graph is recorded."""
    import torch
    from torch.nn.utils import parametrize

    parts = list(module.parametrizations.modules()) if parametrize.is_parametrized(module) \
        else []
    training = [m.training for m in parts]
    try:
        for m in parts:
            m.training = False  # (each module's flag, as train(False) sets it)
        with torch.no_grad():
            return _read_effective(module, names)
    finally:
        for m, flag_ in zip(parts, training):
            m.training = flag_


def _read_effective(module, names):
    """:func:`_effective`'s reading, with the module prepared for it."""
    from torch.nn.utils import prune
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    hooked = {}
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod):
            hooked[hook._tensor_name] = hook.apply_mask(module)
        elif isinstance(hook, WeightNorm):
            hooked[hook.name] = hook.compute_weight(module)
        elif isinstance(hook, SpectralNorm):
            hooked[hook.name] = hook.compute_weight(module, do_power_iteration=False)
        else:
            raise TypeError(f"from_torch: the {type(module).__name__} has a forward pre-hook "
                            f"({getattr(hook, '__name__', type(hook).__name__)}), which the "
                            "converted module does not run; remove it (handle.remove()) "
                            "before converting")
    if module._forward_hooks:
        hook = next(iter(module._forward_hooks.values()))
        raise TypeError(f"from_torch: the {type(module).__name__} has a forward hook "
                        f"({getattr(hook, '__name__', type(hook).__name__)}), which the "
                        "converted module does not run; remove it (handle.remove()) before "
                        "converting")
    return {name: hooked[name] if name in hooked else getattr(module, name) for name in names}


def _weights_dtype(module):
    p = next(iter(module.parameters()))
    return "float64" if str(p.dtype) == "torch.float64" else "float32"
