"""Driving the real ComfyUI web app in a browser tab (tests/comfy_host/browser.py): open it,
load a workflow as an artist would (the template loader's call), swap in the test text
encoder and tiny sizes, queue it with the Queue button's call, wait for it to finish, then
inspect the canvas as drawn. Test helper; not part of the pack."""

from __future__ import annotations

import json
import time

# settings a returning user has: no first-run template dialog, no missing-models dialog (the
# tests run tiny models, not the files the workflows name; the dialog has a test of its own)
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False}
# for pictures: full node detail at any zoom, no minimap over the graph
SCREENSHOT_SETTINGS = {
    **SETTINGS,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Minimap.Visible": False,
}

APP_READY = (
    "window.app?.graph && window.app.canvas && window.LiteGraph?.registered_node_types"
    "?.AdaState_Generate && window.app.extensions?.length ? 1 : 0"
)

# (workflow, widget overrides by name, node types to swap) -> node count
LOAD = r"""
async (workflow, overrides, swaps) => {
  await app.loadGraphData(workflow);
  const g = app.graph;
  const linkOf = (id) => (g.links.get ? g.links.get(id) : g.links[id]);
  for (const [from, to] of Object.entries(swaps)) {
    for (const old of g.nodes.filter((n) => n.type === from)) {
      const stub = LiteGraph.createNode(to);
      stub.pos = [...old.pos];
      g.add(stub);
      for (const [slot, out] of old.outputs.entries()) {
        for (const id of [...(out.links ?? [])]) {
          const link = linkOf(id);
          stub.connect(slot, g.getNodeById(link.target_id), link.target_slot);
        }
      }
      g.remove(old);
    }
  }
  for (const n of g.nodes) {
    for (const w of n.widgets ?? []) {
      if (w.name in overrides) w.value = overrides[w.name];
    }
  }
  app.canvas.setDirty(true, true);
  return g.nodes.length;
}
"""

# queue the graph as the Queue button does; resolve when the prompt ends
QUEUE = r"""
async () => {
  const api = window.comfyAPI?.api?.api ?? app.api;
  const run = (window.__adastateRun = { done: false, status: null, prompt: null });
  const finish = (status) => (e) => {
    if (run.prompt && e.detail?.prompt_id && e.detail.prompt_id !== run.prompt) return;
    run.done = true; run.status = status; run.detail = e.detail ?? null;
  };
  if (!window.__adastateListening) {
    window.__adastateListening = true;
    for (const kind of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(kind, (e) => window.__adastateRun?.on?.[kind]?.(e));
    }
  }
  run.on = {
    execution_success: finish("success"),
    execution_error: finish("error"),
    execution_interrupted: finish("interrupted"),
  };
  await app.queuePrompt(0, 1);
  return true;
}
"""

RUN_STATE = "JSON.stringify(window.__adastateRun ?? null)"

# fit every node and group into the view, below the menu bar and right of the side bar
FIT = r"""
(top, left) => {
  const c = app.canvas, g = app.graph;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const boxes = g.nodes.map((n) => n.getBounding());
  for (const grp of g._groups ?? g.groups ?? []) boxes.push(grp._bounding ?? grp.bounding);
  for (const [x, y, w, h] of boxes) {
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
  }
  const margin = 20;
  const W = c.canvas.width - left, H = c.canvas.height - top;
  const scale = Math.min(W / (x1 - x0 + 2 * margin), H / (y1 - y0 + 2 * margin), 1.0);
  c.ds.scale = scale;
  c.ds.offset = [left / scale + (W / scale - (x1 - x0)) / 2 - x0,
                 top / scale + (H / scale - (y1 - y0)) / 2 - y0];
  c.setDirty(true, true);
  const r = c.canvas.getBoundingClientRect();
  const [sx0, sy0] = c.ds.convertOffsetToCanvas([x0, y0]);
  const [sx1, sy1] = c.ds.convertOffsetToCanvas([x1, y1]);
  return JSON.stringify({ scale, rect: [r.left + sx0, r.top + sy0, r.left + sx1, r.top + sy1] });
}
"""

