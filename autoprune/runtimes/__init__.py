"""Latency runtimes: what runs the timed forwards of :func:`autoprune.measure.measure`.

A runtime is one object (:class:`Runtime`) with its checks and its timed forward; a
:class:`~autoprune.measure.HardwareProfile` names one (``runtime="eager"``). The built-in runtimes are
``eager`` (PyTorch, as trained) and ``onnxruntime`` (the model exported to ONNX and run in an ONNX
Runtime CPU session, as a deployed ``model.onnx`` runs). Each built-in runtime lives in the module of
this package named like it and registers itself when that module is first imported, which
:func:`get_runtime` does on demand: adding a runtime touches one file. Your own runtime registers with
:func:`register_runtime` and is then named in a profile like the built-in ones.

Example:
    >>> from autoprune.runtimes import available_runtimes, get_runtime
    >>> available_runtimes()
    ['eager', 'onnxruntime']
    >>> get_runtime("eager").name
    'eager'
"""

from __future__ import annotations

from autoprune.runtimes.base import Forward, Runtime, available_runtimes, get_runtime, register_runtime

__all__ = ["Forward", "Runtime", "available_runtimes", "get_runtime", "register_runtime"]
