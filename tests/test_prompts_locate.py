"""Prompt schedules / batch files, and finding model files in a ComfyUI models folder."""

from __future__ import annotations

import pytest

from adastate_core.locate import MissingModelError, find_models
from adastate_core.prompts import (
    PromptError,
    TimedPrompt,
    parse_schedule,
    read_batch_file,
    read_schedule_file,
    slug,
)


def test_plain_and_timed_schedules():
    assert parse_schedule("a cat walks") == [TimedPrompt(0.0, "a cat walks")]
    assert parse_schedule("0:a cat walks | 5:the cat runs") == [
        TimedPrompt(0.0, "a cat walks"),
        TimedPrompt(5.0, "the cat runs"),
    ]
    assert parse_schedule("7.5: b\n0: a") == [TimedPrompt(0.0, "a"), TimedPrompt(7.5, "b")]
    assert parse_schedule("a scene at 5:30 pm")[0].text == "a scene at 5:30 pm"


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "prompt is empty"),
        ("   |  ", "prompt is empty"),
        ("2:a | 5:b", "needs a prompt at 0 s"),
        ("0:a | b", "cannot read the time of 'b'"),
        ("0:a | 0:b", "same time"),
        ("0:a | 3:", "prompt at 3 s is empty"),
    ],
)
def test_bad_schedules(text, message):
    with pytest.raises(PromptError, match=message):
        parse_schedule(text)


def test_files(tmp_path):
    sched = tmp_path / "s.txt"
    sched.write_text("# a comment\n0: first\n4: second\n")
    assert [p.text for p in read_schedule_file(sched)] == ["first", "second"]
    batch = tmp_path / "b.txt"
    batch.write_text("a cat\n\n# skip\n0:a dog | 2:a wolf\n")
    assert [[p.text for p in s] for s in read_batch_file(batch)] == [["a cat"], ["a dog", "a wolf"]]
    empty = tmp_path / "e.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(PromptError, match="has no prompts"):
        read_batch_file(empty)
    with pytest.raises(PromptError, match="cannot read the prompts file"):
        read_batch_file(tmp_path / "missing.txt")
    assert slug("A Cat, walking!  In the rain?") == "a_cat_walking_in_the_rain"


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_find_models_in_comfyui_layout(tmp_path):
    root = tmp_path / "ComfyUI"
    sf = _touch(root / "models" / "diffusion_models" / "self_forcing_dmd.pt")
    _touch(root / "models" / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors")
    vae = _touch(root / "models" / "vae" / "wan_2.1_vae.safetensors")
    te = _touch(root / "models" / "text_encoders" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    for base in (root, root / "models"):
        files = find_models(base)
        assert (files.dit, files.vae, files.text_encoder) == (sf, vae, te) and not files.notes
    explicit = _touch(tmp_path / "my_adastate.safetensors")
    assert find_models(root, dit=explicit).dit == explicit


def test_find_models_messages(tmp_path):
    root = tmp_path / "models"
    base = _touch(root / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors")
    with pytest.raises(
        MissingModelError,
        match=r"no Wan2.1 VAE found. Put wan_2.1_vae.safetensors .* into .*models/vae/",
    ):
        find_models(root)
    _touch(root / "vae" / "wan_2.1_vae.safetensors")
    with pytest.raises(MissingModelError, match="umt5_xxl_fp8_e4m3fn_scaled.safetensors"):
        find_models(root)
    _touch(root / "text_encoders" / "umt5_xxl_fp16.safetensors")
    files = find_models(root)
    assert files.dit == base and "not distilled" in files.notes[0]
    _touch(root / "diffusion_models" / "self_forcing_dmd.pt")
    _touch(root / "diffusion_models" / "causal_forcing_chunkwise.pt")
    with pytest.raises(MissingModelError, match="several dit files fit.*--dit"):
        find_models(root)
    with pytest.raises(
        MissingModelError, match="dit file not found: .*nope.pt.*self_forcing_dmd.pt"
    ):
        find_models(root, dit=tmp_path / "nope.pt")
    with pytest.raises(MissingModelError, match="no causal Wan2.1 DiT found"):
        find_models(tmp_path / "empty_dir" if (tmp_path / "empty_dir").mkdir() is None else None)
