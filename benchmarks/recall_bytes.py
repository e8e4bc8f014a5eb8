"""Recall@20 against model bytes: DSL-MF per loss over densities, implicit ALS over factors.

The protocol is ``benchmarks/quality.py``'s (its loaders, splits, fits and
ALS alpha selection are imported from there): full ranking over all items
with each user's training items excluded, MovieLens sets split 80/20 per
user (seed 0), Gowalla by the LightGCN split. Curves, per data set:

- one per DSL-MF loss (every key of ``LOSS_DEFAULTS``, so a loss added to
  the estimator is picked up), ``n_components=64`` over ``--densities``,
  the loss's own defaults otherwise;
- implicit ALS over ``--factors`` (reg 0.1, 15 iterations, alpha best of
  1/5/20 on a validation split of the training part, as quality.py does);
- the budget shape: the default loss at a fixed number of active weights,
  ``n_components x density`` in ``--shapes`` (32 x 0.4 ... 256 x 0.05).

Model bytes are ``nbytes_`` of the fitted DSL model (CSR values, column
indices and row pointers, plus the dense item bias) and the two factor
arrays of implicit's model.

Points are stored per data set in ``docs/_static/recall_bytes.json``; a run
replaces the points it measured and keeps the others, so a slow set
(Gowalla) can be run on its own, in parts. The figure
(``docs/_static/recall_bytes.png``) and the docs table are redrawn from all
stored points.

Run from the repository root::

    python benchmarks/recall_bytes.py                          # ml-100k, builtin
    python benchmarks/recall_bytes.py --sets gowalla --densities 0.1,0.2 --factors 13,64
    python benchmarks/recall_bytes.py --quick --no-write       # smoke test
"""

import argparse
import json

from _report import (
    ROOT,
    command_line,
    fmt_bytes,
    machine_info,
    markdown_table,
    write_section,
)
from quality import SEED, D, fit_als, fit_dsl, load_set, validation_split

from sparse_rec._mf.estimator import LOSS_DEFAULTS

STATIC = ROOT / "docs" / "_static"
POINTS = STATIC / "recall_bytes.json"
FIGURE = STATIC / "recall_bytes.png"
SETS = ("ml-100k", "builtin", "gowalla")
DENSITIES = (0.05, 0.1, 0.2, 0.5, 1.0)
FACTORS = (8, 13, 16, 32, 64, 128)
# n_components x density at the active-weight count of 64 x 0.2.
SHAPES = ((32, 0.4), (64, 0.2), (128, 0.1), (256, 0.05))
SET_LABELS = {"ml-100k": "ml-100k", "builtin": "ml-latest-small (built-in)",
              "gowalla": "Gowalla"}


def default_loss():
    from sparse_rec import DSLMatrixFactorization

    return DSLMatrixFactorization().loss


def _floats(text):
    return tuple(float(x) for x in text.split(",") if x.strip())


