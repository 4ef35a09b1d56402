"""Writes the example workflows: workflows/*.json (UI format 0.4) and workflows/api/*.json
(their API-format twins, what POST /prompt runs), from one compact description per graph.

    python tests/comfy_host/make_workflows.py        # rewrites workflows/

Widget values are listed in each node's widget order (docs/nodes.md; core nodes as in
ComfyUI 0.3.64); a seed widget is followed in the UI format by its control_after_generate
value. The UI files also carry what an artist reads first: titled groups, Markdown notes
(frontend-only nodes, absent from the API twins) and a view that opens below the menu bar.
File names are what ComfyUI's template browser shows as titles; each has a `.jpg` thumbnail
beside it (tests/comfy_host/make_thumbnails.py renders them in the real web app).
tests/test_workflows.py checks both files against the node classes.
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
    "AdaState_Decode": [("images", "IMAGE"), ("decoder", "ADASTATE_DECODER")],
    "AdaState_DecodeState": [("images", "IMAGE")],
    "AdaState_AttentionProbe": [("chart", "IMAGE")],
    "AdaState_VideoCombine": [("filename", "STRING"), ("video", "VIDEO")],
    "AdaState_Generate": [("preview", "IMAGE"), ("filename", "STRING"), ("video", "VIDEO")],
    "AdaState_PromptSchedule": [("prompts", "ADASTATE_PROMPTS")],
    "AdaState_NativeModel": [("model", "ADASTATE_MODEL")],
    "AdaState_PrimeStream": [("stream", "ADASTATE_STREAM")],
    "AdaState_Evaluate": [("metrics", "STRING"), ("scatter", "IMAGE"), ("curves", "IMAGE")],
    "LoadVideo": [("VIDEO", "VIDEO")],
    "GetVideoComponents": [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")],
    "ImageScale": [("IMAGE", "IMAGE")],
    "UNETLoader": [("MODEL", "MODEL")],
    "LoraLoaderModelOnly": [("MODEL", "MODEL")],
    "CLIPLoader": [("CLIP", "CLIP")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "VAELoader": [("VAE", "VAE")],
    "ImageBatch": [("IMAGE", "IMAGE")],
    "ImageStitch": [("IMAGE", "IMAGE")],
    "PreviewImage": [],
    "MarkdownNote": [],
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
    "AdaState_Decode": [
        ("vae", "VAE"),
        ("chunk", "ADASTATE_CHUNK"),
        ("decoder", "ADASTATE_DECODER"),
    ],
    "AdaState_DecodeState": [("vae", "VAE"), ("chunk", "ADASTATE_CHUNK")],
    "AdaState_AttentionProbe": [("model", "ADASTATE_MODEL"), ("stream", "ADASTATE_STREAM")],
    "AdaState_VideoCombine": [("images", "IMAGE")],
    "AdaState_Generate": [
        ("model", "ADASTATE_MODEL"),
        ("positive", "CONDITIONING"),
        ("vae", "VAE"),
        ("prompts", "ADASTATE_PROMPTS"),
        ("stream", "ADASTATE_STREAM"),
    ],
    "AdaState_PromptSchedule": [("clip", "CLIP")],
    "AdaState_NativeModel": [("model", "MODEL")],
    "AdaState_PrimeStream": [
        ("model", "ADASTATE_MODEL"),
        ("stream", "ADASTATE_STREAM"),
        ("vae", "VAE"),
        ("images", "IMAGE"),
    ],
    "AdaState_Evaluate": [
        ("images", "IMAGE"),
        ("video_1", "STRING"),
        ("video_2", "STRING"),
        ("video_3", "STRING"),
        ("video_4", "STRING"),
    ],
    "LoadVideo": [],
    "GetVideoComponents": [("video", "VIDEO")],
    "ImageScale": [("image", "IMAGE")],
    "UNETLoader": [],
    "LoraLoaderModelOnly": [("model", "MODEL")],
    "CLIPLoader": [],
    "CLIPTextEncode": [("clip", "CLIP")],
    "VAELoader": [],
    "ImageBatch": [("image1", "IMAGE"), ("image2", "IMAGE")],
    "ImageStitch": [("image1", "IMAGE"), ("image2", "IMAGE")],
    "PreviewImage": [("images", "IMAGE")],
    "MarkdownNote": [],
}

OPTIONAL_SOCKETS = {("AdaState_DenoiseChunk", "positive"), ("AdaState_Generate", "prompts"),
                    ("AdaState_Generate", "stream"), ("AdaState_Evaluate", "images"),
                    ("AdaState_Evaluate", "video_1"), ("AdaState_Evaluate", "video_2"),
                    ("AdaState_Evaluate", "video_3"), ("AdaState_Evaluate", "video_4"),
                    ("ImageStitch", "image2"), ("AdaState_Decode", "decoder")}  # fmt: skip
UI_ONLY = {"MarkdownNote"}  # frontend-only nodes: not in the API format

TITLES = {
    "AdaState_LoadModel": "Load AdaState Model",
    "AdaState_InitCache": "AdaState Init Cache",
    "AdaState_DenoiseChunk": "AdaState Denoise Chunk",
    "AdaState_UpdateState": "AdaState Update State",
    "AdaState_Decode": "AdaState Decode Chunk",
    "AdaState_DecodeState": "AdaState Decode Hidden State",
    "AdaState_AttentionProbe": "AdaState Attention Probe",
    "AdaState_VideoCombine": "Video Combine (AdaState)",
    "AdaState_Generate": "Generate Stream (AdaState)",
    "AdaState_PromptSchedule": "AdaState Prompt Schedule",
    "AdaState_NativeModel": "AdaState from MODEL",
    "AdaState_PrimeStream": "AdaState Prime Stream",
    "AdaState_Evaluate": "AdaState Evaluate",
}

# room each node takes on the canvas (LiteGraph: 30 px title, 20 px per slot row, 24 px per
# widget), so groups enclose their nodes and nothing overlaps, players included
WIDTH = 340
MULTILINE = {"text"}  # multiline text widgets take ~4 rows
VIDEO_ROOM = 260  # what the frontend's player adds below an output node after a run
GROUP_PAD = 52  # group title bar above its first node (and the progress badge above that node)


@dataclass
class Node:
    id: int
    type: str
    widgets: list[tuple[str, object]]  # (input name, value) in widget order
    pos: tuple[int, int]
    title: str | None = None
    models: list[dict] | None = None
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input -> (node, slot)
    size: tuple[int, int] | None = None  # default: estimated from slots and widgets
    mode: int = 0  # 4: bypassed (the frontend passes its input through; absent from the API)

    def extent(self) -> tuple[int, int]:
        """(width, height) of the node body (the 30 px title bar is above pos)."""
        if self.size is not None:
            return self.size
        rows = max(len(SOCKETS[self.type]), len(OUTPUTS[self.type]))
        widgets = sum(5 if name in MULTILINE else 1 for name, _ in self.widgets)
        widgets += sum(1 for name, _ in self.widgets if name == "seed")  # control_after_generate
        return WIDTH, 16 + 22 * rows + 24 * widgets


@dataclass
class Group:
    title: str
    members: list[Node]
    color: str = "#3f789e"
    extra_height: int = 0  # room kept for what appears after a run (players, previews)


class Graph:
    def __init__(self, view: tuple[float, float, float] = (0.6, 140.0, 170.0)) -> None:
        self.nodes: list[Node] = []
        self.groups: list[Group] = []
        self.view = view  # (scale, offset x, offset y): opens right of the side bar, below the menu

    def add(self, type_, widgets=(), pos=(0, 0), title=None, models=None, size=None, mode=0,
            **links) -> Node:  # fmt: skip
        node = Node(len(self.nodes) + 1, type_, list(widgets), pos, title, models, size=size,
                    mode=mode)  # fmt: skip
        for name, src in links.items():
            node.links[name] = src if isinstance(src, tuple) else (src.id, 0)
        self.nodes.append(node)
        return node

    def note(self, text: str, pos: tuple[int, int], size: tuple[int, int]) -> Node:
        """A Markdown note (frontend only)."""
        return self.add("MarkdownNote", [("text", text)], pos=pos, size=size)

    def group(self, title: str, *members: Node, color: str = "#3f789e", extra_height: int = 0):
        self.groups.append(Group(title, list(members), color, extra_height))

    # -- API format ------------------------------------------------------------------------------
    def _through(self, src: int, slot: int) -> tuple[int, int]:
        """The source a link really takes: through bypassed nodes (output -> the input of the
        same type, as the frontend routes a bypassed node)."""
        by_id = {n.id: n for n in self.nodes}
        node = by_id[src]
        while node.mode == 4:
            typ = OUTPUTS[node.type][slot][1]
            name = next(name for name, t in SOCKETS[node.type] if t == typ)
            src, slot = node.links[name]
            node = by_id[src]
        return src, slot

    def api(self) -> dict:
        out = {}
        for n in self.nodes:
            if n.type in UI_ONLY or n.mode == 4:
                continue
            inputs = {name: value for name, value in n.widgets}
            for name, (src, slot) in n.links.items():
                src, slot = self._through(src, slot)
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
                "size": list(n.extent()),
                "flags": {},
                "order": order[n.id],
                "mode": n.mode,
                "inputs": inputs,
                "outputs": outputs,
                "properties": props,
                "widgets_values": widgets,
            }
            if n.title:
                node["title"] = n.title
            if n.type in UI_ONLY:
                node["color"], node["bgcolor"] = "#432", "#653"
            nodes.append(node)
        scale, ox, oy = self.view
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(self.api(), sort_keys=True))),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": nodes,
            "links": links,
            "groups": [self._group(i + 1, g) for i, g in enumerate(self.groups)],
            "config": {},
            "extra": {"ds": {"scale": scale, "offset": [ox, oy]}},
            "version": 0.4,
        }

    @staticmethod
    def _group(gid: int, g: Group) -> dict:
        x0 = min(n.pos[0] for n in g.members) - 15
        y0 = min(n.pos[1] for n in g.members) - 30 - GROUP_PAD
        x1 = max(n.pos[0] + n.extent()[0] for n in g.members) + 15
        y1 = max(n.pos[1] + n.extent()[1] for n in g.members) + 15 + g.extra_height
        return {"id": gid, "title": g.title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                "color": g.color, "font_size": 24, "flags": {}}  # fmt: skip

    def _order(self) -> dict[int, int]:
        done: dict[int, int] = {}
        while len(done) < len(self.nodes):
            for n in self.nodes:
                if n.id not in done and all(src in done for src, _ in n.links.values()):
                    done[n.id] = len(done)
        return done


# -- the common front of every graph -------------------------------------------------------------

MODELS_NOTE = (
    "**Models** (ComfyUI `models/` folders):\n\n"
    "* `diffusion_models/self_forcing_dmd.pt`: the causal Wan2.1 DiT, from "
    "[gdhe17/Self-Forcing](https://huggingface.co/gdhe17/Self-Forcing/tree/main/checkpoints). "
    "ComfyUI before 0.2x cannot download `.pt` files from its missing-models dialog: download "
    "it by hand, or convert it with `adastate convert self_forcing_dmd.pt "
    "self_forcing_dmd.safetensors` and pick that file here.\n"
    "* `text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors` and `vae/wan_2.1_vae.safetensors` "
    "from Comfy-Org/Wan_2.1_ComfyUI_repackaged (the dialog downloads them)."
)


def loaders(g: Graph, prompt: str = PROMPT, y: int = 420):
    """Load AdaState Model, CLIPLoader + CLIP Text Encode and Load VAE in a 'Models' group and
    a 'Prompt' group, with the models note above them."""
    note = g.note(MODELS_NOTE, pos=(0, y - 330), size=(760, 230))
    model = g.add(
        "AdaState_LoadModel",
        [("dit_name", MODELS["dit"]["name"]), ("weight_dtype", "default"), ("attention", "sdpa")],
        pos=(0, y),
        models=[MODELS["dit"]],
    )
    clip = g.add(
        "CLIPLoader",
        [("clip_name", MODELS["clip"]["name"]), ("type", "wan"), ("device", "default")],
        pos=(0, y + 170),
        models=[MODELS["clip"]],
    )
    vae = g.add("VAELoader", [("vae_name", MODELS["vae"]["name"])], pos=(0, y + 340),
                models=[MODELS["vae"]])  # fmt: skip
    text = g.add("CLIPTextEncode", [("text", prompt)], pos=(420, y), clip=clip,
                 title="Prompt (CLIP Text Encode)", size=(360, 200))  # fmt: skip
    g.group("Models", model, clip, vae)
    g.group("Prompt", text, color="#8a6b3a")
    del note
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
             title=None, prompts=None, stream=None):  # fmt: skip
    links = {"model": model, "positive": text, "vae": vae}
    if prompts is not None:
        links["prompts"] = prompts
    if stream is not None:
        links["stream"] = stream
    widgets = [*SIZE, ("seconds", seconds), *stream_widgets(policy)]
    widgets += [("format", "mp4"), ("crf", 19), ("filename_prefix", prefix),
                ("preview_frames", preview), ("chunks", 0)]  # fmt: skip
    return g.add("AdaState_Generate", widgets, pos=pos, title=title, **links)


def video_combine(g, images, prefix, pos):
    widgets = [("frame_rate", 16), ("format", "mp4"), ("crf", 19), ("filename_prefix", prefix),
               ("save_output", True)]  # fmt: skip
    return g.add("AdaState_VideoCombine", widgets, pos=pos, images=images)


def below(node: Node, gap: int = 70) -> int:
    """The y of a node placed under `node` (title bar and a gap in between)."""
    return node.pos[1] + node.extent()[1] + gap


# -- the examples ---------------------------------------------------------------------------

COL = 420  # column pitch of the chunk-by-chunk graphs


def granular_5s() -> Graph:
    """(a) 5 s (81 frames) built chunk by chunk: 7 x Denoise Chunk / Update State / Decode."""
    g = Graph()
    model, _, text, vae = loaders(g)
    g.note(
        "## A 5-second clip, chunk by chunk\n\n"
        "Each column is one chunk (3 latent frames = 12 video frames; the first gives 9): "
        "**Denoise Chunk** denoises it with the adaptive state, **Decode Chunk** turns it into "
        "frames, **Update State** writes it into the K/V cache for the next chunk.\n\n"
        "Each Decode Chunk passes its `decoder` to the next one, so every chunk is decoded "
        "exactly once and the seams match a one-shot decode. **Frames 1-k** joins the chunks; "
        "Video Combine saves the clip (numbered files: a run never overwrites an earlier one).",
        pos=(820, 90), size=(COL * 3 - 60, 230),
    )  # fmt: skip
    stream = g.add("AdaState_InitCache", [*SIZE, *stream_widgets()], pos=(420, 740),
                   model=model, positive=text)  # fmt: skip
    g.group("Start the stream", stream, color="#3f5e8a")
    frames = decoder = None
    top = 420
    for k in range(7):
        x = 820 + COL * k
        chunk = g.add("AdaState_DenoiseChunk", [("recache", False)], pos=(x, top),
                      title=f"Denoise Chunk {k + 1}", model=model, stream=stream)  # fmt: skip
        links = {"vae": vae, "chunk": (chunk.id, 0)}
        if decoder is not None:
            links["decoder"] = (decoder.id, 1)
        decoder = g.add("AdaState_Decode", [], pos=(x, below(chunk)), title=f"Decode Chunk {k + 1}",
                        **links)  # fmt: skip
        members = [chunk, decoder]
        if k < 6:
            stream = g.add("AdaState_UpdateState", [], pos=(x, below(decoder)),
                           title=f"Update State {k + 1}", model=model, stream=stream,
                           chunk=(chunk.id, 0))  # fmt: skip
            members.append(stream)
        y = below(members[-1])
        frames = decoder if frames is None else g.add(
            "ImageBatch", [], pos=(x, y), title=f"Frames 1-{k + 1}", image1=(frames.id, 0),
            image2=(decoder.id, 0))  # fmt: skip
        if k:
            members.append(frames)
        g.group(f"Chunk {k + 1}", *members, color="#3f789e" if k % 2 else "#4a6a8a")
    save = video_combine(g, frames, "AdaState/granular_5s", pos=(820 + COL * 7, top))
    g.group("Save", save, color="#3a7a4a", extra_height=VIDEO_ROOM)
    return g


def stream_30s() -> Graph:
    """(b) a 30-second stream in one node."""
    g = Graph()
    model, _, text, vae = loaders(g)
    run = generate(g, model, text, vae, seconds=30.0, prefix="AdaState/stream_30s",
                   pos=(820, 90))  # fmt: skip
    g.note(
        "## A 30-second video in one node\n\n"
        "**Generate Stream** denoises, updates the cache, decodes and writes chunk by chunk: "
        "frames reach the file as they are made (RAM stays flat for any length). While it "
        "runs the node shows the last decoded chunk; Cancel keeps a playable file with every "
        "finished chunk. Each run writes a new numbered file.",
        pos=(1200, 90), size=(420, 300),
    )  # fmt: skip
    g.group("Generate", run, color="#3a7a4a", extra_height=VIDEO_ROOM)
    return g


def anchor_comparison() -> Graph:
    """(c) adaptive / static / ema / none with the same seed, as a 2 x 2 grid video."""
    g = Graph()
    model, _, text, vae = loaders(g)
    runs = []
    for i, policy in enumerate(("adaptive", "static", "ema", "none")):
        runs.append(generate(g, model, text, vae, seconds=5.0, policy=policy, preview=81,
                             prefix=f"AdaState/compare_{policy}", pos=(820 + COL * i, 90),
                             title=f"Generate ({policy})"))  # fmt: skip
    g.group("Four anchor policies, same prompt and seed", *runs, color="#3f789e",
            extra_height=VIDEO_ROOM)  # fmt: skip
    y = below(runs[0], VIDEO_ROOM + 110)
    stitch = [("direction", "right"), ("match_image_size", True), ("spacing_width", 8),
              ("spacing_color", "white")]  # fmt: skip
    top = g.add("ImageStitch", stitch, pos=(820, y), title="adaptive | static",
                image1=(runs[0].id, 0), image2=(runs[1].id, 0))  # fmt: skip
    bottom = g.add("ImageStitch", stitch, pos=(820 + COL, y), title="ema | none",
                   image1=(runs[2].id, 0), image2=(runs[3].id, 0))  # fmt: skip
    down = [("direction", "down"), *stitch[1:]]
    grid = g.add("ImageStitch", down, pos=(820 + 2 * COL, y), title="grid", image1=top,
                 image2=bottom)  # fmt: skip
    save = video_combine(g, grid, "AdaState/anchor_comparison", pos=(820 + 3 * COL, y))
    g.group("Side by side: adaptive | static over ema | none", top, bottom, grid, save,
            color="#3a7a4a", extra_height=VIDEO_ROOM)  # fmt: skip
    y2 = y + 300 + VIDEO_ROOM
    links = {f"video_{i + 1}": (run.id, 1) for i, run in enumerate(runs)}
    ev = g.add("AdaState_Evaluate", [("fps", 16.0), ("labels", "adaptive,static,ema,none")],
               pos=(820, y2), **links)  # fmt: skip
    plot = g.add("PreviewImage", [], pos=(820 + COL, y2), title="Consistency vs dynamics",
                 images=(ev.id, 1), size=(WIDTH, 300))  # fmt: skip
    curves = g.add("PreviewImage", [], pos=(820 + 2 * COL, y2), title="Per-second curves",
                   images=(ev.id, 2), size=(WIDTH, 300))  # fmt: skip
    g.group("Measured: dynamics, flicker, drift (AdaState Evaluate)", ev, plot, curves,
            color="#6a4a8a")  # fmt: skip
    g.note(
        "## Anchor policies compared\n\n"
        "The same prompt, seed and content noise under four anchors at cache position 0: "
        "**adaptive** (AdaState's evolving state), **static** (a frozen first-frame sink), "
        "**ema** (a moving-average sink) and **none** (a plain rolling window). The grid puts "
        "adaptive | static over ema | none. Static anchors hold the scene but damp motion; no "
        "anchor keeps motion but drifts; the adaptive state aims for both.",
        pos=(820 + 4 * COL + 40, 90), size=(420, 320),
    )  # fmt: skip
    return g


def prompt_schedule() -> Graph:
    """(d) three prompts over 30 s: the prompt at 0 s, then Prompt Schedule's switches."""
    g = Graph()
    model, clip, text, vae = loaders(g)
    schedule = (
        "10: The red fox stops at the edge of a frozen river and looks across the ice, "
        "snow falling gently, cinematic tracking shot\n"
        "20: The red fox leaps across the frozen river into the sunlit forest on the far bank, "
        "cinematic tracking shot"
    )
    prompts = g.add("AdaState_PromptSchedule", [("text", schedule), ("recache", False)],
                    pos=(420, 740), clip=clip, size=(360, 220))  # fmt: skip
    g.group("Prompt switches at 10 s and 20 s", prompts, color="#8a6b3a")
    run = generate(g, model, text, vae, seconds=30.0, prefix="AdaState/prompt_schedule",
                   pos=(820, 90), prompts=prompts)  # fmt: skip
    g.group("Generate", run, color="#3a7a4a", extra_height=VIDEO_ROOM)
    g.note(
        "## Three prompts in one video\n\n"
        "The **Prompt** node plays from 0 s; **Prompt Schedule** lists the switches, one "
        "`seconds: prompt` per line (here at 10 s and 20 s). Switches happen at chunk "
        "boundaries and the stream keeps its cache, so the scene carries over. A line at 0 s "
        "would replace the Prompt node. `recache` re-encodes the cached frames under each new "
        "prompt (a cleaner switch, one extra pass).",
        pos=(1200, 90), size=(420, 320),
    )  # fmt: skip
    return g


