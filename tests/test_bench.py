"""``python -m fastrnn bench`` runs end to end on a tiny grid and reports
what the README says it reports (timings are not checked)."""

from __future__ import annotations

import json


def test_bench_tiny_grid(tmp_path, capsys):
    from fastrnn.cli import bench

    out = tmp_path / "b.json"
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
        have_ort = True
    except ImportError:
        have_ort = False
    assert bench.main(["--shapes", "3,4,5,17", "--repeats", "1", "--skip", "pytorch",
                       "--backends", "cpu", "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FMA peak" in text and "cpu % of peak" in text
    header = next(line for line in text.splitlines() if line.startswith("| cell"))
    assert "cpu/torch" not in header  # PyTorch was skipped: no empty column
    assert ("cpu/ORT" in header) == have_ort
    data = json.loads(out.read_text())
    peaks = data["environment"]["fma_peak_gflops"]
    assert peaks["1"] > 0 and all(v > 0 for v in peaks.values())
    rows = data["rows"]
    assert [(r["cell"], r["B"], r["T"], r["D"], r["H"]) for r in rows] == [
        ("lstm", 3, 4, 5, 17), ("gru", 3, 4, 5, 17)]
    for r in rows:
        e = r["engines"]
        assert e["fastrnn-cpu"]["ms"] > 0 and e["fastrnn-cpu"]["gflops"] > 0
        if have_ort:
            # the engines were checked against each other before timing
            assert e["onnxruntime"]["max_abs_diff"] < 1e-5 and r["vs_ort"] > 0
        assert "pytorch" not in e


def test_fma_peak_is_positive():
    from fastrnn.cli.peak import fma_peak

    one = fma_peak(1, seconds=0.02, repeats=1)
    assert one > 1.0  # GFLOP/s: any machine that runs the tests does more


def test_dot_peaks_are_positive():
    import pytest

    from fastrnn.cli.peak import dot_peak

    for fmt in ("int8", "bfloat16"):
        assert dot_peak(fmt, 1, seconds=0.02, repeats=1) > 1.0
    with pytest.raises(ValueError, match="fmt: expected 'int8' or 'bfloat16', got 'fp8'"):
        dot_peak("fp8")


def test_format_peaks_compares_each_format_with_its_instructions():
    """Weights-only formats against the float32 FMA peak, the _dynamic ones
    against their dot products' peaks."""
    from fastrnn.cli import bench_quantized as bq
    from fastrnn.cli.bench import markdown_table

    engines = {"fastrnn-cpu": 60.0, "fastrnn-cpu-int8": 30.0, "fastrnn-cpu-int8_dynamic": 300.0,
               "fastrnn-cpu-bfloat16_dynamic": 100.0, "onnxruntime-int8": 500.0}
    row = dict(cell="lstm", B=8, T=5, D=7, H=9,
               engines={n: dict(gflops=g, ms=1.0) for n, g in engines.items()})
    text = bq.format_peaks([row], {"float32": 120.0, "int8": 400.0, "bfloat16": 250.0},
                           markdown_table)
    head, _, body = text.splitlines()
    assert head == ("| cell | B,T,D,H | fastrnn % | fastrnn-int8 % | fastrnn-int8_dynamic % | "
                    "fastrnn-bfloat16_dynamic % |")
    assert body == "| lstm | 8,5,7,9 | 50 | 25 | 75 | 40 |"


def test_bench_runs_spread(tmp_path, capsys):
    """``--runs 2``: one table per run, then each ratio of both runs with
    their min / median / max, and every run in the JSON."""
    import pytest

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastrnn.cli import bench

    out = tmp_path / "b.json"
    assert bench.main(["--shapes", "2,3,7,19", "--cells", "gru", "--repeats", "1", "--runs", "2",
                       "--skip", "pytorch", "--backends", "cpu", "--no-progress",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "run 1 of 2" in text and "run 2 of 2" in text
    data = json.loads(out.read_text())
    runs = data["runs"]
    assert len(runs) == 2 and data["rows"] == runs[0]["rows"]
    ratios = [r["rows"][0]["vs_ort"] for r in runs]
    spread = next(line for line in text.splitlines() if line.startswith("| gru | 2,3,7,19 |")
                  and "per run" not in line and line.count("|") == 7)
    cells = [c.strip() for c in spread.strip("|").split("|")]
    assert cells[2] == " ".join(f"{v:.2f}" for v in ratios)
    assert cells[3] == f"{min(ratios):.2f}" and cells[5] == f"{max(ratios):.2f}"


def test_bench_runs_rejects_bad_counts(capsys):
    import pytest

    from fastrnn.cli import bench

    for argv, needle in ((["--runs", "0"], "expected a positive number of runs, got 0"),
                         (["--runs", "2", "--streaming"], "--runs: not used with --streaming"),
                         (["--shapes", "1,5,3"], "--shapes: expected B,T,D,H"),
                         (["--shapes", "1,5,3,4", "a,b,c,d"], "got ['a,b,c,d']"),
                         (["--shapes", "0,5,3,4"], "four positive integers"),
                         (["--repeats", "0"], "--repeats: expected a positive number, got 0"),
                         (["--repeats", "-1"], "got -1"),
                         (["--calls", "0", "--streaming"], "--calls: expected a positive"),
                         (["--hs", "64,0", "--streaming"], "--hs: expected positive"),
                         (["--backends", "bogus"], "--backends: expected a comma-separated"),
                         (["--skip", "bogus"], "--skip: expected a comma-separated subset of "
                                               "onnxruntime,pytorch"),
                         (["--json", "/nonexistent/dir/x.json"], "--json: no folder")):
        with pytest.raises(SystemExit) as exit_:
            bench.main(argv)  # (before any timing: argparse's status 2)
        assert exit_.value.code == 2
        assert needle in capsys.readouterr().err


def test_bench_progress_in_a_log_is_plain_lines(capsys):
    """stderr not a terminal (a log, a pipe): no carriage returns or escape
    codes, the compile announced on a line of its own, then one line per
    finished shape with what each engine took."""
    from fastrnn.cli import bench

    assert bench.main(["--shapes", "3,4,5,17", "2,3,7,9", "--cells", "lstm", "--repeats", "1",
                       "--skip", "pytorch,onnxruntime", "--backends", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines[0] == "compiling kernels (first run only) ..."
    assert lines[1].startswith("kernels ready in ") and "Numba's cache" in lines[1]
    steps = [line for line in lines if line.startswith("[")]
    assert [s.split(" ms")[0].rsplit(" ", 1)[0] for s in steps] == [
        "[1/2] lstm B=3 T=4 D=5 H=17: fastrnn-cpu", "[2/2] lstm B=2 T=3 D=7 H=9: fastrnn-cpu"]
    assert all(float(s.split(": fastrnn-cpu ")[1].split(" ms")[0]) > 0 for s in steps)


def test_progress_on_a_terminal_redraws_one_line(monkeypatch):
    import io

    from fastrnn.cli import _progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    p = _progress.Progress(2)
    p.show("lstm B=1 pytorch 1/5")
    p.step("lstm B=1: 2 ms")
    p.line("kept")
    p.close()
    assert term.getvalue() == ("\r\x1b[K[0/2] lstm B=1 pytorch 1/5\r\x1b[K[1/2] lstm B=1: 2 ms"
                               "\r\x1b[Kkept\n\r\x1b[K")
    # the same calls into a log: only the finished step and the kept line
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    p = _progress.Progress(2)
    p.show("lstm B=1 pytorch 1/5")
    p.step("lstm B=1: 2 ms")
    p.line("kept")
    p.close()
    assert log.getvalue() == "[1/2] lstm B=1: 2 ms\nkept\n"
    silent = io.StringIO()
    monkeypatch.setattr("sys.stderr", silent)
    p = _progress.Progress(2, enabled=False)
    p.status("compiling")
    p.step("done")
    assert silent.getvalue() == ""


def _kernel_signatures():
    """Every compiled signature of the cpu backend's cached kernels."""
    from numba.core.registry import CPUDispatcher

    from fastrnn.kernels.cpu import generic, packed, split, stream

    return {f"{m.__name__}.{name}": list(f.signatures)
            for m in (packed, split, generic, stream)
            for name, f in vars(m).items() if isinstance(f, CPUDispatcher)}


def test_bench_warms_up_once_before_timing(monkeypatch, capsys):
    """The float32 LSTM and GRU kernels are compiled once, before the FMA
    peak and any timing, and the timed calls (one thread, rows split,
    panels split) then compile nothing more."""
    from fastrnn import dispatch
    from fastrnn.cli import bench

    events, compiled = [], {}
    warmup, sample, fma_peaks = dispatch.warmup, bench.sample, bench.fma_peaks

    def spy_warmup(**kwargs):
        events.append(("warmup", kwargs))
        done = warmup(**kwargs)
        compiled.update(_kernel_signatures())
        return done

    def spy_sample(engines, *args, **kwargs):
        events.append(("sample", None))
        return sample(engines, *args, **kwargs)

    def spy_peaks():
        events.append(("peak", None))
        return fma_peaks()

    monkeypatch.setattr(dispatch, "warmup", spy_warmup)
    monkeypatch.setattr(bench, "sample", spy_sample)
    monkeypatch.setattr(bench, "fma_peaks", spy_peaks)
    # B=1 with this much work takes the panels split on two threads, B=16
    # the rows split; B=2, T=2 stays on one thread
    assert bench.main(["--shapes", "1,40,64,128", "16,20,64,128", "2,2,5,17", "--repeats", "1",
                       "--runs", "2", "--skip", "pytorch,onnxruntime", "--backends", "cpu",
                       "--no-progress"]) == 0
    capsys.readouterr()
    assert [e for e, _ in events] == ["warmup"] + (["peak"] + ["sample"] * 6) * 2
    assert events[0][1] == dict(dtypes=("float32",), kinds=("lstm", "gru"),
                                parallel=dispatch.get_num_threads() > 1)
    assert _kernel_signatures() == compiled


def test_warmup_rejects_unknown_kinds():
    import pytest

    from fastrnn import dispatch

    with pytest.raises(ValueError, match=r"kinds: expected names from .*got \['LSTM'\]"):
        dispatch.warmup(dtypes=("float32",), kinds=("gru", "LSTM"))


def test_warmup_compiles_the_splits_on_a_busy_machine(monkeypatch):
    """A starved call before it (another process on the cores) must not send
    the warm-up's two-thread calls to one thread: they would stay cold."""
    import time

    import pytest

    from fastrnn import dispatch
    from fastrnn.kernels.cpu import packed, sync, threads

    if dispatch.get_num_threads() < 2:
        pytest.skip("one thread: no two-thread kernels")
    busy_until = time.monotonic() + 1000.0
    monkeypatch.setattr(threads, "_contended_until", busy_until)
    ran = []
    rows_par, run_split = packed.run_rows_par, threads._run_split
    monkeypatch.setattr(packed, "run_rows_par", lambda *a: ran.append("rows") or rows_par(*a))
    monkeypatch.setattr(threads, "_run_split", lambda *a: ran.append("panels") or run_split(*a))
    assert dispatch.warmup(dtypes=("float32",), parallel=True, kinds=("gru",)) == ["gru float32"]
    assert "rows" in ran and ("panels" in ran) == sync.HAVE_FUTEX
    assert threads._contended_until == busy_until  # the caller's state is left as it was


def test_fma_peak_starts_fastrnn_pool_first(monkeypatch):
    """The peak's parallel loop must not be the first parallel launch: the
    pool is fastrnn's (short OpenMP spin), as the timed kernels get it."""
    from fastrnn import dispatch
    from fastrnn.cli import bench

    cpu = dispatch.backend_module("cpu")
    calls = []
    layer = cpu.threading_layer
    monkeypatch.setattr(cpu, "threading_layer",
                        lambda start=False: calls.append(("pool", start)) or layer(start))
    monkeypatch.setattr(bench, "fma_peak", lambda threads: calls.append(("peak", threads)) or 1.0)
    bench.fma_peaks()
    assert calls[0] == ("pool", True) and calls[1] == ("peak", 1)


def test_bench_precision_rows(tmp_path, capsys):
    """``--precision float32,bfloat16,int8``: fastrnn's quantized rows, the
    other engines' int8 rows where installed (ONNX Runtime: LSTM only), the
    ratios and every engine's max abs error vs float64."""
    import pytest

    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from fastrnn.cli import bench

    out = tmp_path / "p.json"
    assert bench.main(["--shapes", "2,3,7,19", "--repeats", "1", "--backends", "cpu",
                       "--precision", "float32,bfloat16,int8", "--no-progress",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "int8/ORT-int8" in text and "max abs error of each engine" in text
    assert "onnxruntime-int8: no quantized GRU" in text
    assert "% of the peak of the instructions each format multiplies with" in text
    data = json.loads(out.read_text())
    assert set(data["environment"]["dot_peak_gops"]) == {"int8", "bfloat16"}
    assert all(v > 0 for v in data["environment"]["dot_peak_gops"].values())
    rows = data["rows"]
    lstm, gru = rows
    for r in rows:
        e = r["engines"]
        assert e["fastrnn-cpu"]["err_f64"] < 1e-5
        # quantized: visibly rounded, within the promised bounds
        assert 1e-5 < e["fastrnn-cpu-bfloat16"]["err_f64"] < 5e-3
        assert 1e-5 < e["fastrnn-cpu-int8"]["err_f64"] < 1.5e-2
        assert e["pytorch-int8"]["err_f64"] > 1e-5 and r["int8_vs_torch_int8"] > 0
    assert "onnxruntime-int8" in lstm["engines"] and "onnxruntime-int8" not in gru["engines"]
    assert lstm["int8_vs_ort_int8"] > 0 and lstm["bf16_vs_f32"] > 0
    # "max abs diff" is the float32 engines' agreement: the rounded formats'
    # error vs float64 is in its own table (it hid float32 disagreements)
    for r in rows:
        for name, e in r["engines"].items():
            assert ("max_abs_diff" in e) == (name in ("fastrnn-cpu", "onnxruntime", "pytorch"))
    table = text[:text.index("reduced precision: ratios")]
    for line in table.splitlines():
        if line.startswith("| lstm") or line.startswith("| gru"):
            assert float(line.rstrip(" |").split("|")[-1]) < 1e-5, line


def test_bench_rejects_unknown_precision(capsys):
    import pytest

    from fastrnn.cli import bench

    with pytest.raises(SystemExit):
        bench.main(["--precision", "float32,fp8"])
    assert "--precision: expected a comma-separated list" in capsys.readouterr().err


def test_bench_streaming_precision_rows(capsys):
    import pytest

    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from fastrnn.cli import bench_streaming

    assert bench_streaming.main(["--hs", "19", "--calls", "20", "--cells", "lstm",
                                 "--precision", "float32,int8", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "fastrnn int8" in text and "ORT int8 [thr]" in text and "err fastrnn int8" in text
    # the engines' agreement with fastrnn is printed, not only in the JSON
    assert "| vs module | max abs diff |" in text
    # ... and the same formats through layer.stream(), with the engine each kept
    tail = text[text.index("reduced precision through layer.stream()"):]
    row = next(line for line in tail.splitlines() if line.startswith("| LSTM | 1 | 19 |"))
    assert "stream int8 [thr]" in tail and "int8/f32" in tail and "err stream int8" in tail
    assert row.count("[1]") + row.count("[2]") >= 3  # f32, int8 and ORT f32: threads shown


def test_bench_accuracy_tiny_grid(tmp_path, capsys, monkeypatch):
    """``--accuracy``: every path's error against float64 in a table and the
    JSON, with PyTorch's beside them where it is installed."""
    from fastrnn.cli import bench, bench_accuracy

    monkeypatch.setattr(bench_accuracy, "QUICK_GRID", [(17, 6, 3)])
    monkeypatch.setattr(bench_accuracy, "SEEDS", 1)
    out = tmp_path / "a.json"
    assert bench.main(["--accuracy", "--quick", "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| cell | H | T | weights |" in text and "fastrnn stream error" in text
    rows = json.loads(out.read_text())["rows"]
    assert [(r["cell"], r["H"], r["weights"]) for r in rows] == [
        (c, 17, k) for c in ("lstm", "gru") for k in ("random", "saturating")]
    for r in rows:
        e = r["errors"]
        for path in ("batch", "stream", "cell"):
            assert 0 < e[f"fastrnn {path}"] < 1e-5, (r, path)
        if "torch sequence" in e:
            assert set(r["ratios"]) == {"batch", "stream", "cell"}


def test_bench_accuracy_float64_truth_is_the_reference():
    """The benchmark's float64 loop agrees with the NumPy oracle."""
    import numpy as np

    from fastrnn.cli import bench_accuracy
    from fastrnn.kernels import GRUParams, LSTMParams, reference, run

    rng = np.random.default_rng(3)
    for cell in ("lstm", "gru"):
        w = bench_accuracy.weights(cell, 9, "saturating", rng)
        x = bench_accuracy.inputs(2, 7, "saturating", rng)
        y, states = bench_accuracy.float64_run(cell, w, x)
        w64 = [a.astype(np.float64) for a in w]
        params = LSTMParams(*w64) if cell == "lstm" else GRUParams(*w64)
        out = np.empty((2, 7, 9))
        outs = [np.empty((2, 9)) for _ in states]
        run(reference, reference.pack(params), x.astype(np.float64),
            [np.zeros((2, 9)) for _ in states], None, False, False, out, outs)
        np.testing.assert_allclose(y, out, rtol=1e-12, atol=1e-12)
        for a, b in zip(states, outs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_bench_refuses_arguments_it_would_ignore_or_fail_on_late(tmp_path, capsys):
    """Each refusal names its option, before any timing: options a mode does
    not read, backends that cannot run, reduced precisions without cpu, an
    empty --shapes, and a --json path that cannot be written."""
    import pytest

    from fastrnn.cli import bench

    folder = tmp_path / "adir"
    folder.mkdir()
    cases = [
        (["--streaming", "--shapes", "1,2,3,4"], "--shapes: not used with --streaming"),
        (["--streaming", "--backends", "cpu"], "--backends: not used with --streaming"),
        (["--streaming", "--repeats", "3"], "--repeats: not used with --streaming"),
        (["--accuracy", "--skip", "pytorch"], "--skip: not used with --accuracy"),
        (["--accuracy", "--precision", "int8"], "--precision: not used with --accuracy"),
        (["--accuracy", "--contention"], "--contention: not used with --accuracy"),
        (["--hs", "64"], "--hs: only with --streaming"),
        (["--calls", "9"], "--calls: only with --streaming"),
        (["--shapes"], "--shapes: expected at least one"),
        (["--backends", "reference", "--precision", "int8"], "add cpu to --backends"),
        (["--json", str(folder)], "is a folder"),
        (["--json", str(tmp_path / "missing" / "b.json")], "no folder"),
    ]
    if not bench.dispatch.available("cuda")[0]:
        cases.append((["--backends", "cuda"], "--backends: cuda cannot run here"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            bench.parse(argv)
        assert exc.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not list(folder.iterdir())
    # a writable path is left as it was found
    bench.parse(["--json", str(tmp_path / "new.json")])
    assert not (tmp_path / "new.json").exists()


def test_bench_times_the_backends_asked_for(tmp_path, capsys):
    """--backends reference at a shape other than the grid's smallest still
    times reference, and its agreement with ONNX Runtime is measured on the
    same layout (both (B, T, H))."""
    import pytest

    pytest.importorskip("onnxruntime")
    from fastrnn.cli import bench

    out = tmp_path / "r.json"
    assert bench.main(["--shapes", "1,3,4,5", "--cells", "lstm", "--repeats", "1", "--skip",
                       "pytorch", "--backends", "reference", "--no-progress",
                       "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    engines = row["engines"]
    assert "fastrnn-reference" in engines and "onnxruntime" in engines
    assert engines["onnxruntime"]["max_abs_diff"] < 1e-5
    # the rate and ratio columns are reference's, and say so (they showed
    # another engine's numbers under "cpu" headers)
    assert row["main"] == "fastrnn-reference"
    assert row["vs_ort"] == engines["fastrnn-reference"]["ms"] / engines["onnxruntime"]["ms"]
    header = next(line for line in capsys.readouterr().out.splitlines()
                  if line.startswith("| cell"))
    assert "reference/ORT" in header and "reference GFLOP/s" in header and "cpu" not in header


def test_warmup_with_precisions_leaves_no_stream_kernel_to_compile():
    """``warmup(kinds=["stream"], precisions=[mode])`` compiles the stream
    kernels for compact weights (another argument type than float32's): a
    quantized stream's first frame and chunks then compile nothing. In a
    fresh process, so that nothing else compiled them first (the kernels
    load from Numba's cache when the suite compiled them already)."""
    import subprocess
    import sys

    code = """
import numpy as np, fastrnn
from fastrnn import dispatch
from fastrnn.kernels.cpu import stream as k
dispatch.warmup(dtypes="float32", kinds=["stream"], precisions=["int8", "bfloat16"])
before = {f.__name__: len(f.signatures) for f in (k.frame, k.chunk_seq, k.chunk_last)}
rng = np.random.default_rng(0)
for mode, units in (("int8", 5), ("bfloat16", 6)):
    for ret in (False, True):
        layer = fastrnn.GRU(units, return_sequences=ret)
        layer.build((1, None, 3))
        layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
        s = layer.quantize(mode).stream(batch_size=1, threads=1)
        s(rng.standard_normal((1, 3)).astype(np.float32))
        s(rng.standard_normal((1, 4, 3)).astype(np.float32))
after = {f.__name__: len(f.signatures) for f in (k.frame, k.chunk_seq, k.chunk_last)}
assert after == before, (before, after)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
