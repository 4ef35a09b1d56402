"""The example workflows (workflows/*.json, UI format 0.4) and their API twins
(workflows/api/*.json): valid, consistent links, widget values in each node's widget order,
download hints on the loaders, no sageattention / torch.compile, groups and notes an artist
reads first, a thumbnail per template. No ComfyUI needed (the real host and browser checks are
in test_comfyui_host.py / test_comfyui_browser.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

WORKFLOWS = REPO / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
EXPECTED = {
    "AdaState 5s chunk by chunk",
    "AdaState 30s stream",
    "AdaState anchor comparison",
    "AdaState prompt schedule",
    "AdaState inspect the state",
    "AdaState 30s stream, ComfyUI loader + LoRA",
    "AdaState extend a video",
}
NOTE = "MarkdownNote"  # frontend-only: in the UI files, not in the API twins
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
LOADERS = {"AdaState_LoadModel", "CLIPLoader", "VAELoader"}
REPACK = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/"

# Core nodes used by the examples, as ComfyUI 0.3.64 declares them:
# (socket inputs, widget inputs in order (name, allowed values or None), output types)
CORE = {
    "CLIPLoader": ([], [("clip_name", None), ("type", {"wan"}), ("device", {"default", "cpu"})],
                   ["CLIP"]),
    "CLIPTextEncode": (["clip"], [("text", None)], ["CONDITIONING"]),
    "VAELoader": ([], [("vae_name", None)], ["VAE"]),
    "UNETLoader": ([], [("unet_name", None),
                        ("weight_dtype", {"default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"})],
                   ["MODEL"]),
    "LoraLoaderModelOnly": (["model"], [("lora_name", None), ("strength_model", None)],
                            ["MODEL"]),
    "LoadVideo": ([], [("file", None)], ["VIDEO"]),
    "GetVideoComponents": (["video"], [], ["IMAGE", "AUDIO", "FLOAT"]),
    "ImageScale": (["image"], [("upscale_method", {"nearest-exact", "bilinear", "area",
                                                   "bicubic", "lanczos"}),
                               ("width", None), ("height", None),
                               ("crop", {"disabled", "center"})], ["IMAGE"]),
    "ImageBatch": (["image1", "image2"], [], ["IMAGE"]),
    "ImageStitch": (["image1", "image2"],
                    [("direction", {"right", "down", "left", "up"}), ("match_image_size", None),
                     ("spacing_width", None),
                     ("spacing_color", {"white", "black", "red", "green", "blue"})], ["IMAGE"]),
    "PreviewImage": (["images"], [], []),
    NOTE: ([], [("text", None)], []),
}  # fmt: skip


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def pack():
    """The pack imported through its root package (as ComfyUI does), or None if a node class is
    still missing; folder lists answer empty (no ComfyUI here)."""
    name = "adastate_pack"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception:
            del sys.modules[name]
            raise
    return mod


@pytest.fixture
def node_specs(pack, monkeypatch):
    """class_type -> (sockets, [(widget, allowed or None, has_seed_control)], output types)."""
    bridge = sys.modules.get(pack.__name__ + ".nodes.bridge")
    if bridge is not None:
        for attr in dir(bridge):
            if attr.endswith("_names") and callable(getattr(bridge, attr)):
                monkeypatch.setattr(bridge, attr, lambda *a, **k: [])
    specs = {}
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        sockets, widgets = [], []
        for section in ("required", "optional"):
            for name, decl in types.get(section, {}).items():
                typ, opts = decl[0], (decl[1] if len(decl) > 1 else {})
                if isinstance(typ, (list, tuple)):
                    widgets.append((name, set(typ) or None, False))
                elif typ in WIDGET_TYPES and not opts.get("forceInput"):
                    seed_control = bool(opts.get("control_after_generate"))
                    widgets.append((name, None, seed_control))
                else:
                    sockets.append(name)
        specs[node_id] = (sockets, widgets, list(cls.RETURN_TYPES))
    for node_id, (sockets, widgets, outs) in CORE.items():
        specs[node_id] = (sockets, [(n, allowed, False) for n, allowed in widgets], outs)
    return specs


def real_nodes(wf: dict) -> list[dict]:
    return [n for n in wf["nodes"] if n["type"] != NOTE]


def used_classes() -> set[str]:
    return {n["type"] for path in UI_FILES for n in load(path)["nodes"]}


def require_nodes(specs: dict) -> None:
    missing = sorted(c for c in used_classes() if c not in specs)
    if missing:
        pytest.skip(f"nodes/ does not define {', '.join(missing)} yet")


def test_the_examples_exist_with_api_twins():
    names = {p.stem for p in UI_FILES}
    assert names == EXPECTED
    assert {p.stem for p in (WORKFLOWS / "api").glob("*.json")} == EXPECTED


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_structure_and_links(path):
    wf = load(path)
    assert wf["version"] == 0.4
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes)
    links = {}
    for link in wf["links"]:
        link_id, src, src_slot, dst, dst_slot, typ = link
        assert link_id not in links, f"duplicate link {link_id}"
        links[link_id] = link
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"], f"link {link_id} missing from node {src} outputs"
        assert inp["link"] == link_id, f"link {link_id} missing from node {dst} inputs"
        assert out["type"] == inp["type"] == typ
    assert wf["last_link_id"] >= max(links)
    for node in nodes.values():
        for inp in node["inputs"]:
            if inp["link"] is not None:
                assert links[inp["link"]][3] == node["id"]
        for slot, out in enumerate(node["outputs"]):
            for link_id in out["links"] or []:
                assert links[link_id][1:3] == [node["id"], slot]
        assert node["properties"]["Node name for S&R"] == node["type"]


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_loaders_carry_download_hints(path):
    for node in load(path)["nodes"]:
        if node["type"] not in LOADERS:
            continue
        models = node["properties"].get("models")
        assert models, f"{node['type']} (node {node['id']}) has no properties.models"
        for m in models:
            assert set(m) >= {"name", "url", "directory"}
            assert m["url"].startswith("https://huggingface.co/")
            assert m["name"] in node["widgets_values"], (
                "the hint names a file the node does not use"
            )
            assert m["url"].endswith("/" + m["name"])
        if node["type"] == "AdaState_LoadModel":
            assert models[0]["directory"] == "diffusion_models"
            assert "gdhe17/Self-Forcing" in models[0]["url"]
        else:
            assert models[0]["url"].startswith(REPACK)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_no_sageattention_or_compile(path):
    for p in (path, WORKFLOWS / "api" / path.name):
        text = p.read_text().lower()
        assert "sageattention" not in text
        assert "compile" not in text
    for node in load(path)["nodes"]:
        if node["type"] == "AdaState_LoadModel":
            assert node["widgets_values"][2] == "sdpa"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_widgets_follow_node_widget_order(path, node_specs):
    require_nodes(node_specs)
    for node in load(path)["nodes"]:
        sockets, widgets, outs = node_specs[node["type"]]
        values = list(node["widgets_values"])
        expected_len = len(widgets) + sum(seed for _, _, seed in widgets)
        assert len(values) == expected_len, (node["type"], values)
        i = 0
        for name, allowed, seed_control in widgets:
            if allowed is not None:
                assert values[i] in allowed, (node["type"], name, values[i])
            i += 1
            if seed_control:
                assert values[i] in {"fixed", "increment", "decrement", "randomize"}
                i += 1
        for inp in node["inputs"]:
            assert inp["name"] in sockets, (node["type"], inp["name"])
        assert [o["type"] for o in node["outputs"]] == outs, node["type"]


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_matches_ui(path, node_specs):
    require_nodes(node_specs)
    ui = load(path)
    api = load(WORKFLOWS / "api" / path.name)
    every = {n["id"]: n for n in real_nodes(ui)}
    nodes = {i: n for i, n in every.items() if n.get("mode", 0) != 4}  # bypassed: not sent
    assert {str(i) for i in nodes} == set(api)
    links = {link[0]: link for link in ui["links"]}

    def source(link_id: int) -> list:
        """A link's real source: through bypassed nodes, as the frontend routes them."""
        _, src, slot, _, _, typ = links[link_id]
        while every[src].get("mode", 0) == 4:
            inp = next(i for i in every[src]["inputs"] if i["type"] == typ)
            _, src, slot, _, _, _ = links[inp["link"]]
        return [str(src), slot]

    for node_id, node in nodes.items():
        entry = api[str(node_id)]
        assert entry["class_type"] == node["type"]
        sockets, widgets, _ = node_specs[node["type"]]
        values = iter(node["widgets_values"])
        expected = {}
        for name, _, seed_control in widgets:
            expected[name] = next(values)
            if seed_control:
                next(values)
        for inp in node["inputs"]:
            if inp["link"] is not None:
                expected[inp["name"]] = source(inp["link"])
        assert entry["inputs"] == expected, node["type"]
        # every required input is given
        cls_inputs = set(sockets) | {w for w, _, _ in widgets}
        assert set(entry["inputs"]) <= cls_inputs