def inspect() -> Graph:
    """(e) look inside: decoded chunk, decoded hidden state, attention per cache position."""
    g = Graph()
    model, _, text, vae = loaders(g)
    stream = g.add("AdaState_InitCache", [*SIZE, *stream_widgets()], pos=(420, 740),
                   model=model, positive=text)  # fmt: skip
    g.group("Start the stream", stream, color="#3f5e8a")
    # the hidden state is denoised from the first steady-state chunk (the 3rd) on
    chunk = None
    members = []
    for k in range(3):
        x = 820 + COL * k
        if chunk is not None:
            stream = g.add("AdaState_UpdateState", [], pos=(x, 620), title=f"Update State {k}",
                           model=model, stream=stream, chunk=(chunk.id, 0))  # fmt: skip
            members.append(stream)
        chunk = g.add("AdaState_DenoiseChunk", [("recache", False)], pos=(x, 420),
                      title=f"Denoise Chunk {k + 1}", model=model, stream=stream)  # fmt: skip
        members.append(chunk)
    g.group("Three chunks", *members, color="#3f789e")
    x = 820 + COL * 3
    frames = g.add("AdaState_Decode", [], pos=(x, 420), title="Decode Chunk 3", vae=vae,
                   chunk=(chunk.id, 0))  # fmt: skip
    state = g.add("AdaState_DecodeState", [], pos=(x, 620), vae=vae, chunk=(chunk.id, 0))
    probe = g.add("AdaState_AttentionProbe", [("step", 0)], pos=(x, 820), model=model,
                  stream=stream)  # fmt: skip
    g.group("Look inside", frames, state, probe, color="#6a4a8a")
    shown = [
        g.add("PreviewImage", [], pos=(x + COL, 90), title="Chunk 3 frames", images=frames,
              size=(WIDTH, 300)),
        g.add("PreviewImage", [], pos=(x + COL, 500), title="Hidden state (decoded)",
              images=state, size=(WIDTH, 300)),
        g.add("PreviewImage", [], pos=(x + COL, 910), title="Attention per cache position",
              images=probe, size=(WIDTH, 300)),
    ]  # fmt: skip
    g.group("Results", *shown, color="#3a7a4a")
    g.note(
        "## Look inside the stream\n\n"
        "Three chunks, then: the frames of chunk 3; the **hidden adaptive state** decoded as "
        "if it were video (it is never part of the output; the state is denoised from the "
        "first steady chunk, here chunk 3, on); and the **attention probe**: how chunk 4's "
        "queries split their attention over the anchor slot and the cached frames (paper "
        "Fig. 2a).",
        pos=(820, 90), size=(COL * 3 - 60, 230),
    )  # fmt: skip
    return g


