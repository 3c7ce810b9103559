"""The register-blocked tiles of the packed float32 kernels, generated from one template.

A tile computes one panel (16 units x every gate, see :mod:`.packed`) for
``R`` batch rows at one step: ``4 R`` vector accumulators (LSTM gates
**i, f, c, o**; GRU **z, r**, the candidate's input part **x** and its
recurrent part **h**, which ``reset_after=True`` needs apart) take one
multiply-add per gate vector, row and ``k`` over the panel's input rows
(``D``) from zero, then the bias, then, apart and from zero, over its
recurrent rows (``H``), and add the two parts (:func:`_sums`,
:func:`_split_recurrent`: PyTorch's rounding, not a longer one); the sums
go straight into the gate math of :mod:`.gates` while still in registers.

The accumulators must be plain local variables for LLVM to keep them in
registers, so each tile height is its own function with its loops unrolled
over the rows: :func:`tile_source` writes that function from the template
below and this module compiles it. Heights 6 and 4 carry the main work
(24 and 16 accumulators: 4 weight loads, ``R`` broadcasts and ``4 R`` FMAs
per ``k``); 2 and 1 take the rows left over. Every tile sums a row's
products in the same order (``k`` ascending, one accumulator per gate
vector and part), so a row's result does not depend on the rows beside it: the same
sequence gives the same bits in any batch, at any position, split between
threads or not.

Memory, not arithmetic, sets the pace once the rows fill a tile, so while
the multi-row tiles run they prefetch: a share of the *next* panel into L2
(``prefetcht1``, one line per ``k``, starting at ``pf``; the caller
spreads the tiles of a step over the panel) and the current panel's rows
8 ``k`` ahead into L1 (``prefetcht0``).

The hoisted input projection of a single row (``lstm_proj_R`` /
``gru_proj_R``, ``R`` consecutive steps) comes from the same template: only
the input rows, stored to a buffer instead of going through the gates.

Arguments of a tile (tuples keep the signature short; Numba passes their
fields as separate arguments):

``W = (Wp, wbase, pf)``
    The packed panels, where this panel starts, where its prefetch share
    of the next panel starts.
``bias = (bp, pb)``
    The array and offset of the accumulators' start values: the bias
    panel, or the hoisted input sums.
``x = (xf, D, xo)``
    The flat input, the input rows to sum (0 when hoisted), the offset of
    each row's input at this step.
``state = (hf, cb, cur, nxt)``
    The double-buffered ``h`` (read half ``cur``, write half ``nxt``) and
    the cell state (LSTM).
``rows = (ro, valid)``
    Each row's offset in the state buffers, and whether its step is
    processed (a masked step carries the state).
``cfg = (pu, H, Hp, peep, has_peep, cell_clip, act, ract)``
    The panel's first unit, units and padded units, the gate options.
"""

from __future__ import annotations

from numba import njit

from .gates import gru_reset, gru_update, lstm_update
from .simd import prefetch_l1, prefetch_l2, sload, vfma, vload, vsplat, vstore, vzero  # noqa: F401  (the generated tiles use them)

# accumulator names: what each of the panel's 4 vectors sums into, for the
# input rows and for the recurrent rows
_NAMES = {
    "lstm": (("i", "f", "c", "o"), ("i", "f", "c", "o")),
    "gru": (("z", "r", "x"), ("z", "r", "h")),
}
_STRIDE = {"lstm": 64, "gru": 48}  # floats per k of one panel


def _k_loop(lines, kind, rows, src, prefetch, names):
    """The body of one ``k`` loop: loads of the panel's gate vectors, then
    ``rows`` broadcasts with their multiply-adds."""
    stride = _STRIDE[kind]
    n = len(names)
    if prefetch:
        lines += ["        prefetch_l2(Wp, q)", "        q += 16"]
        lines += [f"        prefetch_l1(Wp, w + {8 * stride + 16 * g})" for g in range(n)]
    lines += [f"        w{g} = vload(Wp, w{' + ' + str(16 * g) if g else ''})" for g in range(n)]
    for r in range(rows):
        lines.append(f"        s = vsplat(sload({src.format(r=r)}))")
        lines += [f"        {names[g]}{r} = vfma(s, w{g}, {names[g]}{r})" for g in range(n)]
    lines.append(f"        w += {stride}")


def _sums(lines, kind, rows, prefetch, recurrent):
    """The input rows' products from zero, then the bias (then, in a tile, the
    recurrent rows: :func:`_split_recurrent`).

    Adding the bias last, as a matrix product then a bias add does: summed
    from the bias, every product would round at the bias's magnitude (a
    forget bias of 20 costs each term up to 1e-6)."""
    acc = ("i", "f", "c", "o") if kind == "lstm" else ("z", "r", "x", "h")
    if not recurrent and kind == "gru":
        acc = acc[:3]
    lines += [f"    b{a} = vload(bp, pb{' + ' + str(16 * g) if g else ''})" for g, a in enumerate(acc)]
    lines.append("    zero = vzero(bp)")
    lines += [f"    {a}{r} = zero" for r in range(rows) for a in acc]
    lines.append("    w = wbase")
    if prefetch:
        lines.append("    q = pf")
    inp, rec = _NAMES[kind]
    lines.append("    for k in range(D):")
    _k_loop(lines, kind, rows, "xf, xo{r} + k", prefetch, inp)
    if recurrent:
        _split_recurrent(lines, rows, inp, rec, prefetch, kind)
    else:
        lines += [f"    {a}{r} = {a}{r} + b{a}" for r in range(rows) for a in inp]


