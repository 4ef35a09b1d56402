"""Peak memory while loading a DiT checkpoint: safetensors are read tensor by tensor, so the
anonymous (non-file-backed) memory peak is the loaded model itself, not model + file.

    python benchmarks/load_memory.py            # writes a ~820 MiB fp32 checkpoint to a temp dir
    python benchmarks/load_memory.py --dim 1536 --layers 30    # 1.3B size (5.7 GB file)

Linux only (reads /proc/self/status; a sampling thread records the RssAnon peak)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys, threading, time, torch
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
from adastate_core.model import load_dit
torch.zeros(1)
base, peak, stop = status("RssAnon"), [0.0], [False]
def sample():
    while not stop[0]:
        peak[0] = max(peak[0], status("RssAnon")); time.sleep(0.002)
t = threading.Thread(target=sample); t.start()
model = load_dit(sys.argv[1], dtype=sys.argv[2])
stop[0] = True; t.join()
size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
print(f"{sys.argv[2]:>5}: model {size:7.0f} MiB | anonymous memory peak - before = "
      f"{peak[0] - base:7.0f} MiB ({(peak[0] - base) / size:.2f}x the model)")
"""


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from safetensors.torch import save_file

    from adastate_core.model import WanConfig
    from adastate_core.model.random_weights import random_state_dict

    cfg = WanConfig(
        dim=args.dim, ffn_dim=4 * args.dim, num_heads=args.dim // 128, num_layers=args.layers
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dit.safetensors"
        save_file(random_state_dict(cfg), str(path))
        print(
            f"checkpoint: {path.stat().st_size / 2**20:.0f} MiB fp32 safetensors "
            f"(dim {cfg.dim}, {cfg.num_layers} layers)"
        )
        for dtype in ("fp32", "bf16"):
            subprocess.run(
                [sys.executable, "-c", CHILD, str(path), dtype],
                check=True,
                cwd=Path(__file__).resolve().parents[1],
            )


if __name__ == "__main__":
    main()
