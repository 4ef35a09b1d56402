"""Standalone umT5 text encoding: every checkpoint layout, tokenisation rules, cache, errors.

A tiny umT5 (vocab 384, d_model 32, 2 layers, 4 heads, d_ff 64) with random weights and a
SentencePiece model trained here (pad 0, eos 1, unk 2, no bos, as umT5's) are written in each
supported on-disk layout; all must encode identically and match transformers run directly and
a transcription of the official Wan `T5Encoder` forward.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip(
    "transformers", reason="text encoding needs the [text] extra (transformers)"
)
spm = pytest.importorskip(
    "sentencepiece", reason="text encoding needs the [text] extra (sentencepiece)"
)

import adastate_core.text.encoder as text_encoder  # noqa: E402
from adastate_core.errors import AdaStateError, CheckpointError  # noqa: E402
from adastate_core.model.random_weights import save_random_checkpoint  # noqa: E402
from adastate_core.text import (  # noqa: E402
    EmbeddingCache,
    TextEncoder,
    clean_text,
    encode_prompts,
    encoder_identity,
    load_text_encoder,
    load_tokenizer,
    pad_embeddings,
)

VOCAB, D_MODEL, D_KV, HEADS, D_FF, LAYERS = 384, 32, 8, 4, 64, 2
TOL = 1e-5
PROMPTS = [
    "a red fox running through fresh snow",
    "  A   cat &amp;amp; a dog\n\tsitting on the grass  ",
    "",
    "über café — 東京 at night",
    "the quick brown fox " * 12,
]
WORDS = (
    "a the red blue green fox cat dog bird running walking sitting through over under fresh "
    "snow grass river city night day light dark quick brown lazy jumps slowly fast camera "
    "shot close wide aerial view of in on at with and sky cloud mountain forest street rain "
    "sun moon water fire ocean wave boat car train house tree flower"
).split()


def _umt5_config():
    return transformers.UMT5Config(
        vocab_size=VOCAB,
        d_model=D_MODEL,
        d_kv=D_KV,
        num_heads=HEADS,
        d_ff=D_FF,
        num_layers=LAYERS,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
    )


def _random_hf_weights(seed: int) -> dict[str, torch.Tensor]:
    """transformers-named random weights whose values are exact in fp16 and in bf16."""
    with torch.device("meta"):
        shapes = {
            k: tuple(v.shape)
            for k, v in transformers.UMT5EncoderModel(_umt5_config()).state_dict().items()
            if k != "encoder.embed_tokens.weight"
        }
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        if "layer_norm" in key:
            t = 1.0 + 0.1 * t
        elif key.endswith(("q.weight", "k.weight", "v.weight", "o.weight", "wi_0.weight")):
            t = t / math.sqrt(shape[1])
        elif key.endswith(("wi_1.weight", "wo.weight")):
            t = t / math.sqrt(shape[1])
        t = t.to(torch.bfloat16).float()
        t[t.abs() < 2**-14] = 0.0  # keep clear of fp16 subnormals
        out[key] = t
    return out


def _to_wan_names(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers names -> the official wan/modules/t5.py T5Encoder names (written by hand)."""
    wan = {
        "token_embedding.weight": hf["shared.weight"],
        "norm.weight": hf["encoder.final_layer_norm.weight"],
    }
    for i in range(LAYERS):
        att, ffn = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
        wan[f"blocks.{i}.norm1.weight"] = hf[att + "layer_norm.weight"]
        for p in "qkvo":
            wan[f"blocks.{i}.attn.{p}.weight"] = hf[att + f"SelfAttention.{p}.weight"]
        wan[f"blocks.{i}.pos_embedding.embedding.weight"] = hf[
            att + "SelfAttention.relative_attention_bias.weight"
        ]
        wan[f"blocks.{i}.norm2.weight"] = hf[ffn + "layer_norm.weight"]
        wan[f"blocks.{i}.ffn.gate.0.weight"] = hf[ffn + "DenseReluDense.wi_0.weight"]
        wan[f"blocks.{i}.ffn.fc1.weight"] = hf[ffn + "DenseReluDense.wi_1.weight"]
        wan[f"blocks.{i}.ffn.fc2.weight"] = hf[ffn + "DenseReluDense.wo.weight"]
    return wan