LORA = {
    "name": "Wan2_1_self_forcing_dmd_1_3B_lora_rank_32_fp16.safetensors",
    "url": "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/LoRAs/"
    "Wan2_1_self_forcing_1_3B/Wan2_1_self_forcing_dmd_1_3B_lora_rank_32_fp16.safetensors",
    "directory": "loras",
}
NATIVE_DIT = "self_forcing_dmd.safetensors"

NATIVE_NOTE = (
    "**ComfyUI's own loaders** (any MODEL: Load Diffusion Model, Unet Loader (GGUF), LoRA "
    "nodes; ComfyUI loads as much as fits, so 8-12 GB cards work):\n\n"
    "* `diffusion_models/self_forcing_dmd.safetensors`: Self-Forcing's causal DiT as a "
    "safetensors, made once with `adastate convert self_forcing_dmd.pt "
    "self_forcing_dmd.safetensors --causal-ar` ([the .pt](https://huggingface.co/gdhe17/"
    "Self-Forcing/tree/main/checkpoints)). A GGUF of it works through Unet Loader (GGUF).\n"
    "* The **LoRA** node is bypassed (Ctrl+B turns it on): e.g. Kijai's Self-Forcing DMD LoRA "
    "on the base `wan2.1_t2v_1.3B_fp16.safetensors` (a LoRA made for few-step bidirectional "
    "sampling; its quality in a causal stream is unverified), or your own.\n"
    "* `text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors` and `vae/wan_2.1_vae.safetensors` "
    "from Comfy-Org/Wan_2.1_ComfyUI_repackaged (the dialog downloads them)."
)


