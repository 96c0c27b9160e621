"""Test configuration: 8 simulated CPU devices and loud mistakes.

The device count must be set before jax is imported anywhere, so this runs first.
"""

import os
import shutil
import tempfile

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# Many tests compile the same program (one optimizer case stepped under jit by the contract,
# numerics and restore tests, ...). JAX's persistent compilation cache, in a fresh directory of
# this process's own (each pytest-xdist worker has one: no file is read while another process
# writes it), compiles each program once; the directory is removed when the process ends. Every
# program is cached (no minimum compile time). A cache directory set by the user is kept.
_CACHE = None
if jax.config.jax_compilation_cache_dir is None:
  _CACHE = tempfile.mkdtemp(prefix="jaxopt-practices-xla-cache-")
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import hypothesis  # noqa: E402
import pytest  # noqa: E402

hypothesis.settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True)
hypothesis.settings.load_profile("ci")


@pytest.fixture(scope="module")
def fast_compile():
  """XLA's optimizations cost most of the compile time of tiny programs; modules of them skip
  the optimizations with ``pytestmark = pytest.mark.usefixtures("fast_compile")``."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


def pytest_unconfigure(config):
  if _CACHE is not None:
    shutil.rmtree(_CACHE, ignore_errors=True)
