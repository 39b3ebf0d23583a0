"""The note before the engine's first compilation (``alemap.inference.jit``)."""

from __future__ import annotations

import os

import pytest

from alemap import ALE
from alemap.inference import jit
from alemap.io import load_experiments


@pytest.fixture(scope="module")
def finger(finger_path):
    return load_experiments(finger_path)


def _fit(experiments, quiet):
    with pytest.warns(UserWarning, match="repeat another experiment"):
        ALE(iterations=32, seed=0, jobs=1, quiet=quiet).fit(experiments)


def test_cache_index_exists_once_the_engine_ran(finger):
    _fit(finger, quiet=True)
    index = jit._index_path()
    assert index is not None, "numba's cache index of the engine could not be located (numba internals changed?)"
    assert index.endswith(".nbi") and "run_batch_kernel" in os.path.basename(index)
    assert os.path.exists(index)
    assert jit.engine_compiled()


def test_note_printed_once_before_a_compilation_unless_quiet(finger, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(jit, "_index_path", lambda: str(tmp_path / "missing.nbi"))
    monkeypatch.setattr(jit, "_noted", False)
    _fit(finger, quiet=True)
    assert "compiling the engine" not in capsys.readouterr().err
    _fit(finger, quiet=False)
    assert "alemap: compiling the engine for this machine first" in capsys.readouterr().err
    _fit(finger, quiet=False)
    assert "compiling the engine" not in capsys.readouterr().err  # once per process


def test_no_note_when_the_cache_cannot_be_inspected(finger, monkeypatch, capsys):
    monkeypatch.setattr(jit, "_index_path", lambda: None)
    monkeypatch.setattr(jit, "_noted", False)
    _fit(finger, quiet=False)
    assert "compiling the engine" not in capsys.readouterr().err
