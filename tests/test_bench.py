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
                         (["--runs", "2", "--streaming"], "only for the batch grid")):
        with pytest.raises(SystemExit):
            bench.main(argv)
        assert needle in capsys.readouterr().err
