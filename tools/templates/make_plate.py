"""Make a layout's plate: one real sample moved to the nominal position with every field value erased.

    python3 make_plate.py autoref_fw2

1. The plate sample is the layout's `plate_sample` (or, among the samples with no absent value and
   of the fit pool (tomographer: gray scans; asoct: full size), the one whose transform moves the
   image corners least). It is warped into the reference frame (integer layouts: a plain shift;
   others: bicubic resampling) and, for layouts with photometric variation, brought to the median
   contrast/brightness of the samples.
2. Pixels the sample does not cover (the border it lost when it was shifted) are filled from the
   other aligned samples (per-pixel median of those that cover them).
3. Every field value is erased: its ink (the fitted render of the sample's text, dilated by
   `erase_grow` px) is replaced, row by row, by the median of the same row's free pixels around it
   (field region + `erase_pad` px, minus any value ink or LCD ghost): flat panels, highlighted rows
   and vertical gradients keep their colour. Values sit at the same place in every export, so other
   samples cannot show the background there. LCD ghost digits are then drawn back with their fitted
   colour.
4. Saved as templates/plates/<layout>.png (RGB, or 8-bit gray with `plate_mode = "L"`), optimised.
"""

import os
import sys

import numpy as np
from PIL import Image

from common import TEMPLATES, aligned_samples, load_json, render_alpha, samples, tr_params
from layouts import LAYOUTS


def dilate(mask, r):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def value_masks(fits, labels, size, grow):
    """{field: mask of the value ink (dilated) in the reference frame} for one sample's labels."""
    W, H = size
    out = {}
    for name, fit in fits.items():
        text = fit["resid"][labels["stem"]]["text"]
        a = render_alpha(text, fit["font"], fit["size"], fit["origin"], fit["anchor"], (H, W))
        # lit ink only: LCD ghost segments stay (every export shows them)
        out[name] = dilate(a > 0.01, grow)
    return out


def main(layout):
    L = LAYOUTS[layout]
    W, H = L["size"]
    T = load_json(layout + "_transforms.json")
    T.pop("_meta")
    fits = load_json(layout + "_render.json")
    S = samples(layout)
    full = [s for s in S if Image.open(s[1]).size == (W, H)
            and (L.get("fit_pool") is None or L["fit_pool"](s[2], Image.open(s[1])))]
    if L.get("plate_sample"):
        pick = L["plate_sample"]
    else:
        nulls = {s[0]: sum(v is None for v in s[2]["fields"].values()) for s in full}

        def dist(stem):
            # largest displacement of an image corner under the sample's transform
            A, t = np.array(T[stem]["A"]), np.array(T[stem]["t"])
            corners = np.array([[0, 0], [W, 0], [0, H], [W, H]], float)
            disp = np.abs(corners @ A.T + t - corners).max()
            return 1000 * nulls[stem] + disp
        pick = min((s[0] for s in full), key=dist)
    grow = L.get("erase_grow", 1)
    stack, covered = {}, {}
    keep = {s[0] for s in full}
    for stem, (a, cov, lab) in aligned_samples(layout, L, full_only=True, pooled=True).items():
        if stem in keep:
            stack[stem], covered[stem] = a, cov
    lab = dict(next(s[2] for s in full if s[0] == pick))
    lab["stem"] = pick
    masks = {pick: value_masks(fits, lab, (W, H), grow)}
    plate = stack[pick].copy()
    others = [s for s in stack if s != pick]
    # 2. border the plate sample does not cover
    hole = ~covered[pick]
    if hole.any():
        vals = np.stack([np.where(covered[s][..., None], stack[s], np.nan) for s in others])
        fill = np.nanmedian(vals[:, hole], axis=0)
        plate[hole] = fill
    # 3. erase values: each row of the value's ink gets the median of the same row's free pixels
    #    around it (the field region), i.e. the local background (flat panels, highlighted rows,
    #    vertical gradients); LCD ghost digits are drawn back on top.
    allmask = np.any([masks[pick][n] for n in fits], axis=0)
    # LCD ghost segments are not background either
    for fit in fits.values():
        if fit.get("ghost_text"):
            a = render_alpha(fit["ghost_text"], fit["font"], fit["size"], fit["origin"], fit["anchor"], (H, W))
            allmask |= dilate(a > 0.02, grow)
    for name, fit in fits.items():
        m = masks[pick][name]
        ys, xs = np.nonzero(m)
        if len(ys) == 0:
            continue
        rx0, ry0, rx1, ry1 = L["fields"][name]["region"]
        pad = L.get("erase_pad", 10)
        x0, x1 = max(0, min(rx0, xs.min()) - pad), min(W, max(rx1, xs.max() + 1) + pad)
        for y in range(ys.min(), ys.max() + 1):
            row = m[y, x0:x1]
            if not row.any():
                continue
            free = plate[y, x0:x1][~allmask[y, x0:x1]]
            plate[y, x0:x1][row] = np.median(free, axis=0)
        if fit.get("ghost_text"):
            a = render_alpha(fit["ghost_text"], fit["font"], fit["size"], fit["origin"], fit["anchor"], (H, W))
            g = np.asarray(fit["ghost"], np.float32)
            sel = m & (a > 0)
            plate[sel] = plate[sel] * (1 - a[sel][:, None]) + g * a[sel][:, None]
    out = np.clip(plate.round(), 0, 255).astype(np.uint8)
    im = Image.fromarray(out, "RGB")
    if L.get("plate_mode") == "L":
        im = im.convert("L")
    path = os.path.join(TEMPLATES, "plates", layout + ".png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path, optimize=True)
    s, r, tx, ty = tr_params(T[pick])
    print("%s: plate from %s (t=(%.2f, %.2f) s=%.4f rot=%.3f), %d bytes" % (
        layout, pick, tx, ty, s, r, os.path.getsize(path)))


if __name__ == "__main__":
    for a in sys.argv[1:]:
        main(a)
