"""The AdaState streaming engine (DESIGN.md §2): immutable stream state, anchor policies,
chunked denoiser, unbounded streams, save and resume.

    stream = init_stream(model, conditioning, StreamConfig(height=480, width=832))
    chunk = denoise_chunk(model, stream)          # paper Eq. 2
    stream = update_state(model, stream, chunk)   # paper Eq. 3
"""

from .config import FPS, POLICIES, StreamConfig, StreamConfigError
from .engine import (
    Layout,
    StreamError,
    chunk_seed,
    denoise_chunk,
    draw_noise,
    init_stream,
    prepare_conditioning,
    set_prompt,
    update_state,
    window_layout,
)
from .iterate import PromptSchedule, StreamStep, stream_chunks
from .persist import (
    is_stream_state,
    load_stream,
    load_stream_with_extras,
    read_extras,
    save_stream,
    saved_settings,
)
from .policies import POLICY_CLASSES, AnchorPolicy, policy_for
from .prime import prime
from .schedule import SigmaSchedule, renoise, shift_sigma, sigma_grid, x0_from_velocity
from .state import CachedFrames, Chunk, ChunkNoise, StreamState

__all__ = [
    "FPS",
    "POLICIES",
    "POLICY_CLASSES",
    "AnchorPolicy",
    "CachedFrames",
    "Chunk",
    "ChunkNoise",
    "Layout",
    "PromptSchedule",
    "SigmaSchedule",
    "StreamConfig",
    "StreamConfigError",
    "StreamError",
    "StreamState",
    "StreamStep",
    "chunk_seed",
    "denoise_chunk",
    "draw_noise",
    "init_stream",
    "is_stream_state",
    "load_stream",
    "load_stream_with_extras",
    "policy_for",
    "read_extras",
    "prepare_conditioning",
    "prime",
    "renoise",
    "save_stream",
    "saved_settings",
    "set_prompt",
    "shift_sigma",
    "sigma_grid",
    "stream_chunks",
    "update_state",
    "window_layout",
    "x0_from_velocity",
]
