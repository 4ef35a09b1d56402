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
    """Bounded store of decoder caches keyed by (decoder, hashes of the latents decoded so far).

    Storing the cache after chunk k drops the one after chunk k-1 of the same video (its only
    use was to decode chunk k), so a chain of decodes holds one cache, and `max_entries` bounds
    what several interleaved videos hold (each cache is ~1.9 GB at 480x832 bf16)."""

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, DecoderCache] = OrderedDict()
        self.decoded_chunks = 0  # chunks run through a decoder (statistics for tests)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def decoder_key(decoder: WanVAEDecoder) -> str:
        """A token naming `decoder` (its caches are only valid for it)."""
        token = decoder.__dict__.get("_memo_token")
        if token is None:
            token = decoder.__dict__["_memo_token"] = uuid.uuid4().hex
        return token

    def holds(self, decoder: WanVAEDecoder, hashes: Sequence[str]) -> bool:
        """Whether the cache after the latents with these hashes is stored."""
        return (self.decoder_key(decoder), tuple(hashes)) in self._entries

    def _store(self, key: tuple, cache: DecoderCache) -> None:
        owner, hashes = key
        self._entries.pop((owner, hashes[:-1]), None)  # the parent: superseded
        self._entries[key] = cache
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def decode(
        self, decoder: WanVAEDecoder, history: Sequence[Tensor], z: Tensor
    ) -> tuple[Tensor, tuple[str, ...]]:
        """Decode latent chunk `z` [B, 16, C, h, w] (normalised) that follows the chunks in
        `history` (same layout) -> (video [B, 3, T, 8h, 8w] in 0..1, exactly the frames a
        one-shot decode of history + z gives for z; the hashes of history + z, the key of the
        decoder cache now stored for the next chunk)."""
        owner = self.decoder_key(decoder)
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
        key = (*hashes, tensor_digest(z))
        self._store((owner, key), cache)
        return video, key