def test_api_twins_only_reference_existing_outputs(node_specs):
    require_nodes(node_specs)
    for path in sorted((WORKFLOWS / "api").glob("*.json")):
        api = load(path)
        for node_id, entry in api.items():
            for name, value in entry["inputs"].items():
                if isinstance(value, list):
                    src, slot = value
                    outs = node_specs[api[src]["class_type"]][2]
                    assert slot < len(outs), (path.name, node_id, name)


def test_required_inputs_connected_or_set(pack, node_specs):
    require_nodes(node_specs)
    for path in sorted((WORKFLOWS / "api").glob("*.json")):
        for node_id, entry in load(path).items():
            cls = pack.NODE_CLASS_MAPPINGS.get(entry["class_type"])
            if cls is None:
                continue
            required = set(cls.INPUT_TYPES().get("required", {}))
            assert required <= set(entry["inputs"]), (path.name, node_id, entry["class_type"])


def test_output_nodes_present():
    for path in UI_FILES:
        types = [n["type"] for n in load(path)["nodes"]]
        assert any(
            t in {"AdaState_Generate", "AdaState_VideoCombine", "PreviewImage"} for t in types
        ), path.name


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_groups_notes_and_thumbnail(path):
    """What an artist meets on opening a template: a thumbnail in the template browser, notes
    saying what the graph does and where the models go, every node inside a titled group, and
    a view whose top row is below the menu bar."""
    wf = load(path)
    assert (path.with_suffix(".jpg")).is_file(), "no template thumbnail"
    assert path.with_suffix(".jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    notes = [n for n in wf["nodes"] if n["type"] == NOTE]
    assert len(notes) >= 2 and all(len(n["widgets_values"][0]) > 100 for n in notes)
    assert any("adastate convert" in n["widgets_values"][0] for n in notes)
    groups = wf["groups"]
    assert groups and all(g["title"] for g in groups)

    def inside(node, g):
        x, y, w, h = g["bounding"]
        nx, ny = node["pos"]
        nw, nh = node["size"]
        return x <= nx and y <= ny - 30 and nx + nw <= x + w and ny + nh <= y + h

    for node in real_nodes(wf):
        assert any(inside(node, g) for g in groups), (node["type"], node.get("title"))
    # nothing overlaps (title bars included)
    boxes = [(n["pos"][0], n["pos"][1] - 30, *n["size"]) for n in wf["nodes"]]
    for i, (ax, ay, aw, ah) in enumerate(boxes):
        for bx, by, bw, bh in boxes[i + 1 :]:
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh + 30 and by < ay + ah + 30)
    for note in notes:  # notes sit beside groups, not on them
        nx, ny = note["pos"]
        nw, nh = note["size"]
        for g in groups:
            x, y, w, h = g["bounding"]
            assert not (nx < x + w and x < nx + nw and ny - 30 < y + h and y < ny + nh), (
                g["title"])  # fmt: skip
    for i, a in enumerate(groups):  # groups do not overlap either
        ax, ay, aw, ah = a["bounding"]
        for b in groups[i + 1 :]:
            bx, by, bw, bh = b["bounding"]
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), (
                a["title"], b["title"])  # fmt: skip
    ds = wf["extra"]["ds"]
    top = min(n["pos"][1] - 30 for n in wf["nodes"])
    left = min(n["pos"][0] for n in wf["nodes"])
    assert (top + ds["offset"][1]) * ds["scale"] >= 90  # screen px below the top menu
    assert (left + ds["offset"][0]) * ds["scale"] >= 70  # right of the side bar