def wan_reference(wan: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor):
    """The official Wan `T5Encoder.forward` (umT5: a position bias per block), fp32.

    ids, mask: [B, L] -> hidden states [B, L, d_model].
    """

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def gelu_tanh(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    def bucket(rel, num_buckets=32, max_dist=128):
        num_buckets //= 2
        out = (rel > 0).long() * num_buckets
        rel = rel.abs()
        max_exact = num_buckets // 2
        large = (
            max_exact
            + (
                torch.log(rel.float() / max_exact)
                / math.log(max_dist / max_exact)
                * (num_buckets - max_exact)
            ).long()
        )
        large = torch.clamp(large, max=num_buckets - 1)
        return out + torch.where(rel < max_exact, rel, large)

    b, n = ids.shape
    x = wan["token_embedding.weight"][ids]
    buckets = bucket(torch.arange(n)[None, :] - torch.arange(n)[:, None])
    for i in range(LAYERS):
        p = f"blocks.{i}."
        pos = wan[p + "pos_embedding.embedding.weight"][buckets].permute(2, 0, 1)[None]
        bias = torch.zeros(b, HEADS, n, n) + pos
        bias.masked_fill_(mask.view(b, 1, 1, n) == 0, torch.finfo(torch.float32).min)
        h = rms(x, wan[p + "norm1.weight"])
        q, k, v = ((h @ wan[p + f"attn.{c}.weight"].T).view(b, n, HEADS, -1) for c in "qkv")
        attn = (torch.einsum("binc,bjnc->bnij", q, k) + bias).softmax(dim=-1)
        o = torch.einsum("bnij,bjnc->binc", attn, v).reshape(b, n, -1)
        x = x + o @ wan[p + "attn.o.weight"].T
        h = rms(x, wan[p + "norm2.weight"])
        gated = (h @ wan[p + "ffn.fc1.weight"].T) * gelu_tanh(h @ wan[p + "ffn.gate.0.weight"].T)
        x = x + gated @ wan[p + "ffn.fc2.weight"].T
    return rms(x, wan["norm.weight"])


def _spiece_tensor(proto: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(proto), dtype=torch.uint8).clone()


def _quantise_fp8(hf: dict[str, torch.Tensor]):
    """ComfyUI-style scaled fp8: per-linear scale = amax / 448; returns (file tensors, dequant)."""
    tensors, dequant = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for key, t in hf.items():
        if (
            key.endswith(("q.weight", "k.weight", "v.weight", "o.weight"))
            or ".wi_" in key
            or (key.endswith("wo.weight"))
        ):
            scale = (t.abs().max() / 448.0).float()
            q = (t / scale).to(torch.float8_e4m3fn)
            tensors[key] = q
            tensors[key[: -len(".weight")] + ".scale_weight"] = scale.reshape(())
            dequant[key] = q.float() * scale
        else:
            tensors[key] = t.half()
            dequant[key] = t.half().float()
    return tensors, dequant


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def spiece_proto() -> bytes:
    rng = random.Random(0)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words = WORDS + ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(600)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(3000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=300,
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


@pytest.fixture(scope="module")
def hf_weights() -> dict[str, torch.Tensor]:
    return _random_hf_weights(seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, hf_weights, spiece_proto) -> dict:
    """The same weights in every supported layout (+ fp8 with its own dequantised reference)."""
    root = tmp_path_factory.mktemp("text_encoders")
    out = {}
    spiece = _spiece_tensor(spiece_proto)

    out["comfy_fp16"] = root / "comfy" / "umt5_xxl_fp16.safetensors"
    out["comfy_fp16"].parent.mkdir()
    save_file(
        {**{k: v.half() for k, v in hf_weights.items()}, "spiece_model": spiece},
        str(out["comfy_fp16"]),
    )

    fp8_tensors, out["fp8_dequant"] = _quantise_fp8(hf_weights)
    out["comfy_fp8"] = root / "comfy" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    save_file({**fp8_tensors, "spiece_model": spiece}, str(out["comfy_fp8"]))

    # official Wan2.1 download: the .pth with google/umt5-xxl beside it
    wan_dir = root / "Wan2.1-T2V-1.3B"
    (wan_dir / "google" / "umt5-xxl").mkdir(parents=True)
    (wan_dir / "google" / "umt5-xxl" / "spiece.model").write_bytes(spiece_proto)
    out["wan_dir"] = wan_dir
    out["wan_pth"] = wan_dir / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(
        {k: v.to(torch.bfloat16) for k, v in _to_wan_names(hf_weights).items()}, out["wan_pth"]
    )
    # the same .pth alone, with a tokenizer folder elsewhere
    lone = root / "lone"
    lone.mkdir()
    out["lone_pth"] = lone / "models_t5_umt5-xxl-enc-bf16.pth"
    shutil.copy(out["wan_pth"], out["lone_pth"])
    out["tokenizer_dir"] = root / "umt5-xxl-tokenizer"
    out["tokenizer_dir"].mkdir()
    (out["tokenizer_dir"] / "spiece.model").write_bytes(spiece_proto)

    # diffusers pipeline folder: sharded text_encoder/ + tokenizer/
    pipe = root / "Wan2.1-T2V-1.3B-Diffusers"
    (pipe / "text_encoder").mkdir(parents=True)
    (pipe / "tokenizer").mkdir()
    (pipe / "tokenizer" / "spiece.model").write_bytes(spiece_proto)
    keys = sorted(hf_weights)
    weight_map = {}
    for i, part in enumerate((keys[::2], keys[1::2])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: hf_weights[k] for k in part}, str(pipe / "text_encoder" / name))
        weight_map.update(dict.fromkeys(part, name))
    (pipe / "text_encoder" / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    out["diffusers_dir"] = pipe
    return out


def _direct_transformers(weights: dict[str, torch.Tensor], spiece_proto: bytes, prompts):
    """transformers' UMT5EncoderModel run prompt by prompt, tokenised here independently."""
    model = transformers.UMT5EncoderModel(_umt5_config())
    model.load_state_dict(
        {**weights, "encoder.embed_tokens.weight": weights["shared.weight"]}, strict=True
    )
    model.eval()
    sp = spm.SentencePieceProcessor(model_proto=spiece_proto)
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = sp.encode(clean_text(prompt))[:511] + [1]
            out.append(model(input_ids=torch.tensor([ids])).last_hidden_state[0])
    return out


def _max_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b))


