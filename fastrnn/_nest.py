"""Nested structures (tuples, lists, namedtuples) of states and sizes.

A structure is a leaf (an array, or an ``int`` size) or a tuple / list /
namedtuple of structures: the states of a stack of cells (Keras nests one
list per cell), or TF1's ``nest`` structures (``LSTMStateTuple`` and
friends). Layers, streams, ``Bidirectional`` and :mod:`fastrnn.nn` all
flatten and rebuild them here.
"""

from __future__ import annotations

import numpy as np


def is_sequence(s):
    return isinstance(s, (tuple, list))


def _is_namedtuple(s):
    return isinstance(s, tuple) and hasattr(s, "_fields")


def flatten(structure):
    """The leaves of ``structure``, depth first, in order."""
    if not is_sequence(structure):
        return [structure]
    out = []
    for item in structure:
        out.extend(flatten(item))
    return out


def numbers_hint(flat):
    """What a count mismatch adds when the leaves are plain numbers: the
    caller's nested Python lists were read as structure, not as arrays."""
    if flat and all(isinstance(v, (int, float, np.number)) for v in flat):
        return ("; nested Python lists of numbers read as nesting, not as arrays: pass each "
                "state as an array (np.asarray)")
    return ""


def count(structure):
    return len(flatten(structure))


def pack_as(structure, flat):
    """Rebuild ``structure``'s nesting (same container types) from ``flat``."""
    flat = list(flat)
    if len(flat) != count(structure):
        raise ValueError(
            f"cannot pack {len(flat)} arrays into a structure of {count(structure)}"
        )
    it = iter(flat)

    def build(s):
        if not is_sequence(s):
            return next(it)
        items = [build(item) for item in s]
        if _is_namedtuple(s):
            return type(s)(*items)
        return type(s)(items)

    return build(structure)


def map_structure(fn, structure, *others):
    """Apply ``fn`` leaf by leaf to ``structure`` and parallel structures."""
    leaves = [flatten(structure)] + [flatten(o) for o in others]
    return pack_as(structure, [fn(*args) for args in zip(*leaves)])


def describe(s):
    """A short human description of a structure, for error messages."""
    if not is_sequence(s):
        if isinstance(s, (int, np.integer)):
            return str(int(s))
        shape = getattr(s, "shape", None)
        return f"array{tuple(shape)}" if shape is not None else type(s).__name__
    inner = ", ".join(describe(item) for item in s)
    if _is_namedtuple(s):
        fields = ", ".join(f"{f}={describe(v)}" for f, v in zip(s._fields, s))
        return f"{type(s).__name__}({fields})"
    if isinstance(s, list):
        return f"[{inner}]"
    return f"({inner}{',' if len(s) == 1 else ''})"


def same_structure(a, b):
    """True when ``a`` and ``b`` nest the same way (leaf for leaf)."""
    if is_sequence(a) != is_sequence(b):
        return False
    if not is_sequence(a):
        return True
    if len(a) != len(b):
        return False
    return all(same_structure(x, y) for x, y in zip(a, b))
