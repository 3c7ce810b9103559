"""PyTorch weights without their module: a ``state_dict``, or bare arrays.

* :func:`from_torch_state_dict` - ``module.state_dict()`` or
  ``torch.load(checkpoint)``, the module's keys found under a ``prefix``
  inside a larger model's dict.
* :func:`from_torch_weights` - arrays in PyTorch's layout under whatever
  names they were shipped with: ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh``
  (``w_hr``), each one array or a list with one per layer and direction.

Both return what :func:`fastrnn.from_torch` returns for the module
(``TorchRecurrent`` or ``TorchCell``, PyTorch's calling convention). The
arrays are given in PyTorch's layout and gate order (LSTM i, f, g, o; GRU
r, z, n); the converted object reorders them for fastrnn's kernels.

Sizes and the module type are read from the shapes: PyTorch's recurrent
weight ``weight_hh`` is ``(gates * hidden_size, hidden_size)`` (``proj_size``
columns for a projected LSTM, whose ``weight_hr`` is ``(proj_size,
hidden_size)``) with 4 gate blocks for an LSTM, 3 for a GRU and 1 for an
RNN. Only an RNN's nonlinearity (tanh or relu) is not in the weights, so an
RNN needs ``mode``; every other ``mode`` is checked against the shapes, and
an error names the mode they fit.
"""

from __future__ import annotations

import re

import numpy as np

from .._device import flag
from .torch import (_GATES, TorchCell, TorchRecurrent, _expected_shape, _is_int, _param_names,
                    _to_numpy)

__all__ = ["from_torch_state_dict", "from_torch_weights"]

# (TorchRecurrent / TorchCell mode, is a cell) -> the name a user passes as ``mode``
_USER = {("LSTM", False): "LSTM", ("GRU", False): "GRU", ("RNN_TANH", False): "RNN",
         ("RNN_RELU", False): "RNN_RELU", ("LSTM", True): "LSTMCell", ("GRU", True): "GRUCell",
         ("RNN_TANH", True): "RNNCell", ("RNN_RELU", True): "RNNCell_RELU"}
_BY_LOWER = {name.lower(): key for key, name in _USER.items()}
_BY_LOWER.update({"rnn_tanh": ("RNN_TANH", False), "rnncell_tanh": ("RNN_TANH", True)})
_KINDS = "weight_ih|weight_hh|bias_ih|bias_hh|weight_hr"
_LAYER_KEY = re.compile(rf"(?:{_KINDS})_l(\d+)(?:_reverse)?")
_CELL_KEY = re.compile(rf"(?:{_KINDS})")
_ARG_KINDS = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
              "w_hr": "weight_hr"}


def _parse_mode(mode):
    """``mode`` in any case -> ``(TorchRecurrent mode, is a cell)``; ``(None, None)`` for None."""
    if mode is None:
        return None, None
    key = _BY_LOWER.get(mode.lower()) if isinstance(mode, str) else None
    if key is None:
        raise ValueError("mode: expected one of LSTM, GRU, RNN, RNN_RELU, LSTMCell, GRUCell, "
                         "RNNCell, RNNCell_RELU (any case; RNN means tanh), or None to read it "
                         f"from the shapes; got {mode!r}")
    return key


def _these_are(gates, cell):
    """What weights with ``gates`` gate blocks per unit are, and the ``mode`` to pass."""
    if gates == 1:
        return (f"these are RNN weights, and the weights do not record an RNN's nonlinearity: "
                f"mode={_USER['RNN_TANH', cell]!r} (tanh) or mode={_USER['RNN_RELU', cell]!r} "
                "(relu)")
    base = "LSTM" if gates == 4 else "GRU"
    return f"these are {base} weights: mode={_USER[base, cell]!r}"


def _check_given(given):
    """The sizes and flags a user passed to be checked against the weights:
    ``None``, or of their type (``True`` is no layer count, ``"False"`` no flag)."""
    checked = {}
    for k, v in given.items():
        if v is None:
            checked[k] = None
        elif k in ("bidirectional", "bias"):
            checked[k] = flag(v, k)
        elif not _is_int(v) or v < (0 if k == "proj_size" else 1):
            raise ValueError(f"{k}: expected None (read from the weights) or a "
                             f"{'non-negative' if k == 'proj_size' else 'positive'} integer, "
                             f"got {v!r}")
        else:
            checked[k] = int(v)
    return checked


