"""Draw a template's field boxes (green), render origins (red) and anchors (blue) on its plate.

    python3 overlay.py autoref_fw2 [out.png]     (default: out/<layout>_overlay.png)
"""

import os
import sys
import tomllib

from PIL import Image, ImageDraw

from common import OUT, TEMPLATES


def main(layout, path=None):
    with open(os.path.join(TEMPLATES, layout + ".toml"), "rb") as f:
        t = tomllib.load(f)
    im = Image.open(os.path.join(TEMPLATES, t["plate"])).convert("RGB")
    d = ImageDraw.Draw(im)
    for a in t["anchors"]:
        x, y, w, h = a["box"]
        d.rectangle([x, y, x + w - 1, y + h - 1], outline=(60, 120, 255))
    for fl in t["fields"]:
        x, y, w, h = fl["box"]
        d.rectangle([x, y, x + w - 1, y + h - 1], outline=(0, 220, 0))
        ox, oy = fl["render"]["origin"]
        d.line([ox - 2, oy, ox + 2, oy], fill=(255, 0, 0))
        d.line([ox, oy - 2, ox, oy + 2], fill=(255, 0, 0))
    os.makedirs(OUT, exist_ok=True)
    path = path or os.path.join(OUT, layout + "_overlay.png")
    im.save(path)
    print(path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
