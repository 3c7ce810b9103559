"""The register-blocked tiles of the packed kernels, generated from one template.

The template takes the weight format (:data:`FORMATS`): float32 and int8
panels are loaded through :func:`.simd.wload` (widened to float32 in
registers; int8 sums scaled per column after each ``k`` loop, see
``_float_sums``), bfloat16 panels two ``k`` at a time from pairs
(:func:`_pair_loop`, widened by ``pair_lo`` / ``pair_hi``), int8_dynamic
panels through integer dot products of quantized activations (``_dot_sums``), bfloat16_dynamic panels through
bfloat16 dot products of rounded activations into float32 sums (the float
path, ``_float_sums``, over pairs of ``k``). One name per tile (``lstm_tile_6``
...) picks the version for the panels' dtype when Numba types the call.

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

``W = (Wp, wbase, pf, sp, so)``
    The packed panels, where this panel starts, where its prefetch share
    of the next panel starts, the scale panels and this panel's offset in
    them (int8, int8_dynamic).
``bias = (bp, pb)``
    The array and offset of the accumulators' start values: the bias
    panel, or the hoisted input sums.
``x = (xf, D, xo, qa)``
    The flat input, the input rows to sum (0 when hoisted), the offset of
    each row's input at this step; int8_dynamic: ``xf`` is the quantized
    input, ``D`` counts groups of 4, ``qa = (xs, hq, hs)`` holds the input's
    row scales and the quantized state with its row scales.
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

from numba import njit, types
from numba.extending import overload

from .gates import gru_reset, gru_update, lstm_update
# (the generated tiles use these names)
from .simd import (bdot, dload, dsplat, isub, itof, izero, pair_hi, pair_lo,  # noqa: F401
                   prefetch_l1, prefetch_l2, sload, vdot, vfma, vload, vsplat, vstore, vzero,
                   wload)

# accumulator names: what each of the panel's 4 vectors sums into, for the
# input rows and for the recurrent rows
_NAMES = {
    "lstm": (("i", "f", "c", "o"), ("i", "f", "c", "o")),
    "gru": (("z", "r", "x"), ("z", "r", "h")),
}
_STRIDE = {"lstm": 64, "gru": 48}  # weights per k of one panel
#: Bytes of one element of the packed panels of each format (int8_dynamic
#: panels hold int32 elements of 4 int8 weights: one row per 4 k;
#: bfloat16_dynamic panels uint32 elements of 2 bfloat16: one row per 2 k).
_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1, "int8_dynamic": 4, "bfloat16_dynamic": 4}
FORMATS = tuple(_BYTES)


def _k_loop(lines, kind, rows, src, prefetch, names, fmt):
    """The body of one ``k`` loop: loads of the panel's gate vectors (widened
    to float32), then ``rows`` broadcasts with their multiply-adds; for
    int8_dynamic, one group of 4 k: int32 weight vectors, 4 uint8
    activations broadcast, integer dot products; for bfloat16_dynamic, one
    pair of k: vectors of bfloat16 pairs, 2 bfloat16 activations broadcast,
    bfloat16 dot products into float32 sums."""
    stride = _STRIDE[kind]
    n = len(names)
    per_line = 64 // _BYTES[fmt]  # elements per cache line
    if fmt == "bfloat16":
        _pair_loop(lines, rows, src, prefetch, names, stride, per_line)
        return
    if prefetch:
        lines += ["        prefetch_l2(Wp, q)", f"        q += {per_line}"]
        lines += [f"        prefetch_l1(Wp, w + {8 * stride + per_line * j})"
                  for j in range(-(-stride // per_line))]
    dot = fmt in ("int8_dynamic", "bfloat16_dynamic")
    load = "dload" if dot else "wload"
    lines += [f"        w{g} = {load}(Wp, w{' + ' + str(16 * g) if g else ''})" for g in range(n)]
    for r in range(rows):
        lines.append(f"        s = {'dsplat' if dot else 'vsplat(sload'}({src.format(r=r)}){'' if dot else ')'}")
        op = {"int8_dynamic": "vdot({acc}, s, w{g})",
              "bfloat16_dynamic": "bdot({acc}, s, w{g})"}.get(fmt, "vfma(s, w{g}, {acc})")
        lines += [f"        {names[g]}{r} = " + op.format(acc=f"{names[g]}{r}", g=g) for g in range(n)]
    lines.append(f"        w += {stride}")


def _pair_loop(lines, rows, src, prefetch, names, stride, per_line):
    """The body of one ``k`` loop over bfloat16 pairs (weights-only
    bfloat16 panels: two consecutive k per int32 lane, see :mod:`.packed`):
    each gate vector widened from its pair with one shift (k) or one mask
    (k + 1), every row's products of k and then of k + 1, so each sum runs
    over k in the same order as one k per iteration. Weight vectors are
    loaded again for k + 1 (from L1) rather than held: a 6-row tile has no
    registers left for them."""
    src1 = src + " + 1"
    if prefetch:  # this pair spans two k: two lines of the next panel
        lines += ["        prefetch_l2(Wp, q)", f"        prefetch_l2(Wp, q + {per_line})",
                  f"        q += {2 * per_line}"]
        lines += [f"        prefetch_l1(Wp, w + {16 * stride + per_line * j})"
                  for j in range(-(-2 * stride // per_line))]
    for half, at in (("pair_lo", src), ("pair_hi", src1)):
        lines += [f"        w{g} = {half}(dload(Wp, w{' + ' + str(32 * g) if g else ''}))"
                  for g in range(len(names))]
        for r in range(rows):
            lines.append(f"        s = vsplat(sload({at.format(r=r)}))")
            lines += [f"        {names[g]}{r} = vfma(s, w{g}, {names[g]}{r})"
                      for g in range(len(names))]
    lines.append(f"        w += {2 * stride}")


def _dot_sums(lines, kind, rows, prefetch, recurrent):
    """int8_dynamic: int32 sums of the input groups (``D`` groups of 4 k in
    ``xf``, uint8, row offsets ``4 * xo``) and the recurrent groups (``hq``,
    uint8, row offsets ``ro``), each turned into float32 after its loop:
    ``(sum - 128 * colsum) * (row scale * column scale)``, the input part
    plus the bias held in ``t`` (``D == 0``: the bias array already holds
    the input part), the recurrent part added to it. Scale panel ``sp[so:]``:
    input column scales, recurrent column scales, then the two 128 * colsum
    vectors as int32 bits."""
    acc = ("i", "f", "c", "o") if kind == "lstm" else ("z", "r", "x", "h")
    inp, rec = _NAMES[kind]
    lines.append("    xs, hq, hs = qa")
    lines += [f"    b{a} = vload(bp, pb{' + ' + str(16 * g) if g else ''})"
              for g, a in enumerate(acc[:4 if recurrent else len(inp)])]
    lines.append("    zero = izero(0)")
    lines += [f"    {a}{r} = zero" for r in range(rows) for a in inp]
    lines.append("    w = wbase")
    if prefetch:
        lines.append("    q = pf")
    lines.append("    for k in range(D):")
    _k_loop(lines, kind, rows, "xf, 4 * (xo{r} + k)", prefetch, inp, "int8_dynamic")
    out = "t" if recurrent else ""
    held = [a for a in inp if not (recurrent and a == "x")]
    lines.append("    if D > 0:")
    lines += [f"        sw{a} = vload(sp, so{' + ' + str(16 * g) if g else ''})"
              for g, a in enumerate(inp)]
    lines += [f"        kw{a} = dload(sp, so + {128 + 16 * g})" for g, a in enumerate(inp)]
    for r in range(rows):
        lines.append(f"        sx{r} = vsplat(xs[xo{r} // D])")
        lines += [f"        {out if a in held else ''}{a}{r} = vfma(itof(isub({a}{r}, kw{a})), "
                  f"sx{r} * sw{a}, b{a})" for a in inp]
    lines.append("    else:")
    lines += [f"        {out if a in held else ''}{a}{r} = b{a}"
              for r in range(rows) for a in inp]
    if not recurrent:
        return
    lines += [f"    {a}{r} = zero" for r in range(rows) for a in rec]
    lines.append("    for k in range((H + 3) // 4):")
    _k_loop(lines, kind, rows, "hq, ro{r} + 4 * k", prefetch, rec, "int8_dynamic")
    lines += [f"    su{a} = vload(sp, so + {64 + 16 * g})" for g, a in enumerate(rec)]
    lines += [f"    ku{a} = dload(sp, so + {192 + 16 * g})" for g, a in enumerate(rec)]
    for r in range(rows):
        lines.append(f"    sh{r} = vsplat(hs[ro{r} // Hp])")
        lines += [f"    {a}{r} = vfma(itof(isub({a}{r}, ku{a})), sh{r} * su{a}, "
                  f"{'bh' if a == 'h' else f't{a}{r}'})" for a in rec]


def _sums(lines, kind, rows, prefetch, recurrent, fmt):
    if fmt == "int8_dynamic":
        _dot_sums(lines, kind, rows, prefetch, recurrent)
        return
    _float_sums(lines, kind, rows, prefetch, recurrent, fmt)


def _float_sums(lines, kind, rows, prefetch, recurrent, fmt):
    """The input rows' products from zero, then the bias (then, in a tile, the
    recurrent rows, summed apart: :func:`_split_recurrent`).

    Adding the bias last, as a matrix product then a bias add does: summed
    from the bias, every product would round at the bias's magnitude (a
    forget bias of 20 costs each term up to 1e-6).

    int8: each ``k`` loop's sums are scaled by their matrix's column scales
    after it: ``t = sum_x * s_x + bias`` after the input rows (held across
    the recurrent loop), then ``sum_h * s_h + t``; a GRU's candidate keeps
    its two parts apart (``x = sum_x * s_x + b_x``, ``h = sum_h * s_h +
    b_h``)."""
    acc = ("i", "f", "c", "o") if kind == "lstm" else ("z", "r", "x", "h")
    if not recurrent and kind == "gru":
        acc = acc[:3]
    lines += [f"    b{a} = vload(bp, pb{' + ' + str(16 * g) if g else ''})" for g, a in enumerate(acc)]
    scaled = fmt == "int8"
    pairs = fmt == "bfloat16_dynamic"
    if pairs:
        lines.append("    xs, hq, hs = qa")
    lines.append("    zero = vzero(bp)")
    lines += [f"    {a}{r} = zero" for r in range(rows) for a in acc]
    lines.append("    w = wbase")
    if prefetch:
        lines.append("    q = pf")
    inp, rec = _NAMES[kind]
    # (weights-only bfloat16: D, padded to even, counts k two at a time)
    lines.append("    for k in range(0, D, 2):" if fmt == "bfloat16" else "    for k in range(D):")
    _k_loop(lines, kind, rows, "xf, 2 * (xo{r} + k)" if pairs else "xf, xo{r} + k", prefetch,
            inp, fmt)
    if scaled:
        lines += [f"    sw{a} = vload(sp, so{' + ' + str(16 * g) if g else ''})"
                  for g, a in enumerate(inp)]
        if recurrent:  # the input part, scaled, waits in t (LLVM spills it)
            held = [a for a in inp if a != "x"]
            lines += [f"    t{a}{r} = vfma({a}{r}, sw{a}, b{a})" for r in range(rows) for a in held]
            lines += [f"    {a}{r} = zero" for r in range(rows) for a in held]
            if kind == "gru":
                lines += [f"    x{r} = vfma(x{r}, swx, bx)" for r in range(rows)]
        else:
            lines += [f"    {a}{r} = vfma({a}{r}, sw{a}, b{a})" for r in range(rows) for a in inp]
    if recurrent:
        if scaled:
            lines.append("    for k in range(H):")
            _k_loop(lines, kind, rows, "hf, cur + ro{r} + k", prefetch, rec, fmt)
            lines += [f"    su{a} = vload(sp, so + {64 + 16 * g})" for g, a in enumerate(rec)]
            lines += [f"    {a}{r} = vfma({a}{r}, su{a}, {'bh' if a == 'h' else f't{a}{r}'})"
                      for r in range(rows) for a in rec]
        else:
            _split_recurrent(lines, rows, inp, rec, prefetch, kind, fmt)
    elif not scaled:
        lines += [f"    {a}{r} = {a}{r} + b{a}" for r in range(rows) for a in inp]


def _split_recurrent(lines, rows, inp, rec, prefetch, kind, fmt):
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
    if fmt == "bfloat16_dynamic":  # pairs of the state rounded to bfloat16 (hq)
        lines.append("    for k in range((H + 1) // 2):")
        _k_loop(lines, kind, rows, "hq, ro{r} + 2 * k", prefetch, rec, fmt)
    elif fmt == "bfloat16":  # pairs of k (an odd H reads one padded lane of the state)
        lines.append("    for k in range(0, H + (H & 1), 2):")
        _k_loop(lines, kind, rows, "hf, cur + ro{r} + k", prefetch, rec, fmt)
    else:
        lines.append("    for k in range(H):")
        _k_loop(lines, kind, rows, "hf, cur + ro{r} + k", prefetch, rec, fmt)
    lines += [f"    {a}{r} = {a}{r} + t{a}{r}" for r in range(rows) for a in both]
    lines += [f"    {a}{r} = {a}{r} + b{a}" for r in range(rows) for a in rec if a not in inp]


def tile_source(kind, rows, fmt="float32"):
    """The source of the ``rows``-row tile of ``kind`` (``"lstm"`` or ``"gru"``)
    for packed weights of format ``fmt`` (one of :data:`FORMATS`)."""
    name = f"{kind}_tile_{rows}_{fmt}"
    rs = range(rows)
    lines = [f"def {name}(W, bias, x, state, rows, cfg):",
             f'    """{rows} rows of one panel at one step, {fmt} weights (see the module '
             'docstring)."""',
             "    Wp, wbase, pf, sp, so = W",
             "    bp, pb = bias",
             f"    xf, D, ({''.join(f'xo{r}, ' for r in rs)}), qa = x",
             "    hf, cb, cur, nxt = state",
             f"    ({''.join(f'ro{r}, ' for r in rs)}), ({''.join(f'v{r}, ' for r in rs)}) = rows",
             "    pu, H, Hp, peep, has_peep, cell_clip, act, ract = cfg"]
    _sums(lines, kind, rows, rows >= 4, True, fmt)
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