def _gate_blocks(arrays, first, label):
    """``(gate blocks per unit, hidden_size)`` from the recurrent weight's shape."""
    name = "weight_hh" + first
    rows, cols = arrays[name].shape
    hr = arrays.get("weight_hr" + first)
    if hr is not None:  # only an LSTM projects: weight_hh (4H, P), weight_hr (P, H)
        hidden = hr.shape[1] if hr.ndim == 2 else 0
        if hidden and rows == 4 * hidden:
            return 4, hidden
        raise ValueError(f"{label(name)}: shape {(rows, cols)} does not fit "
                         f"{label('weight_hr' + first)} of shape {hr.shape}: a projected LSTM "
                         "has weight_hh (4 * hidden_size, proj_size) and weight_hr (proj_size, "
                         "hidden_size)")
    if cols and rows % cols == 0 and rows // cols in (1, 3, 4):
        return rows // cols, cols
    hint = ""
    if rows and cols % rows == 0 and cols // rows in (3, 4):
        hint = ("; it looks transposed (the Keras layout is (hidden_size, gates * "
                "hidden_size)): PyTorch's layout is its .T")
    raise ValueError(f"{label(name)}: shape {(rows, cols)} fits no torch.nn recurrent module: "
                     "PyTorch's recurrent weight is (gates * hidden_size, hidden_size) with 4 "
                     f"gates (LSTM), 3 (GRU) or 1 (RNN), and {rows} is not 1, 3 or 4 times "
                     f"{cols}{hint}")


def _fits(arrays, first):
    """Gate blocks per unit, or None when the shapes fit no module (for hints only)."""
    try:
        return _gate_blocks(arrays, first, str)[0]
    except (KeyError, ValueError, AttributeError):
        return None


def _convert(arrays, base, cell, mode, label, given, batch_first, dtype, backend):
    """Check ``{PyTorch parameter name: array}`` of one module and build it.

    ``base``/``cell``: the requested type (``base`` None: read it from the
    shapes); ``mode``: as the user wrote it; ``label(name)``: how the user
    names that array in messages; ``given``: sizes the user passed, checked.
    """
    first = "" if cell else "_l0"
    for name, a in arrays.items():
        if a.dtype.kind != "f":
            raise TypeError(f"{label(name)}: expected floating-point weights, got dtype "
                            f"{a.dtype}")
    for name, columns in (("weight_ih" + first, "input_size"),
                          ("weight_hh" + first, "hidden_size")):
        if name not in arrays:
            raise ValueError(f"{label(name)}: missing (a recurrent module has both weight_ih"
                             f"{first} and weight_hh{first})")
        if arrays[name].ndim != 2:
            raise ValueError(f"{label(name)}: expected a 2-D array (gates * hidden_size, "
                             f"{columns}), got shape {arrays[name].shape}")
    gates, hidden = _gate_blocks(arrays, first, label)
    if base is None:
        if gates == 1:
            raise ValueError(f"mode: {label('weight_hh' + first)} of shape "
                             f"{arrays['weight_hh' + first].shape} holds one gate block per "
                             f"unit: {_these_are(1, cell)}")
        base = "LSTM" if gates == 4 else "GRU"
    elif _GATES[base] != gates:
        blocks = f"{_GATES[base]} gate block{'s' if _GATES[base] > 1 else ''}"
        raise ValueError(f"mode: {mode!r} means {blocks} per unit, but "
                         f"{label('weight_hh' + first)} of shape "
                         f"{arrays['weight_hh' + first].shape} holds {gates} (hidden size "
                         f"{hidden}): {_these_are(gates, cell)}")
    ih = arrays["weight_ih" + first].shape
    if ih[0] != gates * hidden:  # (its rows, not its columns, would be the input size)
        flipped = " (transposed? PyTorch stores (gates * hidden_size, input_size))" \
            if ih[1] == gates * hidden else ""
        raise ValueError(f"{label('weight_ih' + first)}: expected {gates * hidden} rows ({gates} "
                         f"gate block{'s' if gates > 1 else ''} of hidden size {hidden}, as "
                         f"{label('weight_hh' + first)}), got shape {ih}{flipped}")
    found = dict(input_size=int(ih[1]), hidden_size=int(hidden),
                 bias=("bias_ih" + first) in arrays or ("bias_hh" + first) in arrays)
    if not cell:
        found.update(
            num_layers=1 + max(int(_LAYER_KEY.fullmatch(k).group(1)) for k in arrays),
            bidirectional=any(k.endswith("_reverse") for k in arrays),
            proj_size=int(arrays["weight_hr_l0"].shape[0]) if "weight_hr_l0" in arrays else 0,
        )
    for k, v in given.items():
        if v is not None and k in found and v != found[k]:
            raise ValueError(f"{k}: given {v!r} but the weights say {found[k]!r}")
    names = _param_names(base, found.get("num_layers", 1), found.get("bidirectional", False),
                         found["bias"], found.get("proj_size", 0), cell=cell)
    what = f"{_USER[base, cell]}({', '.join(f'{k}={v!r}' for k, v in found.items())})"
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ValueError(f"{', '.join(map(label, missing))}: missing for {what}")
    extra = [n for n in arrays if n not in names]
    if extra:
        raise ValueError(f"{', '.join(map(label, extra))}: unexpected for {what}")
    for n in names:
        want = _expected_shape(n, base, found["input_size"], hidden, found.get("proj_size", 0),
                               found.get("bidirectional", False), cell)
        if arrays[n].shape != want:
            raise ValueError(f"{label(n)}: expected shape {want} for {what}, got "
                             f"{arrays[n].shape}")
    if dtype is None:
        dtype = "float64" if arrays["weight_ih" + first].dtype == np.float64 else "float32"
    if cell:
        return TorchCell(base, dtype=dtype, backend=backend, state_dict=arrays, **found)
    return TorchRecurrent(base, batch_first=batch_first, dtype=dtype, backend=backend,
                          state_dict=arrays, **found)