def test_granular_decoders_are_chained_and_schedule_uses_the_prompt():
    wf = load(WORKFLOWS / "AdaState 5s chunk by chunk.json")
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: link for link in wf["links"]}
    decodes = [n for n in wf["nodes"] if n["type"] == "AdaState_Decode"]
    assert len(decodes) == 7
    chained = 0
    for node in decodes:
        (decoder,) = [i for i in node["inputs"] if i["name"] == "decoder"]
        if decoder["link"] is not None:
            src = nodes[links[decoder["link"]][1]]
            assert src["type"] == "AdaState_Decode" and links[decoder["link"]][2] == 1
            chained += 1
    assert chained == 6  # every chunk but the first gets the previous chunk's decoder

    api = load(WORKFLOWS / "api" / "AdaState prompt schedule.json")
    gen = next(e for e in api.values() if e["class_type"] == "AdaState_Generate")
    schedule = next(e for e in api.values() if e["class_type"] == "AdaState_PromptSchedule")
    assert api[gen["inputs"]["positive"][0]]["class_type"] == "CLIPTextEncode"
    # no line at 0 s: the CLIP Text Encode prompt is the one played first (not ignored)
    from adastate_core.prompts import parse_schedule

    times = [p.seconds for p in parse_schedule(schedule["inputs"]["text"], from_zero=False)]
    assert times == [10.0, 20.0]


def test_generated_files_are_current():
    """workflows/ is what tests/comfy_host/make_workflows.py writes (edit that, then rerun)."""
    spec = importlib.util.spec_from_file_location(
        "make_workflows", REPO / "tests" / "comfy_host" / "make_workflows.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_workflows"] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["make_workflows"]
    for name, build in mod.WORKFLOWS.items():
        g = build()
        assert load(WORKFLOWS / f"{name}.json") == json.loads(json.dumps(g.ui())), name
        assert load(WORKFLOWS / "api" / f"{name}.json") == json.loads(json.dumps(g.api())), name
