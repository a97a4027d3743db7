"""Fit each field's `render` (font, size, colour, origin, anchor) to the samples.

    python3 fit_render.py autoref_fw2 [field ...]

For every sample and field: warp the sample into the reference frame (out/<layout>_transforms.json),
take the field's search region, estimate the background (most common colour of the region, or its
median for noisy layouts), and search font x integer size x integer origin so that drawing the
label's on-screen text with PIL reproduces the crop (least-squares colour). The anchor (ls / rs / ms)
is the one whose origin is the same in every sample; the final origin is the median. Writes
out/<layout>_render.json with the fit and the per-sample residual (mean abs difference, grey levels,
over the value's ink box grown by 2 px; for blurred layouts also with the best-matching Gaussian blur
of the drawn value).
"""

import sys
from collections import Counter

import numpy as np

from common import aligned_samples, compose, font, gblur, load_json, render_alpha, samples, save_json, screen_text
from layouts import LAYOUTS

ANCHORS = ("ls", "rs", "ms")


def mode_color(crop):
    flat = crop.reshape(-1, crop.shape[-1]).round().astype(int)
    vals, counts = np.unique(flat, axis=0, return_counts=True)
    return vals[np.argmax(counts)].astype(np.float32)


def bg_model(L, crop):
    """Background behind the value: the crop's most common colour (lossless screens) or its median
    (noisy exports)."""
    c = np.median(crop.reshape(-1, crop.shape[-1]), axis=0) if L.get("bg") == "median" else mode_color(crop)
    return np.broadcast_to(c, crop.shape).astype(np.float32)


def ink_mask(crop, bg, thr):
    return np.abs(crop - bg).sum(-1) > thr


def bbox_of(mask):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


_ink_cache = {}


def ink_box_ls(text, fname, size):
    key = (text, fname, size)
    if key not in _ink_cache:
        f = font(fname, size)
        w = int(f.getlength(text)) + 4 * size
        a = render_alpha(text, fname, size, (2 * size, 2 * size), "ls", (4 * size, w))
        ys, xs = np.nonzero(a > 0.1)
        _ink_cache[key] = (xs.min() - 2 * size, ys.min() - 2 * size, xs.max() + 1 - 2 * size,
                           ys.max() + 1 - 2 * size) if len(xs) else (0, 0, 0, 0)
    return _ink_cache[key]


def candidate_texts(label_value, fcfg):
    g = fcfg["grammar"]
    if label_value is None:
        return list(fcfg.get("absent", []))
    return [screen_text(label_value, g)]


def fit_one(crop, bg, texts, fonts, sizes, thr, blurs=(0.0,)):
    """Best (residual, text, font, size, ls-origin (x, y) in crop coords, colour).

    bg is an HxWx3 background image (flat or not); blurs: Gaussian sigmas to try on the drawn text.
    """
    mask = ink_mask(crop, bg, thr)
    bb = bbox_of(mask)
    if bb is None:
        return None
    h, w = crop.shape[:2]
    best = None
    for text in texts:
        for fname in fonts:
            for size in sizes:
                # ink bbox of text drawn at ls origin (0, 0) (font.getbbox is not the ink for OTF)
                l, t, r, b = ink_box_ls(text, fname, size)
                iw, ih = r - l, b - t
                if abs(iw - (bb[2] - bb[0])) > 3 or abs(ih - (bb[3] - bb[1])) > 3:
                    continue
                ox0, oy0 = bb[0] - l, bb[1] - t
                for dy in range(-2, 3):
                    for dx in range(-2, 3):
                        o = (ox0 + dx, oy0 + dy)
                        a0 = render_alpha(text, fname, size, o, "ls", (h, w))
                        for sg in blurs:
                            # blurred exports: the colour is solved for the blurred coverage, so it
                            # is the colour the device drew, not a washed-out compromise
                            a = gblur(a0, sg)
                            wsum = (a * a).sum()
                            if wsum < 1:
                                continue
                            col = bg.mean((0, 1)) + ((a[..., None] * (crop - bg)).sum((0, 1)) / wsum)
                            # not clipped: photometric normalisation can push ink above 255
                            model = compose(bg, a, col)
                            res = np.abs(model - crop).mean()
                            if best is None or res < best[0]:
                                best = (res, text, fname, size, o, col)
    return best


