"""GPU cost MODEL of one steady streaming chunk, from a trace of the real code at full size.

Nothing here runs on a GPU and nothing is timed. The real pipeline (`pipeline.generate`, a
fresh stream, chunks 0 .. k; each chunk = `denoise_chunk` (4 DiT calls) + `update_state` (the
t = 0 pass) + VAE `decode_chunk` of its latents with the carried decoder cache + the frame
conversion and copy-out the pipeline does) runs on *fake* tensors (`FakeTensorMode`: shapes,
dtypes and strides, no data, no memory) at full size, under modes that watch it:

* a `TorchDispatchMode` records every aten op that reaches the kernels: bytes read/written,
  FLOPs (GEMM/conv by `torch.utils.flop_counter`'s rules, attention from the q/k/v shapes), the
  innermost `adastate_core` source line that issued it (and its caller), and the live bytes of
  device storages (allocated on an op's output, freed when the last tensor on them dies);
* a `TorchFunctionMode` keeps host data real and device data fake and records the
  host<->device traffic a CUDA run would have (`SYNC_RULE`); it prices F.rms_norm and SDPA as
  one fused kernel each (CPU decomposes rms_norm into pow/mean/add/rsqrt/mul/mul where CUDA
  launches one `_fused_rms_norm`).

The op list of the last (steady) chunk is then priced with a roofline per kernel (`Roofline`):
max(FLOPs / peak, bytes / HBM, launch floor), summed in issue order (one stream, no overlap).

    python benchmarks/gpu_model.py                     # 1.3B, 480x832, bf16 / fp32 precise
    python benchmarks/gpu_model.py --json out.json     # also write everything as JSON
    python benchmarks/gpu_model.py --json              # JSON on stdout instead of the table
    python benchmarks/gpu_model.py --precise bf16 --attention-tflops 620

Fake CUDA tensors cannot be indexed by a CPU-only torch, so fake CPU tensors stand in for the
device. To adastate_core code they report `device == cuda:0` / `is_cuda` (torch's own code
sees the CPU), and the few torch.cuda calls a CUDA branch makes (events, streams,
synchronize) are stubbed during the trace, so the code takes its CUDA branches (pinned
non-blocking copies, no oneDNN conv, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import threading
import time
import warnings
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import conv_flop_count, flop_registry, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import adastate_core  # noqa: E402
from adastate_core.model.config import WanConfig  # noqa: E402

PKG_DIR = str(Path(adastate_core.__file__).resolve().parent)
REPO_DIR = str(Path(PKG_DIR).parent)

# ----------------------------------------------------------------------------------------------
# constants of the model (all overridable from the command line)


@dataclass(frozen=True)
class Roofline:
    """Effective (not peak) rates of one GPU. A kernel costs max(FLOPs / rate, bytes / HBM,
    kernel_us); a host<->device copy costs bytes / PCIe (+ sync_us if it blocks the host)."""

    name: str
    gemm_tflops: float = 650.0  # bf16/fp16 GEMM and conv (H100 SXM dense peak 989)
    attention_tflops: float = 350.0  # SDPA = FlashAttention-2 by torch's priority; cuDNN/FA3 ~620
    fp32_tflops: float = 50.0  # fp32 GEMM/conv/attention without TF32 (peak 67)
    fp8_tflops: float = 1200.0  # fp8 `_scaled_mm` (peak 1979)
    hbm_tbs: float = 2.8  # effective HBM bandwidth, TB/s (H100 SXM peak 3.35)
    kernel_us: float = 3.0  # floor per kernel launch (launch + tail), microseconds
    pcie_gbs: float = 10.0  # blocking copies from/to pageable host memory, GB/s
    pcie_async_gbs: float = 25.0  # non_blocking copies (pinned host memory), GB/s
    sync_us: float = 10.0  # round trip of one host<->device synchronisation

    def kernel_s(self, kind: str, flops: float, nbytes: float, dclass: str) -> float:
        t_mem = nbytes / (self.hbm_tbs * 1e12)
        if kind == "mem":
            return max(t_mem, self.kernel_us * 1e-6)
        if dclass == "fp32":
            rate = self.fp32_tflops
        elif dclass == "fp8":
            rate = self.fp8_tflops
        else:
            rate = self.attention_tflops if kind == "attn" else self.gemm_tflops
        return max(flops / (rate * 1e12), t_mem, self.kernel_us * 1e-6)

    def transfer_s(self, nbytes: float, sync: bool) -> float:
        bw = self.pcie_gbs if sync else self.pcie_async_gbs
        return nbytes / (bw * 1e9) + (self.sync_us * 1e-6 if sync else 0.0)


H100 = Roofline("H100 SXM")
H200 = dataclasses.replace(H100, name="H200", hbm_tbs=4.0)

MODEL_NOTE = (
    "This is a MODEL, not a measurement: an op-by-op trace of the real code on fake tensors, "
    "priced with the roofline constants below (one CUDA stream, no overlap, warm caches). It "
    "leaves out host (Python) time and the GPU idling it causes after each sync, cuBLAS/cuDNN/"
    "attention workspaces, allocator rounding and the CUDA context."
)
SYNC_RULE = (
    "device data = the model's tensors and everything computed from them (fake tensors that "
    "report cuda:0); host data = tensors made without a CUDA device argument (CPU generator "
    "noise, torch.tensor/as_tensor of Python values, numpy), computed for real. A sync is: "
    ".item()/bool()/int()/float()/.tolist()/torch.equal/printing of device data (read); "
    ".cpu()/.to('cpu')/.numpy()/copy_ of device data into host data (D2H) and .to(cuda)/"
    "torch.tensor(..., device=cuda)/new_tensor/copy_ of host data into device data (H2D), "
    "unless non_blocking=True (then an async copy, not a sync); torch.cuda.synchronize()/"
    "Event.synchronize()/Stream.synchronize() on the main thread; aten ops that sync by nature "
    "(_local_scalar_dense, nonzero, ...). Each is attributed to the innermost adastate_core "
    "source line."
)
MEMORY_RULE = (
    "live bytes = sum of the sizes of device storages alive: a storage is counted from the op "
    "that creates it until the last tensor on it is garbage collected (weakref finalizers on "
    "every fake tensor an op returns; host tensors are not counted). Like "
    "torch.cuda.max_memory_allocated, without allocator rounding, fragmentation, workspaces or "
    "the context. Temporaries inside a fused region (RMSNorm, attention) are not counted."
)

# functions whose frames name a phase (innermost match wins); in `generate` but none of these:
# "glue"
PHASES = {
    "denoise_chunk": "denoise",
    "update_state": "update",
    "advance": "update",
    "decode_chunk": "decode",
    "to_frames": "frames",
    "frames_uint8": "frames",
    "to_host": "frames",
    "init_stream": "prompt",
    "set_prompt": "prompt",
    "prepare_conditioning": "prompt",
}
GLUE = {"generate", "stream_chunks"}
PHASE_ORDER = ("prompt", "denoise", "update", "glue", "decode", "frames", "other")
DIT_ENTRY = "_run"  # CausalWanDiT._run: one frame per DiT call (forward and cache_kv)
VAE_ENTRY = "Decoder.forward"  # one decoder call per latent frame

# ----------------------------------------------------------------------------------------------
# op classification

aten = torch.ops.aten
NO_KERNEL = {
    aten.empty,
    aten.empty_like,
    aten.empty_strided,
    aten.new_empty,
    aten.new_empty_strided,
    aten.lift_fresh,
    aten._unsafe_view,
    aten.detach,
    aten.alias,
    aten.sym_size,
    aten.sym_stride,
    aten.sym_numel,
    aten.sym_storage_offset,
    aten.is_same_size,
    aten.resize_,
    aten.set_,
    aten._reshape_alias,
}
SYNC_OPS = {
    aten._local_scalar_dense,
    aten.equal,
    aten.is_nonzero,
    aten.nonzero,
    aten.masked_select,
    aten.unique_consecutive,
    aten._unique2,
}
WRITE_ONLY_SELF = {
    aten.copy_,
    aten.fill_,
    aten.zero_,
    aten.normal_,
    aten.uniform_,
    aten.random_,
    aten.index_put_,
}
ATTENTION_WORDS = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_att")
GEMM_EXTRA = {aten.mkldnn_convolution}
READS = {
    "item",
    "tolist",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "__complex__",
    "equal",
    "__repr__",
    "__str__",
    "__format__",
}
H2D_FACTORIES = {"tensor", "as_tensor", "asarray", "new_tensor"}
PASSTHROUGH = {
    "dim",
    "size",
    "numel",
    "stride",
    "element_size",
    "is_contiguous",
    "untyped_storage",
    "data_ptr",
    "storage_offset",
    "is_floating_point",
    "is_complex",
    "__len__",
    "__hash__",
    "nelement",
    "ndimension",
    "requires_grad_",
}
REGIONS = {"rms_norm": "mem", "scaled_dot_product_attention": "attn"}

_view_cache: dict = {}


def _is_view(func) -> bool:
    hit = _view_cache.get(func)
    if hit is None:
        rets = func._schema.returns
        hit = bool(rets) and all(
            r.alias_info is not None and not r.alias_info.is_write for r in rets
        )
        _view_cache[func] = hit
    return hit


def touched_bytes(t: Tensor) -> int:
    """Bytes a kernel touches reading/writing `t` (broadcast, stride-0 dims counted once)."""
    if t.numel() == 0:
        return 0
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


def dtype_class(tensors) -> str:
    for t in tensors:
        if t.dtype == torch.float32:
            return "fp32"
        if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            return "fp8"
        if t.is_floating_point():
            return "bf16"
    return "bf16"


def is_host(t) -> bool:
    """Real tensors only ever hold host data here; fake ones are device data unless marked."""
    return not isinstance(t, FakeTensor) or getattr(t, "_gm_host", False)


def mark_host(out) -> None:
    for t in tree_leaves(out):
        if isinstance(t, FakeTensor):
            t._gm_host = True


# ----------------------------------------------------------------------------------------------
# the recorder


@dataclass(slots=True)
class Op:
    chunk: int
    phase: str
    kind: str  # gemm | attn | mem (device kernels), h2d | d2h | read (host<->device), host
    name: str
    flops: float
    nbytes: int
    dclass: str
    line: str
    caller: str
    dit_call: int  # 0 outside a DiT call
    vae_call: int
    sync: bool = False


class Recorder(TorchDispatchMode):
    """Records aten ops (see the module docstring) and tracks live device storage bytes."""

    def __init__(self):
        super().__init__()
        self.ops: list[Op] = []
        self.views: Counter = Counter()  # (chunk, phase) -> view/metadata ops
        self.chunk = -1  # -1: setup (init_stream); then the chunk being produced
        self.suppress = 0
        self.host_depth = 0
        self.region = 0
        self.warnings: Counter = Counter()
        self.thread_waits: Counter = Counter()
        self.dit_calls = 0
        self.vae_calls = 0
        self._in_dit = self._in_vae = False
        self._codeinfo: dict = {}
        # memory
        self.live: dict[int, list] = {}
        self.cur = 0
        self.peak: dict = defaultdict(int)  # (chunk, phase) -> peak live bytes
        self.start: dict = {}  # (chunk, phase) -> live bytes when the phase began
        self.peak_line: dict = {}
        self.global_peak = (0, None, None)

    # -- where --------------------------------------------------------------------------------

    def _info(self, code):
        info = self._codeinfo.get(code)
        if info is None:
            fn = code.co_filename
            rel = fn[len(REPO_DIR) + 1 :] if fn.startswith(PKG_DIR) else None
            name = code.co_name
            phase = PHASES.get(name) if rel else None
            glue = bool(rel) and name in GLUE
            is_dit = bool(rel) and name == DIT_ENTRY and rel.endswith("model/dit.py")
            is_vae = bool(rel) and getattr(code, "co_qualname", name) == VAE_ENTRY
            info = (rel, phase, glue, is_dit, is_vae)
            self._codeinfo[code] = info
        return info

    def where(self):
        """(line, caller, phase, dit_call, vae_call) of the op being issued now."""
        f = sys._getframe(1)
        line = caller = None
        phase = None
        glue = in_dit = in_vae = False
        while f is not None:
            rel, ph, gl, dit, vae = self._info(f.f_code)
            if rel is not None:
                loc = f"{rel}:{f.f_lineno}"
                if line is None:
                    line = loc
                elif caller is None:
                    caller = loc
                if phase is None and ph is not None:
                    phase = ph
                glue |= gl
                in_dit |= dit
                in_vae |= vae
            f = f.f_back
        if phase is None:
            phase = "glue" if glue else "other"
        if in_dit and not self._in_dit:
            self.dit_calls += 1
        if in_vae and not self._in_vae:
            self.vae_calls += 1
        self._in_dit, self._in_vae = in_dit, in_vae
        k = (self.chunk, phase)
        if k not in self.start:
            self.start[k] = self.cur
            self.peak[k] = max(self.peak[k], self.cur)
        return (
            line or "(outside adastate_core)",
            caller or "",
            phase,
            self.dit_calls if in_dit else 0,
            self.vae_calls if in_vae else 0,
        )

    def add(self, kind, name, flops=0.0, nbytes=0, dclass="bf16", sync=False, at=None):
        line, caller, phase, dit, vae = at or self.where()
        self.ops.append(
            Op(self.chunk, phase, kind, name, flops, nbytes, dclass, line, caller, dit, vae, sync)
        )
        return phase

    # -- memory -------------------------------------------------------------------------------

    def track(self, out, phase: str, line: str) -> None:
        for t in tree_leaves(out):
            if not isinstance(t, FakeTensor) or getattr(t, "_gm_host", False):
                continue
            st = t.untyped_storage()
            key = st._cdata
            entry = self.live.get(key)
            if entry is None:
                entry = self.live[key] = [st.nbytes(), 0]
                self.cur += entry[0]
                k = (self.chunk, phase)
                self.start.setdefault(k, self.cur - entry[0])
                if self.cur > self.peak[k]:
                    self.peak[k] = self.cur
                    self.peak_line[k] = line
                if self.cur > self.global_peak[0]:
                    self.global_peak = (self.cur, self.chunk, line)
            entry[1] += 1
            weakref.finalize(t, self._release, key)

    def _release(self, key) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.cur -= entry[0]
            del self.live[key]

    # -- dispatch -----------------------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if self.suppress:
            return func(*args, **kwargs)
        if self.host_depth:
            out = func(*args, **kwargs)
            if not (func.namespace == "prim" or packet in NO_KERNEL or _is_view(func)):
                self.add("host", str(packet).split(".", 1)[-1])
            return out
        if self.region:  # inside a fused region: priced as a whole by HostDevice._region
            return func(*args, **kwargs)
        if packet in SYNC_OPS:
            ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
            if any(not is_host(t) for t in ins):
                at = self.where()
                self.add("read", f"aten.{packet.__name__}", nbytes=0, sync=True, at=at)
        out = func(*args, **kwargs)
        if func.namespace == "prim":
            return out
        if packet in NO_KERNEL or _is_view(func):
            at = self.where()
            self.views[(self.chunk, at[2])] += 1
            self.track(out, at[2], at[0])
            return out
        leaves = tree_leaves((args, kwargs))
        ins = [t for t in leaves if isinstance(t, Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        name = f"aten.{packet.__name__}"
        if packet in WRITE_ONLY_SELF and ins:
            read = sum(touched_bytes(t) for t in ins[1:])
            write = touched_bytes(ins[2]) if packet is aten.index_put_ and len(ins) > 2 else 0
            write = write or sum(touched_bytes(t) for t in outs)
        else:
            read = sum(touched_bytes(t) for t in ins)
            write = sum(touched_bytes(t) for t in outs)
        flops = 0.0
        kind = "mem"
        if any(w in name for w in ATTENTION_WORDS):
            kind = "attn"
            q, k, v = ins[:3]
            flops = float(sdpa_flop_count(q.shape, k.shape, v.shape))
        elif packet in flop_registry:
            kind = "gemm"
            flops = float(flop_registry[packet](*args, **kwargs, out_val=out))
        elif packet in GEMM_EXTRA:
            kind = "gemm"
            flops = float(conv_flop_count(ins[0].shape, ins[1].shape, outs[0].shape))
        at = self.where()
        dclass = dtype_class(ins[:2]) if kind != "mem" else "bf16"
        self.add(kind, name, flops, read + write, dclass, at=at)
        self.track(out, at[2], at[0])
        return out


# ----------------------------------------------------------------------------------------------
# host / device tracking at the Python level


def _placeholder(name: str, t: Tensor):
    """A stand-in for a value read back from fake (data-less) device memory."""
    if name in ("__bool__", "equal"):
        return True
    if name in ("__repr__", "__str__", "__format__"):
        return f"<fake {list(t.shape)} {t.dtype}>"
    if name == "tolist":
        out = 0.0 if t.is_floating_point() else 0
        for s in reversed(t.shape):
            out = [out] * s
        return out
    if name in ("numpy", "__array__"):
        import numpy as np

        return np.zeros(tuple(t.shape), dtype=np.float32)
    if t.dtype == torch.bool:
        return True
    if t.is_complex():
        return 0j
    return 0.0 if t.is_floating_point() or name == "__float__" else 0


CUDA = torch.device("cuda", 0)


def _side(device) -> str | None:
    """'dev' for a CUDA device argument, 'host' for a CPU one, None if not given."""
    if device is None:
        return None
    if isinstance(device, int):
        return "dev"
    dev = device if isinstance(device, torch.device) else torch.device(device)
    return "host" if dev.type == "cpu" else "dev"


def _cpu_device(x):
    """The stand-in for a device argument: every device is the CPU underneath."""
    if isinstance(x, torch.device) or (isinstance(x, str) and x.split(":")[0] in DEVICE_NAMES):
        return torch.device("cpu")
    return x


DEVICE_NAMES = {"cuda", "cpu", "meta"}


class HostDevice(TorchFunctionMode):
    """Host/device bookkeeping at the Python level.

    * Device data (fake) reports `device == cuda:0` / `is_cuda` to Python code, so the code
      takes its CUDA branches (pinned async copies, ...); underneath it is a fake CPU tensor, and
      every device argument is mapped to the CPU before the call.
    * Host data stays real: CPU ops run for real (noise, positions, schedules), host tensors
      derived from device data are fake tensors marked host.
    * Every crossing is recorded (`SYNC_RULE`).
    * RMSNorm and attention are recorded as one fused kernel each (`_region`)."""

    def __init__(self, rec: Recorder):
        super().__init__()
        self.rec = rec

    # -- crossings ------------------------------------------------------------------------------

    def _to_device(self, t: Tensor, dtype, non_blocking: bool, what: str):
        """A new device tensor holding host tensor `t` (as `dtype`): an H2D copy."""
        rec = self.rec
        at = rec.where()
        nbytes = t.numel() * t.element_size()
        phase = rec.add("h2d", what, nbytes=nbytes, sync=not non_blocking, at=at)
        out = self._empty(t.shape, dtype or t.dtype)
        if dtype is not None and dtype != t.dtype:  # converted on the device after the copy
            rec.add("mem", "h2d dtype cast", nbytes=nbytes + touched_bytes(out), at=at)
        rec.track(out, phase, at[0])
        return out

    def _to_host(self, t: Tensor, dtype, non_blocking: bool, what: str):
        """A host tensor receiving device tensor `t`: a D2H copy."""
        self.rec.add("d2h", what, nbytes=t.numel() * t.element_size(), sync=not non_blocking)
        out = self._empty(t.shape, dtype or t.dtype)
        out._gm_host = True
        return out

    def _empty(self, shape, dtype):
        rec = self.rec
        rec.suppress += 1
        try:
            return torch.empty(tuple(shape), dtype=dtype)
        finally:
            rec.suppress -= 1

    def _host(self, func, args, kwargs):
        """Run on the host: real tensors stay real (CPU compute), fake host data stays fake."""
        rec = self.rec
        kwargs = dict(kwargs)
        pinned = kwargs.pop("pin_memory", False)
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        rec.host_depth += 1
        try:
            with unset_fake_temporarily():
                out = func(*args, **kwargs)
        finally:
            rec.host_depth -= 1
        mark_host(out)
        if pinned and isinstance(out, Tensor):
            out._gm_pinned = True
        return out

    def _device(self, func, args, kwargs, tensors):
        rec = self.rec
        for t in tensors:
            if not isinstance(t, FakeTensor) and t.numel() > 1:
                rec.warnings[
                    f"host tensor {list(t.shape)} read by a device op at {rec.where()[0]}"
                ] += 1
        args = tuple(_cpu_device(a) for a in args)
        kwargs = {k: _cpu_device(v) if k == "device" else v for k, v in kwargs.items()}
        kwargs.pop("pin_memory", None)
        return func(*args, **kwargs)

    # -- dispatch -------------------------------------------------------------------------------

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rec = self.rec
        name = getattr(func, "__name__", "")
        if name in PASSTHROUGH:
            return func(*args, **kwargs)
        if name == "__get__":
            attr = getattr(getattr(func, "__self__", None), "__name__", "")
            if (
                attr in ("device", "is_cuda", "is_cpu")
                and args
                and not is_host(args[0])
                and _from_project(sys._getframe(1))
            ):
                return {"device": CUDA, "is_cuda": True, "is_cpu": False}[attr]
            out = func(*args, **kwargs)
            if isinstance(out, Tensor) and args and is_host(args[0]):
                mark_host(out)
            return out
        leaves = tree_leaves((args, kwargs))
        tensors = [t for t in leaves if isinstance(t, Tensor)]
        dev_in = any(not is_host(t) for t in tensors)
        first = args[0] if args and isinstance(args[0], Tensor) else None

        if name in READS and tensors:
            if dev_in:
                t = next(t for t in tensors if not is_host(t))
                rec.add("read", f"{name}()", nbytes=t.numel() * t.element_size(), sync=True)
                return _placeholder(name, t)
            if any(isinstance(t, FakeTensor) for t in tensors):
                return _placeholder(name, tensors[0])  # host data derived from device data
            return self._host(func, args, kwargs)

        if name == "get_device" and first is not None:
            return -1 if is_host(first) else 0
        if name == "pin_memory" and first is not None:
            first._gm_pinned = True
            return first
        if name == "is_pinned" and first is not None:
            return bool(getattr(first, "_gm_pinned", False))
        if name == "record_stream":
            return None

        if name in ("numpy", "__array__") and first is not None:
            if not is_host(first):
                rec.add("d2h", f".{name}()", first.numel() * first.element_size(), sync=True)
                return _placeholder(name, first)
            if isinstance(first, FakeTensor):
                return _placeholder(name, first)
            return self._host(func, args, kwargs)

        if name in ("to", "cuda", "cpu") and first is not None:
            other = args[1] if len(args) > 1 and isinstance(args[1], Tensor) else None
            if name == "cuda":
                target, dtype = "dev", None
                nb = bool(kwargs.get("non_blocking", False))
            elif name == "cpu":
                target, dtype, nb = "host", None, False
            elif other is not None:
                target = "host" if is_host(other) else "dev"
                dtype, nb = other.dtype, bool(kwargs.get("non_blocking", False))
            else:
                device, dtype, nb, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
                target = _side(device)
            src = "host" if is_host(first) else "dev"
            if target == "dev" and src == "host":
                return self._to_device(first, dtype, nb, f".{name}(cuda)")
            if target == "host" and src == "dev":
                out = self._to_host(first, dtype, nb, f".{name}()")
                return out
            if src == "host":
                return self._host(func, args, kwargs)
            return self._device(func, args, kwargs, tensors)

        if name == "copy_" and len(args) >= 2 and all(isinstance(a, Tensor) for a in args[:2]):
            dst, src = args[0], args[1]
            nb = bool(args[2]) if len(args) > 2 else bool(kwargs.get("non_blocking", False))
            if is_host(dst) != is_host(src):
                kind = "d2h" if is_host(dst) else "h2d"
                rec.add(kind, "copy_", nbytes=touched_bytes(src), sync=not nb)
                if kind == "d2h" and not isinstance(dst, FakeTensor):
                    # a real host buffer (e.g. torch.empty) receiving device data: give it the
                    # placeholder value a read of device data gets, never uninitialised memory
                    fill = _placeholder("item", src)
                    self._host(torch.Tensor.fill_, (dst, fill), {})
                return dst
            if not dev_in:
                return self._host(func, args, kwargs)
            return self._device(func, args, kwargs, tensors)

        target = _side(kwargs.get("device"))
        new_tensor = name == "new_tensor" and first is not None
        if new_tensor and target is None:
            target = "host" if is_host(first) else "dev"
        if name in H2D_FACTORIES and target == "dev":
            pos = 1 if new_tensor else 0
            data = args[pos] if len(args) > pos else kwargs.get("data")
            if isinstance(data, Tensor) and not is_host(data):
                return self._device(func, args, kwargs, tensors)  # already device data
            host_kwargs = {k: v for k, v in kwargs.items() if k != "device"}
            if new_tensor:
                host_kwargs.setdefault("dtype", first.dtype)
                host = self._host(torch.tensor, (data,), host_kwargs)
            else:
                host = self._host(func, args, host_kwargs)
            return self._to_device(host, None, False, f"{name}(..., device=cuda)")

        if target is None:
            target = "dev" if dev_in else "host"
        if target == "host":
            return self._host(func, args, kwargs)
        if name in REGIONS and dev_in:
            return self._region(func, name, args, kwargs, tensors)
        return self._device(func, args, kwargs, tensors)

    def _region(self, func, name, args, kwargs, tensors):
        """One fused kernel: what CUDA launches for RMSNorm / attention, whatever the CPU
        decomposition dispatches underneath."""
        rec = self.rec
        at = rec.where()
        rec.region += 1
        try:
            out = self._device(func, args, kwargs, [])
        finally:
            rec.region -= 1
        if rec.region:
            return out
        outs = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        nbytes = sum(touched_bytes(t) for t in tensors) + sum(touched_bytes(t) for t in outs)
        kind = REGIONS[name]
        flops = 0.0
        dclass = "bf16"
        if kind == "attn":
            q, k, v = tensors[:3]
            flops = float(sdpa_flop_count(q.shape, k.shape, v.shape))
            dclass = dtype_class([q, k])
        rec.add(kind, f"{name} (fused)", flops, nbytes, dclass, at=at)
        rec.track(out, at[2], at[0])
        return out


def _from_project(frame) -> bool:
    return frame is not None and frame.f_code.co_filename.startswith(PKG_DIR)


_FAKE_DEVICE = FakeTensor.__dict__["device"]


def _spoofed_device(self):
    device = _FAKE_DEVICE.fget(self)
    if (
        device.type == "cpu"
        and not getattr(self, "_gm_host", False)
        and _from_project(sys._getframe(1))
    ):
        return CUDA
    return device


class _FakeCuda:
    """Stand-ins for the torch.cuda calls a CUDA branch makes (a CPU-only torch has none):
    events and streams do nothing; waiting on one from the tracing thread is a sync."""

    def __init__(self, rec: Recorder):
        self.rec = rec
        self.thread = threading.get_ident()
        self.saved: dict = {}

    def wait(self, what: str) -> None:
        if threading.get_ident() == self.thread:
            self.rec.add("read", what, sync=True)
        else:
            self.rec.thread_waits[what] += 1

    def __enter__(self):
        shim = self

        class Event:
            def __init__(self, *args, **kwargs):
                pass

            def record(self, stream=None):
                pass

            def wait(self, stream=None):
                pass

            def query(self):
                return True

            def synchronize(self):
                shim.wait("cuda.Event.synchronize()")

            def elapsed_time(self, other):
                return 0.0

        class Stream:
            def __init__(self, *args, **kwargs):
                pass

            def synchronize(self):
                shim.wait("cuda.Stream.synchronize()")

            def wait_stream(self, stream):
                pass

            def wait_event(self, event):
                pass

            def record_event(self, event=None):
                return event or Event()

            def query(self):
                return True

        stubs = {
            "Event": Event,
            "Stream": Stream,
            "synchronize": lambda *a, **k: shim.wait("cuda.synchronize()"),
            "current_stream": lambda *a, **k: Stream(),
            "default_stream": lambda *a, **k: Stream(),
            "stream": lambda *a, **k: contextlib.nullcontext(),
        }
        for key, value in stubs.items():
            self.saved[key] = getattr(torch.cuda, key, None)
            setattr(torch.cuda, key, value)
        # device data says cuda:0 to adastate_core code (FakeTensor.device is a Python
        # property, not a torch function); torch's own code keeps seeing the CPU
        FakeTensor.device = property(_spoofed_device)
        return self

    def __exit__(self, *exc):
        FakeTensor.device = _FAKE_DEVICE
        for key, value in self.saved.items():
            setattr(torch.cuda, key, value)


# ----------------------------------------------------------------------------------------------
# building the full-size models on fake tensors


def build_models(
    mode: FakeTensorMode,
    config: WanConfig,
    *,
    dtype: torch.dtype,
    precise: torch.dtype,
    weight_dtype: torch.dtype | None,
    vae_dim: int,
):
    """The DiT through the real loader (its dtype policy) and the VAE decoder with load_vae's
    policy (every tensor in the VAE dtype), all weights fake."""
    from adastate_core.model.loader import load_dit
    from adastate_core.vae.decoder import WanVAEDecoder

    with mode:
        sd = {k: torch.empty(s, dtype=torch.float32) for k, s in config.tensor_shapes().items()}
        dit = load_dit(
            sd,
            dtype=dtype,
            weight_dtype=weight_dtype,
            precise_dtype=precise,
            device="cpu",
            num_heads=config.num_heads,
            text_len=config.text_len,
            eps=config.eps,
        )
    del sd
    # `fingerprint` hashes weight values (host copies): with no values, a constant id. With
    # the memo hit of a steady stream it is host-only work, so nothing is lost.
    dit.fingerprint = lambda: "fake-weights"
    vae = WanVAEDecoder(vae_dim, 16, dtype=dtype, device="meta")  # load_vae's construction
    with mode:
        vsd = {k: torch.empty(t.shape, dtype=t.dtype) for k, t in vae.state_dict().items()}
    vae.load_state_dict(vsd, strict=True, assign=True)
    vae.eval().requires_grad_(False)
    return dit, vae


def _nbytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


class NullWriter:
    def write(self, frames) -> None:
        pass


@dataclass
class Trace:
    ops: list
    views: Counter
    chunks: int
    frames: dict  # chunk -> video frames the chunk produced
    peak: dict
    start: dict
    peak_line: dict
    global_peak: tuple
    weights: dict
    warnings: Counter
    settings: dict
    seconds: float = 0.0
    thread_waits: Counter = field(default_factory=Counter)
    notes: list = field(default_factory=list)


def trace_stream(
    config: WanConfig | None = None,
    *,
    height: int = 480,
    width: int = 832,
    dtype: torch.dtype = torch.bfloat16,
    precise: torch.dtype = torch.float32,
    weight_dtype: torch.dtype | None = None,
    vae_dim: int = 96,
    chunks: int | None = None,
    prompt_rows: int = 64,
    stream_kwargs: dict | None = None,
) -> Trace:
    """Run `pipeline.generate` for `chunks` chunks (chunk 0 .. chunks-1) of a fresh stream on
    fake models and record every op. The last chunk is the one reported; by default it is the
    second steady-state chunk (the first builds the steady window's memoised tables)."""
    from adastate_core.pipeline import generate
    from adastate_core.stream import StreamConfig, init_stream

    config = config or WanConfig()
    t0 = time.perf_counter()
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    rec = Recorder()
    dit, vae = build_models(
        mode, config, dtype=dtype, precise=precise, weight_dtype=weight_dtype, vae_dim=vae_dim
    )
    weights = {"dit": _nbytes(dit), "vae": _nbytes(vae)}
    for t in [*dit.parameters(), *dit.buffers(), *vae.parameters(), *vae.buffers()]:
        rec.track(t, "weights", "(weights)")
    scfg = StreamConfig(height=height, width=width, **(stream_kwargs or {}))
    if chunks is None:
        chunks = next(k for k in range(1, 10_000) if scfg.steady(k)) + 2
    # prompt rows: real host data, as the text encoder's output arrives
    rows = min(prompt_rows, config.text_len)
    cond = torch.randn(1, rows, config.text_dim, generator=torch.Generator().manual_seed(0))
    frames: dict[int, int] = {}

    def on_chunk(report) -> None:
        video = getattr(report, "video", None)  # the decoder output [B, 3, T, H, W]
        n = video.shape[2] if isinstance(video, Tensor) else report.frames.shape[0]
        frames[report.index] = int(n)
        rec.chunk = report.index + 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mode, rec, HostDevice(rec), _FakeCuda(rec):
            stream = init_stream(dit, cond, scfg)
            rec.chunk = 0
            result = generate(
                dit, vae, stream, NullWriter(), total_chunks=chunks, on_chunk=on_chunk
            )
            del result, stream
    settings = {
        "dit": dataclasses.asdict(config),
        "height": height,
        "width": width,
        "dtype": str(dtype).replace("torch.", ""),
        "precise": str(precise).replace("torch.", ""),
        "weight_dtype": str(weight_dtype or dtype).replace("torch.", ""),
        "vae_dim": vae_dim,
        "stream": dataclasses.asdict(scfg),
        "chunks": chunks,
    }
    return Trace(
        rec.ops,
        rec.views,
        chunks,
        frames,
        dict(rec.peak),
        dict(rec.start),
        dict(rec.peak_line),
        rec.global_peak,
        weights,
        rec.warnings,
        settings,
        time.perf_counter() - t0,
        rec.thread_waits,
    )


# ----------------------------------------------------------------------------------------------
# pricing and reporting

KERNEL_KINDS = ("gemm", "attn", "mem")
TRANSFER_KINDS = ("h2d", "d2h", "read")


def op_seconds(op: Op, roof: Roofline) -> float:
    if op.kind in KERNEL_KINDS:
        return roof.kernel_s(op.kind, op.flops, op.nbytes, op.dclass)
    if op.kind in ("h2d", "d2h"):
        return roof.transfer_s(op.nbytes, op.sync)
    if op.kind == "read":
        return roof.transfer_s(0, True)
    return 0.0


def phase_stats(ops: list[Op], roofs: dict[str, Roofline]) -> dict:
    kernels = [o for o in ops if o.kind in KERNEL_KINDS]
    out = {
        "kernels": len(kernels),
        "gemm_kernels": sum(o.kind == "gemm" for o in ops),
        "attention_kernels": sum(o.kind == "attn" for o in ops),
        "gemm_tflop": sum(o.flops for o in ops if o.kind == "gemm") / 1e12,
        "attention_tflop": sum(o.flops for o in ops if o.kind == "attn") / 1e12,
        "memory_bound_gb": sum(o.nbytes for o in ops if o.kind == "mem") / 1e9,
        "gemm_attention_gb": sum(o.nbytes for o in ops if o.kind in ("gemm", "attn")) / 1e9,
        "syncs": sum(o.sync for o in ops),
        "transfers": sum(o.kind in ("h2d", "d2h") for o in ops),
        "h2d_mb": sum(o.nbytes for o in ops if o.kind == "h2d") / 1e6,
        "d2h_mb": sum(o.nbytes for o in ops if o.kind == "d2h") / 1e6,
        "host_ops": sum(o.kind == "host" for o in ops),
        "dit_calls": len({o.dit_call for o in ops if o.dit_call}),
        "vae_decoder_calls": len({o.vae_call for o in ops if o.vae_call}),
    }
    for key, roof in roofs.items():
        parts = defaultdict(float)
        for o in ops:
            kind = "transfer" if o.kind in TRANSFER_KINDS else o.kind
            parts[kind] += op_seconds(o, roof)
        out[f"{key}_ms"] = sum(parts.values()) * 1e3
        out[f"{key}_parts_ms"] = {k: v * 1e3 for k, v in sorted(parts.items()) if k != "host"}
    return out


def top_lines(ops: list[Op], roof: Roofline, by: str, n: int) -> list[dict]:
    agg: dict[str, dict] = {}
    for o in ops:
        if o.kind not in KERNEL_KINDS or (by == "gb" and o.kind != "mem"):
            continue
        a = agg.setdefault(
            o.line, {"line": o.line, "kernels": 0, "gb": 0.0, "ms": 0.0, "callers": Counter()}
        )
        a["kernels"] += 1
        a["gb"] += o.nbytes / 1e9
        a["ms"] += op_seconds(o, roof) * 1e3
        a["callers"][o.caller] += 1
    rows = sorted(agg.values(), key=lambda a: -(a["gb"] if by == "gb" else a["kernels"]))[:n]
    for a in rows:
        a["callers"] = [c for c, _ in a["callers"].most_common(3)]
    return rows


def sync_sites(ops: list[Op]) -> list[dict]:
    agg: dict[tuple, dict] = {}
    for o in ops:
        if o.kind not in TRANSFER_KINDS:
            continue
        key = (o.line, o.kind, o.name, o.sync)
        a = agg.setdefault(
            key,
            {
                "line": o.line,
                "caller": o.caller,
                "phase": o.phase,
                "kind": o.kind,
                "what": o.name,
                "sync": o.sync,
                "count": 0,
                "mb": 0.0,
            },
        )
        a["count"] += 1
        a["mb"] += o.nbytes / 1e6
    return sorted(agg.values(), key=lambda a: (PHASE_ORDER.index(a["phase"]), a["line"]))


def first_frame(ops: list[Op], roofs: dict[str, Roofline], frame_bytes: int) -> dict | None:
    """Modelled GPU time from the start of chunk 0 until the first D2H copy of at least one
    frame (H*W*3 bytes) has completed: the first frame on the host, warm, no host time."""
    out = {}
    for key, roof in roofs.items():
        total = 0.0
        hit = None
        for o in ops:
            total += op_seconds(o, roof)
            if o.kind == "d2h" and o.nbytes >= frame_bytes:
                hit = o
                break
        if hit is None:
            return None
        out[f"{key}_ms"] = total * 1e3
        out["at"] = hit.line
    return out


def what_if(ops: list[Op], roofs: dict[str, Roofline], frames: int) -> dict:
    """The steady chunk with cuDNN / FlashAttention-3 attention (620 TFLOP/s) instead."""
    out = {}
    for key, roof in roofs.items():
        alt = dataclasses.replace(roof, attention_tflops=620.0)
        ms = sum(op_seconds(o, alt) for o in ops) * 1e3
        out[f"{key}_attention_620_ms"] = ms
        out[f"{key}_attention_620_fps"] = frames / (ms / 1e3) if ms > 0 else math.inf
    return out


def summarize(trace: Trace, roofs: dict[str, Roofline] | None = None, top: int = 10) -> dict:
    roofs = roofs or {"h100": H100, "h200": H200}
    steady = trace.chunks - 1
    ops = [o for o in trace.ops if o.chunk == steady]
    phases = [p for p in PHASE_ORDER if any(o.phase == p for o in ops)]
    rows = {}
    for p in phases:
        pops = [o for o in ops if o.phase == p]
        st = phase_stats(pops, roofs)
        st["view_ops"] = trace.views[(steady, p)]
        st["peak_live_gb"] = trace.peak.get((steady, p), 0) / 1e9
        st["live_at_start_gb"] = trace.start.get((steady, p), 0) / 1e9
        st["peak_at"] = trace.peak_line.get((steady, p), "")
        rows[p] = st
    total = phase_stats(ops, roofs)
    total["view_ops"] = sum(v for (c, _), v in trace.views.items() if c == steady)
    total["peak_live_gb"] = max((rows[p]["peak_live_gb"] for p in rows), default=0.0)
    frames = trace.frames.get(steady, 0)
    for key in roofs:
        ms = total[f"{key}_ms"]
        total[f"{key}_fps"] = frames / (ms / 1e3) if ms > 0 else math.inf
        dit_ms = sum(rows[p][f"{key}_ms"] for p in ("denoise", "update") if p in rows)
        total[f"{key}_dit_only_fps"] = frames / (dit_ms / 1e3) if dit_ms > 0 else math.inf
    dit_calls = defaultdict(list)
    for o in ops:
        if o.dit_call:
            dit_calls[o.dit_call].append(o)
    calls = []
    for cid in sorted(dit_calls):
        cops = dit_calls[cid]
        st = phase_stats(cops, roofs)
        st["phase"] = cops[0].phase
        calls.append(st)
    h, w = trace.settings["height"], trace.settings["width"]
    chunk0 = [o for o in trace.ops if o.chunk == 0]
    return {
        "note": MODEL_NOTE,
        "settings": trace.settings,
        "constants": {k: dataclasses.asdict(r) for k, r in roofs.items()},
        "rules": {"sync": SYNC_RULE, "memory": MEMORY_RULE},
        "steady_chunk": steady,
        "frames_per_chunk": frames,
        "frames_per_chunk_rule": "video frames the chunk's decode returns (to_frames output): "
        "4*C for a steady chunk (TIME_FACTOR 4 per latent frame), 1+4(C-1) for chunk 0",
        "frames_by_chunk": trace.frames,
        "weights_gb": {k: v / 1e9 for k, v in trace.weights.items()},
        "phases": rows,
        "total": total,
        "dit_calls": calls,
        "first_frame": first_frame(chunk0, roofs, h * w * 3),
        "chunk0": phase_stats(chunk0, roofs),
        "global_peak_gb": trace.global_peak[0] / 1e9,
        "global_peak_chunk": trace.global_peak[1],
        "global_peak_at": trace.global_peak[2],
        "syncs_by_site": sync_sites(ops),
        "top_lines_by_memory_gb": top_lines(ops, roofs[next(iter(roofs))], "gb", top),
        "top_lines_by_kernels": top_lines(ops, roofs[next(iter(roofs))], "kernels", top),
        "warnings": dict(trace.warnings),
        "other_thread_waits": dict(trace.thread_waits),
        "what_if": what_if(ops, roofs, frames),
        "trace_seconds": trace.seconds,
        "ops_recorded": len(trace.ops),
    }


def render(s: dict) -> str:
    st = s["settings"]
    d = st["dit"]
    sc = st["stream"]
    keys = [k for k in s["constants"]]
    names = {k: s["constants"][k]["name"] for k in keys}
    lines = [
        "GPU cost MODEL of one steady streaming chunk (adastate benchmarks/gpu_model.py)",
        "",
        s["note"],
        "",
        f"DiT dim {d['dim']} x {d['num_layers']} layers, ffn {d['ffn_dim']}, "
        f"{d['num_heads']} heads, text_len {d['text_len']}; video {st['height']}x{st['width']}; "
        f"compute {st['dtype']}, precise {st['precise']}, linear weights {st['weight_dtype']}; "
        f"VAE dim {st['vae_dim']} {st['dtype']}",
        f"stream: policy {sc['policy']}, chunk C={sc['chunk']}, state S={sc['state']}, window "
        f"W={sc['window']}, {len(sc['steps'])} steps; traced chunks 0..{s['steady_chunk']}, "
        f"reported: chunk {s['steady_chunk']} (steady)",
        "fake CPU tensors stand in for CUDA ones (a CPU-only torch cannot index fake CUDA "
        "tensors); they report cuda:0 to adastate_core code, so its CUDA branches run; CPU's "
        "decomposed F.rms_norm and SDPA are priced as one fused CUDA kernel each",
        f"weights: DiT {s['weights_gb']['dit']:.2f} GB, VAE {s['weights_gb']['vae']:.3f} GB",
        "",
    ]
    hdr = (
        f"{'phase':<9}{'kernels':>8}{'views':>7}{'GEMM TF':>9}{'attn TF':>9}{'mem GB':>8}"
        f"{'syncs':>6}{'peak GB':>9}" + "".join(f"{names[k][:8] + ' ms':>12}" for k in keys)
    )
    lines += [hdr, "-" * len(hdr)]

    def row(name, r):
        return (
            f"{name:<9}{r['kernels']:>8}{r['view_ops']:>7}{r['gemm_tflop']:>9.2f}"
            f"{r['attention_tflop']:>9.2f}{r['memory_bound_gb']:>8.1f}{r['syncs']:>6}"
            f"{r['peak_live_gb']:>9.2f}" + "".join(f"{r[f'{k}_ms']:>12.1f}" for k in keys)
        )

    for p, r in s["phases"].items():
        lines.append(row(p, r))
    lines += ["-" * len(hdr), row("total", s["total"]), ""]
    t = s["total"]
    for k in keys:
        lines.append(
            f"{names[k]}: {t[f'{k}_ms']:.0f} ms per chunk of {s['frames_per_chunk']} frames -> "
            f"{t[f'{k}_fps']:.1f} FPS (DiT alone {t[f'{k}_dit_only_fps']:.1f} FPS); parts: "
            + ", ".join(f"{n} {v:.0f}" for n, v in t[f"{k}_parts_ms"].items())
            + " ms"
        )
    wi = s["what_if"]
    lines.append(
        "with cuDNN/FA3 attention (620 TFLOP/s): "
        + ", ".join(
            f"{names[k]} {wi[f'{k}_attention_620_ms']:.0f} ms ({wi[f'{k}_attention_620_fps']:.1f}"
            " FPS)"
            for k in keys
        )
    )
    lines.append(f"frames per chunk: {s['frames_per_chunk_rule']}")
    ff = s["first_frame"]
    if ff:
        lines.append(
            "first frame on the host (chunk 0 from its start, warm, GPU only, until the first "
            f"frame-sized D2H at {ff['at']}): "
            + ", ".join(f"{names[k]} {ff[f'{k}_ms']:.0f} ms" for k in keys)
        )
    lines.append(
        f"peak live (allocated) over the whole run: {s['global_peak_gb']:.2f} GB in chunk "
        f"{s['global_peak_chunk']} at {s['global_peak_at']}"
    )
    for p, r in s["phases"].items():
        lines.append(
            f"  {p:<8} live at start {r['live_at_start_gb']:.2f} GB, peak "
            f"{r['peak_live_gb']:.2f} GB at {r['peak_at']}; DiT calls {r['dit_calls']}, VAE "
            f"decoder calls {r['vae_decoder_calls']}, host ops {r['host_ops']}"
        )
    if s["dit_calls"]:
        c = s["dit_calls"][0]
        k0 = keys[0]
        lines.append(
            f"one DiT call ({c['phase']}): {c['kernels']} kernels ({c['gemm_kernels']} GEMM, "
            f"{c['attention_kernels']} attention), GEMM {c['gemm_tflop']:.2f} TF, attention "
            f"{c['attention_tflop']:.2f} TF, memory-bound {c['memory_bound_gb']:.1f} GB, "
            f"{names[k0]} {c[f'{k0}_ms']:.1f} ms"
        )
    lines += ["", f"host<->device transfers and syncs of chunk {s['steady_chunk']} by call site:"]
    for a in s["syncs_by_site"]:
        tag = "SYNC" if a["sync"] else "async"
        lines.append(
            f"  {a['count']:>3} x {tag:<5} {a['kind']:<4} {a['what']:<28} {a['mb']:>9.3f} MB  "
            f"[{a['phase']}] {a['line']}" + (f" <- {a['caller']}" if a["caller"] else "")
        )
    k0 = keys[0]
    lines += ["", f"top source lines by memory-bound GB ({names[k0]} ms):"]
    for a in s["top_lines_by_memory_gb"]:
        lines.append(
            f"  {a['gb']:>8.2f} GB {a['kernels']:>6} kernels {a['ms']:>7.1f} ms  {a['line']}"
            + (f" <- {', '.join(c for c in a['callers'] if c)}" if any(a["callers"]) else "")
        )
    lines += ["", "top source lines by kernel count:"]
    for a in s["top_lines_by_kernels"]:
        lines.append(
            f"  {a['kernels']:>6} kernels {a['gb']:>8.2f} GB {a['ms']:>7.1f} ms  {a['line']}"
            + (f" <- {', '.join(c for c in a['callers'] if c)}" if any(a["callers"]) else "")
        )
    if s["other_thread_waits"]:
        lines += ["", "waits in other threads (not on the main thread's path):"]
        lines += [f"  {n} x {w}" for w, n in s["other_thread_waits"].items()]
    if s["warnings"]:
        lines += ["", "warnings:"] + [f"  {n} x {w}" for w, n in s["warnings"].items()]
    lines += ["", "constants (effective rates):"]
    for c in s["constants"].values():
        lines.append(
            f"  {c['name']}: GEMM/conv {c['gemm_tflops']:g} TFLOP/s (fp32 {c['fp32_tflops']:g}, "
            f"fp8 {c['fp8_tflops']:g}), attention {c['attention_tflops']:g} TFLOP/s, HBM "
            f"{c['hbm_tbs']:g} TB/s, {c['kernel_us']:g} us/kernel floor, PCIe "
            f"{c['pcie_gbs']:g} GB/s blocking / {c['pcie_async_gbs']:g} GB/s async, "
            f"{c['sync_us']:g} us per sync"
        )
    lines += [
        "kernel time = max(FLOPs/rate, bytes/HBM, floor); 'mem GB' = bytes read+written by "
        "kernels that are neither GEMM/conv nor attention; 'kernels' excludes view/metadata "
        "ops ('views') and bare allocations",
        "syncs: " + s["rules"]["sync"],
        "memory: " + s["rules"]["memory"],
        f"(traced {s['ops_recorded']} ops in {s['trace_seconds']:.0f} s)",
    ]
    return "\n".join(lines)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument(
        "--dtype",
        choices=("bf16", "fp16", "fp32"),
        default="bf16",
        help="DiT compute dtype and VAE dtype (the CUDA default is bf16)",
    )
    p.add_argument(
        "--precise",
        choices=("bf16", "fp32"),
        default="fp32",
        help="residual stream / modulation / norms / head dtype",
    )
    p.add_argument(
        "--weight-dtype",
        choices=("bf16", "fp16", "fp32", "fp8"),
        default=None,
        help="storage of the DiT linear weights (default: the compute dtype)",
    )
    p.add_argument(
        "--chunks",
        type=int,
        default=None,
        help="chunks run, the last is reported (default: up to the second steady "
        "chunk, 4 for C=3 W=3)",
    )
    p.add_argument("--chunk", type=int, default=3, help="latent frames per chunk (C)")
    p.add_argument("--state", type=int, default=1)
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--policy", default="adaptive")
    p.add_argument("--vae-dim", type=int, default=96)
    p.add_argument("--dit", choices=("1.3B", "14B"), default="1.3B")
    p.add_argument("--gemm-tflops", type=float, default=H100.gemm_tflops)
    p.add_argument("--attention-tflops", type=float, default=H100.attention_tflops)
    p.add_argument("--fp32-tflops", type=float, default=H100.fp32_tflops)
    p.add_argument("--fp8-tflops", type=float, default=H100.fp8_tflops)
    p.add_argument("--hbm-tbs", type=float, default=H100.hbm_tbs, help="H100 HBM, TB/s")
    p.add_argument("--h200-hbm-tbs", type=float, default=H200.hbm_tbs)
    p.add_argument("--kernel-us", type=float, default=H100.kernel_us)
    p.add_argument("--pcie-gbs", type=float, default=H100.pcie_gbs)
    p.add_argument("--sync-us", type=float, default=H100.sync_us)
    p.add_argument("--top", type=int, default=10)
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        help="write the full result as JSON to this file ('-' or no value: stdout, "
        "instead of the table)",
    )
    args = p.parse_args(argv)

    h100 = dataclasses.replace(
        H100,
        gemm_tflops=args.gemm_tflops,
        attention_tflops=args.attention_tflops,
        fp32_tflops=args.fp32_tflops,
        fp8_tflops=args.fp8_tflops,
        hbm_tbs=args.hbm_tbs,
        kernel_us=args.kernel_us,
        pcie_gbs=args.pcie_gbs,
        sync_us=args.sync_us,
    )
    h200 = dataclasses.replace(h100, name="H200", hbm_tbs=args.h200_hbm_tbs)
    from adastate_core.model.config import KNOWN_SIZES

    config = KNOWN_SIZES["Wan2.1-T2V-14B" if args.dit == "14B" else "Wan2.1-T2V-1.3B"]
    wdt = torch.float8_e4m3fn if args.weight_dtype == "fp8" else DTYPES.get(args.weight_dtype)
    trace = trace_stream(
        config,
        height=args.height,
        width=args.width,
        dtype=DTYPES[args.dtype],
        precise=DTYPES[args.precise],
        weight_dtype=wdt,
        vae_dim=args.vae_dim,
        chunks=args.chunks,
        stream_kwargs={
            "chunk": args.chunk,
            "state": args.state,
            "window": args.window,
            "policy": args.policy,
        },
    )
    summary = summarize(trace, {"h100": h100, "h200": h200}, top=args.top)
    text = json.dumps(_jsonable(summary), indent=1)
    if args.json == "-":
        print(text)
    else:
        print(render(summary))
        if args.json:
            Path(args.json).write_text(text)
            print(f"JSON written to {args.json}")
    return summary


if __name__ == "__main__":
    main()