@pytest.fixture(scope="module")
def fp16_encoder(files) -> TextEncoder:
    return load_text_encoder(files["comfy_fp16"])


# ----------------------------------------------------------------------------------------------
# cleaning and tokenisation


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("  a   b\n\tc  ", "a b c"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("&amp;lt;b&amp;gt;bold", "<b>bold"),  # unescaped twice, as Wan's basic_clean
        ("", ""),
        ("\n \t ", ""),
        ("東京  の 夜", "東京 の 夜"),
    ],
)
def test_clean_text(raw, cleaned):
    assert clean_text(raw) == cleaned


def test_clean_text_fixes_mojibake():
    pytest.importorskip("ftfy")
    assert clean_text("cafÃ©  latte") == "café latte"


def test_tokenizer_eos_padding_and_truncation(spiece_proto):
    tok = load_tokenizer(spiece_proto)
    sp = spm.SentencePieceProcessor(model_proto=spiece_proto)
    assert 200 <= tok.vocab_size <= VOCAB and (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
    ids, mask = tok(["a red fox", "", "the  quick brown fox jumps"])
    assert ids.shape == mask.shape and ids.shape[1] == mask.sum(1).max()
    for row, m, text in zip(ids, mask, ["a red fox", "", "the quick brown fox jumps"]):
        n = int(m.sum())
        assert row[:n].tolist() == sp.encode(text) + [1]  # pieces + EOS, no BOS
        assert (row[n:] == 0).all() and (m[n:] == 0).all()
    long = "the quick brown fox " * 300
    ids = tok.ids(long)
    assert len(ids) == 512 and ids[-1] == 1 and ids[:511] == sp.encode(clean_text(long))[:511]


# ----------------------------------------------------------------------------------------------
# every layout encodes the same


def test_all_layouts_encode_identically(files, fp16_encoder, hf_weights, spiece_proto):
    ref = fp16_encoder.encode(PROMPTS)
    assert "ComfyUI" in fp16_encoder.format and "fp16" in fp16_encoder.format
    sources = {
        "official .pth, tokenizer found beside it": dict(path=files["wan_pth"]),
        "official download folder": dict(path=files["wan_dir"]),
        "official .pth + tokenizer=": dict(
            path=files["lone_pth"], tokenizer=files["tokenizer_dir"]
        ),
        ".pth + tokenizer from a ComfyUI file": dict(
            path=files["lone_pth"], tokenizer=files["comfy_fp16"]
        ),
        "diffusers folder": dict(path=files["diffusers_dir"]),
        "diffusers text_encoder/ shards": dict(path=files["diffusers_dir"] / "text_encoder"),
    }
    for what, kwargs in sources.items():
        enc = load_text_encoder(kwargs.pop("path"), **kwargs)
        out = enc.encode(PROMPTS)
        assert all(torch.equal(a, b) for a, b in zip(out, ref)), what
    assert "official Wan" in load_text_encoder(files["wan_pth"]).format

    direct = _direct_transformers(hf_weights, spiece_proto, PROMPTS)
    assert _max_err(ref, direct) < TOL


def test_official_pth_matches_official_forward(files, hf_weights, spiece_proto):
    """The Wan-name mapping (gate.0 -> wi_0, fc1 -> wi_1, ...) reproduces Wan's own math."""
    enc = load_text_encoder(files["wan_pth"])
    ids, mask = enc.tokenizer(PROMPTS)
    expected = wan_reference(_to_wan_names(hf_weights), ids, mask)
    out = enc.encode(PROMPTS)
    lengths = mask.sum(1).tolist()
    assert _max_err(out, [e[:n] for e, n in zip(expected, lengths)]) < TOL


def test_fp8_scaled_matches_its_dequantised_weights(files, spiece_proto):
    enc = load_text_encoder(files["comfy_fp8"])
    assert "fp8 scaled" in enc.format
    state = enc.model.state_dict()
    for key, value in files["fp8_dequant"].items():
        assert torch.equal(state[key], value), key
    direct = _direct_transformers(files["fp8_dequant"], spiece_proto, PROMPTS)
    assert _max_err(enc.encode(PROMPTS), direct) < TOL


def test_model_is_complete_and_tied(fp16_encoder):
    model = fp16_encoder.model
    assert not any(p.is_meta for p in model.parameters())
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert fp16_encoder.d_model == D_MODEL and fp16_encoder.dtype == torch.float32
    assert load_text_encoder(fp16_encoder.source, dtype="bf16").dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------
# trimming and padding


def test_trim_and_zero_padding(fp16_encoder, spiece_proto):
    sp = spm.SentencePieceProcessor(model_proto=spiece_proto)
    prompts = ["a red fox", "", "the quick brown fox " * 300]
    trimmed = fp16_encoder.encode(prompts)
    lengths = [min(len(sp.encode(clean_text(p))), 511) + 1 for p in prompts]
    assert [t.shape for t in trimmed] == [(n, D_MODEL) for n in lengths]
    assert lengths[1] == 1 and lengths[2] == 512
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in trimmed)

    padded = fp16_encoder.encode_padded(prompts)
    assert padded.shape == (3, 512, D_MODEL) and padded.dtype == torch.float32
    for row, t, n in zip(padded, trimmed, lengths):
        assert torch.allclose(row[:n], t, atol=TOL)
        assert (row[n:] == 0).all()
        assert (row[:n].abs().sum(-1) > 0).all()  # real rows (EOS included) are not zero
    assert torch.equal(pad_embeddings(trimmed), padded)
    with pytest.raises(ValueError, match="more than 16"):
        pad_embeddings(trimmed, length=16)


