"""Check a layout's template against all of its samples.

    python3 check.py autoref_fw2 [--verbose]

Reads templates/<layout>.toml and its plate. For every sample, warped into the reference frame with its
estimated transform (out/<layout>_transforms.json):

* value fit: inside each field box, the sample must equal the plate with the label's value drawn by
  the field's `render` (PIL). Reported: mean abs difference over the box and the number of "stray"
  pixels (difference above `check.thr` after a small blur, `check.blur`, that absorbs noise and
  compression), i.e. ink the render does not explain: neighbouring text, a wrong font or position, a
  badly erased plate;
* containment: the value's ink (the render) lies inside the box with at least `min_margin` px to
  spare, and a 3 px ring around the box shows no value ink (difference to the empty plate);
* anchors: the sample matches the plate inside every anchor box (mean abs difference).

Samples of layouts that vary in contrast/brightness are first mapped to the plate's photometry
(robust gain/offset fit outside the field boxes and the layout's `photo_exclude` regions).

Samples exported at a smaller size (asoct) are checked in their own pixel grid: the plate with all of
the sample's values drawn is shifted, downscaled with each of Lanczos / bilinear / nearest and the
best match is compared with the sample inside every box (mapped to the small grid).

Exits non-zero when a check fails.
"""

import sys
import tomllib

import numpy as np
from PIL import Image

from common import (TEMPLATES, compose, gblur, gray, load_json, load_rgb, photo_fit, render_alpha, samples,
                    screen_text, warp_to_ref)
from layouts import LAYOUTS

