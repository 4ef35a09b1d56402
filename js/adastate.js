// AdaState frontend extension: a progress badge on Generate Stream (AdaState) while it runs.
//
// ComfyUI itself shows everything else on our nodes, exactly as on its own nodes: the live
// preview of each decoded chunk (the node's progress preview) and, when a node finishes, its
// saved video (a player for mp4/webm, an animated image for webp, the image for gif). This
// extension never touches the core's preview state (node.imgs, preview widgets): it only draws
// a small badge above the node's title, so it can neither hide nor break the core's drawing.
//
// The server sends `adastate.chunk` only to the browser tab that queued the prompt; the event
// also names the frontend workflow and the node, and is ignored unless this tab shows that
// workflow and the node there is a Generate Stream node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const GENERATE = "AdaState_Generate";
const BADGE_HEIGHT = 18;

function graphId() {
  return app.graph?.id ?? null;
}

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

function status(d) {
  const file = d.filename ? ` → ${d.filename}` : "";
  return `chunk ${d.chunk}/${d.total} · ${d.frames} frames${file}`;
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

app.registerExtension({
  name: "adastate.streaming",

  setup() {
    api.addEventListener("adastate.chunk", (e) => {
      const d = e.detail ?? {};
      const here = graphId();
      if (d.workflow_id && here && d.workflow_id !== here) return; // another workflow's run
      const node = findNode(d.node);
      if (!node || node.type !== GENERATE) return;
      node.__adastateStatus = status(d);
      node.__adastatePrompt = d.prompt_id ?? null;
      node.setDirtyCanvas?.(true, false);
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
      const file = message?.images?.[0]?.filename;
      this.__adastateStatus = file ? `saved ${file}` : null;
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
