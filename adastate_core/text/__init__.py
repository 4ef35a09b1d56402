"""Standalone umT5-XXL text encoding for Wan2.1 (outside ComfyUI), with an on-disk cache.

Needs the optional extras `pip install 'adastate[text]'` (transformers, sentencepiece, ftfy);
importing this package does not import transformers.

    from adastate_core.text import encode_prompts, pad_embeddings
    embs = encode_prompts(["a red fox in snow"], "umt5_xxl_fp16.safetensors", cache_dir="cache")
    context = pad_embeddings(embs)  # [B, 512, 4096], what the DiT takes
"""

from .cache import EmbeddingCache, file_identity
from .clean import clean_text
from .encoder import (
    TextCheckpoint,
    TextEncoder,
    encode_prompts,
    encoder_identity,
    load_text_encoder,
    pad_embeddings,
    read_text_checkpoint,
)
from .tokenizer import EOS_ID, MAX_LENGTH, PAD_ID, UMT5Tokenizer, load_tokenizer

__all__ = [
    "EOS_ID",
    "MAX_LENGTH",
    "PAD_ID",
    "EmbeddingCache",
    "TextCheckpoint",
    "TextEncoder",
    "UMT5Tokenizer",
    "clean_text",
    "encode_prompts",
    "encoder_identity",
    "file_identity",
    "load_text_encoder",
    "load_tokenizer",
    "pad_embeddings",
    "read_text_checkpoint",
]