def native_stream_30s() -> Graph:
    """(f) the 30-second stream on ComfyUI's own MODEL: Load Diffusion Model -> LoRA
    (bypassed) -> AdaState from MODEL."""
    g = Graph()
    y = 420
    g.note(NATIVE_NOTE, pos=(0, y - 330), size=(760, 230))
    dit = g.add("UNETLoader", [("unet_name", NATIVE_DIT), ("weight_dtype", "default")],
                pos=(0, y), title="Load Diffusion Model")  # fmt: skip
    lora = g.add("LoraLoaderModelOnly", [("lora_name", LORA["name"]), ("strength_model", 1.0)],
                 pos=(0, below(dit, 60)), title="LoRA (bypassed: Ctrl+B to use)", models=[LORA],
                 mode=4, model=dit)  # fmt: skip
    model = g.add("AdaState_NativeModel", [("attention", "comfy")], pos=(0, below(lora, 60)),
                  model=lora)  # fmt: skip
    clip = g.add(
        "CLIPLoader",
        [("clip_name", MODELS["clip"]["name"]), ("type", "wan"), ("device", "default")],
        pos=(0, below(model, 60)),
        models=[MODELS["clip"]],
    )
    vae = g.add("VAELoader", [("vae_name", MODELS["vae"]["name"])], pos=(0, below(clip, 60)),
                models=[MODELS["vae"]])  # fmt: skip
    text = g.add("CLIPTextEncode", [("text", PROMPT)], pos=(420, y), clip=clip,
                 title="Prompt (CLIP Text Encode)", size=(360, 200))  # fmt: skip
    g.group("ComfyUI model, LoRA, AdaState", dit, lora, model, clip, vae)
    g.group("Prompt", text, color="#8a6b3a")
    run = generate(g, model, text, vae, seconds=30.0, prefix="AdaState/native_stream_30s",
                   pos=(820, 90))  # fmt: skip
    g.note(
        "## The 30-second stream on ComfyUI's own model loading\n\n"
        "**AdaState from MODEL** runs the stream on the layers of any Wan2.1 text-to-video "
        "MODEL: LoRAs, GGUF quantisation and ComfyUI's partial (low-VRAM) loading apply as in "
        "its own sampling. `attention = comfy` uses ComfyUI's attention, so its Sage/Flash "
        "settings and attention patch nodes apply. Model wrappers and object patches (nodes "
        "that replace a layer's forward) do not reach the stream.",
        pos=(1200, 90), size=(420, 300),
    )  # fmt: skip
    g.group("Generate", run, color="#3a7a4a", extra_height=VIDEO_ROOM)
    return g


