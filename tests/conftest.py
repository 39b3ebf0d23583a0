"""Shared fixtures: paths of the real data sets beside the project."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FINGER = SHARED / "eickhoff2009-finger-tapping" / "EickhoffHBM09.txt"
PAIN = SHARED / "nidm-pain" / "nidm_pain_dset.json"
NIMARE_REF = ROOT / "tests" / "data" / "nimare"


@pytest.fixture(scope="session")
def finger_path() -> Path:
    """The 73-experiment finger-movement Sleuth file (shipped demo copy if ../shared is absent)."""
    if FINGER.exists():
        return FINGER
    from alemap.cli.demo import demo_path

    return Path(demo_path())


@pytest.fixture(scope="session")
def pain_path() -> Path:
    """NIDM pain NiMARE JSON (needs ../shared)."""
    if not PAIN.exists():
        pytest.skip("../shared/data/nidm-pain is not beside the project")
    return PAIN