def proj_source(kind, steps, fmt="float32"):
    """The source of ``{kind}_proj_{steps}_{fmt}``: bias plus the input part
    of the gate sums of one panel for ``steps`` steps of one row, stored at
    ``P[po_s]`` (a GRU's recurrent bias vector is copied beside them)."""
    name = f"{kind}_proj_{steps}_{fmt}"
    ss = range(steps)
    lines = [f"def {name}(W, bias, x, P, po):",
             f'    """{steps} steps of the hoisted input sums, {fmt} weights (see the module '
             'docstring)."""',
             "    Wp, wbase, pf, sp, so = W",
             "    bp, pb = bias",
             f"    xf, D, ({''.join(f'xo{s}, ' for s in ss)}), qa = x",
             f"    ({''.join(f'po{s}, ' for s in ss)}) = po"]
    _sums(lines, kind, steps, False, False, fmt)
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


_FORMAT_OF = {types.float32: "float32", types.uint16: "bfloat16", types.int8: "int8",
              types.int32: "int8_dynamic", types.uint32: "bfloat16_dynamic"}


def _by_format(name, make, proj=False):
    """``name``: a function that calls the version of ``make(fmt)`` (a
    compiled tile, or with ``proj`` a projection) matching the dtype of its
    first argument's packed weights, chosen when Numba types the call (one
    name for every format: :mod:`.packed` is written once)."""
    compiled = {}

    def pick(W):
        fmt = _FORMAT_OF.get(W.types[0].dtype)
        if fmt is not None and fmt not in compiled:
            compiled[fmt] = make(fmt)
        return compiled.get(fmt)

    if proj:
        def stub(W, bias, x, P, po):
            raise NotImplementedError

        @overload(stub, inline="always")
        def _ov(W, bias, x, P, po):
            fn = pick(W)
            if fn is not None:
                return lambda W, bias, x, P, po: fn(W, bias, x, P, po)
    else:
        def stub(W, bias, x, state, rows, cfg):
            raise NotImplementedError

        @overload(stub, inline="always")
        def _ov(W, bias, x, state, rows, cfg):
            fn = pick(W)
            if fn is not None:
                return lambda W, bias, x, state, rows, cfg: fn(W, bias, x, state, rows, cfg)

    stub.__name__ = stub.__qualname__ = name
    return stub


def _tiles(kind, rows):
    return _by_format(f"{kind}_tile_{rows}",
                      lambda fmt: _compile(tile_source(kind, rows, fmt), f"{kind}_tile_{rows}_{fmt}"))


def _projs(kind, steps):
    return _by_format(f"{kind}_proj_{steps}",
                      lambda fmt: _compile(proj_source(kind, steps, fmt), f"{kind}_proj_{steps}_{fmt}"),
                      proj=True)


lstm_tile_6 = _tiles("lstm", 6)
lstm_tile_4 = _tiles("lstm", 4)
lstm_tile_2 = _tiles("lstm", 2)
lstm_tile_1 = _tiles("lstm", 1)
gru_tile_6 = _tiles("gru", 6)
gru_tile_4 = _tiles("gru", 4)
gru_tile_2 = _tiles("gru", 2)
gru_tile_1 = _tiles("gru", 1)
lstm_proj_6 = _projs("lstm", 6)
lstm_proj_1 = _projs("lstm", 1)
gru_proj_6 = _projs("gru", 6)
gru_proj_1 = _projs("gru", 1)