def _shapes(text):
    out = []
    for item in text.split(","):
        d, _, dens = item.strip().partition("x")
        out.append((int(d), float(dens)))
    return tuple(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="ml-100k,builtin",
                   help=f"comma-separated, of {','.join(SETS)} (Gowalla is slow: list it to run "
                        "it)")
    p.add_argument("--losses", default=",".join(LOSS_DEFAULTS),
                   help="DSL-MF losses, one curve each (default: every loss of the estimator)")
    p.add_argument("--densities", default=",".join(map(str, DENSITIES)))
    p.add_argument("--factors", default=",".join(map(str, FACTORS)),
                   help="implicit ALS factor counts; empty for none")
    p.add_argument("--als-regs", default="0.1",
                   help="implicit ALS regularizations tried with each alpha on validation "
                        "(quality.py uses 0.1 alone; larger factor counts need more)")
    p.add_argument("--shapes", default=",".join(f"{d}x{s}" for d, s in SHAPES),
                   help="n_components x density of the budget-shape points; empty for none")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: first 300 users, 3 epochs, builtin only; never writes")
    p.add_argument("--redraw", action="store_true",
                   help="fit nothing: redraw the figure and docs section from the stored points")
    p.add_argument("--no-write", action="store_true",
                   help="touch neither docs/benchmarks.md nor docs/_static")
    args = p.parse_args(argv)
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in args.sets if s not in SETS]
    if bad:
        p.error(f"unknown sets {bad}; choose from {SETS}")
    args.losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    bad = [s for s in args.losses if s not in LOSS_DEFAULTS]
    if bad:
        p.error(f"unknown losses {bad}; DSLMatrixFactorization has {tuple(LOSS_DEFAULTS)}")
    args.densities = _floats(args.densities)
    args.factors = tuple(int(f) for f in _floats(args.factors))
    args.als_regs = _floats(args.als_regs)
    args.shapes = _shapes(args.shapes) if args.shapes.strip() else ()
    args.overrides = {}  # quality.fit_dsl's tuning hook, unused here
    args.model_seed = SEED  # quality.fit_dsl's model seed, the benchmark's
    if args.quick:
        args.no_write = True
        args.sets = ["builtin"]
        args.densities = (0.2, 1.0)
        args.factors = args.factors[:1]
        args.shapes = args.shapes[:2]
    return args


def measure(set_name, train, test, args, save=lambda points: None, known=()):
    """Every point of one data set: a list of dicts (curve, d, density, scores).

    ``save(points)`` is called after each point, so a long run keeps what it
    measured. ``known``: points stored by earlier runs of this set.
    """
    points = []

    def keep(curve, r):
        points.append({"curve": curve, "d": int(r["d"]), "density": float(r["density"]),
                       "recall": float(r["recall"]), "ndcg": float(r["ndcg"]),
                       "bytes": int(r["bytes"]), "fit_s": float(r["fit_s"]),
                       "epochs": int(r["epochs"]), "label": r["label"]})
        save(points)
        print(f"  {curve:<10} d={r['d']:<4} density={r['density']:<5g} "
              f"Recall@20 {r['recall']:.4f}  NDCG@20 {r['ndcg']:.4f}  "
              f"{fmt_bytes(r['bytes'])}  {r['fit_s']:.1f} s", flush=True)

    for loss in args.losses:
        for density in args.densities:
            params = {"loss": loss, "n_components": D, "density": density}
            keep(loss, fit_dsl(f"DSL-MF {loss}", params, train, test, args))
    for factors in args.factors:
        keep("als", fit_als(factors, train, test, args, regs=args.als_regs))
    loss = default_loss()
    for d, density in args.shapes:
        same = [p for p in [*points, *known] if p["curve"] == loss and p["d"] == d
                and p["density"] == density]
        if same:  # on the loss curve (64 x 0.2), this run or stored: the same fit, not redone
            points.append({**same[0], "curve": f"shape-{loss}"})
            save(points)
            continue
        params = {"loss": loss, "n_components": d, "density": density}
        keep(f"shape-{loss}", fit_dsl(f"DSL-MF {loss}", params, train, test, args))
    return points


def merge(stored, set_name, info, points, command=""):
    """Replace the stored points of ``set_name`` that were measured again; keep the rest."""
    entry = stored.setdefault(set_name, {"points": [], "commands": []})
    entry["info"] = info
    if command and command not in entry.setdefault("commands", []):
        entry["commands"].append(command)
    key = lambda p: (p["curve"], p["d"], p["density"])  # noqa: E731
    new = {key(p) for p in points}
    entry["points"] = [p for p in entry["points"] if key(p) not in new] + points
    entry["points"].sort(key=lambda p: (p["curve"], p["bytes"]))
    return stored


def curves(entry):
    """``{curve: [points by bytes]}`` of one data set."""
    out = {}
    for p in sorted(entry["points"], key=lambda p: p["bytes"]):
        out.setdefault(p["curve"], []).append(p)
    return out


