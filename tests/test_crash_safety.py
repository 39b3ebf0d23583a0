"""Crash safety: ``alemap ale`` and ``alemap run`` killed with SIGKILL at random points.

Each command runs as a subprocess (``python -m alemap.cli.main ...``) in one
output folder and is killed several times, at seeded random moments chosen in
each phase: early (a random delay), in the Monte Carlo null (when its
checkpoint appears, plus a random delay; these runs write a checkpoint after
every batch), while the outputs are written (when the first map appears, plus
a random delay), and at a random delay on a folder that already holds
outputs. After every kill:

* every file under a final name (not ``.tmp-*``) is complete and valid: NIfTI
  loads in full with the template's shape, TSV parses, ``.npz`` loads, JSON
  parses;
* a folder that holds ``provenance.json`` (the mark of a finished analysis)
  holds exactly the uninterrupted run's outputs.

Then a rerun of the same command finishes, and its outputs equal those of an
uninterrupted run with the same seed: maps, tables and nulls byte for byte,
``provenance.json`` except its time fields, no temporary file or checkpoint
left behind.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32" or not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"),
]

FINGER = Path(str(resources.files("alemap.resources.demo").joinpath("EickhoffHBM09.txt")))
DEMO_TSV = Path(str(resources.files("alemap.resources.demo").joinpath("motor_learning.tsv")))
SHAPE = (91, 109, 91)
CHECKPOINT = ".alemap-null-checkpoint.npz"
#: Fields of provenance.json that may differ between two runs of the same command.
TIME_FIELDS = ("created", "runtime_seconds")
#: The command line with a checkpoint after every Monte Carlo batch (the default is every 10 s).
EVERY_BATCH = ("import sys, alemap.inference.checkpoint as c; c.CHECKPOINT_EVERY_S = 0.0; "
               "from alemap.cli.main import main; sys.exit(main(sys.argv[1:]))")

PROJECT = """\
name: crash test
inputs: [motor_learning.tsv]
defaults: {iterations: 160, seed: 4}
min_experiments: 1
groups:
  sequence: {tags: {paradigm: sequence}}
  sensorimotor: {tags: {paradigm: sensorimotor}}
analyses:
  sequence: {type: ale, group: sequence}
  sensorimotor: {type: ale, group: sensorimotor}
  both: {type: conjunction, analyses: [sequence, sensorimotor]}
  difference: {type: contrast, analyses: [sequence, sensorimotor], permutations: 100}
"""


def command(args: list[str], every_batch: bool = False) -> list[str]:
    if every_batch:
        return [sys.executable, "-c", EVERY_BATCH, *args]
    return [sys.executable, "-m", "alemap.cli.main", *args]


def final_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".tmp-*"))


def check_valid(path: Path) -> None:
    """A file under a final name is complete: it loads in full."""
    name = path.name
    if name.endswith(".nii.gz") or name.endswith(".nii"):
        data = np.asarray(nib.load(str(path)).dataobj)  # reads (and gunzips) every byte
        assert data.shape == SHAPE, path
    elif name.endswith(".tsv"):
        pd.read_csv(path, sep="\t")
    elif name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                z[key]
    elif name.endswith(".json"):
        json.loads(path.read_text(encoding="utf-8"))
    else:
        raise AssertionError(f"unexpected file {path}")


def _without(prov: dict, fields) -> dict:
    return {k: v for k, v in prov.items() if k not in fields}


def assert_same_file(a: Path, b: Path) -> None:
    if a.name == "provenance.json":
        pa, pb = (json.loads(p.read_text()) for p in (a, b))
        assert _without(pa, TIME_FIELDS) == _without(pb, TIME_FIELDS), a
    elif a.name == "project.json":  # statuses say "skipped (complete)" for analyses a killed run finished
        pa, pb = (json.loads(p.read_text()) for p in (a, b))
        for p in (pa, pb):
            for entry in p["analyses"].values():
                entry.pop("status")
        assert pa == pb
    else:
        assert a.read_bytes() == b.read_bytes(), a


def assert_same_outputs(got: Path, want: Path) -> None:
    names = [p.relative_to(got) for p in final_files(got)]
    assert names == [p.relative_to(want) for p in final_files(want)]
    for rel in names:
        assert_same_file(got / rel, want / rel)


def check_after_kill(out: Path, reference: Path) -> None:
    for path in final_files(out):
        check_valid(path)
    for prov in out.rglob("provenance.json"):  # a folder marked finished is finished, and right
        folder = prov.parent
        ref = reference / folder.relative_to(out)
        assert sorted(p.name for p in final_files(folder) if p.parent == folder and p.name != CHECKPOINT) == \
            sorted(p.name for p in final_files(ref) if p.parent == ref)
        for path in final_files(folder):
            if path.parent == folder and path.name != CHECKPOINT:
                assert_same_file(path, ref / path.name)


def run_and_kill(cmd: list[str], when, delay: float, timeout: float = 120.0) -> str:
    """Start ``cmd``; once ``when()`` is true (polled), wait ``delay`` seconds and SIGKILL it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while proc.poll() is None and not when() and time.monotonic() - t0 < timeout:
            time.sleep(0.005)
        deadline = time.monotonic() + delay
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return f"killed at {time.monotonic() - t0:.2f} s"
        err = proc.stderr.read().decode(errors="replace")
        assert proc.returncode == 0, err
        return "finished before the kill"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def always() -> bool:
    return True