def test_batching_does_not_change_results(fp16_encoder):
    one_by_one = [fp16_encoder.encode([p])[0] for p in PROMPTS]
    assert _max_err(fp16_encoder.encode(PROMPTS, batch_size=2), one_by_one) < TOL


# ----------------------------------------------------------------------------------------------
# cache


@pytest.fixture
def load_counter(monkeypatch):
    """Counts encoder loads made by encode_prompts and records the prompts they encode."""
    calls = {"loads": 0, "encoded": []}
    real = text_encoder.load_text_encoder

    def counting(*args, **kwargs):
        calls["loads"] += 1
        enc = real(*args, **kwargs)
        encode = enc.encode

        def recording(prompts, **kw):
            calls["encoded"].append(list(prompts))
            return encode(prompts, **kw)

        enc.encode = recording
        return enc

    monkeypatch.setattr(text_encoder, "load_text_encoder", counting)
    return calls


def test_cache_repeated_prompt_never_loads_encoder(files, fp16_encoder, tmp_path, load_counter):
    path = files["comfy_fp16"]
    first = encode_prompts(["a cat", "a dog", "a cat"], path, cache_dir=tmp_path)
    assert load_counter["loads"] == 1
    assert load_counter["encoded"] == [["a cat", "a dog"]]  # duplicates encoded once
    assert _max_err(first, fp16_encoder.encode(["a cat", "a dog", "a cat"])) < TOL
    assert len(list(tmp_path.glob("*.safetensors"))) == 2

    again = encode_prompts(["a dog", "a cat"], path, cache_dir=tmp_path)
    assert load_counter["loads"] == 1
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])

    # keyed by the cleaned prompt: whitespace variants hit; only the new prompt is encoded
    mixed = encode_prompts(["  a   cat ", "a bird"], path, cache_dir=tmp_path)
    assert load_counter["loads"] == 2 and load_counter["encoded"][-1] == ["a bird"]
    assert torch.equal(mixed[0], first[0])
    assert len(list(tmp_path.glob("*.safetensors"))) == 3

    # without a cache every call loads
    encode_prompts(["a cat"], path)
    assert load_counter["loads"] == 3
    assert encode_prompts([], path, cache_dir=tmp_path) == []
    assert load_counter["loads"] == 3