def residual_box(crop, model, alpha, grow=2):
    bb = bbox_of(alpha > 0.02)
    if bb is None:
        return float(np.abs(crop - model).mean())
    x0, y0, x1, y1 = bb
    y0, x0 = max(0, y0 - grow), max(0, x0 - grow)
    return float(np.abs(crop[y0:y1 + grow, x0:x1 + grow] - model[y0:y1 + grow, x0:x1 + grow]).mean())


def refine_origin(L, name, fcfg, S, aligned, fs, origin, anchor, color, blurs, step=0.25, reach=1.0):
    """Origin on a `step` grid within +-reach of `origin` minimising the summed residual."""
    x0, y0, x1, y1 = fcfg["region"]
    shape = (y1 - y0, x1 - x0)
    offs = np.arange(-reach, reach + 1e-9, step)
    best = None
    for dx in offs:
        for dy in offs:
            o = (origin[0] + dx, origin[1] + dy)
            tot = 0.0
            for stem, p, lab in S[:12]:
                crop = aligned[stem][y0:y1, x0:x1]
                text = candidate_texts(lab["fields"][name], fcfg)[0]
                a = render_alpha(text, fs[0], fs[1], o, anchor, shape, x0, y0)
                m = a > 0.02
                tot += min(float(np.abs(compose(bg_model(L, crop), gblur(a, sg), color) - crop)[m].mean())
                           for sg in blurs)
            if best is None or tot < best[0]:
                best = (tot, o)
    return float(best[1][0]), float(best[1][1])


def fit_ghost(L, name, fcfg, S, aligned, fs, origin, anchor, color):
    """(ghost text, ghost colour, {candidate: residual}): the unlit-segment text among the field's
    `ghost` candidates that best explains the crops, its colour the median of the pixels it covers
    where the value is not lit."""
    x0, y0, x1, y1 = fcfg["region"]
    shape = (y1 - y0, x1 - x0)
    scores, colours = {}, {}
    for g in fcfg["ghost"]:
        ag = render_alpha(g, fs[0], fs[1], origin, anchor, shape, x0, y0)
        px = []
        for stem, p, lab in S:
            crop = aligned[stem][y0:y1, x0:x1]
            for text in candidate_texts(lab["fields"][name], fcfg)[:1]:
                av = render_alpha(text, fs[0], fs[1], origin, anchor, shape, x0, y0)
                px.append(crop[(ag > 0.9) & (av < 0.02)])
        px = np.concatenate(px)
        col = np.median(px, axis=0) if len(px) else np.zeros(3)
        total = 0.0
        for stem, p, lab in S:
            crop = aligned[stem][y0:y1, x0:x1]
            best = None
            for text in candidate_texts(lab["fields"][name], fcfg):
                av = render_alpha(text, fs[0], fs[1], origin, anchor, shape, x0, y0)
                model = compose(compose(bg_model(L, crop), ag, col), av, color)
                r = float(np.abs(model - crop).mean())
                best = r if best is None else min(best, r)
            total += best
        scores[g] = round(total / len(S), 3)
        colours[g] = [int(np.clip(round(c), 0, 255)) for c in col]
    g = min(scores, key=scores.get)
    return g, colours[g], scores


