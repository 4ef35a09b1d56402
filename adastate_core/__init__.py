"""AdaState: streaming text-to-video on a causal Wan2.1 DiT with a self-evolving anchor state.

Pure PyTorch; never imports ComfyUI.
"""

__version__ = "0.1.0"