CLIP_NAME = "clip.mp4"


def extend_video() -> Graph:
    """(g) continue a clip: Load Video -> frames -> fit to 832x480 -> Prime Stream -> Generate
    Stream (the clip first, then 20 more seconds)."""
    g = Graph()
    model, _, text, vae = loaders(g)
    clip = g.add("LoadVideo", [("file", CLIP_NAME)], pos=(420, 760), title="Load Video (your clip)",
                 size=(360, 520))  # fmt: skip
    parts = g.add("GetVideoComponents", [], pos=(420, below(clip, 60)), video=clip)
    fit = g.add("ImageScale", [("upscale_method", "lanczos"), *SIZE, ("crop", "center")],
                pos=(420, below(parts, 60)), title="Fit to 832x480 (crop center)",
                image=(parts.id, 0))  # fmt: skip
    g.group("Your clip", clip, parts, fit, color="#8a6b3a")
    start = g.add("AdaState_InitCache", [*SIZE, *stream_widgets()], pos=(820, 420),
                  model=model, positive=text)  # fmt: skip
    primed = g.add("AdaState_PrimeStream", [("output", "original")], pos=(820, below(start)),
                   model=model, stream=start, vae=vae, images=fit)  # fmt: skip
    g.group("Start the stream from the clip", start, primed, color="#3f5e8a")
    run = generate(g, model, text, vae, seconds=25.0, prefix="AdaState/extended",
                   pos=(1240, 90), stream=primed)  # fmt: skip
    g.group("Generate", run, color="#3a7a4a", extra_height=VIDEO_ROOM)
    g.note(
        "## Continue a clip\n\n"
        "**Load Video** picks your clip (put it in ComfyUI's `input` folder or upload it); its "
        "frames are fitted to the stream size and **Prime Stream** encodes them with the VAE "
        "and writes them into the stream's cache as if the stream had made them. **Generate "
        "Stream** then writes your clip first and continues it without a seam; `seconds` "
        "counts the whole video (clip included). Its size and stream widgets are not used "
        "when a stream is connected: Init Cache's are. For a single image use Load Image "
        "instead of the video nodes.",
        pos=(1640, 90), size=(420, 360),
    )  # fmt: skip
    return g


WORKFLOWS = {
    "AdaState 5s chunk by chunk": granular_5s,
    "AdaState 30s stream": stream_30s,
    "AdaState anchor comparison": anchor_comparison,
    "AdaState prompt schedule": prompt_schedule,
    "AdaState inspect the state": inspect,
    "AdaState 30s stream, ComfyUI loader + LoRA": native_stream_30s,
    "AdaState extend a video": extend_video,
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
