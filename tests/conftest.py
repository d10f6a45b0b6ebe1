"""Shared test fixtures: where the real data lives, and skips with a reason when it is absent.

One persistent XLA compilation cache for the whole session, in a fresh temporary folder: many
tests build new jitted functions around the same small models (and run scripts in subprocesses,
which inherit JAX_COMPILATION_CACHE_DIR), so a program compiled once is loaded, not compiled again.
Fresh per session, so no test depends on an earlier run; the pytest-xdist workers of one run share
it (named after the run's id). Tests that need their own cache set it.
"""

import os
import pathlib
import tempfile

import jax
import pytest

if "PYTEST_XDIST_TESTRUNUID" in os.environ:
    SESSION_CACHE = os.path.join(tempfile.gettempdir(), "maskrcnn_jax_test_xla_cache_" + os.environ["PYTEST_XDIST_TESTRUNUID"])
    os.makedirs(SESSION_CACHE, exist_ok=True)
else:
    SESSION_CACHE = tempfile.mkdtemp(prefix="maskrcnn_jax_test_xla_cache_")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", SESSION_CACHE)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])

SHARED_DATA = (pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def shared_data_path(*parts: str) -> pathlib.Path:
    """Path under ../shared/data; skips the calling test with a clear reason when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (../shared/data is not beside this checkout)")
    return path