def _where(prefix):
    return f"under prefix {prefix!r}" if prefix else "at the top level (prefix='')"


def _no_weights_message(keys, prefix, cell, base):
    """Why nothing was found under ``prefix``, and the prefixes that hold recurrent weights."""
    head = (f"state_dict: no recurrent weights {_where(prefix)}: no key "
            f"{prefix + 'weight_ih_l0'!r} or {prefix + 'weight_ih'!r}")
    found = {}  # prefix -> holds a cell's keys
    for k in keys:
        m = re.fullmatch(r"(.*?)weight_ih(_l0)?", k)
        if m:
            found.setdefault(m.group(1), m.group(2) is None)
    if not found:
        shown = sorted(keys)[:12]
        more = ", ..." if len(keys) > 12 else ""
        return (f"{head}; no key ends in weight_ih_l0 or weight_ih, so it holds no torch.nn "
                f"LSTM, GRU, RNN or cell; its keys are {shown}{more}")

    def suggest(p):
        text = f"prefix={p!r}"
        if cell is not None and base is not None and found[p] != cell:
            text += f" (a {'cell' if found[p] else 'layer'} there: mode={_USER[base, found[p]]!r})"
        return text

    if prefix and prefix + "." in found:
        return f"{head}; did you mean {suggest(prefix + '.')}? (a prefix ends with its dot)"
    if len(found) == 1:
        return f"{head}; did you mean {suggest(next(iter(found)))}?"
    return f"{head}; recurrent weights are under {', '.join(map(suggest, sorted(found)))}"


