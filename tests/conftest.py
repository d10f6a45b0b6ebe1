"""Shared test fixtures: where the real data lives, and skips with a reason when it is absent."""

import pathlib

import pytest

SHARED_DATA = (pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def shared_data_path(*parts: str) -> pathlib.Path:
    """Path under ../shared/data; skips the calling test with a clear reason when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (../shared/data is not beside this checkout)")
    return path
