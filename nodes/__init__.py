"""ComfyUI node classes: thin adapters over adastate_core (docs/nodes.md). This registry is
what ComfyUI reads; only `bridge` touches ComfyUI itself."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("adastate_core") is None:  # the pack folder, not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from .analysis_nodes import AttentionProbe  # noqa: E402
from .decode_nodes import Decode, DecodeState  # noqa: E402
from .evaluate_node import Evaluate  # noqa: E402
from .generate_node import Generate  # noqa: E402
from .loader_nodes import LoadModel, NativeModel  # noqa: E402
from .stream_nodes import (  # noqa: E402
    DenoiseChunk,
    InitCache,
    PrimeStream,
    PromptScheduleNode,
    UpdateState,
)
from .video_nodes import VideoCombine  # noqa: E402

_NODES = (
    ("AdaState_LoadModel", LoadModel, "Load AdaState Model"),
    ("AdaState_InitCache", InitCache, "AdaState Init Cache"),
    ("AdaState_DenoiseChunk", DenoiseChunk, "AdaState Denoise Chunk"),
    ("AdaState_UpdateState", UpdateState, "AdaState Update State"),
    ("AdaState_Decode", Decode, "AdaState Decode Chunk"),
    ("AdaState_VideoCombine", VideoCombine, "Video Combine (AdaState)"),
    ("AdaState_Generate", Generate, "Generate Stream (AdaState)"),
    ("AdaState_PromptSchedule", PromptScheduleNode, "AdaState Prompt Schedule"),
    ("AdaState_DecodeState", DecodeState, "AdaState Decode Hidden State"),
    ("AdaState_AttentionProbe", AttentionProbe, "AdaState Attention Probe"),
    ("AdaState_NativeModel", NativeModel, "AdaState from MODEL"),
    ("AdaState_PrimeStream", PrimeStream, "AdaState Prime Stream"),
    ("AdaState_Evaluate", Evaluate, "AdaState Evaluate"),
)

NODE_CLASS_MAPPINGS: dict[str, type] = {node_id: cls for node_id, cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {node_id: name for node_id, _, name in _NODES}
