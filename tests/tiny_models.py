"""A complete tiny model set in ComfyUI's `models/` layout, written with random weights:
a Self-Forcing-style causal DiT `.pt`, a Wan2.1 VAE and a umT5 text encoder with its
SentencePiece tokenizer embedded (trained here on a toy corpus). Nothing is downloaded."""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import torch
from safetensors.torch import save_file

from adastate_core.model.random_weights import TINY, save_random_checkpoint
from adastate_core.vae.random_weights import random_state_dict as random_vae

WORDS = (
    "a the red blue fox cat dog bird running walking through snow river city night day "
    "light camera aerial view of in on at with sky mountain forest street rain sun"
).split()


def train_spiece(vocab: int = 200) -> bytes:
    import sentencepiece as spm

    rng = random.Random(0)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words = WORDS + ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(300)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(1500)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=vocab,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return buf.getvalue()


def random_umt5(d_model: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """transformers-named weights of a 2-layer umT5 encoder (ComfyUI's file layout)."""
    import transformers

    cfg = transformers.UMT5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=8,
        num_heads=4,
        d_ff=64,
        num_layers=2,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
    )
    with torch.device("meta"):
        shapes = {
            k: tuple(v.shape)
            for k, v in transformers.UMT5EncoderModel(cfg).state_dict().items()
            if k != "encoder.embed_tokens.weight"
        }
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        t = 1.0 + 0.1 * t if "layer_norm" in key else t / math.sqrt(shape[-1])
        out[key] = t.half()
    return out


def write_tiny_models(root: Path) -> dict[str, Path]:
    """root/diffusion_models/self_forcing_dmd.pt, root/vae/wan_2.1_vae.safetensors,
    root/text_encoders/umt5_xxl_fp16.safetensors (tiny, random)."""
    paths = {
        "dit": root / "diffusion_models" / "self_forcing_dmd.pt",
        "vae": root / "vae" / "wan_2.1_vae.safetensors",
        "text_encoder": root / "text_encoders" / "umt5_xxl_fp16.safetensors",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    save_random_checkpoint(paths["dit"], TINY, seed=1, layout="self-forcing")
    save_file(random_vae(dim=8, seed=2, encoder=True), str(paths["vae"]))
    proto = train_spiece()
    spiece = torch.frombuffer(bytearray(proto), dtype=torch.uint8).clone()
    save_file(
        {**random_umt5(TINY.text_dim, 256), "spiece_model": spiece}, str(paths["text_encoder"])
    )
    return paths
