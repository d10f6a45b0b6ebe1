"""Shared test fixtures: where the real data lives, and skips with a reason when it is absent.

One persistent XLA compilation cache for the whole session, in a fresh temporary folder: many
tests build new jitted functions around the same small models (and run scripts in subprocesses,
which inherit JAX_COMPILATION_CACHE_DIR), so a program compiled once is loaded, not compiled again.
Fresh per session, so no test depends on an earlier run; the pytest-xdist workers of one run share
it (named after the run's id). Tests that need their own cache set it.

Scheduling for `make test` (`-n 2 --dist loadscope`): each module runs whole on one worker, so its
module fixtures are computed once. Two additions keep both workers busy to the end: the loss-parity
module's v1 and v2 halves are two scopes (each has its own fixture instance, so nothing is computed
twice), and the slowest scopes start first (longest first; the rest keep their order).
"""

import os
import pathlib
import re
import tempfile

import jax
import pytest

from maskrcnn_jax.xla_cpu_flags import XLA_CPU_FLAGS, add_xla_cpu_flags

add_xla_cpu_flags()  # before any test starts JAX's CPU backend; subprocesses inherit XLA_FLAGS

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


def cpu_devices_flags(count: int) -> str:
    """XLA_FLAGS for a subprocess with `count` CPU devices, with the project's XLA:CPU flags."""
    return " ".join((f"--xla_force_host_platform_device_count={count}", *XLA_CPU_FLAGS))


# Modules whose module fixture is parametrized by architecture: one scope per architecture.
SPLIT_BY_ARCHITECTURE = ("tests/test_loss_parity_torchvision.py",)

# The slowest scopes, slowest first (seconds on one worker in the fresh-clone CI of 2026-12-05, both
# workers busy; the loss-parity halves measured 2026-12-06, the two at once): they are handed out
# before the rest so no worker is left alone with one at the end.
SLOWEST_SCOPES = (
    "tests/test_loss_parity_torchvision.py[v1]",  # ~840: fixture 283, three training steps 346
    "tests/test_loss_parity_torchvision.py[v2]",  # ~800: fixture 581 (torchvision in float32 and float64)
    "tests/test_training_resume.py",  # ~200
    "tests/test_training_distributed.py",  # ~140
    "tests/test_training_devices.py",  # ~120
    "tests/test_model_v2_parity_torchvision.py",  # ~90
    "tests/test_compile_report.py",  # ~80
    "tests/test_model_remat.py",  # ~65
    "tests/test_training_object_store.py",  # ~60: a GCS emulator, two trainer runs
)


def test_scope(nodeid: str) -> str:
    """The xdist scope of a test: its module (as loadscope), plus [v1]/[v2] in SPLIT_BY_ARCHITECTURE."""
    module = nodeid.split("::", 1)[0]
    if module in SPLIT_BY_ARCHITECTURE:
        architecture = re.search(r"\[(v1|v2)\b", nodeid)
        if architecture:
            return f"{module}[{architecture.group(1)}]"
    return module


@pytest.hookimpl(trylast=True)  # after pytest's own grouping of tests by fixture
def pytest_collection_modifyitems(items):
    """Slowest scopes first (stable: every module's own order is kept)."""
    rank = {scope: index for index, scope in enumerate(SLOWEST_SCOPES)}
    items.sort(key=lambda item: rank.get(test_scope(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown without it (pytest -p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # xdist would order scopes by their number of tests instead

    class ArchitectureScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return test_scope(nodeid)

    return ArchitectureScopeScheduling(config, log)
