"""Run every authoring step for some layouts (default: all), in order.

    python3 pipeline.py [layout ...] [--from STEP]

Steps: shifts -> fit_render -> make_plate -> boxes -> write_toml -> check -> overlay.
`--from boxes` starts at that step (the earlier results in out/ are reused).
"""

import sys

import boxes
import check
import fit_render
import make_plate
import overlay
import shifts
import write_toml
from layouts import LAYOUTS

STEPS = [
    ("shifts", lambda l: shifts.main([l])),
    ("fit_render", lambda l: fit_render.main(l)),
    ("make_plate", make_plate.main),
    ("boxes", boxes.main),
    ("write_toml", write_toml.main),
    ("check", lambda l: check.main(l)),
    ("overlay", overlay.main),
]


def main(argv):
    start = 0
    if "--from" in argv:
        i = argv.index("--from")
        start = [s for s, _ in STEPS].index(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    layouts = argv or list(LAYOUTS)
    failures = {}
    for layout in layouts:
        for name, step in STEPS[start:]:
            print("== %s: %s" % (layout, name), flush=True)
            out = step(layout)
            if name == "check" and out:
                failures[layout] = out
    for layout, f in failures.items():
        print("%s: %d check failures" % (layout, len(f)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
