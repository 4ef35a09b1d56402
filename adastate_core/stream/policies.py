"""Anchor policies (DESIGN.md §2.4): what occupies the anchor slot, and whether a live state is
denoised with each steady-state chunk. One window machinery serves them all; a policy only
decides the anchor's initial value (from chunk 0) and its next value after each chunk."""

from __future__ import annotations

from .config import StreamConfig
from .state import CachedFrames


class AnchorPolicy:
    """Base: no anchor, no live state (`none`: Self-Forcing with a rolling window)."""

    name = "none"

    def live_state_frames(self, cfg: StreamConfig) -> int:
        return 0

    def needs_evicted(self) -> bool:
        return False

    def initial(self, cfg: StreamConfig, chunk0: CachedFrames) -> CachedFrames | None:
        """The anchor after chunk 0, from chunk 0's clean cache-write K/V."""
        return None

    def next(
        self,
        cfg: StreamConfig,
        anchor: CachedFrames | None,
        state: CachedFrames | None,
        evicted: CachedFrames | None,
    ) -> CachedFrames | None:
        """The anchor after a later chunk. state: the clean K/V of the live state (None
        before steady state); evicted: content frames that just left the window."""
        return anchor


class Adaptive(AnchorPolicy):
    """AdaState: the anchor is the state; s_0 = chunk 0's first S frames, then the clean state
    K/V of every steady-state chunk overwrites it."""

    name = "adaptive"

    def live_state_frames(self, cfg):
        return cfg.state

    def initial(self, cfg, chunk0):
        return chunk0.frames(0, cfg.state)

    def next(self, cfg, anchor, state, evicted):
        return anchor if state is None else state


class Static(AnchorPolicy):
    """A sink pinned to the first A frames' clean K/V (LongLive / Rolling Forcing)."""

    name = "static"

    def initial(self, cfg, chunk0):
        return chunk0.frames(0, cfg.anchor_frames)


class Ema(AnchorPolicy):
    """A sink of A frames, initialised like `static`; each evicted frame e (oldest first) is
    folded into every anchor frame: anchor <- alpha*anchor + (1-alpha)*e (Reward Forcing).
    Accumulated in fp32 (alpha = 0.999 is below bf16 resolution); it has no latent."""

    name = "ema"

    def needs_evicted(self):
        return True

    def initial(self, cfg, chunk0):
        first = chunk0.frames(0, cfg.anchor_frames)
        return CachedFrames(first.k.float(), first.v.float(), None)

    def next(self, cfg, anchor, state, evicted):
        if evicted is None or anchor is None:
            return anchor
        a = cfg.ema_alpha
        k, v = anchor.k, anchor.v
        for f in range(evicted.num_frames):
            k = a * k + (1 - a) * evicted.k[:, :, f : f + 1].float()
            v = a * v + (1 - a) * evicted.v[:, :, f : f + 1].float()
        return CachedFrames(k, v, None)


class AdaptiveSink(AnchorPolicy):
    """Paper ablation: a static sink (A frames) followed by the adaptive state (S frames)."""

    name = "adaptive+sink"

    def live_state_frames(self, cfg):
        return cfg.state

    def initial(self, cfg, chunk0):
        return CachedFrames.cat([chunk0.frames(0, cfg.anchor_frames), chunk0.frames(0, cfg.state)])

    def next(self, cfg, anchor, state, evicted):
        if state is None:
            return anchor
        return CachedFrames.cat([anchor.frames(0, cfg.anchor_frames), state])


POLICY_CLASSES = {cls.name: cls for cls in (Adaptive, Static, Ema, AnchorPolicy, AdaptiveSink)}


def policy_for(cfg: StreamConfig) -> AnchorPolicy:
    return POLICY_CLASSES[cfg.policy]()