def kill_campaign(args: list[str], out: Path, reference: Path, events, seed: int) -> list[str]:
    """Kill the command at each event (a seeded random delay after it); check the folder after each."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for every_batch, when, (lo, hi) in events:
        delay = float(rng.uniform(lo, hi))
        outcomes.append(run_and_kill(command(args, every_batch), when, delay))
        check_after_kill(out, reference)
    return outcomes


def finish_and_compare(args: list[str], out: Path, reference: Path) -> None:
    done = subprocess.run(command(args), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert temp_files(out) == []  # killed runs' temporary files were cleaned up
    assert not list(out.rglob(CHECKPOINT))
    assert_same_outputs(out, reference)


def test_alemap_ale_survives_sigkill(tmp_path):
    from alemap.cli.main import main

    args = ["ale", str(FINGER), "--iterations", "320", "--seed", "11", "--jobs", "1", "--quiet", "--no-report"]
    reference = tmp_path / "reference"
    assert main([*args, "-o", str(reference)]) == 0
    out = tmp_path / "killed"
    run_args = [*args, "-o", str(out)]
    events = [
        (False, always, (0.2, 1.5)),  # starting up, reading the input
        (True, lambda: (out / CHECKPOINT).exists(), (0.0, 0.4)),  # in the Monte Carlo null
        (True, lambda: (out / "ale.nii.gz").exists(), (0.0, 0.6)),  # writing the outputs
        (False, always, (0.5, 4.0)),  # anywhere, over the previous run's outputs
    ]
    outcomes = kill_campaign(run_args, out, reference, events, seed=2024)
    assert sum(o.startswith("killed") for o in outcomes) >= 3, outcomes
    finish_and_compare(run_args, out, reference)


def test_alemap_run_survives_sigkill(tmp_path):
    from alemap.cli.main import main

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copyfile(DEMO_TSV, folder / "motor_learning.tsv")
    (folder / "project.yaml").write_text(PROJECT, encoding="utf-8")
    args = ["run", str(folder / "project.yaml"), "--jobs", "1", "--quiet", "--no-report"]
    reference = tmp_path / "reference"
    assert main([*args, "-o", str(reference)]) == 0
    out = tmp_path / "killed"
    run_args = [*args, "-o", str(out)]
    events = [
        (True, lambda: (out / "sequence" / CHECKPOINT).exists(), (0.0, 0.3)),  # in the first null
        (True, lambda: (out / "sensorimotor" / "ale.nii.gz").exists(), (0.0, 0.5)),  # writing the second
        (False, lambda: (out / "both").exists(), (0.0, 1.5)),  # the conjunction and the contrast
        (False, always, (0.3, 3.0)),  # anywhere
    ]
    outcomes = kill_campaign(run_args, out, reference, events, seed=7)
    assert sum(o.startswith("killed") for o in outcomes) >= 3, outcomes
    finish_and_compare(run_args, out, reference)