RESAMPLERS = {"lanczos": Image.LANCZOS, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def texts_for(value, spec):
    if value is None:
        return spec.get("absent", [])
    return [screen_text(value, spec["grammar"])]


def alpha_for(fld, text, ext):
    x0, y0, x1, y1 = ext
    r = fld["render"]
    return render_alpha(text, r["font"], r["size_px"], r["origin"], r.get("anchor", "ls"), (y1 - y0, x1 - x0), x0, y0)


def free_mask(tpl, L, W, H):
    free = np.ones((H, W), bool)
    for fld in tpl["fields"]:
        x, y, w, h = fld["box"]
        free[y:y + h, x:x + w] = False
    for x0, y0, x1, y1 in L.get("photo_exclude", []):
        free[y0:y1, x0:x1] = False
    return free


def dilate(mask, r):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def check_full(tpl, L, plate, al, cov, cov_inner, lab, chk, W, H, bitonal=False):
    """Per-field (text, mean, stray, margins, spill) for a sample in the reference frame.

    bitonal: the export is 1-bit; the model is thresholded (at the best of 120..175) and black
    sample pixels more than 2 px from the model's black ones are stray."""
    thr, br = chk.get("thr", 40), chk.get("blur", 0)
    out = {}
    for fld in tpl["fields"]:
        bx, by, bw, bh = fld["box"]
        g = 6
        ext = (max(0, bx - g), max(0, by - g), min(W, bx + bw + g), min(H, by + bh + g))
        inner = (slice(by - ext[1], by - ext[1] + bh), slice(bx - ext[0], bx - ext[0] + bw))
        crop = al[ext[1]:ext[3], ext[0]:ext[2]]
        pl = plate[ext[1]:ext[3], ext[0]:ext[2]]
        valid = cov[ext[1]:ext[3], ext[0]:ext[2]]
        ring = np.zeros(crop.shape[:2], bool)
        ring[max(0, inner[0].start - 3):inner[0].stop + 3, max(0, inner[1].start - 3):inner[1].stop + 3] = True
        ring[inner] = False
        ring &= cov_inner[ext[1]:ext[3], ext[0]:ext[2]]
        best = None
        for text in texts_for(lab["fields"][fld["name"]], fld):
            a = alpha_for(fld, text, ext)
            model = compose(pl, a, fld["render"]["color"])
            if bitonal:
                sb = crop.mean(-1) < 128
                for t in range(120, 180, 10):
                    mb = gblur(model, 0.8).mean(-1) < t
                    strayp = sb & ~dilate(mb, 2)
                    score = float((sb != mb)[inner].mean() * 255)
                    if best is None or score < best[0]:
                        # neighbour text that any threshold could blacken is not value ink
                        spillp = sb & ~dilate(gblur(pl, 0.8).mean(-1) < 185, 2)
                        best = (score, text, strayp, a, spillp)
                continue
            if chk.get("local_offset"):
                # paper tint / uneven illumination: match the local background level
                bgm = (a < 0.01) & valid
                if bgm.any():
                    crop = crop - np.median((crop - model)[bgm], axis=0)
            d = np.abs(gblur(crop, br) - gblur(model, br)).max(-1)
            score = d[inner].mean()
            if best is None or score < best[0]:
                diff = np.abs(gblur(crop, br) - gblur(pl, br)).max(-1) > thr
                best = (score, text, d > thr, a, diff)
        score, text, strayp, a, spillp = best
        stray = int((strayp & valid)[inner].sum())
        ys, xs = np.nonzero(a > 0.02)
        ink = (xs.min() + ext[0], ys.min() + ext[1], xs.max() + 1 + ext[0], ys.max() + 1 + ext[1])
        margins = (ink[0] - bx, ink[1] - by, bx + bw - ink[2], by + bh - ink[3])
        spill = int((spillp & ring).sum())
        out[fld["name"]] = (text, float(score), stray, margins, spill)
    return out


def check_small(tpl, L, plate, img, tr, lab, chk, W, H):
    """Like check_full for a downscaled export, compared in the export's own grid."""
    thr, br = chk.get("thr", 40), chk.get("blur", 0)
    h, w = img.shape[:2]
    s = w / W
    synth = plate.copy()
    texts = {}
    for fld in tpl["fields"]:
        # (layouts exported downscaled have a single absent marker per field)
        text = texts_for(lab["fields"][fld["name"]], fld)[0]
        texts[fld["name"]] = text
        synth = compose(synth, alpha_for(fld, text, (0, 0, W, H)), fld["render"]["color"])
    d = tr["shift_full"]
    fill = np.median(np.concatenate([plate[0], plate[-1]]), axis=0)
    shifted = warp_to_ref(synth, {"A": [[1, 0], [0, 1]], "t": [-d[0], -d[1]]}, (W, H), fill=fill)
    free = free_mask(tpl, L, W, H)
    free_s = np.asarray(Image.fromarray(free.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
    best = None
    for name, rs in RESAMPLERS.items():
        small = np.asarray(Image.fromarray(np.clip(shifted.round(), 0, 255).astype(np.uint8)).resize((w, h), rs),
                           np.float32)
        g, o = photo_fit(img, small, free_s)
        cand = img * g + o
        score = np.abs(cand - small)[free_s].mean()
        if best is None or score < best[0]:
            best = (score, name, small, cand)
    _, rname, small, cand = best
    out = {}
    for fld in tpl["fields"]:
        bx, by, bw, bh = fld["box"]
        # box in the small grid (shifted by d, scaled by s), rounded outwards
        x0, y0 = int(np.floor((bx + d[0]) * s)), int(np.floor((by + d[1]) * s))
        x1, y1 = int(np.ceil((bx + bw + d[0]) * s)), int(np.ceil((by + bh + d[1]) * s))
        dd = np.abs(gblur(cand[y0:y1, x0:x1], br) - gblur(small[y0:y1, x0:x1], br)).max(-1)
        out[fld["name"]] = (texts[fld["name"]] + " [%s]" % rname, float(dd.mean()), int((dd > thr).sum()),
                            (99, 99, 99, 99), 0)
    return out


def main(layout, verbose=False):
    L = LAYOUTS[layout]
    with open("%s/%s.toml" % (TEMPLATES, layout), "rb") as f:
        tpl = tomllib.load(f)
    W, H = tpl["width"], tpl["height"]
    plate = np.asarray(Image.open("%s/%s" % (TEMPLATES, tpl["plate"])).convert("RGB"), np.float32)
    T = load_json(layout + "_transforms.json")
    T.pop("_meta")
    chk = L.get("check", {})
    if chk.get("gray"):
        plate = np.repeat(gray(plate)[..., None], 3, -1)
    min_margin = chk.get("min_margin", 2)
    failures = []
    free = free_mask(tpl, L, W, H)
    stats = {f["name"]: [] for f in tpl["fields"]}
    anchor_stats = {a["name"]: [] for a in tpl["anchors"]}
    small_chk = dict(chk, **chk.get("small", {}))
    for stem, p, lab in samples(layout):
        pil = Image.open(p)
        bitonal = pil.mode == "1"
        img = load_rgb(p)
        if chk.get("gray"):
            img = np.repeat(gray(img)[..., None], 3, -1)
        if img.shape[:2] != (H, W):
            res = check_small(tpl, L, plate, img, T[stem], lab, small_chk, W, H)
            max_stray = small_chk.get("max_stray", 0)
        else:
            al = warp_to_ref(img, T[stem], (W, H))
            # pixels the blur can reach from outside the export are not compared
            e = int(np.ceil(3 * chk.get("blur", 0)))
            ones = np.zeros(img.shape[:2], np.float32)
            ones[e:img.shape[0] - e, e:img.shape[1] - e] = 1.0
            cov = warp_to_ref(ones, T[stem], (W, H), fill=0.0) > 0.999
            # exporters fill the border they uncover when shifting/scaling: the ring test ignores
            # pixels within 8 px of the export's edge
            inner = np.zeros(img.shape[:2], np.float32)
            inner[8:-8, 8:-8] = 1.0
            cov_inner = warp_to_ref(inner, T[stem], (W, H), fill=0.0) > 0.999
            if L.get("photometric") and not bitonal:
                g, o = photo_fit(al, plate, cov & free)
                al = al * g + o
            res = check_full(tpl, L, plate, al, cov, cov_inner, lab, chk, W, H, bitonal)
            max_stray = chk.get("max_stray", 0)
            br = chk.get("blur", 0)
            for anc in tpl["anchors"] if not bitonal else []:
                x, y, w, h = anc["box"]
                c = cov[y:y + h, x:x + w]
                d = np.abs(gblur(al[y:y + h, x:x + w], br) - gblur(plate[y:y + h, x:x + w], br)).max(-1)[c]
                anchor_stats[anc["name"]].append(float(d.mean()) if d.size else 0.0)
        for name, (text, score, stray, margins, spill) in res.items():
            stats[name].append((score, stray, min(margins), spill))
            bad = stray > max_stray or min(margins) < min_margin or spill > chk.get("max_spill", 0)
            if bad or verbose:
                msg = "%s %-14s text=%-22r mean=%.2f stray=%d margins=%s spill=%d" % (
                    stem, name, text, score, stray, margins, spill)
                print(("FAIL " if bad else "     ") + msg)
                if bad:
                    failures.append(msg)
    print("%s: per field  mean|diff| in box (avg / max over samples), stray px (max), min margin, spill (max)" % layout)
    for name, st in stats.items():
        st = np.array(st, float)
        print("  %-14s %.2f / %.2f  stray %d  margin %d  spill %d" % (
            name, st[:, 0].mean(), st[:, 0].max(), st[:, 1].max(), st[:, 2].min(), st[:, 3].max()))
    for name, st in anchor_stats.items():
        mx = max(st)
        print("  anchor %-14s mean|diff| avg %.2f max %.2f" % (name, np.mean(st), mx))
        if mx > chk.get("anchor_max", 3.0):
            failures.append("anchor %s differs from the plate (%.2f)" % (name, mx))
    allv = np.array([s[0] for st in stats.values() for s in st])
    print("  overall value-box mean|diff| %.3f (max %.3f); %d failures" % (allv.mean(), allv.max(), len(failures)))
    return failures


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    fails = []
    for a in args:
        fails += main(a, "--verbose" in sys.argv)
    sys.exit(1 if fails else 0)