def from_torch_state_dict(state_dict, mode=None, *, prefix="", input_size=None,
                          hidden_size=None, num_layers=None, bidirectional=None, bias=None,
                          proj_size=None, batch_first=False, dtype=None, backend="auto"):
    """Build a converted module from a PyTorch ``state_dict``, without torch modules.

    Parameters
    ----------
    state_dict : mapping of name -> tensor or array
        As ``module.state_dict()`` or ``torch.load(checkpoint)`` gives it. A
        pruned module's (``torch.nn.utils.prune``: ``weight_hh_l0_orig`` and
        ``weight_hh_l0_mask`` in place of ``weight_hh_l0``) gives the weights
        its forward computes, ``orig * mask``.
    mode : {"LSTM", "GRU", "RNN", "RNN_TANH", "RNN_RELU", "LSTMCell", "GRUCell", "RNNCell", \
"RNNCell_RELU"} or None
        The module type, in any case (``"RNN"`` means tanh); checked against
        the shapes. ``None`` (default): read from the shapes (the gate blocks
        of ``weight_hh``; a cell when the keys have no ``_l0``), except for
        an RNN, whose nonlinearity the weights do not record.
    prefix : str
        Key prefix of the module inside a larger model, with its trailing
        dot (``"encoder.rnn."``).
    input_size, hidden_size, num_layers, bidirectional, bias, proj_size
        Read from the keys and shapes when ``None``; given values are
        checked against them (sizes are integers, flags ``True`` or
        ``False``: ``num_layers=True`` or ``bias="False"`` is an error).
    batch_first : bool
        Not stored in a state dict: give it as the module had it, ``True``
        or ``False`` (a string such as ``"False"`` is a ``TypeError``).
    dtype : {"float32", "float64"}, optional
        Default: the weights' dtype (float64 stays float64, others float32).
    backend : str
        fastrnn backend for the converted layers.

    Returns
    -------
    TorchRecurrent or TorchCell
        As :func:`fastrnn.from_torch` returns for the module.
    """
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict: expected a mapping of names to tensors, got "
                        f"{type(state_dict).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected a string such as 'encoder.rnn.', got {prefix!r}")
    batch_first = flag(batch_first, "batch_first")  # (checked for a cell too, which ignores it)
    given = _check_given(dict(input_size=input_size, hidden_size=hidden_size,
                              num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                              proj_size=proj_size))
    base, cell = _parse_mode(mode)
    keys = [k for k in state_dict.keys() if isinstance(k, str)]
    under = {k[len(prefix):]: k for k in keys if k.startswith(prefix)}
    # a pruned module's state dict (torch.nn.utils.prune) holds weight_orig
    # and weight_mask instead of weight: its forward computes orig * mask
    pruned = {}
    for k, full in list(under.items()):
        name = k[:-len("_orig")]
        if k.endswith("_orig") and name not in under and name + "_mask" in under:
            mask = under[name + "_mask"]
            pruned[name] = _to_numpy(state_dict[full], full) * _to_numpy(state_dict[mask], mask)
            under[name] = full

    def read(k, full):
        return pruned[k] if k in pruned else _to_numpy(state_dict[full], full)

    forms = {False: {k: full for k, full in under.items() if _LAYER_KEY.fullmatch(k)},
             True: {k: full for k, full in under.items() if _CELL_KEY.fullmatch(k)}}
    has = {False: "weight_ih_l0" in forms[False], True: "weight_ih" in forms[True]}
    if not (has[False] or has[True]):
        raise ValueError(_no_weights_message(keys, prefix, cell, base))
    if cell is None:
        cell = not has[False]
    elif not has[cell]:  # the other form is there: name the mode that fits it
        other = {k: read(k, full) for k, full in forms[not cell].items()}
        gates = _fits(other, "_l0" if cell else "")  # the other form's first key
        if gates in (None, _GATES[base]):
            fix = f"mode={_USER[base, not cell]!r}"
        else:
            fix = _these_are(gates, not cell)
        raise ValueError(
            f"mode: {mode!r} is a {'cell' if cell else 'layer'}, but the keys {_where(prefix)} "
            f"are a {'layer' if cell else 'cell'}'s ("
            f"{'weight_ih_l0, weight_hh_l0, ...' if cell else 'weight_ih, weight_hh, no _l0'}): "
            f"{fix}")
    arrays = {k: read(k, full) for k, full in forms[cell].items()}
    return _convert(arrays, base, cell, mode, lambda k: f"state_dict[{prefix + k!r}]", given,
                    batch_first, dtype, backend)


def _per_layer(arg, value):
    """One array, or a list/tuple of arrays (tensors) -> ``(list, given as a list)``."""
    if isinstance(value, (list, tuple)) and all(hasattr(v, "shape") for v in value):
        if not value:
            raise ValueError(f"{arg}: expected an array or a non-empty list of arrays, got an "
                             "empty list")
        return list(value), True
    return [value], False