def _split_recurrent(lines, rows, inp, rec, prefetch, kind):
    """After the input rows: the recurrent ``k`` loop, summed apart.

    The gates that take both parts (LSTM i, f, c, o; GRU z, r) hold their
    input part (bias added) in ``t`` while the recurrent products sum from
    zero; the two are added at the end (a GRU's candidate keeps its parts
    apart anyway: ``x`` and ``h``, each with its own bias). Summed in one
    run, every recurrent product would round at the magnitude of the input
    part; apart, each part rounds at its own (PyTorch adds its two matrix
    products the same way). LLVM keeps ``t`` on the stack where registers
    run out. The hoisted input sums (``P``, made by the same code: products
    from zero, then the bias) come in as ``bias`` with ``D = 0``, so a row
    gets the same bits hoisted or not."""
    both = [a for a in inp if a in rec]
    lines += [f"    t{a}{r} = {a}{r} + b{a}" for r in range(rows) for a in both]
    lines += [f"    {a}{r} = {a}{r} + b{a}" for r in range(rows) for a in inp if a not in rec]
    lines += [f"    {a}{r} = zero" for r in range(rows) for a in both]
    lines.append("    for k in range(H):")
    _k_loop(lines, kind, rows, "hf, cur + ro{r} + k", prefetch, rec)
    lines += [f"    {a}{r} = {a}{r} + t{a}{r}" for r in range(rows) for a in both]
    lines += [f"    {a}{r} = {a}{r} + b{a}" for r in range(rows) for a in rec if a not in inp]


def tile_source(kind, rows):
    """The source of the ``rows``-row tile of ``kind`` (``"lstm"`` or ``"gru"``)."""
    name = f"{kind}_tile_{rows}"
    rs = range(rows)
    lines = [f"def {name}(W, bias, x, state, rows, cfg):",
             f'    """{rows} rows of one panel at one step (see the module docstring)."""',
             "    Wp, wbase, pf = W",
             "    bp, pb = bias",
             f"    xf, D, ({''.join(f'xo{r}, ' for r in rs)}) = x",
             "    hf, cb, cur, nxt = state",
             f"    ({''.join(f'ro{r}, ' for r in rs)}), ({''.join(f'v{r}, ' for r in rs)}) = rows",
             "    pu, H, Hp, peep, has_peep, cell_clip, act, ract = cfg"]
    _sums(lines, kind, rows, rows >= 4, True)
    if rows < 4:  # one call per row; its common case is as fast inline or not
        cell = "_lstm_cell(i{r}, f{r}, c{r}, o{r}, v{r}, ro{r}, hf, cb, cur, nxt, cfg)" \
            if kind == "lstm" else "_gru_cell(z{r}, r{r}, x{r}, h{r}, v{r}, ro{r}, hf, cur, nxt, cfg)"
        lines += ["    " + cell.format(r=r) for r in rs]
    elif kind == "lstm":
        lines.append("    if act == 1 and ract == 2 and not has_peep and cell_clip < 0.0:")
        for r in rs:
            lines.append(f"        cn{r}, h{r} = lstm_update(i{r}, f{r}, c{r}, o{r}, "
                         f"vload(cb, ro{r} + pu), False, i{r}, i{r}, i{r}, -1.0, 1, 2)")
        lines += [f"        _lstm_put(v{r}, ro{r}, pu, cur, nxt, hf, cb, cn{r}, h{r})" for r in rs]
        lines.append("        return")
        lines += [f"    _lstm_cell(i{r}, f{r}, c{r}, o{r}, v{r}, ro{r}, hf, cb, cur, nxt, cfg)"
                  for r in rs]
    else:
        lines.append("    if act == 1 and ract == 2:")
        for r in rs:
            lines.append(f"        n{r} = gru_update(z{r}, gru_reset(r{r}, x{r}, h{r}, 2), "
                         f"vload(hf, cur + ro{r} + pu), 1, 2)")
        lines += [f"        _gru_put(v{r}, ro{r}, pu, cur, nxt, hf, n{r})" for r in rs]
        lines.append("        return")
        lines += [f"    _gru_cell(z{r}, r{r}, x{r}, h{r}, v{r}, ro{r}, hf, cur, nxt, cfg)"
                  for r in rs]
    return "\n".join(lines) + "\n"


