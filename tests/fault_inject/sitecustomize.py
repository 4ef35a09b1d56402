"""Test-only fault injection: SIGKILL an `adastate` process at a named point.

    PYTHONPATH=tests/fault_inject ADASTATE_KILL_AT=png_frame:5 adastate generate ...

Points: `png_frame:N` after the N-th PNG frame file is in place, `fsync:N` after the N-th
fsync of a video write, `state:N` after the N-th run-state save. Loaded by Python at start-up
(sitecustomize) only when this folder is on PYTHONPATH; never part of the package."""

import os
import signal

_spec = os.environ.get("ADASTATE_KILL_AT")
if _spec:
    _point, _n = _spec.rsplit(":", 1)
    _n, _seen = int(_n), [0]

    def _hit(name: str) -> None:
        if name == _point:
            _seen[0] += 1
            if _seen[0] == _n:
                os.kill(os.getpid(), signal.SIGKILL)

    import adastate_core.io.video as _video
    import adastate_core.pipeline as _pipeline

    _fsync = _video._fsync

    def _fsync_hook(fh):
        _fsync(fh)
        _hit("fsync")

    _video._fsync = _fsync_hook
    _replace = _video.os.replace

    class _OsProxy:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            _replace(src, dst)
            if str(dst).endswith(".png"):
                _hit("png_frame")

    _video.os = _OsProxy()
    _save_run = _pipeline.save_run

    def _save_run_hook(*args, **kwargs):
        out = _save_run(*args, **kwargs)
        _hit("state")
        return out

    _pipeline.save_run = _save_run_hook
