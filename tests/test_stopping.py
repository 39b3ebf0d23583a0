"""Sequential stopping rule of the Monte Carlo null (alemap.inference.stopping)."""

import numpy as np
import pytest

from alemap.corrections.voxel import fwe_threshold
from alemap.inference.montecarlo import NullMaxima
from alemap.inference.stopping import CHECK_EVERY, StoppingRule, quantile_ci, run_sequential


def test_quantile_ci_covers_the_true_quantile_at_its_confidence():
    # Exponential(1): the 0.95 quantile is log(20). Coverage must be >= 0.95 (up to MC error).
    rng = np.random.default_rng(0)
    truth = np.log(20.0)
    reps, n = 4000, 400
    hits = 0
    for _ in range(reps):
        lo, thr, hi = quantile_ci(rng.exponential(size=n), 0.05, 0.95)
        assert lo <= thr <= hi
        hits += lo <= truth < hi
    cover = hits / reps
    assert 0.94 <= cover <= 0.985, cover  # distribution-free bound is conservative but not by much


def test_quantile_ci_narrows_with_iterations():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=20000)
    w = [np.subtract(*quantile_ci(x[:n], 0.05, 0.95)[2::-2]) for n in (500, 2000, 20000)]
    assert w[0] > w[1] > w[2] > 0
    # width shrinks like 1/sqrt(n)
    assert 0.3 < w[2] / w[1] * np.sqrt(10) < 3


def test_quantile_ci_threshold_is_fwe_threshold_and_small_n_is_unbounded():
    x = np.arange(100.0)
    lo, thr, hi = quantile_ci(x, 0.05, 0.95)
    assert thr == fwe_threshold(x, 0.05)
    assert lo < thr < hi
    lo, thr, hi = quantile_ci(np.arange(10.0), 0.05, 0.95)
    assert hi == np.inf


def _fake_prefix(total=20000, seed=3):
    rng = np.random.default_rng(seed)
    full = NullMaxima(rng.gamma(5.0, 0.01, total), rng.poisson(50, total).astype(np.int64), rng.gamma(2.0, 1.0, total))
    calls = []

    def run_prefix(n):
        calls.append(n)
        return NullMaxima(full.ale[:n], full.size[:n], full.mass[:n])

    return full, calls, run_prefix


def test_run_sequential_stops_at_first_check_point_where_narrow():
    full, calls, run_prefix = _fake_prefix()
    rule = StoppingRule(rel_width=0.08, confidence=0.95, min_iterations=1)
    maxima, rec = run_sequential(run_prefix, 20000, rule, 0.05)
    assert calls == sorted(calls) and calls[0] == CHECK_EVERY
    n = maxima.n_iterations
    assert n == calls[-1] and n < 20000 and rec["stopped_early"]
    # the record's decision holds at the stop and failed at every earlier check point
    for chk in rec["checks"]:
        ok = all((c[1] - c[0]) / chk[f"{f}_threshold"] <= 0.08
                 for f, c in ((f, chk[f"{f}_ci"]) for f in ("ale", "size")))
        assert ok == chk["narrow"]
    assert [c["narrow"] for c in rec["checks"]] == [False] * (len(calls) - 1) + [True]
    np.testing.assert_array_equal(maxima.ale, full.ale[:n])


def test_run_sequential_runs_to_the_end_when_never_narrow():
    full, calls, run_prefix = _fake_prefix(total=5000)
    maxima, rec = run_sequential(run_prefix, 5000, StoppingRule(rel_width=1e-9), 0.05)
    assert maxima.n_iterations == 5000 and not rec["stopped_early"]
    assert calls[-1] == 5000 and calls[0] == StoppingRule().min_iterations


@pytest.mark.parametrize("kw", [{"rel_width": 0}, {"confidence": 1.0}, {"min_iterations": 0}])
def test_stopping_rule_rejects_bad_parameters(kw):
    with pytest.raises(ValueError, match="stopping"):
        StoppingRule(**kw)



@pytest.fixture
def small_checks(monkeypatch):
    """Checks every 64 iterations from 64, so the estimator test stays fast."""
    import functools

    import alemap.estimator
    import alemap.inference.stopping as stopping

    monkeypatch.setattr(stopping, "CHECK_EVERY", 64)
    monkeypatch.setattr(alemap.estimator, "StoppingRule", functools.partial(StoppingRule, min_iterations=64))


def test_ale_stopped_early_equals_a_run_of_that_many_iterations(small_checks):
    """The seed contract: an analysis stopped at n has exactly the null and maps of iterations=n."""
    from importlib import resources

    from alemap import ALE
    from alemap.io import load_experiments

    finger = load_experiments(str(resources.files("alemap.resources.demo").joinpath("EickhoffHBM09.txt")))
    exps = finger.select(list(range(0, finger.n_experiments, 3)))  # 25 experiments: fast
    stopped = ALE(iterations=2000, seed=7, quiet=True, jobs=2, sequential_stop=0.5, backend="cpu").fit(exps)
    n = stopped.null_maxima.n_iterations
    rec = stopped.provenance["monte_carlo"]
    assert rec["iterations_requested"] == 2000 and rec["iterations_run"] == n
    assert n < 2000 and n % 64 == 0 and rec["sequential_stop"]["stopped_early"]
    assert rec["sequential_stop"]["checks"][-1]["narrow"]
    plain = ALE(iterations=n, seed=7, quiet=True, jobs=1, backend="cpu").fit(exps)
    for f in ("ale", "size", "mass"):
        np.testing.assert_array_equal(getattr(stopped.null_maxima, f), getattr(plain.null_maxima, f))
    np.testing.assert_array_equal(stopped.maps["z_cfwe"], plain.maps["z_cfwe"])
    assert plain.provenance["monte_carlo"]["sequential_stop"] is None


def test_sequential_stop_parameter_is_validated():
    from alemap import ALE
    from alemap.exceptions import ParameterError

    with pytest.raises(ParameterError, match="sequential_stop"):
        ALE(sequential_stop=-0.1).fit([])
