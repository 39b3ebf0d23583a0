"""Benchmark: first-run compilation of the CPU engine (what a fresh install waits for).

A child process with an empty numba cache (``NUMBA_CACHE_DIR`` set to a new
temporary folder, so nothing installed is touched) fits the finger-movement set
with 64 Monte Carlo iterations; numba's ``numba:compile`` events time every
compilation. Prints the fit's wall time, the top-level compilations (those not
nested in another), and every alemap function compiled for more than one
signature (each one compiles again: a literal argument, say, where ``int64``
was meant).

Usage::

    python benchmarks/bench_compile.py [--data FILE] [--iterations 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "data" / "eickhoff2009-finger-tapping" / "EickhoffHBM09.txt"


def _child(data: str, iterations: int) -> dict:
    from numba.core import event
    from numba.core.registry import CPUDispatcher

    stack, top = [], {}

    class Timer(event.Listener):
        def on_start(self, ev):
            py = ev.data["dispatcher"].py_func
            stack.append((f"{py.__module__}.{py.__qualname__}", time.perf_counter()))

        def on_end(self, ev):
            name, t0 = stack.pop()
            if not stack:
                top[name] = top.get(name, 0.0) + time.perf_counter() - t0

    event.register("numba:compile", Timer())
    from alemap import ALE
    from alemap.io import load_experiments

    experiments = load_experiments(data)
    t0 = time.perf_counter()
    ALE(iterations=iterations, seed=1, quiet=True, jobs=1).fit(experiments)
    fit_s = time.perf_counter() - t0
    several = {}
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("alemap"):
            continue
        for name, f in vars(mod).items():
            if isinstance(f, CPUDispatcher) and f.py_func.__module__ == mod_name and len(f.overloads) > 1:
                several[f"{mod_name}.{name}"] = [str(s) for s in f.overloads]
    return {"fit_s": fit_s, "top": top, "several": several}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--iterations", type=int, default=64)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.child:
        print(json.dumps(_child(args.data, args.iterations)))
        return 0
    with tempfile.TemporaryDirectory(prefix="alemap-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cmd = [sys.executable, __file__, "--child", "--data", args.data, "--iterations", str(args.iterations)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"fit with an empty numba cache ({args.iterations} iterations, one thread): {r['fit_s']:.1f} s")
    print(f"  top-level compilations: {sum(r['top'].values()):.1f} s")
    for name, s in sorted(r["top"].items(), key=lambda kv: -kv[1]):
        if s >= 0.2:
            print(f"    {s:6.2f} s  {name}")
    for name, sigs in r["several"].items():
        print(f"  compiled {len(sigs)} times: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
