"""Exact-seam chunk-wise decoding in any order: a small LRU memo of decoder caches.

The Wan VAE decoder is causal: chunk k's frames depend on every latent before it. To decode
chunk k we look up the longest prefix of the latents before it whose decoder cache is in the
memo (keys are content hashes, so a changed upstream latent never reuses a stale cache), decode
the missing chunks (frames discarded), then chunk k: identical frames to a one-shot decode.
"""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from ..tensor_utils import tensor_version
from ..vae import DecoderCache, WanVAEDecoder

_DIGESTS: dict[int, tuple[weakref.ref, int, str]] = {}


def tensor_digest(t: Tensor) -> str:
    """A content hash of a tensor (shape, dtype and bytes); memoised per live tensor."""
    memo = _DIGESTS.get(id(t))
    if memo is not None and memo[0]() is t and memo[1] == tensor_version(t):
        return memo[2]
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(data.tobytes())
    digest = h.hexdigest()
    if len(_DIGESTS) > 4096:
        for key in [k for k, v in _DIGESTS.items() if v[0]() is None]:
            del _DIGESTS[key]
    _DIGESTS[id(t)] = (weakref.ref(t), tensor_version(t), digest)
    return digest


class DecodeMemo:
    """LRU of decoder caches keyed by (decoder, hashes of the latents decoded so far)."""

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, DecoderCache] = OrderedDict()
        self.decoded_chunks = 0  # chunks run through a decoder (statistics for tests)

    def clear(self) -> None:
        self._entries.clear()

    @staticmethod
    def _decoder_key(decoder: WanVAEDecoder) -> str:
        token = decoder.__dict__.get("_memo_token")
        if token is None:
            token = decoder.__dict__["_memo_token"] = uuid.uuid4().hex
        return token

    def _store(self, key: tuple, cache: DecoderCache) -> None:
        self._entries[key] = cache
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def decode(self, decoder: WanVAEDecoder, history: Sequence[Tensor], z: Tensor) -> Tensor:
        """Decode latent chunk `z` [B, 16, C, h, w] (normalised) that follows the chunks in
        `history` (same layout) -> video [B, 3, T, 8h, 8w] in 0..1, exactly the frames a
        one-shot decode of history + z gives for z."""
        owner = self._decoder_key(decoder)
        hashes = [tensor_digest(t) for t in history]
        start, cache = 0, None
        for i in range(len(history), 0, -1):
            found = self._entries.get((owner, tuple(hashes[:i])))
            if found is not None:
                start, cache = i, found
                self._entries.move_to_end((owner, tuple(hashes[:i])))
                break
        device = decoder.device
        for j in range(start, len(history)):
            _, cache = decoder.decode_chunk(history[j].to(device), cache)
            self.decoded_chunks += 1
        video, cache = decoder.decode_chunk(z.to(device), cache)
        self.decoded_chunks += 1
        self._store((owner, (*hashes, tensor_digest(z))), cache)
        return video
