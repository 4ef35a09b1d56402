// AdaState frontend extension: live chunk preview on Generate Stream while it runs, and an
// in-node player for the saved video of Generate Stream / Video Combine (AdaState).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const VIDEO_NODES = new Set(["AdaState_Generate", "AdaState_VideoCombine"]);
const VIDEO_EXT = /\.(mp4|webm|mov|mkv)$/i;

function viewUrl(file) {
  const params = new URLSearchParams({
    filename: file.filename ?? "",
    subfolder: file.subfolder ?? "",
    type: file.type ?? "output",
  });
  return api.apiURL(`/view?${params.toString()}&t=${Date.now()}`);
}

function findNode(id) {
  if (id === undefined || id === null || !app.graph) return null;
  return app.graph.getNodeById(Number(id)) ?? app.graph.getNodeById(id) ?? null;
}

// One DOM widget per node holding a status line and an <img>/<video> element.
function mediaWidget(node) {
  if (node.__adastate) return node.__adastate;
  const box = document.createElement("div");
  box.style.cssText = "display:flex;flex-direction:column;gap:2px;width:100%;";
  const label = document.createElement("div");
  label.style.cssText = "font-size:11px;opacity:0.8;min-height:14px;";
  const holder = document.createElement("div");
  holder.style.cssText = "width:100%;";
  box.append(label, holder);
  let widget = null;
  if (typeof node.addDOMWidget === "function") {
    widget = node.addDOMWidget("adastate_media", "adastate_media", box, {
      serialize: false,
      hideOnZoom: false,
    });
  }
  node.__adastate = { box, label, holder, widget, url: null };
  return node.__adastate;
}

function show(node, element, text) {
  const w = mediaWidget(node);
  w.holder.replaceChildren(element);
  if (text !== undefined) w.label.textContent = text;
  element.style.cssText = "width:100%;max-height:360px;object-fit:contain;";
  node.setDirtyCanvas?.(true, true);
}

function showFile(node, file) {
  const url = viewUrl(file);
  let el;
  if (VIDEO_EXT.test(file.filename ?? "")) {
    el = document.createElement("video");
    Object.assign(el, { src: url, controls: true, loop: true, muted: true, autoplay: true });
    el.playsInline = true;
  } else {
    el = document.createElement("img");
    el.src = url;
  }
  show(node, el, file.filename);
  node.imgs = undefined; // keep the core image preview from drawing over the player
}

let running = null; // id of the AdaState_Generate node executing now

app.registerExtension({
  name: "adastate.streaming",

  setup() {
    api.addEventListener("executing", (e) => {
      const id = e.detail?.node ?? e.detail;
      const node = findNode(id);
      running = node && node.type === "AdaState_Generate" ? node.id : null;
    });

    // the chunk just decoded (our JPEG progress preview)
    const onPreview = (blob) => {
      const node = findNode(running);
      if (!node || !(blob instanceof Blob)) return;
      const w = mediaWidget(node);
      if (w.url) URL.revokeObjectURL(w.url);
      w.url = URL.createObjectURL(blob);
      const img = document.createElement("img");
      img.src = w.url;
      show(node, img);
    };
    api.addEventListener("b_preview", (e) => onPreview(e.detail));
    api.addEventListener("b_preview_with_metadata", (e) => {
      const d = e.detail ?? {};
      if (d.nodeId !== undefined && findNode(d.nodeId)?.type === "AdaState_Generate") {
        running = findNode(d.nodeId).id;
      }
      onPreview(d.blob);
    });

    api.addEventListener("adastate.chunk", (e) => {
      const d = e.detail ?? {};
      const node = findNode(d.node) ?? findNode(running);
      if (!node) return;
      const text = `chunk ${Number(d.chunk) + 1}/${d.total} · ${d.frames} frames → ${d.filename ?? ""}`;
      if (d.preview?.filename) {
        // the last frame of the chunk just decoded, saved by the node in ComfyUI's temp folder
        const img = document.createElement("img");
        img.src = viewUrl(d.preview);
        show(node, img, text);
      } else {
        mediaWidget(node).label.textContent = text;
        node.setDirtyCanvas?.(true, false);
      }
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!VIDEO_NODES.has(nodeData?.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      try {
        const files = message?.images ?? message?.gifs ?? [];
        if (files.length) showFile(this, files[files.length - 1]);
      } catch (err) {
        console.warn("[AdaState] could not show the video", err);
      }
      return result;
    };
  },
});