def proj_source(kind, steps):
    """The source of ``{kind}_proj_{steps}``: bias plus the input part of the
    gate sums of one panel for ``steps`` steps of one row, stored at
    ``P[po_s]`` (a GRU's recurrent bias vector is copied beside them)."""
    name = f"{kind}_proj_{steps}"
    ss = range(steps)
    lines = [f"def {name}(W, bias, x, P, po):",
             f'    """{steps} steps of the hoisted input sums (see the module docstring)."""',
             "    Wp, wbase, pf = W",
             "    bp, pb = bias",
             f"    xf, D, ({''.join(f'xo{s}, ' for s in ss)}) = x",
             f"    ({''.join(f'po{s}, ' for s in ss)}) = po"]
    _sums(lines, kind, steps, False, False)
    if kind == "gru":
        lines.append("    bh = vload(bp, pb + 48)")
    acc = ("i", "f", "c", "o") if kind == "lstm" else ("z", "r", "x", "bh")
    for s in ss:
        for g, a in enumerate(acc):
            val = a if a == "bh" else f"{a}{s}"
            lines.append(f"    vstore(P, po{s}{' + ' + str(16 * g) if g else ''}, {val})")
    return "\n".join(lines) + "\n"


# ---- the gate math after a tile's sums ----


@njit(inline="always")
def _lstm_put(valid, ro, pu, cur, nxt, hf, cb, cn, h):
    if valid:
        vstore(cb, ro + pu, cn)
        vstore(hf, nxt + ro + pu, h)
    else:  # masked step: carry the state
        vstore(hf, nxt + ro + pu, vload(hf, cur + ro + pu))


@njit(nogil=True, _nrt=False)
def _lstm_cell(ai, af, ac, ao, valid, ro, hf, cb, cur, nxt, cfg):
    """One row's LSTM update (one compiled copy, called by the 1- and 2-row
    tiles, and by every tile outside the common case of tanh and sigmoid
    without peepholes or clip, which runs straight-line code)."""
    pu, H, Hp, peep, has_peep, cell_clip, act, ract = cfg
    if not valid:  # masked step: carry the state
        vstore(hf, nxt + ro + pu, vload(hf, cur + ro + pu))
        return
    cold = vload(cb, ro + pu)
    if act == 1 and ract == 2 and not has_peep and cell_clip < 0.0:  # straight-line
        cn, h = lstm_update(ai, af, ac, ao, cold, False, ai, ai, ai, -1.0, 1, 2)
    else:
        cn, h = lstm_update(ai, af, ac, ao, cold, has_peep, vload(peep, pu),
                            vload(peep, Hp + pu), vload(peep, 2 * Hp + pu), cell_clip, act, ract)
    vstore(cb, ro + pu, cn)
    vstore(hf, nxt + ro + pu, h)


@njit(inline="always")
def _gru_put(valid, ro, pu, cur, nxt, hf, h):
    if valid:
        vstore(hf, nxt + ro + pu, h)
    else:
        vstore(hf, nxt + ro + pu, vload(hf, cur + ro + pu))


@njit(nogil=True, _nrt=False)
def _gru_cell(az, ar, ax, ah, valid, ro, hf, cur, nxt, cfg):
    """One row's GRU update with any activations (see ``_lstm_cell``)."""
    pu, H, Hp, peep, has_peep, cell_clip, act, ract = cfg
    hprev = vload(hf, cur + ro + pu)
    if not valid:
        vstore(hf, nxt + ro + pu, hprev)
        return
    if act == 1 and ract == 2:  # straight-line
        vstore(hf, nxt + ro + pu, gru_update(az, gru_reset(ar, ax, ah, 2), hprev, 1, 2))
    else:
        vstore(hf, nxt + ro + pu, gru_update(az, gru_reset(ar, ax, ah, ract), hprev, act, ract))


def _compile(source, name):
    """Compile a generated function in this module's namespace."""
    namespace = globals()
    exec(compile(source, f"<fastrnn.kernels.cpu.tiles:{name}>", "exec"), namespace)
    return njit(nogil=True, _nrt=False)(namespace[name])


lstm_tile_6 = _compile(tile_source("lstm", 6), "lstm_tile_6")
lstm_tile_4 = _compile(tile_source("lstm", 4), "lstm_tile_4")
lstm_tile_2 = _compile(tile_source("lstm", 2), "lstm_tile_2")
lstm_tile_1 = _compile(tile_source("lstm", 1), "lstm_tile_1")
gru_tile_6 = _compile(tile_source("gru", 6), "gru_tile_6")
gru_tile_4 = _compile(tile_source("gru", 4), "gru_tile_4")
gru_tile_2 = _compile(tile_source("gru", 2), "gru_tile_2")
gru_tile_1 = _compile(tile_source("gru", 1), "gru_tile_1")
lstm_proj_6 = _compile(proj_source("lstm", 6), "lstm_proj_6")
lstm_proj_1 = _compile(proj_source("lstm", 1), "lstm_proj_1")
gru_proj_6 = _compile(proj_source("gru", 6), "gru_proj_6")
gru_proj_1 = _compile(proj_source("gru", 1), "gru_proj_1")
