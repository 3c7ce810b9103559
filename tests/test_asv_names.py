"""asv silently ignores a benchmark method without a known prefix: fail instead."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "asv_bench"
PREFIXES = ("time_", "timeraw_", "peakmem_", "mem_", "track_")
# asv's own hooks and attributes, and helpers marked private
ALLOWED = {"setup", "teardown", "setup_cache", "params", "param_names", "timeout",
           "number", "repeat", "rounds", "min_run_count", "sample_time",
           "warmup_time", "processes", "pretty_name", "unit", "version", "timer"}


def _modules():
    bench = ROOT / "benchmarks"
    return sorted(p.stem for p in bench.glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module", autouse=True)
def _path():
    sys.path.insert(0, str(ROOT))
    yield
    sys.path.remove(str(ROOT))


def test_there_are_benchmarks():
    assert (ROOT / "asv.conf.json").exists()
    assert _modules(), "asv_bench/benchmarks has no benchmark module"


@pytest.mark.parametrize("name", _modules())
def test_benchmark_names_have_asv_prefixes(name):
    mod = importlib.import_module(f"benchmarks.{name}")
    bad, found = [], 0
    for cname, cls in vars(mod).items():
        if not inspect.isclass(cls) or cls.__module__ != mod.__name__ or cname.startswith("_"):
            continue
        for attr, value in inspect.getmembers(cls):
            if attr.startswith("_") or attr in ALLOWED or not callable(value):
                continue
            if attr.startswith(PREFIXES):
                found += 1
            else:
                bad.append(f"{cname}.{attr}")
    for fname, fn in vars(mod).items():
        if name == "common":  # helpers shared by the benchmark modules
            break
        if inspect.isfunction(fn) and fn.__module__ == mod.__name__ and not fname.startswith("_"):
            if fname.startswith(PREFIXES):
                found += 1
            elif fname not in ALLOWED:
                bad.append(fname)
    assert not bad, f"methods asv would ignore (no {'/'.join(PREFIXES)} prefix): {bad}"
    if name != "common":
        assert found, f"benchmarks.{name} defines no benchmark"
