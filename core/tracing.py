"""The process's one lock around torch's tracers.

``torch.jit.trace`` and the TorchScript-based ``torch.onnx.export`` keep process-wide state
(ONNX's "exporting" flag, the tracer's), and so does ``warnings.catch_warnings``, which both
callers wrap them in. Two at once in one process failed: "GLOBALS.in_onnx_export must be
False", "Tracing failed sanity checks! Graphs differed across invocations". Exports
(``models.export``) and the latency runners that trace (``hardware_profiles.runners``: the
TorchScript and ONNX Runtime profiles) hold this lock while they trace; in the embedded mode
both run in the API's process, so a download no longer fails the job being measured.
"""

from __future__ import annotations

import threading

TRACING = threading.Lock()
