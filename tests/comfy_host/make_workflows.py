"""Writes the example workflows: workflows/*.json (UI format 0.4) and workflows/api/*.json
(their API-format twins, what POST /prompt runs), from one compact description per graph.

    python tests/comfy_host/make_workflows.py        # rewrites workflows/

Widget values are listed in each node's widget order (docs/nodes.md; core nodes as in
ComfyUI 0.3.64); a seed widget is followed in the UI format by its control_after_generate
value. tests/test_workflows.py checks both files against the node classes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "workflows"

REPACK = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
MODELS = {
    "dit": {
        "name": "self_forcing_dmd.pt",
        "url": "https://huggingface.co/gdhe17/Self-Forcing/resolve/main/checkpoints/self_forcing_dmd.pt",
        "directory": "diffusion_models",
    },
    "clip": {
        "name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "url": f"{REPACK}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "directory": "text_encoders",
    },
    "vae": {
        "name": "wan_2.1_vae.safetensors",
        "url": f"{REPACK}/vae/wan_2.1_vae.safetensors",
        "directory": "vae",
    },
}

PROMPT = (
    "A red fox trots through fresh snow in a quiet pine forest at dawn, soft golden light, "
    "breath visible in the cold air, cinematic tracking shot"
)
SEED = 42

# output (name, type) of every node class used
OUTPUTS = {
    "AdaState_LoadModel": [("model", "ADASTATE_MODEL")],
    "AdaState_InitCache": [("stream", "ADASTATE_STREAM")],
    "AdaState_DenoiseChunk": [("chunk", "ADASTATE_CHUNK"), ("latent", "LATENT")],
    "AdaState_UpdateState": [("stream", "ADASTATE_STREAM")],
    "AdaState_Decode": [("images", "IMAGE")],
    "AdaState_DecodeState": [("images", "IMAGE")],
    "AdaState_AttentionProbe": [("chart", "IMAGE")],
    "AdaState_VideoCombine": [("filename", "STRING"), ("video", "VIDEO")],
    "AdaState_Generate": [("preview", "IMAGE"), ("filename", "STRING"), ("video", "VIDEO")],
    "AdaState_PromptSchedule": [("prompts", "ADASTATE_PROMPTS")],
    "CLIPLoader": [("CLIP", "CLIP")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "VAELoader": [("VAE", "VAE")],
    "ImageBatch": [("IMAGE", "IMAGE")],
    "ImageStitch": [("IMAGE", "IMAGE")],
    "PreviewImage": [],
}

# socket inputs (name, type) in order, per class; widgets are given per node below
SOCKETS = {
    "AdaState_LoadModel": [],
    "AdaState_InitCache": [("model", "ADASTATE_MODEL"), ("positive", "CONDITIONING")],
    "AdaState_DenoiseChunk": [
        ("model", "ADASTATE_MODEL"),
        ("stream", "ADASTATE_STREAM"),
        ("positive", "CONDITIONING"),
    ],
    "AdaState_UpdateState": [
        ("model", "ADASTATE_MODEL"),
        ("stream", "ADASTATE_STREAM"),
        ("chunk", "ADASTATE_CHUNK"),
    ],
    "AdaState_Decode": [("vae", "VAE"), ("chunk", "ADASTATE_CHUNK")],
    "AdaState_DecodeState": [("vae", "VAE"), ("chunk", "ADASTATE_CHUNK")],
    "AdaState_AttentionProbe": [("model", "ADASTATE_MODEL"), ("stream", "ADASTATE_STREAM")],
    "AdaState_VideoCombine": [("images", "IMAGE")],
    "AdaState_Generate": [
        ("model", "ADASTATE_MODEL"),
        ("positive", "CONDITIONING"),
        ("vae", "VAE"),
        ("prompts", "ADASTATE_PROMPTS"),
    ],
    "AdaState_PromptSchedule": [("clip", "CLIP")],
    "CLIPLoader": [],
    "CLIPTextEncode": [("clip", "CLIP")],
    "VAELoader": [],
    "ImageBatch": [("image1", "IMAGE"), ("image2", "IMAGE")],
    "ImageStitch": [("image1", "IMAGE"), ("image2", "IMAGE")],
    "PreviewImage": [("images", "IMAGE")],
}

OPTIONAL_SOCKETS = {("AdaState_DenoiseChunk", "positive"), ("AdaState_Generate", "prompts"),
                    ("ImageStitch", "image2")}  # fmt: skip

TITLES = {
    "AdaState_LoadModel": "Load AdaState Model",
    "AdaState_InitCache": "Init Cache",
    "AdaState_DenoiseChunk": "Denoise Chunk",
    "AdaState_UpdateState": "Update State",
    "AdaState_Decode": "Decode",
    "AdaState_DecodeState": "Decode State",
    "AdaState_AttentionProbe": "Attention Probe",
    "AdaState_VideoCombine": "Video Combine (AdaState)",
    "AdaState_Generate": "Generate Stream (AdaState)",
    "AdaState_PromptSchedule": "Prompt Schedule",
}


@dataclass
class Node:
    id: int
    type: str
    widgets: list[tuple[str, object]]  # (input name, value) in widget order
    pos: tuple[int, int]
    title: str | None = None
    models: list[dict] | None = None
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input -> (node, slot)


class Graph:
    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(self, type_, widgets=(), pos=(0, 0), title=None, models=None, **links) -> Node:
        node = Node(len(self.nodes) + 1, type_, list(widgets), pos, title, models)
        for name, src in links.items():
            node.links[name] = src if isinstance(src, tuple) else (src.id, 0)
        self.nodes.append(node)
        return node

    # -- API format ------------------------------------------------------------------------------
    def api(self) -> dict:
        out = {}
        for n in self.nodes:
            inputs = {name: value for name, value in n.widgets}
            for name, (src, slot) in n.links.items():
                inputs[name] = [str(src), slot]
            entry = {"class_type": n.type, "inputs": inputs}
            entry["_meta"] = {"title": n.title or TITLES.get(n.type, n.type)}
            out[str(n.id)] = entry
        return out

    # -- UI format 0.4 ---------------------------------------------------------------------------
    def ui(self) -> dict:
        links = []
        out_links: dict[tuple[int, int], list[int]] = {}
        in_link: dict[tuple[int, str], int] = {}
        for n in self.nodes:
            sockets = dict(SOCKETS[n.type])
            for name, (src, slot) in n.links.items():
                link_id = len(links) + 1
                links.append([link_id, src, slot, n.id, None, sockets[name]])
                out_links.setdefault((src, slot), []).append(link_id)
                in_link[(n.id, name)] = link_id
        nodes = []
        order = self._order()
        for n in self.nodes:
            inputs = []
            for name, typ in SOCKETS[n.type]:
                if (n.id, name) not in in_link and (n.type, name) in OPTIONAL_SOCKETS:
                    entry = {"name": name, "type": typ, "shape": 7, "link": None}
                else:
                    entry = {"name": name, "type": typ, "link": in_link.get((n.id, name))}
                inputs.append(entry)
            for slot_in, entry in enumerate(inputs):
                if entry["link"] is not None:
                    links[entry["link"] - 1][4] = slot_in
            outputs = []
            for slot, (name, typ) in enumerate(OUTPUTS[n.type]):
                outputs.append(
                    {"name": name, "type": typ, "slot_index": slot,
                     "links": out_links.get((n.id, slot), [])}
                )  # fmt: skip
            widgets = []
            for name, value in n.widgets:
                widgets.append(value)
                if name == "seed":
                    widgets.append("fixed")  # control_after_generate
            props: dict = {"Node name for S&R": n.type}
            if n.models:
                props["models"] = n.models
            node = {
                "id": n.id,
                "type": n.type,
                "pos": list(n.pos),
                "size": [320, 60 + 26 * (len(widgets) + max(len(inputs), len(outputs)))],
                "flags": {},
                "order": order[n.id],
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": props,
                "widgets_values": widgets,
            }
            if n.title:
                node["title"] = n.title
            nodes.append(node)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(self.api(), sort_keys=True))),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": nodes,
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4,
        }

    def _order(self) -> dict[int, int]:
        done: dict[int, int] = {}
        while len(done) < len(self.nodes):
            for n in self.nodes:
                if n.id not in done and all(src in done for src, _ in n.links.values()):
                    done[n.id] = len(done)
        return done


# -- the common front of every graph -------------------------------------------------------------


def loaders(g: Graph, prompt: str = PROMPT, x: int = 0):
    model = g.add(
        "AdaState_LoadModel",
        [("dit_name", MODELS["dit"]["name"]), ("weight_dtype", "default"), ("attention", "sdpa")],
        pos=(x, 0),
        models=[MODELS["dit"]],
    )
    clip = g.add(
        "CLIPLoader",
        [("clip_name", MODELS["clip"]["name"]), ("type", "wan"), ("device", "default")],
        pos=(x, 180),
        models=[MODELS["clip"]],
    )
    text = g.add("CLIPTextEncode", [("text", prompt)], pos=(x + 360, 180), clip=clip)
    vae = g.add("VAELoader", [("vae_name", MODELS["vae"]["name"])], pos=(x, 420),
                models=[MODELS["vae"]])  # fmt: skip
    return model, clip, text, vae


def stream_widgets(policy: str = "adaptive") -> list[tuple[str, object]]:
    return [
        ("anchor_policy", policy),
        ("chunk_frames", 3),
        ("state_frames", 1),
        ("window_frames", 3),
        ("anchor_frames", 1),
        ("steps", "1000,750,500,250"),
        ("shift", 5.0),
        ("seed", SEED),
    ]


SIZE = [("width", 832), ("height", 480)]


def generate(g, model, text, vae, *, seconds, policy="adaptive", prefix, preview=81, pos=(0, 0),
             title=None, prompts=None):  # fmt: skip
    links = {"model": model, "positive": text, "vae": vae}
    if prompts is not None:
        links["prompts"] = prompts
    widgets = [*SIZE, ("seconds", seconds), *stream_widgets(policy)]
    widgets += [("format", "mp4"), ("crf", 19), ("filename_prefix", prefix),
                ("preview_frames", preview), ("chunks", 0)]  # fmt: skip
    return g.add("AdaState_Generate", widgets, pos=pos, title=title, **links)


def video_combine(g, images, prefix, pos):
    widgets = [("frame_rate", 16), ("format", "mp4"), ("crf", 19), ("filename_prefix", prefix),
               ("save_output", True)]  # fmt: skip
    return g.add("AdaState_VideoCombine", widgets, pos=pos, images=images)


# -- the five examples ---------------------------------------------------------------------------


def granular_5s() -> Graph:
    """(a) 5 s (81 frames) built chunk by chunk: 7 x Denoise Chunk / Update State / Decode."""
    g = Graph()
    model, _, text, vae = loaders(g)
    stream = g.add("AdaState_InitCache", [*SIZE, *stream_widgets()], pos=(760, 0),
                   model=model, positive=text)  # fmt: skip
    frames = None
    for k in range(7):
        x = 1140 + 380 * k
        chunk = g.add("AdaState_DenoiseChunk", [("recache", False)], pos=(x, 0),
                      title=f"Denoise Chunk {k + 1}", model=model, stream=stream)  # fmt: skip
        images = g.add("AdaState_Decode", [], pos=(x, 200), title=f"Decode {k + 1}",
                       vae=vae, chunk=(chunk.id, 0))  # fmt: skip
        if k < 6:
            stream = g.add("AdaState_UpdateState", [], pos=(x, 360),
                           title=f"Update State {k + 1}", model=model, stream=stream,
                           chunk=(chunk.id, 0))  # fmt: skip
        frames = images if frames is None else g.add(
            "ImageBatch", [], pos=(x, 520), title=f"Frames 1-{k + 1}", image1=frames,
            image2=images)  # fmt: skip
    video_combine(g, frames, "AdaState/granular_5s", pos=(1140 + 380 * 7, 200))
    return g


def stream_30s() -> Graph:
    """(b) a 30-second stream in one node."""
    g = Graph()
    model, _, text, vae = loaders(g)
    generate(g, model, text, vae, seconds=30.0, prefix="AdaState/stream_30s", pos=(760, 0))
    return g


def anchor_comparison() -> Graph:
    """(c) adaptive / static / ema / none with the same seed, as a 2 x 2 grid video."""
    g = Graph()
    model, _, text, vae = loaders(g)
    runs = []
    for i, policy in enumerate(("adaptive", "static", "ema", "none")):
        runs.append(generate(g, model, text, vae, seconds=5.0, policy=policy, preview=81,
                             prefix=f"AdaState/compare_{policy}", pos=(760 + 380 * i, 0),
                             title=f"Generate ({policy})"))  # fmt: skip
    stitch = [("direction", "right"), ("match_image_size", True), ("spacing_width", 8),
              ("spacing_color", "white")]  # fmt: skip
    top = g.add("ImageStitch", stitch, pos=(760, 700), title="adaptive | static",
                image1=(runs[0].id, 0), image2=(runs[1].id, 0))  # fmt: skip
    bottom = g.add("ImageStitch", stitch, pos=(1140, 700), title="ema | none",
                   image1=(runs[2].id, 0), image2=(runs[3].id, 0))  # fmt: skip
    down = [("direction", "down"), *stitch[1:]]
    grid = g.add("ImageStitch", down, pos=(1520, 700), title="grid", image1=top, image2=bottom)
    video_combine(g, grid, "AdaState/anchor_comparison", pos=(1900, 700))
    return g


def prompt_schedule() -> Graph:
    """(d) three prompts over 30 s: Prompt Schedule into Generate Stream."""
    g = Graph()
    model, clip, text, vae = loaders(g)
    schedule = (
        f"0: {PROMPT}\n"
        "10: The red fox stops at the edge of a frozen river and looks across the ice, "
        "snow falling gently, cinematic tracking shot\n"
        "20: The red fox leaps across the frozen river into the sunlit forest on the far bank, "
        "cinematic tracking shot"
    )
    prompts = g.add("AdaState_PromptSchedule", [("text", schedule), ("recache", False)],
                    pos=(360, 420), clip=clip)  # fmt: skip
    generate(g, model, text, vae, seconds=30.0, prefix="AdaState/prompt_schedule",
             pos=(760, 0), prompts=prompts)  # fmt: skip
    return g


def inspect() -> Graph:
    """(e) look inside: decoded chunk, decoded hidden state, attention per cache position."""
    g = Graph()
    model, _, text, vae = loaders(g)
    stream = g.add("AdaState_InitCache", [*SIZE, *stream_widgets()], pos=(760, 0),
                   model=model, positive=text)  # fmt: skip
    # the hidden state is denoised from the first steady-state chunk (the 3rd) on
    chunk = None
    for k in range(3):
        if chunk is not None:
            stream = g.add("AdaState_UpdateState", [], pos=(1140 + 380 * k, 200),
                           title=f"Update State {k}", model=model, stream=stream,
                           chunk=(chunk.id, 0))  # fmt: skip
        chunk = g.add("AdaState_DenoiseChunk", [("recache", False)], pos=(1140 + 380 * k, 0),
                      title=f"Denoise Chunk {k + 1}", model=model, stream=stream)  # fmt: skip
    frames = g.add("AdaState_Decode", [], pos=(2280, 0), vae=vae, chunk=(chunk.id, 0))
    state = g.add("AdaState_DecodeState", [], pos=(2280, 200), vae=vae, chunk=(chunk.id, 0))
    probe = g.add("AdaState_AttentionProbe", [("step", 0)], pos=(1900, 400), model=model,
                  stream=stream)  # fmt: skip
    g.add("PreviewImage", [], pos=(2660, 0), title="Chunk 3 frames", images=frames)
    g.add("PreviewImage", [], pos=(2660, 300), title="Hidden state (decoded)", images=state)
    g.add("PreviewImage", [], pos=(2660, 600), title="Attention per cache position",
          images=probe)  # fmt: skip
    return g


WORKFLOWS = {
    "adastate_5s_granular": granular_5s,
    "adastate_30s_stream": stream_30s,
    "adastate_anchor_comparison": anchor_comparison,
    "adastate_prompt_schedule": prompt_schedule,
    "adastate_inspect": inspect,
}


def main() -> None:
    (OUT / "api").mkdir(parents=True, exist_ok=True)
    for name, build in WORKFLOWS.items():
        g = build()
        (OUT / f"{name}.json").write_text(json.dumps(g.ui(), indent=2) + "\n")
        (OUT / "api" / f"{name}.json").write_text(json.dumps(g.api(), indent=2) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


if __name__ == "__main__":
    main()