def from_torch_weights(mode, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None,
                       bidirectional=False, batch_first=False, dtype=None, backend="auto"):
    """Build a converted module from arrays in PyTorch's layout, whatever their names.

    For weights shipped as arrays rather than a ``state_dict`` (``np.load``
    of ``enc_w_ih``, ``enc_w_hh``, ...): the same result as
    :func:`from_torch_state_dict` on the dict PyTorch would have saved,
    without renaming keys or reordering gates by hand.

    Parameters
    ----------
    mode : {"LSTM", "GRU", "RNN", "RNN_RELU", "LSTMCell", "GRUCell", "RNNCell", \
"RNNCell_RELU"} or None
        The module type, in any case, checked against the shapes; ``None``
        reads an LSTM or GRU layer from the shapes.
    w_ih, w_hh : array or list of arrays
        ``weight_ih (gates * H, input)`` and ``weight_hh (gates * H, H)`` in
        PyTorch's layout and gate order (LSTM i, f, g, o; GRU r, z, n):
        NumPy arrays, torch tensors or array-likes. A list gives one array
        per layer and direction in PyTorch's order (layer 0, layer 0
        reverse when ``bidirectional``, layer 1, ...), as
        ``module.all_weights`` lists them; the number of layers is its
        length divided by the directions.
    b_ih, b_hh : array or list of arrays, optional
        ``bias_ih (gates * H,)`` and ``bias_hh (gates * H,)``, both or
        neither (``bias=False``), listed as ``w_ih``.
    w_hr : array or list of arrays, optional
        ``weight_hr (P, H)`` of an LSTM layer with ``proj_size = P``.
    bidirectional : bool
        Whether the lists hold a reverse direction for each layer.
    batch_first, dtype, backend
        As in :func:`from_torch_state_dict`.

    Returns
    -------
    TorchRecurrent or TorchCell
        As :func:`fastrnn.from_torch` returns for the module.
    """
    base, cell = _parse_mode(mode)
    cell = bool(cell)
    bidirectional = flag(bidirectional, "bidirectional")
    batch_first = flag(batch_first, "batch_first")
    if cell and bidirectional:
        raise ValueError(f"bidirectional: a cell has one direction, got bidirectional=True "
                         f"with mode={mode!r}")
    if (b_ih is None) != (b_hh is None):
        given, absent = ("b_ih", "b_hh") if b_hh is None else ("b_hh", "b_ih")
        raise ValueError(f"{absent}: missing; PyTorch has both biases (b_ih, b_hh) or neither "
                         f"(bias=False), and only {given} was given")
    if w_hr is not None and cell:
        raise ValueError(f"w_hr: a cell has no projection (mode={mode!r}); only an LSTM layer "
                         "has one")
    args = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh, "w_hr": w_hr}
    lists = {arg: _per_layer(arg, v) for arg, v in args.items() if v is not None}
    n = len(lists["w_ih"][0])
    for arg, (items, _) in lists.items():
        if len(items) != n:
            raise ValueError(f"{arg}: expected {n} array(s), one per layer and direction as in "
                             f"w_ih, got {len(items)}")
    dirs = 2 if bidirectional else 1
    if cell and n != 1:
        raise ValueError(f"w_ih: a cell ({mode!r}) takes one array per argument, got a list of "
                         f"{n}")
    if n % dirs:
        raise ValueError(f"w_ih: bidirectional=True takes one array per layer and direction "
                         f"(layer 0, layer 0 reverse, layer 1, ...), got {n}, an odd number")
    arrays, labels = {}, {}
    for arg, (items, is_list) in lists.items():
        for i, a in enumerate(items):
            name = _ARG_KINDS[arg] + ("" if cell else
                                      f"_l{i // dirs}" + ("_reverse" if i % dirs else ""))
            labels[name] = f"{arg}[{i}]" if is_list else arg
            arrays[name] = _to_numpy(a, labels[name])
    return _convert(arrays, base, cell, mode, lambda k: labels.get(k, k), {}, batch_first,
                    dtype, backend)
