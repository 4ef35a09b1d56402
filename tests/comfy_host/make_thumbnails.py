"""Renders the template thumbnails (workflows/<name>.jpg, shown by ComfyUI's template browser
beside each example workflow): each workflow opened in the real ComfyUI web app, fitted to the
view, screenshotted in headless Chromium and saved as a JPEG.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \\
        python tests/comfy_host/make_thumbnails.py [OUT_DIR]

Needs the real-host setup of tests/test_comfyui_host.py, chromium and websocket-client.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import browser  # noqa: E402
import host  # noqa: E402
import webapp  # noqa: E402

WORKFLOWS = HERE.parents[1] / "workflows"
SIZE = (768, 432)


def render(tab, workflow: dict, path: Path) -> None:
    from PIL import Image

    webapp.load(tab, workflow, {})
    box = webapp.fit(tab, top=30, left=30)["rect"]
    tab.pump(1.5)
    shot = Path(tempfile.mkdtemp()) / "shot.png"
    tab.screenshot(shot)
    with Image.open(shot) as im:
        pad = 12
        im = im.convert("RGB").crop(
            (int(box[0]) - pad, int(box[1]) - pad, int(box[2]) + pad, int(box[3]) + pad)
        )
        im.thumbnail(SIZE, Image.LANCZOS)
        canvas = Image.new("RGB", SIZE, (34, 34, 34))
        canvas.paste(im, ((SIZE[0] - im.width) // 2, (SIZE[1] - im.height) // 2))
        buf = io.BytesIO()
        canvas.save(buf, "JPEG", quality=85, optimize=True)
    path.write_bytes(buf.getvalue())


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else WORKFLOWS
    with tempfile.TemporaryDirectory() as tmp:
        srv = host.start_server(Path(tmp))
        b = browser.Browser(port=host.free_port())
        try:
            tab = b.tab()
            webapp.open_app(tab, srv, settings=webapp.SCREENSHOT_SETTINGS)
            for path in sorted(WORKFLOWS.glob("*.json")):
                target = out / f"{path.stem}.jpg"
                render(tab, json.loads(path.read_text()), target)
                print(f"wrote {target}")
        finally:
            b.close()
            srv.stop()


if __name__ == "__main__":
    main()
