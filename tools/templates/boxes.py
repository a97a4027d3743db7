"""Compute every field's crop box and tighten the anchors, from the fitted renders and the plate.

    python3 boxes.py autoref_fw2

Field box = union of the ink of the widest values the field can show (every sign/digit-count the
grammar and range allow, each digit repeated, every month name, the absent markers) and of every
sample's value, drawn with the fitted render; grown by `margin` px (default 5, or [left, top, right, bottom]) on each side. A side
is pulled in where the plate shows foreign ink (labels, units, distractors, lines) inside the grown
box, keeping at least 2 px to the value ink. Anchors: the configured rough box is shrunk to the
plate ink inside it plus 3 px (never beyond the region). Writes out/<layout>_boxes.json.
"""

import sys

import numpy as np
from PIL import Image

from common import MONTHS, TEMPLATES, gblur, load_json, render_alpha, save_json
from layouts import LAYOUTS


def extreme_texts(spec):
    g = spec["grammar"]
    k = g["kind"]
    out = set(spec.get("absent", []))
    digits = "0123456789"
    if k == "digits":
        out |= {d * g["count"] for d in digits}
    elif k == "time":
        out |= {d * 2 + ":" + d * 2 for d in digits}
    elif k == "choice":
        out |= set(g["choices"])
    elif k == "date":
        fmt = g["format"]
        for d in digits:
            t = fmt.replace("YYYY", d * 4).replace("MM", d * 2).replace("DD", d * 2)
            if "Mon" in fmt:
                out |= {t.replace("Mon", m) for m in MONTHS}
            else:
                out.add(t)
    else:
        lo, hi = (float(x) for x in spec["range"])
        dec = g.get("decimals", 0)
        # integer-part digit count per sign: negatives up to |lo|, positives up to hi
        nint = {"": len(str(int(abs(hi))))}
        if lo < 0:
            nint["-"] = len(str(int(abs(lo))))
        if hi > 0 and g.get("sign") == "always":
            nint["+"] = nint[""]
        for s_, n, d in ((s_, n, d) for s_ in nint for n in range(1, nint[s_] + 1) for d in digits):
            if n > 1 and d == "0":
                continue
            out.add(s_ + d * n + ("." + d * dec if dec else ""))
    return sorted(out)


def ink_bbox(text, fit, size):
    W, H = size
    a = render_alpha(text, fit["font"], fit["size"], fit["origin"], fit["anchor"], (H, W))
    ys, xs = np.nonzero(a > 0.02)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def union(a, b):
    if a is None:
        return b
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def foreign_ink(plate, box, thr, ghost_alpha=None):
    """Mask of plate pixels inside box (x0, y0, x1, y1) that differ from the box's background."""
    x0, y0, x1, y1 = box
    crop = plate[y0:y1, x0:x1]
    bg = np.median(crop.reshape(-1, crop.shape[-1]), axis=0)
    d = np.abs(crop - bg).sum(-1) > thr
    if ghost_alpha is not None:
        d &= ghost_alpha[y0:y1, x0:x1] < 0.02
    return d


def main(layout):
    L = LAYOUTS[layout]
    W, H = L["size"]
    fits = load_json(layout + "_render.json")
    plate = np.asarray(Image.open("%s/plates/%s.png" % (TEMPLATES, layout)).convert("RGB"), np.float32)
    thr = L.get("plate_ink_thr", 60)
    out = {"fields": {}, "anchors": []}
    for name, fcfg in L["fields"].items():
        fit = fits[name]
        texts = extreme_texts(fcfg)
        obs = {v["text"] for v in fit["resid"].values()}
        ink = None
        widest = None
        for t in texts + sorted(obs):
            bb = ink_bbox(t, fit, (W, H))
            if bb:
                ink = union(ink, bb)
                if widest is None or bb[2] - bb[0] > widest[1]:
                    widest = (t, bb[2] - bb[0])
        m = fcfg.get("margin", L.get("margin", 5))
        ml, mt, mr, mb = m if isinstance(m, (list, tuple)) else (m, m, m, m)
        box = [ink[0] - ml, ink[1] - mt, ink[2] + mr, ink[3] + mb]
        box = [max(0, box[0]), max(0, box[1]), min(W, box[2]), min(H, box[3])]
        ghost = None
        if fit.get("ghost_text"):
            ghost = render_alpha(fit["ghost_text"], fit["font"], fit["size"], fit["origin"], fit["anchor"], (H, W))
        notes = []
        # pull sides in where foreign ink shows on the plate
        for _ in range(40):
            fm = foreign_ink(plate, box, thr, ghost)
            if not fm.any():
                break
            ys, xs = np.nonzero(fm)
            fx, fy = xs + box[0], ys + box[1]
            # the side the foreign ink is closest to (relative to the value ink)
            gaps = {"left": ink[0] - fx.max(), "right": fx.min() - ink[2] + 1,
                    "top": ink[1] - fy.max(), "bottom": fy.min() - ink[3] + 1}
            side = max(gaps, key=gaps.get)
            if gaps[side] < 2:
                notes.append("foreign ink overlaps the value ink area (%s)" % side)
                break
            if side == "left":
                box[0] = int(fx.max()) + 1
            elif side == "right":
                box[2] = int(fx.min())
            elif side == "top":
                box[1] = int(fy.max()) + 1
            else:
                box[3] = int(fy.min())
            notes.append("%s pulled in to %d" % (side, box[{"left": 0, "top": 1, "right": 2, "bottom": 3}[side]]))
        margins = [ink[0] - box[0], ink[1] - box[1], box[2] - ink[2], box[3] - ink[3]]
        out["fields"][name] = {"box": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "ink": ink,
                               "margins": margins, "widest": widest[0], "notes": notes}
        print("%-14s box=%s ink=%s margins(l,t,r,b)=%s widest=%r %s" % (
            name, out["fields"][name]["box"], ink, margins, widest[0], "; ".join(notes)))
    for a in L["anchors"]:
        x0, y0, x1, y1 = a["region"]
        crop = plate[y0:y1, x0:x1]
        if L.get("variation", {}).get("noise_std", [0, 0])[1] > 0:
            crop = gblur(crop, 1.0)  # noisy plates: ink, not noise, decides the extent
        bg = np.median(np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]]), axis=0)
        ys, xs = np.nonzero(np.abs(crop - bg).sum(-1) > thr)
        p = a.get("pad", 3)
        # ink + pad, never beyond the configured region
        bx0, by0 = max(x0, x0 + xs.min() - p), max(y0, y0 + ys.min() - p)
        bx1, by1 = min(x1, x0 + xs.max() + 1 + p), min(y1, y0 + ys.max() + 1 + p)
        d = {"name": a["name"], "box": [int(bx0), int(by0), int(bx1 - bx0), int(by1 - by0)]}
        if a.get("text"):
            d["text"] = a["text"]
        if a.get("firmware"):
            d["firmware"] = True
        out["anchors"].append(d)
        print("anchor %-10s %s" % (a["name"], d["box"]))
    save_json(layout + "_boxes.json", out)


if __name__ == "__main__":
    for a in sys.argv[1:]:
        main(a)
