"""Contract suites for what a user plugs into autoprune: a pruning method, a latency runtime, a backend.

Each suite is plain functions that raise ``AssertionError`` with a message saying which promise broke, so
they run under pytest (as autoprune's own tests run them on every built-in) or anywhere else. Register
your method, runtime or backend, then call its suite from your tests:

* :func:`autoprune.testing.methods.check_method`: every architecture of :mod:`autoprune.zoo` pruned by the
  method keeps its output shape, trains, leaves the caller's model untouched and meets the sparsity asked;
* :func:`autoprune.testing.runtimes.check_runtime`: the runtime's timed forward computes the module's
  outputs and leaves the module as it was;
* :func:`autoprune.testing.backends.check_backend`: a search through the backend reaches the study's total,
  resumes to a larger one, promotes candidates when multi-fidelity is on, and records a failing trial's
  reason while the search goes on.

Example:
    >>> from autoprune.testing.runtimes import check_runtime
    >>> check_runtime("eager")
"""

from __future__ import annotations

from autoprune.measure import HardwareProfile

#: a profile that times in milliseconds, for contract checks (their latencies are compared, never reported)
FAST_PROFILE = HardwareProfile(warmup=1, repeats=3, min_sample_ms=0.5)
