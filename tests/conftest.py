"""Strict test configuration: no implicit rank promotion, no silent dtype promotion.

Library code must broadcast explicitly (same rank, size-1 axes) and never mix float32 with
float64 by accident. A test that checks rank broadcasting opts in with the `allow_rank_promotion`
fixture; float64 comes from the `x64` fixture, never from flipping the config inside a test.
"""
import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def x64():
    """Run the test with 64-bit types enabled (locally, restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def allow_rank_promotion():
    """Allow numpy-style broadcasting between arrays of different rank for this test."""
    with jax.numpy_rank_promotion("allow"):
        yield

# The golden-value generators need torch (the `bench` extra); `make test` installs only `test`.
collect_ignore_glob = ["golden/*.py"]
