#!/usr/bin/env python3
"""Opt-in long fuzz campaign of alemap's parsers (CI runs a short one: tests/test_fuzz.py).

Two engines:

``atheris`` (coverage-guided, when ``pip install atheris`` works)
    Each target of ``tests/test_fuzz.py`` (``fuzz_sleuth``, ``fuzz_table``,
    ``fuzz_xlsx``, ``fuzz_nimare_json``, ``fuzz_project``) runs in its own
    process for ``--seconds``, starting from the seed corpus of the tests, with
    alemap's code instrumented. A crash (any exception other than the
    documented ``InputError``/``ProjectError``, a failed check, or a hang past
    the per-input budget) stops that target and leaves ``crash-*`` with the
    input in ``--out``.
``hypothesis`` (always available)
    Runs ``tests/test_fuzz.py`` with ``ALEMAP_FUZZ_EXAMPLES`` examples per
    test and random (not derandomized) seeds; a failure prints the minimal
    example and a ``git apply`` patch that adds it to the tests.

Examples::

    python scripts/fuzz_parsers.py                       # atheris if installed, 5 min per target
    python scripts/fuzz_parsers.py --engine hypothesis --examples 5000
    python scripts/fuzz_parsers.py --target json --seconds 3600
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
TARGETS = {
    "sleuth": ("fuzz_sleuth", "sleuth"),
    "table": ("fuzz_table", "table"),
    "xlsx": ("fuzz_xlsx", "xlsx"),
    "json": ("fuzz_nimare_json", "nimare_json"),
    "project": ("fuzz_project", "project"),
}


def _load_tests_module():
    sys.path.insert(0, str(TESTS))
    spec = importlib.util.spec_from_file_location("alemap_fuzz_targets", TESTS / "test_fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seeds(module, target: str) -> list[bytes]:
    return {
        "sleuth": module.SLEUTH_SEEDS,
        "table": [module.CSV_SEED, module.CSV_SEED.replace(b",", b"\t")],
        "xlsx": [module._xlsx_seed()],
        "json": [module.JSON_SEED],
        "project": [module.YAML_SEED],
    }[target]


def run_atheris_target(target: str, seconds: int, out: Path) -> int:
    """Fuzz one target in this process (called in a child process by :func:`main`)."""
    import atheris

    with atheris.instrument_imports(include=["alemap"]):
        import alemap.designs.project  # noqa: F401
        import alemap.io  # noqa: F401
    module = _load_tests_module()
    func = getattr(module, TARGETS[target][0])
    corpus = out / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(_seeds(module, target)):
        (corpus / f"seed-{i}").write_bytes(seed)

    def one_input(data: bytes) -> None:
        func(data)

    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-artifact_prefix={out}/crash-{target}-",
                   "-timeout=30", "-rss_limit_mb=4096", str(corpus)], one_input)
    atheris.Fuzz()
    return 0


def run_hypothesis(examples: int, targets: list[str]) -> int:
    env = dict(os.environ, ALEMAP_FUZZ_EXAMPLES=str(examples))
    select = " or ".join(TARGETS[t][1] for t in targets)
    cmd = [sys.executable, "-m", "pytest", str(TESTS / "test_fuzz.py"), "-q", "-p", "no:cacheprovider",
           "-k", select, "--durations=10"]
    print("$ ALEMAP_FUZZ_EXAMPLES=%d %s" % (examples, " ".join(cmd)), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    parser.add_argument("--seconds", type=int, default=300, help="atheris: seconds per target (default 300)")
    parser.add_argument("--examples", type=int, default=3000, help="hypothesis: examples per test (default 3000)")
    parser.add_argument("--out", type=Path, default=None, help="atheris: folder for corpora and crashes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_atheris_target(args.child, args.seconds, args.out)
    targets = list(TARGETS) if args.target == "all" else [args.target]
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") else "hypothesis"
        print(f"fuzz_parsers: engine {engine}", flush=True)
    if engine == "hypothesis":
        return run_hypothesis(args.examples, targets)
    if importlib.util.find_spec("atheris") is None:
        print("fuzz_parsers: atheris is not installed (pip install atheris); use --engine hypothesis", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="alemap-atheris-"))
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for target in targets:
        print(f"fuzz_parsers: {target} for {args.seconds} s (artifacts in {out})", flush=True)
        rc = subprocess.call([sys.executable, __file__, "--child", target, "--seconds", str(args.seconds),
                              "--out", str(out)], cwd=ROOT)
        if rc != 0:
            failed.append(target)
    crashes = sorted(out.glob("crash-*"))
    print(f"fuzz_parsers: {len(crashes)} crash file(s){': ' + ', '.join(map(str, crashes)) if crashes else ''}")
    return 1 if failed or crashes else 0


if __name__ == "__main__":
    sys.exit(main())