def main(layout, only=None):
    L = LAYOUTS[layout]
    W, H = L["size"]
    aligned = {stem: v[0] for stem, v in aligned_samples(layout, L, full_only=True, pooled=True).items()}
    # downscaled exports (asoct) are blurred by the resampling: fit on full-size exports only
    S = [s for s in samples(layout) if s[0] in aligned]
    fits = {}
    try:
        fits = load_json(layout + "_render.json")
    except FileNotFoundError:
        pass
    for fname_, fcfg in L["fields"].items():
        if only and fname_ not in only:
            continue
        x0, y0, x1, y1 = fcfg["region"]
        fonts = fcfg.get("fonts", L["fonts"])
        sizes = fcfg.get("sizes", range(8, 48))
        thr = fcfg.get("ink_thr", L.get("ink_thr", 40))
        per = {}
        blo, bhi = L.get("variation", {}).get("blur_px", [0, 0])
        fit_blurs = sorted({round(float(x), 2) for x in np.linspace(blo, bhi, 3)}) if bhi > 0 else [0.0]
        for stem, p, lab in S:
            crop = aligned[stem][y0:y1, x0:x1]
            bg = bg_model(L, crop)
            texts = candidate_texts(lab["fields"][fname_], fcfg)
            r = fit_one(crop, bg, texts, fonts, sizes, thr, fit_blurs)
            if r is None:
                print("  %s %s: no ink" % (fname_, stem))
                continue
            res, text, fnt, size, o, col = r
            per[stem] = {"res": float(res), "text": text, "font": fnt, "size": size,
                         "ls": [int(o[0] + x0), int(o[1] + y0)], "color": col.tolist()}
        # common font and size (majority), then the anchor whose origin is constant
        fs = Counter((v["font"], v["size"]) for v in per.values()).most_common(1)[0][0]
        f = font(*fs)
        cands = {}
        for a in ANCHORS:
            xs = []
            for v in per.values():
                adv = f.getlength(v["text"])
                off = {"ls": 0.0, "rs": adv, "ms": adv / 2}[a]
                xs.append(v["ls"][0] + off)
            cands[a] = (float(np.ptp(xs)), float(np.median(xs)))
        anchor = fcfg.get("anchor") or min(cands, key=lambda a: cands[a][0])
        ys = [v["ls"][1] for v in per.values()]
        # integer origin that reproduces the per-sample ls placement after PIL's rounding
        ox = round(cands[anchor][1])
        oy = int(np.median(ys))
        colors = np.array([v["color"] for v in per.values()])
        color = [int(np.clip(round(c), 0, 255)) for c in np.median(colors, axis=0)]
        if L.get("variation", {}).get("subpixel"):
            # exports resampled at sub-pixel positions: the nominal origin need not be integral
            ox, oy = refine_origin(L, fname_, fcfg, S, aligned, fs, (ox, oy), anchor, color, fit_blurs)
        # LCD ghost: unlit segments drawn behind the value with the same font, size, origin, anchor
        ghost = None
        if fcfg.get("ghost"):
            ghost = fit_ghost(L, fname_, fcfg, S, aligned, fs, (ox, oy), anchor, color)
            print("  ghost %r colour %s (residual by candidate %s)" % (ghost[0], ghost[1], ghost[2]))
        # verify with the common render on every sample
        resid = {}
        bmax = L.get("variation", {}).get("blur_px", [0, 0])[1]
        blurs = [sg for sg in (0.25, 0.5, 0.75, 1.0, 1.25) if sg <= bmax + 0.3] if bmax > 0 else []
        for stem, p, lab in S:
            crop = aligned[stem][y0:y1, x0:x1]
            bg = bg_model(L, crop)
            best = None
            for text in candidate_texts(lab["fields"][fname_], fcfg):
                a = render_alpha(text, fs[0], fs[1], (ox, oy), anchor, (y1 - y0, x1 - x0), x0, y0)
                if ghost:
                    ag = render_alpha(ghost[0], fs[0], fs[1], (ox, oy), anchor, (y1 - y0, x1 - x0), x0, y0)
                    bg = compose(bg, ag, ghost[1])
                model = compose(bg, a, color)
                r = residual_box(crop, model, a)
                # blurred exports: also the residual with the best-matching blur
                rb = min([r] + [residual_box(crop, gblur(model, sg), a) for sg in blurs])
                if best is None or r < best[0]:
                    best = (r, text, rb)
            resid[stem] = {"res": best[0], "text": best[1], "res_blur_matched": best[2]}
        vals = np.array([v["res"] for v in resid.values()])
        valsb = np.array([v["res_blur_matched"] for v in resid.values()])
        fits[fname_] = {"font": fs[0], "size": int(fs[1]), "color": color, "origin": [ox, oy], "anchor": anchor,
                        "anchor_spread": {a: c[0] for a, c in cands.items()},
                        "per_sample_fit": {k: v["res"] for k, v in per.items()},
                        "resid": resid, "resid_mean": float(vals.mean()), "resid_max": float(vals.max()),
                        "resid_blur_matched_mean": float(valsb.mean()), "resid_blur_matched_max": float(valsb.max())}
        if ghost:
            fits[fname_]["ghost_text"] = ghost[0]
            fits[fname_]["ghost"] = ghost[1]
        print("%-12s %s %2d %s origin=(%g,%g) %s spread=%s  resid mean %.2f max %.2f (blur-matched %.2f / %.2f)" % (
            fname_, fs[0], fs[1], color, ox, oy, anchor,
            {a: round(c[0], 1) for a, c in cands.items()}, vals.mean(), vals.max(), valsb.mean(), valsb.max()))
        save_json(layout + "_render.json", fits)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or None)