def test_cache_damaged_entry_is_a_miss(files, tmp_path, load_counter):
    path = files["comfy_fp16"]
    first = encode_prompts(["a fox"], path, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.safetensors")
    entry.write_bytes(b"garbage")
    second = encode_prompts(["a fox"], path, cache_dir=tmp_path)
    assert load_counter["loads"] == 2 and torch.equal(first[0], second[0])
    encode_prompts(["a fox"], path, cache_dir=tmp_path)
    assert load_counter["loads"] == 2  # rewritten


def test_cache_key_depends_on_encoder_file(files, tmp_path, spiece_proto, load_counter):
    path = files["comfy_fp16"]
    other = tmp_path / "other_umt5.safetensors"
    weights = _random_hf_weights(seed=1)
    save_file(
        {**{k: v.half() for k, v in weights.items()}, "spiece_model": _spiece_tensor(spiece_proto)},
        str(other),
    )
    copy = tmp_path / "renamed_copy.safetensors"
    shutil.copy(path, copy)

    id_a, id_b = encoder_identity(path), encoder_identity(other)
    assert id_a != id_b
    assert encoder_identity(copy) == id_a  # content, not path: a moved file keeps its cache
    assert encoder_identity(path, dtype="bf16") != id_a
    assert encoder_identity(files["lone_pth"], tokenizer=files["tokenizer_dir"]) != id_a
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.key("a cat", id_a) != cache.key("a cat", id_b)
    assert cache.key("a  cat ", id_a) == cache.key("a cat", id_a)

    a = encode_prompts(["a cat"], path, cache_dir=tmp_path / "cache")
    b = encode_prompts(["a cat"], other, cache_dir=tmp_path / "cache")
    assert load_counter["loads"] == 2 and not torch.allclose(a[0], b[0])
    encode_prompts(["a cat"], copy, cache_dir=tmp_path / "cache")
    assert load_counter["loads"] == 2


# ----------------------------------------------------------------------------------------------
# bad inputs


def _tiny_file(path, tensors: dict[str, tuple[int, ...]]):
    save_file({k: torch.zeros(shape, dtype=torch.float16) for k, shape in tensors.items()}, path)
    return path


def _t5_v11_tensors(vocab: int) -> dict[str, tuple[int, ...]]:
    out = {"shared.weight": (vocab, 8), "encoder.final_layer_norm.weight": (8,)}
    for i in range(2):
        a, f = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
        out.update({a + f"SelfAttention.{p}.weight": (8, 8) for p in "qkvo"})
        out[a + "layer_norm.weight"] = (8,)
        out[f + "layer_norm.weight"] = (8,)
        out.update({f + f"DenseReluDense.{p}.weight": (16, 8) for p in ("wi_0", "wi_1")})
        out[f + "DenseReluDense.wo.weight"] = (8, 16)
    out["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (32, 2)
    return out


def test_rejects_dit(tmp_path):
    dit = save_random_checkpoint(tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors")
    with pytest.raises(CheckpointError, match="Wan DiT .*not the text encoder.*umt5_xxl"):
        load_text_encoder(dit)


@pytest.mark.parametrize(
    "tensors, message",
    [
        (
            {"decoder.conv1.weight": (4, 4), "encoder.conv1.weight": (4, 4), "conv2.weight": (4,)},
            "VAE",
        ),
        (
            {
                "text_model.embeddings.token_embedding.weight": (10, 4),
                "text_model.encoder.layers.0.mlp.fc1.weight": (4, 4),
            },
            "CLIP",
        ),
        (_t5_v11_tensors(32128), "T5 v1.1 / Flan-T5 .*Flux.*one position bias shared"),
        (_t5_v11_tensors(250112), "mT5.*vocabulary of 250112"),
        (
            {
                "shared.weight": (10, 8),
                "encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8),
                "encoder.block.0.layer.1.DenseReluDense.wi.weight": (16, 8),
            },
            "original T5 / T5-base.*ReLU",
        ),
        ({"lora_unet_blocks_0.lora_down.weight": (4, 4)}, "LoRA"),
        ({"foo.bar": (2,)}, "not a umT5 text encoder.*foo.bar"),
    ],
)
def test_rejects_other_models(tmp_path, tensors, message):
    path = _tiny_file(tmp_path / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=message):
        load_text_encoder(path)


def test_missing_tokenizer_says_where_it_comes_from(files, hf_weights, tmp_path):
    bare = tmp_path / "umt5_no_tokenizer.safetensors"
    save_file({k: v.half() for k, v in hf_weights.items()}, str(bare))
    with pytest.raises(CheckpointError, match="no tokenizer.*google/umt5-xxl.*tokenizer="):
        load_text_encoder(bare)
    with pytest.raises(CheckpointError, match="models_t5_umt5-xxl-enc-bf16.pth carries no"):
        load_text_encoder(files["lone_pth"])
    with pytest.raises(CheckpointError, match="no tokenizer"):
        encoder_identity(files["lone_pth"])
    assert load_text_encoder(bare, tokenizer=files["tokenizer_dir"]).encode(["a"])[0].shape[0] > 0


def test_bad_tokenizer(files, tmp_path):
    junk = tmp_path / "spiece.model"
    junk.write_bytes(b"\x00not a sentencepiece model" * 10)
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        load_text_encoder(files["comfy_fp16"], tokenizer=junk)
    with pytest.raises(CheckpointError, match="tokenizer not found"):
        load_text_encoder(files["comfy_fp16"], tokenizer=tmp_path / "does_not_exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no spiece.model"):
        load_text_encoder(files["comfy_fp16"], tokenizer=tmp_path / "empty")

    # a SentencePiece model with sentencepiece's default ids (unk 0, bos 1, eos 2): not umT5's
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(WORDS)] * 50),
        model_writer=buf,
        vocab_size=80,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    with pytest.raises(CheckpointError, match="not umT5's: its end-of-sequence id is 2"):
        load_text_encoder(files["comfy_fp16"], tokenizer=buf.getvalue())


def test_tokenizer_larger_than_embedding(hf_weights, spiece_proto, tmp_path):
    small = {k: v.half() for k, v in hf_weights.items()}
    small["shared.weight"] = small["shared.weight"][:64].clone()
    path = tmp_path / "small_vocab.safetensors"
    save_file({**small, "spiece_model": _spiece_tensor(spiece_proto)}, str(path))
    with pytest.raises(CheckpointError, match="embeds only 64 tokens.*do not belong together"):
        load_text_encoder(path)


def test_truncated_and_incomplete_files(files, hf_weights, tmp_path):
    for name in ("comfy_fp16", "wan_pth"):
        cut = tmp_path / files[name].name
        data = files[name].read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_text_encoder(cut, tokenizer=files["tokenizer_dir"])
    partial = tmp_path / "partial.safetensors"
    save_file(
        {
            k: v.half()
            for k, v in hf_weights.items()
            if not k.endswith("1.DenseReluDense.wo.weight")
        },
        str(partial),
    )
    shapes_off = {k: v.half() for k, v in hf_weights.items()}
    shapes_off["encoder.block.1.layer.1.DenseReluDense.wo.weight"] = torch.zeros(D_MODEL, 8)
    with pytest.raises(CheckpointError, match="missing tensor"):
        load_text_encoder(partial, tokenizer=files["tokenizer_dir"])
    odd = tmp_path / "odd.safetensors"
    save_file(shapes_off, str(odd))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_text_encoder(odd, tokenizer=files["tokenizer_dir"])
    with pytest.raises(CheckpointError, match="not found"):
        load_text_encoder(tmp_path / "nope.safetensors")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(CheckpointError, match="folder with no text encoder"):
        load_text_encoder(tmp_path / "empty_folder")
    assert issubclass(CheckpointError, AdaStateError)