def _decimal_bytes(x, _pos=None):
    """Axis label: 200 kB, 2 MB (round decimal units fit log ticks at 1, 2, 5)."""
    return f"{x / 1e6:g} MB" if x >= 1e6 else f"{x / 1e3:g} kB"


def draw(stored, path):
    """One column per data set: Recall@20 against bytes, then the budget shapes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = [s for s in SETS if s in stored] + [s for s in stored if s not in SETS]
    # One colour per loss in every panel.
    losses = sorted({c.removeprefix("shape-") for e in stored.values() for c in curves(e)
                     if c != "als"})
    color = {loss: f"C{i}" for i, loss in enumerate(losses)}
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 7.4), squeeze=False)
    for j, name in enumerate(names):
        top, bottom = axes[0, j], axes[1, j]
        by_curve = curves(stored[name])
        for curve, pts in by_curve.items():
            x = [p["bytes"] for p in pts]
            y = [p["recall"] for p in pts]
            if curve == "als":
                top.plot(x, y, "k--s", label="implicit ALS (factors)")
                for p in pts:
                    top.annotate(str(p["d"]), (p["bytes"], p["recall"]), fontsize=7,
                                 textcoords="offset points", xytext=(3, -9))
            elif curve.startswith("shape-"):
                pts = sorted(pts, key=lambda p: p["d"])
                bottom.plot([p["d"] for p in pts], [p["recall"] for p in pts], "o-",
                            color=color[curve[6:]], label=f"DSL-MF {curve[6:]}")
                # The other shapes also on the bytes axis (the same budget, other widths).
                wide = [p for p in pts if p["d"] != D]
                top.plot([p["bytes"] for p in wide], [p["recall"] for p in wide], "^",
                         color=color[curve[6:]], mfc="none",
                         label=f"DSL-MF {curve[6:]}, other shapes")
                for p in wide:
                    top.annotate(f"{p['d']}x{p['density']:g}", (p["bytes"], p["recall"]),
                                 fontsize=6, textcoords="offset points", xytext=(-30, 2))
                for p in pts:
                    bottom.annotate(f"{p['d']} x {p['density']:g}", (p["d"], p["recall"]),
                                    fontsize=7, textcoords="offset points", xytext=(3, 4))
            else:
                top.plot(x, y, "o-", color=color[curve], label=f"DSL-MF {curve} (64 x density)")
                for p in pts:
                    top.annotate(f"{p['density']:g}", (p["bytes"], p["recall"]), fontsize=7,
                                 textcoords="offset points", xytext=(3, 4))
        for p in by_curve.get("als", []):
            if p["d"] in (13, 64):
                bottom.axhline(p["recall"], color="k", ls=":", lw=1)
                bottom.annotate(f"ALS-{p['d']}", (0.02, p["recall"]), fontsize=7,
                                xycoords=("axes fraction", "data"), xytext=(0, 2),
                                textcoords="offset points")
        top.set_xscale("log")
        top.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        top.xaxis.set_major_formatter(FuncFormatter(_decimal_bytes))
        top.xaxis.set_minor_formatter(NullFormatter())
        top.set_xlabel("model bytes")
        top.set_ylabel("Recall@20")
        top.set_title(SET_LABELS.get(name, name))
        top.grid(alpha=0.3)
        top.legend(fontsize=7, loc="best")
        bottom.set_xscale("log", base=2)
        shape_ds = sorted({p["d"] for p in by_curve.get(f"shape-{default_loss()}", [])})
        if shape_ds:
            bottom.set_xticks(shape_ds, [str(d) for d in shape_ds])
        bottom.set_xlabel("n_components (density = budget / n_components)")
        bottom.set_ylabel("Recall@20")
        bottom.set_title("one budget (64 x 0.2 active weights), shapes", fontsize=9)
        bottom.grid(alpha=0.3)
        if bottom.lines:
            bottom.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(stored):
    rows = []
    for name in [s for s in SETS if s in stored]:
        for curve, pts in curves(stored[name]).items():
            for p in pts:
                model = {"als": "implicit ALS"}.get(curve, f"DSL-MF {curve.removeprefix('shape-')}")
                if curve.startswith("shape-"):
                    model += " (shape)"
                if curve == "als":
                    model = p["label"]
                rows.append([name, model, p["d"], f"{p['density']:g}", f"{p['recall']:.4f}",
                             f"{p['ndcg']:.4f}", fmt_bytes(p["bytes"]), f"{p['fit_s']:.1f}",
                             p["epochs"]])
    headers = ["data", "curve", "d", "density", "Recall@20", "NDCG@20", "bytes", "fit s",
               "epochs"]
    return markdown_table(headers, rows)


def main(argv=None):
    args = parse_args(argv)
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    write = not args.no_write and args.split == "test"
    stored = {}
    for set_name in [] if args.redraw else args.sets:
        data = load_set(set_name, args.quick)
        if data is None:
            continue
        train, test = data
        if args.split == "validation":
            train, test = validation_split(train)
        info = (f"{train.shape[0]} users, {train.shape[1]} items, {train.nnz} train, "
                f"{test.nnz} held out ({args.split})")
        print(f"{set_name}: {info}", flush=True)
        run = f"{command_line()} ({machine_info()})"

        def save(points, set_name=set_name, info=info, run=run):
            if write:  # read again: another run may have stored other sets meanwhile
                now = json.loads(POINTS.read_text()) if POINTS.is_file() else {}
                POINTS.parent.mkdir(parents=True, exist_ok=True)
                POINTS.write_text(json.dumps(merge(now, set_name, info, points, run),
                                             indent=1) + "\n")

        known = []
        if write and POINTS.is_file():
            known = json.loads(POINTS.read_text()).get(set_name, {}).get("points", [])
        merge(stored, set_name, info, measure(set_name, train, test, args, save, known), run)
    if write:
        stored = json.loads(POINTS.read_text()) if POINTS.is_file() else {}
    text = table(stored)
    print(text)
    if args.no_write or args.split != "test" or not stored:
        return
    draw(stored, FIGURE)
    sets = "; ".join(f"{SET_LABELS.get(s, s)}: {stored[s]['info']}" for s in SETS if s in stored)
    body = (
        f"![Recall@20 against model bytes](_static/{FIGURE.name})\n\n"
        "Top row: Recall@20 (full ranking, training items excluded, the split of "
        "`benchmarks/quality.py`) against model bytes. DSL-MF: `n_components=64`, one curve "
        "per loss over densities (labels), each loss's defaults otherwise; implicit ALS: "
        "15 iterations, alpha best of 1/5/20 (and, where the model column names a reg, the "
        "regularization too; otherwise reg 0.1 as in quality.py) on a validation split of "
        "the training part, over factor counts (labels). Bytes: `nbytes_` of the DSL model "
        "(CSR values, column indices and row pointers, item bias), the two factor arrays "
        "of implicit's. "
        f"Bottom row: the default loss ({default_loss()}) at one budget of active weights "
        "(that of 64 x 0.2) spent in different shapes, n_components x density; dotted lines "
        "are implicit ALS-13 and ALS-64. "
        f"{args.threads} threads. 'fit s' is one fit per point on the shared machine, "
        "not a speed comparison (for that see `benchmarks/ials_fit_time.py`). "
        "Points are kept per data set in "
        f"`docs/_static/{POINTS.name}` and merged across runs (Gowalla is run on its own); "
        f"this section and the figure are redrawn from all of them. Data: {sets}.\n\n"
        + text
    )
    runs = "\n".join(f"- {s}: `{c.split(' (', 1)[0]}` ({c.split(' (', 1)[1]}"
                      for s in SETS if s in stored for c in stored[s]["commands"])
    write_section("recall_bytes", f"## Recall@20 against model bytes\n\nRuns:\n\n{runs}\n\n"
                                  f"{body}\n")
    print(f"wrote {FIGURE.relative_to(ROOT)}, {POINTS.relative_to(ROOT)} and docs/benchmarks.md")


if __name__ == "__main__":
    main()