# draw one frame with every node in view; -> what was drawn, and the render loop's health
CANVAS = r"""
async () => {
  const c = app.canvas, g = app.graph;
  const drawn = new Set();
  const own = Object.prototype.hasOwnProperty.call(c, "drawNode");
  const orig = c.drawNode;
  c.drawNode = function (node, ctx) { drawn.add(node.id); return orig.apply(this, arguments); };
  let error = null;
  try { c.draw(true, true); } catch (e) { error = String(e && e.stack || e); }
  if (own) c.drawNode = orig; else delete c.drawNode;
  // the render loop keeps running (a throwing draw ends it: a frozen canvas)
  const frame = c.frame;
  c.setDirty(true, true);
  await new Promise((r) => setTimeout(r, 800));
  const alive = c.frame > frame;
  const ids = g.nodes.map((n) => n.id);
  const rects = g.nodes.map((n) => [n.id, n.type, ...n.getBounding()]);
  const overlaps = [];
  for (let i = 0; i < rects.length; i++) for (let j = i + 1; j < rects.length; j++) {
    const [a, ta, ax, ay, aw, ah] = rects[i], [b, tb, bx, by, bw, bh] = rects[j];
    if (ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah) overlaps.push([a, ta, b, tb]);
  }
  return JSON.stringify({ drawn: [...drawn], ids, error, alive, overlaps });
}
"""

# the media each output node shows: core players/images and their state
MEDIA = r"""
(types) => {
  const out = {};
  for (const n of app.graph.nodes.filter((n) => types.includes(n.type))) {
    const videos = [...(n.videoContainer?.querySelectorAll?.("video") ?? [])];
    const widgets = (n.widgets ?? []).map((w) => w.name);
    const domVideos = videos.map((v) => ({
      src: v.currentSrc || v.src, ready: v.readyState, connected: v.isConnected,
      shown: v.isConnected && getComputedStyle(v).display !== "none" &&
             v.getBoundingClientRect().width > 0,
    }));
    out[n.id] = {
      type: n.type, widgets, videos: domVideos,
      imgs: (n.imgs ?? []).map((i) => i.src), status: n.__adastateStatus ?? null,
      size: [...n.size],
    };
  }
  return JSON.stringify(out);
}
"""


def open_app(tab, server, timeout: float = 120.0, settings: dict | None = None) -> None:
    for key, value in (SETTINGS if settings is None else settings).items():
        try:
            server.post(f"/settings/{key}", value)
        except Exception:  # older hosts: the setting simply is not there
            pass
    tab.navigate(server.url + "/")
    tab.wait_for(APP_READY, timeout)
    tab.pump(1.0)


def load(tab, workflow: dict, overrides: dict, swaps: dict | None = None) -> int:
    return tab.call_function(LOAD, workflow, overrides, swaps or {})


def queue_and_wait(tab, timeout: float = 900.0) -> dict:
    tab.call_function(QUEUE)
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = json.loads(tab.eval(RUN_STATE) or "null")
        if state and state.get("done"):
            return state
        time.sleep(1.0)
    raise TimeoutError(f"the queued workflow did not finish within {timeout:.0f} s")


def fit(tab, top: int = 20, left: int = 20) -> dict:
    """Fit the whole graph in the canvas (margins in px) -> {scale, rect: its page box}."""
    return json.loads(tab.call_function(FIT, top, left))


def canvas_report(tab) -> dict:
    fit(tab, top=100, left=80)  # clear of the menu bar and the side bar
    tab.pump(0.5)
    return json.loads(tab.call_function(CANVAS))


def media(tab, types: list[str]) -> dict:
    return json.loads(tab.call_function(MEDIA, types))
