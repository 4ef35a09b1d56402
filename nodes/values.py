"""Values passed between AdaState nodes (docs/nodes.md "Custom types"). All frozen: ComfyUI
hands the same cached objects to later runs, so nothing here is ever modified; an "update"
builds a new value (sharing unchanged tensors)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from adastate_core.model import CausalWanDiT, CrossKV
from adastate_core.model.external import ExternalWanDiT
from adastate_core.stream import CachedFrames, Chunk, StreamConfig, StreamState


@dataclass(frozen=True)
class AdaStateModel:
    """ADASTATE_MODEL: the stream's DiT and the comfy ModelPatcher that ComfyUI's memory
    manager loads: our own DiT in a patcher of ours (Load AdaState Model), or an
    ExternalWanDiT over a ComfyUI MODEL's layers with that MODEL's patcher (AdaState from
    MODEL)."""

    patcher: Any
    dit: CausalWanDiT | ExternalWanDiT
    file: str
    weight_dtype: str
    attention: str


@dataclass(frozen=True)
class NodeStream:
    """ADASTATE_STREAM: the core stream state and the clean content latents of chunks 0..k-1
    (CPU; what makes chunk-wise decoding exact in any execution order)."""

    state: StreamState
    history: tuple[Tensor, ...] = ()
    # a primed stream (Prime Stream): the given frames, uint8 [T, H, W, 3] CPU, that Generate
    # Stream writes first ("original" output); None: it writes the decoded history instead
    prefix_frames: Tensor | None = None


@dataclass(frozen=True)
class NodeChunk:
    """ADASTATE_CHUNK: a denoised chunk and the content latents of the chunks before it.

    switched: when Denoise Chunk switched the prompt, the stream state (with the new prompt)
    the chunk was denoised from, and `parent` the token of the stream it was switched from, so
    Update State continues under the new prompt."""

    chunk: Chunk
    history: tuple[Tensor, ...]
    config: StreamConfig
    switched: StreamState | None = None
    parent: str | None = None


@dataclass(frozen=True)
class DecoderState:
    """ADASTATE_DECODER: the Wan VAE decoder after the chunks it has decoded, named by the
    content hashes of their latents. Decode passes it to the next chunk's Decode, so the graph
    orders the decodes and each chunk is decoded once. The causal cache itself (~1.9 GB at
    480x832) is not in the value: it lives in the Decode nodes' bounded memo under this key and
    is rebuilt exactly from the chunk history if it was dropped."""

    decoder: str  # the memo token of the decoder (one per native VAE)
    hashes: tuple[str, ...]

    @property
    def chunks(self) -> int:
        return len(self.hashes)


@dataclass(frozen=True)
class PromptList:
    """ADASTATE_PROMPTS: (seconds, CONDITIONING) switch points, first at 0 s."""

    entries: tuple[tuple[float, Any], ...]
    recache: bool = False


def _to(t: Tensor | None, device: torch.device) -> Tensor | None:
    return None if t is None else t.to(device)


def frames_to(frames: CachedFrames | None, device: torch.device) -> CachedFrames | None:
    if frames is None:
        return None
    return CachedFrames(frames.k.to(device), frames.v.to(device), _to(frames.latent, device))


def state_to(state: StreamState, device: torch.device) -> StreamState:
    """The same stream state with its tensors on `device` (a new value; tensors already there
    are shared, never copied into)."""
    return dataclasses.replace(
        state,
        window=frames_to(state.window, device),
        anchor=frames_to(state.anchor, device),
        conditioning=state.conditioning.to(device),
        prompt=CrossKV(state.prompt.k.to(device), state.prompt.v.to(device)),
        lead=_to(state.lead, device),
    )


def chunk_to(chunk: Chunk, device: torch.device) -> Chunk:
    return dataclasses.replace(
        chunk, content=chunk.content.to(device), state=_to(chunk.state, device)
    )
