// AdaState frontend extension: the live chunk preview and progress badge of Generate Stream
// (AdaState) while it runs.
//
// ComfyUI itself shows the finished outputs of our nodes exactly as on its own nodes (a player
// for mp4/webm, an animated image for webp, the image for gif). This extension never touches
// the core's preview state (node.imgs, the core preview widgets); it owns one DOM widget of its
// own, present only while a stream runs (the last frame of each decoded chunk, a JPEG the node
// writes to ComfyUI's temp folder), removed when the node finishes so the core's player takes
// its place, and a badge drawn above the title. Drawing errors of ours never reach LiteGraph.
//
// The server sends `adastate.chunk` only to the browser tab that queued the prompt; the event
// also names the frontend workflow and the node, and is ignored unless this tab shows that
// workflow and the node there is a Generate Stream node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const GENERATE = "AdaState_Generate";
const LIVE = "adastate_live_preview";
const BADGE_HEIGHT = 18;

// Execution ids are "12" at the top level and "7:12" inside subgraphs (newer frontends).
function findNode(executionId) {
  if (executionId === undefined || executionId === null || !app.graph) return null;
  let graph = app.graph;
  let node = null;
  for (const part of String(executionId).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? graph?.getNodeById?.(part) ?? null;
    if (!node) return null;
    graph = node.subgraph ?? null;
  }
  return node;
}

function viewUrl(file) {
  const params = new URLSearchParams({
    filename: file.filename ?? "",
    subfolder: file.subfolder ?? "",
    type: file.type ?? "temp",
  });
  return api.apiURL(`/view?${params.toString()}&t=${Date.now()}`);
}

function liveWidget(node) {
  const found = node.widgets?.find((w) => w.name === LIVE);
  if (found) return found;
  if (typeof node.addDOMWidget !== "function") return null;
  const img = document.createElement("img");
  img.style.cssText = "width:100%;height:100%;object-fit:contain;display:block;";
  img.alt = "AdaState: last decoded chunk";
  const widget = node.addDOMWidget(LIVE, "adastate_live", img, {
    serialize: false,
    hideOnZoom: false,
  });
  widget.serialize = false;
  widget.__img = img;
  widget.__aspect = 9 / 16;
  // reserve room in the node's layout, as the core's own preview widgets do
  widget.computeLayoutSize = () => {
    const width = Math.max(64, (node.size?.[0] ?? 320) - 20);
    return { minHeight: Math.round(width * widget.__aspect), minWidth: 64 };
  };
  img.onload = () => {
    if (img.naturalWidth > 0) widget.__aspect = img.naturalHeight / img.naturalWidth;
    node.setDirtyCanvas?.(true, true);
  };
  return widget;
}

function removeLive(node) {
  const i = node.widgets?.findIndex((w) => w.name === LIVE) ?? -1;
  if (i < 0) return;
  node.widgets[i].onRemove?.();
  node.widgets.splice(i, 1);
  node.setDirtyCanvas?.(true, true);
}

function drawBadge(node, ctx, text) {
  const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  ctx.save();
  ctx.font = "12px sans-serif";
  const maxWidth = Math.max(60, node.size[0]);
  let shown = text;
  while (shown.length > 4 && ctx.measureText(shown).width + 12 > maxWidth) {
    shown = `${shown.slice(0, -2)}…`;
  }
  const width = ctx.measureText(shown).width + 12;
  const y = -titleHeight - BADGE_HEIGHT - 4;
  ctx.fillStyle = "rgba(30, 90, 160, 0.9)";
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(0, y, width, BADGE_HEIGHT, 6);
  else ctx.rect(0, y, width, BADGE_HEIGHT);
  ctx.fill();
  ctx.fillStyle = "#fff";
  ctx.textBaseline = "middle";
  ctx.fillText(shown, 6, y + BADGE_HEIGHT / 2);
  ctx.restore();
}

function onChunk(d) {
  const here = app.graph?.id ?? null;
  if (d.workflow_id && here && d.workflow_id !== here) return; // another workflow's run
  const node = findNode(d.node);
  if (!node || node.type !== GENERATE) return;
  const file = d.filename ? ` → ${d.filename}` : "";
  node.__adastateStatus = `chunk ${d.chunk}/${d.total} · ${d.frames} frames${file}`;
  if (d.preview?.filename) {
    const widget = liveWidget(node);
    if (widget) widget.__img.src = viewUrl(d.preview);
  }
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "adastate.streaming",

  setup() {
    api.addEventListener("adastate.chunk", (e) => {
      try {
        onChunk(e.detail ?? {});
      } catch (err) {
        console.warn("[AdaState] chunk preview not shown", err);
      }
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== GENERATE) return;

    const onExecutionStart = nodeType.prototype.onExecutionStart;
    nodeType.prototype.onExecutionStart = function () {
      this.__adastateStatus = null; // a new run: drop the last run's badge
      return onExecutionStart?.apply(this, arguments);
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      try {
        removeLive(this); // the core's player for the saved video takes its place
        const file = message?.images?.[0]?.filename;
        this.__adastateStatus = file ? `saved ${file}` : null;
      } catch (err) {
        console.warn("[AdaState] live preview not removed", err);
      }
      return onExecuted?.apply(this, arguments);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      try {
        if (this.__adastateStatus && !this.flags?.collapsed) {
          drawBadge(this, ctx, this.__adastateStatus);
        }
      } catch (err) {
        this.__adastateStatus = null; // never let a badge break the canvas
        console.warn("[AdaState] badge not drawn", err);
      }
      return result;
    };
  },
});
