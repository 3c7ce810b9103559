"""``python -m fastrnn predict``: what it refuses before any task (status 2,
one line naming the argument) and what it never destroys."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import fastrnn  # noqa: E402
from fastrnn.cli.predict import main as predict_main  # noqa: E402


def _files(folder, rng, n=5):
    """A saved LSTM(3) on 2 features, x (n, 4, 2) and lengths in ``folder``."""
    layer = fastrnn.LSTM(3)
    layer.build((1, 4, 2))
    layer.set_weights([(rng.standard_normal(w.shape) * 0.4).astype(np.float32)
                       for w in layer.get_weights()])
    folder.mkdir(exist_ok=True)
    fastrnn.save(layer, str(folder / "model.fastrnn"))
    x = rng.standard_normal((n, 4, 2)).astype(np.float32)
    np.save(folder / "x.npy", x)
    np.save(folder / "lengths.npy", rng.integers(0, 5, n))
    return layer, x


def _run(args, capsys):
    rc = predict_main([str(a) for a in args] + ["--no-progress", "--workers", "0"])
    return rc, capsys.readouterr()


def _listing(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, names in os.walk(folder) for f in names)


def test_output_that_would_destroy_other_files_is_refused(tmp_path, capsys, monkeypatch, rng):
    """An empty OUTPUT (which Zarr took for the working folder and emptied),
    OUTPUT equal to or holding INPUT, MODEL or --lengths, the working folder
    itself, and a folder that is not a Zarr array: each refused with status 2,
    every file left as it was, with or without --overwrite."""
    d = tmp_path / "d"
    _files(d, rng)
    (d / "notes.txt").write_text("keep me")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("keep me too")
    monkeypatch.chdir(d)
    before = _listing(tmp_path)
    cases = [
        ("", "empty string"),
        (d / "x.npy", "would overwrite INPUT"),
        (d, "would overwrite MODEL"),
        (".", "would overwrite MODEL"),
        (tmp_path, "would overwrite MODEL"),
        (d / "model.fastrnn", "would overwrite MODEL"),
        (d / "lengths.npy", "would overwrite --lengths"),
        (plain, "not a Zarr array"),
    ]
    for output, message in cases:
        for extra in ([], ["--overwrite"]):
            rc, got = _run([d / "model.fastrnn", d / "x.npy", output, "--lengths",
                            d / "lengths.npy"] + extra, capsys)
            assert rc == 2 and message in got.err and got.err.count("\n") == 1, (output, got.err)
            assert _listing(tmp_path) == before, output
    monkeypatch.chdir(plain)
    rc, got = _run([d / "model.fastrnn", d / "x.npy", plain, "--overwrite"], capsys)
    assert rc == 2 and "working folder" in got.err, got.err
    assert _listing(tmp_path) == before


def test_overwrite_replaces_a_zarr_array_and_output_is_made_first(tmp_path, capsys, rng):
    """--overwrite replaces an earlier OUTPUT; a path under a file cannot be
    made: status 2 naming OUTPUT, before any task."""
    layer, x = _files(tmp_path, rng)
    out = tmp_path / "y.zarr"
    zarr.create_array(store=str(out), shape=(2, 9), dtype="float64")
    rc, got = _run([tmp_path / "model.fastrnn", tmp_path / "x.npy", out, "--overwrite"], capsys)
    assert rc == 0, got.err
    np.testing.assert_allclose(zarr.open_array(str(out))[:], layer(x), atol=1e-6)
    (tmp_path / "afile").write_text("x")
    rc, got = _run([tmp_path / "model.fastrnn", tmp_path / "x.npy", tmp_path / "afile" / "y.zarr"],
                   capsys)
    assert rc == 2 and "OUTPUT: cannot create" in got.err, got.err


def test_empty_input_gives_an_empty_output(tmp_path, capsys, rng):
    _files(tmp_path, rng)
    np.save(tmp_path / "x0.npy", np.empty((0, 4, 2), np.float32))
    out = tmp_path / "y0.zarr"
    rc, got = _run([tmp_path / "model.fastrnn", tmp_path / "x0.npy", out], capsys)
    assert rc == 0, got.err
    assert zarr.open_array(str(out)).shape == (0, 3)


def test_unreadable_files_name_their_argument(tmp_path, capsys, rng):
    """Empty, truncated and folder inputs or lengths: status 2, one line
    naming INPUT or --lengths (an EOFError traceback before)."""
    _files(tmp_path, rng)
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "whole.npy", rng.standard_normal((6, 4, 2)).astype(np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "whole.npy").read_bytes()[:150])
    (tmp_path / "dir.npy").mkdir()
    (tmp_path / "l.txt").write_text("1 2 3")
    model, x = tmp_path / "model.fastrnn", tmp_path / "x.npy"
    cases = [
        ([model, tmp_path / "empty.npy"], "INPUT"),
        ([model, tmp_path / "cut.npy"], "INPUT"),
        ([model, x, "--lengths", tmp_path / "empty.npy"], "--lengths"),
        ([model, x, "--lengths", tmp_path / "dir.npy"], "--lengths"),
        ([model, x, "--lengths", tmp_path / "l.txt"], "--lengths"),
    ]
    for args, flag in cases:
        args = args[:2] + [tmp_path / "y.zarr"] + args[2:]
        rc, got = _run(args, capsys)
        assert rc == 2 and got.err.startswith(f"fastrnn predict: error: {flag}"), (args, got.err)
        assert "Traceback" not in got.err
    assert not (tmp_path / "y.zarr").exists()


def test_input_the_model_does_not_take_names_input_and_its_shape(tmp_path, capsys, rng):
    _files(tmp_path, rng)
    np.save(tmp_path / "x2.npy", rng.standard_normal((50, 4)).astype(np.float32))
    rc, got = _run([tmp_path / "model.fastrnn", tmp_path / "x2.npy", tmp_path / "y.zarr"],
                   capsys)
    assert rc == 2 and "INPUT" in got.err and "(50, 4)" in got.err, got.err


def test_bad_batch_size_and_example_arguments_are_argparse_errors(tmp_path, capsys, rng):
    _files(tmp_path, rng)
    with pytest.raises(SystemExit) as exc:
        predict_main([str(tmp_path / "model.fastrnn"), str(tmp_path / "x.npy"),
                      str(tmp_path / "y.zarr"), "--batch-size", "0"])
    assert exc.value.code == 2 and "--batch-size" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    for args, message in [([str(tmp_path / "ex"), "--seed", "-1"], "--seed"),
                          ([str(tmp_path / "afile")], "is a file"),
                          ([""], "empty string"), ([str(tmp_path)], "holds model.fastrnn")]:
        with pytest.raises(SystemExit) as exc:
            predict_main(["--example", *args, "--rows", "3"])
        assert exc.value.code == 2 and message in capsys.readouterr().err, args
    assert not (tmp_path / "ex").exists()
    before = (tmp_path / "model.fastrnn").read_bytes()
    assert predict_main(["--example", str(tmp_path), "--rows", "3", "--time", "4",
                         "--features", "2", "--overwrite"]) == 0
    assert (tmp_path / "model.fastrnn").read_bytes() != before
