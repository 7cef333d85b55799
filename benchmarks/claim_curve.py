"""Pear's claim as a curve: accuracy against stored bytes per task, from suite results.csv files.

    python benchmarks/claim_curve.py RESULTS.csv [MORE.csv ...] --out DIR [--tasks a,b,c]

Reads the rows of one or more `pear suite` results.csv files (e.g. the adequacy phase's
linear and adapter runs beside the curve's pear and prune runs; the same recipe), and writes
to DIR:

- `claim.md`: per method, the mean over tasks of the per-seed accuracy (mean ± sample std over
  seeds, where each seed's value is that seed's mean over the tasks), per-task means, stored
  bytes; the paired differences pear - prune at each ratio (same task, same seed); the
  ablations at ratio 0.75 against their default; and the issue's targets, each met or missed.
- `claim.png`: the headline plot, pear and prune as curves over the prune ratio,
  the other methods as points, error bars = the seeds' spread.
- `headline.md`: the table beside it in the README (tests/test_readme.py checks the README
  holds it as written here).

The tasks averaged are those on which linear, adapter, and pear and prune at ratio 0.75 have all
their seeds (`--tasks` narrows them further). A method that lacks seeds on one of them is left out
of the means and the plot, and shown in a table of its own on the tasks it has, so a partly
finished suite gives a smaller but honest table.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

from pear.errors import PearError
from pear.harness.suites.grammar import split_name
from pear.harness.suites.results import CHOSEN_NOW

DEFAULTS = {"share": "matched", "knowledge": "merge", "importance": "taylor", "gate": "none"}
# The adapter family reported, set by `family` (main's --scale): its output scale (None: the runs
# of --tune, which name none), the adapter run, the plot's points, and pear / prune at ratio 0.75.
SCALE: str | None
ADAPTER: str
BASELINES: tuple[str, ...]
ANCHOR_RATIO: tuple[str, str]


def family(scale: str) -> None:
    """Report the adapter family at output scale `scale` ('1', '4', ...), or 'tuned': the runs of
    `pear suite --tune`, whose method names carry no scale (the `tuned` column holds the choice)."""
    global SCALE, ADAPTER, BASELINES, ANCHOR_RATIO
    SCALE = None if scale == "tuned" else scale
    at = "" if SCALE is None else f"@scale={SCALE}"
    ADAPTER = f"adapter{at}"
    BASELINES = ("linear", ADAPTER, "full", "peft-lora", "peft-lora-eq")
    ANCHOR_RATIO = (f"pear{at}@prune_ratio=0.75", f"prune{at}@prune_ratio=0.75")


family("1")


def parse(method: str) -> tuple[str, dict[str, str]]:
    """'pear@scale=1@prune_ratio=0.75' -> ('pear', {'scale': '1', 'prune_ratio': '0.75'})."""
    try:
        return split_name(method)
    except PearError as exc:
        raise SystemExit(str(exc)) from None


def read_rows(paths: list[Path]) -> list[dict]:
    """Every row of the files; a run in two of them is refused, except at --scale tuned, where a
    run of --tune (its `tuned` cell names the choice: the LoRAs' alpha) replaces the same method's
    fixed run (the LoRAs at their default alpha) wherever both are given."""
    rows: dict[tuple[str, str, str], dict] = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                key = (row["task"], row["method"], row["seed"])
                if CHOSEN_NOW in (row.get("tuned") or ""):  # trained over a grid since widened
                    raise SystemExit(f"{path}: {key} trained at {row['tuned']}, not at --tune's choice now; "
                                     f"train it again or leave it out")
                if key in rows:
                    tuned = [bool(r.get("tuned")) for r in (rows[key], row)]
                    if SCALE is not None or tuned.count(True) != 1:
                        raise SystemExit(f"{path}: {key} appears in two of the files given")
                    if tuned[0]:
                        continue
                rows[key] = row
    return list(rows.values())


def by_method(rows: list[dict]) -> dict[str, dict[str, dict[int, dict]]]:
    """method -> task -> seed -> row."""
    out: dict[str, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        out[r["method"]][r["task"]][int(r["seed"])] = r
    return out


def common_tasks(table: dict, methods: list[str], seeds: list[int]) -> list[str]:
    tasks = sorted({t for m in methods for t in table.get(m, {})})
    return [t for t in tasks if all(set(seeds) <= set(table.get(m, {}).get(t, {})) for m in methods)]


def seed_means(table: dict, method: str, tasks: list[str], seeds: list[int]) -> list[float]:
    """Each seed's mean accuracy over the tasks."""
    return [statistics.fmean(float(table[method][t][s]["test_acc"]) for t in tasks) for s in seeds]


def stat(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired(table: dict, a: str, b: str, tasks: list[str], seeds: list[int]) -> tuple[float, float]:
    """a - b per seed (each seed's mean over tasks), mean ± std over seeds."""
    return stat([x - y for x, y in zip(seed_means(table, a, tasks, seeds), seed_means(table, b, tasks, seeds))])


def stored_bytes(table: dict, method: str, tasks: list[str]) -> float:
    return statistics.fmean(float(r["checkpoint_file_bytes"]) for t in tasks for r in table[method][t].values())


def adapter_bytes(table: dict, method: str, tasks: list[str]) -> float | None:
    vals = [r["adapter_bytes"] for t in tasks for r in table[method][t].values()]
    return statistics.fmean(float(v) for v in vals) if all(vals) else None


def ratio_methods(table: dict, base: str) -> list[tuple[float, str]]:
    """(prune ratio, method) of `base` at scale SCALE with every other option at its default, by ratio."""
    found = []
    for m in table:
        name, opts = parse(m)
        extra = {k: v for k, v in opts.items() if k not in ("scale", "prune_ratio")}
        if name == base and opts.get("scale") == SCALE and "prune_ratio" in opts and \
                all(DEFAULTS.get(k) == v for k, v in extra.items()):
            found.append((float(opts["prune_ratio"]), m))
    return sorted(found)


def ablations(table: dict) -> list[tuple[str, str, str]]:
    """(component, value, method) for pear at scale SCALE, ratio 0.75 with one component changed."""
    out = []
    for m in table:
        name, opts = parse(m)
        if name != "pear" or opts.get("scale") != SCALE or opts.get("prune_ratio") != "0.75":
            continue
        changed = {k: v for k, v in opts.items() if k not in ("scale", "prune_ratio")}
        if len(changed) == 1:
            (k, v), = changed.items()
            out.append((k, v, m))
    return sorted(out)


def fmt(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", help="comma-separated tasks to average over (default: every task all methods have)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--docs", type=Path, help="a markdown file whose block between DOCS_BEGIN and DOCS_END "
                    "becomes claim.md's tables (docs/results.md)")
    ap.add_argument("--scale", default="1", help="the adapter family's output scale to report: a value, or 'tuned' "
                    "for the runs of `pear suite --tune` (default 1)")
    args = ap.parse_args(argv)
    family(args.scale)
    seeds = [int(s) for s in args.seeds.split(",")]
    table = by_method(read_rows(args.csv))
    pear, prune = ratio_methods(table, "pear"), ratio_methods(table, "prune")
    # The tasks: those on which the anchor (linear, adapter, pear and prune at 0.75) has every seed;
    # a method with fewer of them goes to the "fewer tasks" table, not into the means and the plot.
    anchor = [m for m in ("linear", ADAPTER, *ANCHOR_RATIO) if m in table] or [m for _, m in pear + prune]
    tasks = common_tasks(table, anchor, seeds)
    if args.tasks:
        tasks = [t for t in args.tasks.split(",") if t in tasks]
    if not tasks:
        raise SystemExit(f"no task has all {len(seeds)} seeds of every method in {anchor}")
    complete = [m for m in table if set(tasks) <= set(common_tasks(table, [m], seeds))]
    curve = [m for _, m in pear + prune if m in complete] + [m for m in BASELINES if m in complete]
    fewer = [m for m in [m for _, m in pear + prune] + list(BASELINES) if m in table and m not in curve]
    args.out.mkdir(parents=True, exist_ok=True)
    lines = report(table, tasks, seeds, pear, prune, curve, args.csv, fewer)  # the pairs: every ratio run
    (args.out / "claim.md").write_text("\n".join(lines) + "\n")
    (args.out / "headline.md").write_text("\n".join(headline(table, tasks, seeds, pear, prune, curve)) + "\n")
    if args.docs:
        into_docs(args.docs, lines)
    plot(table, tasks, seeds, [p for p in pear if p[1] in curve], [p for p in prune if p[1] in curve],
         args.out / "claim.png", [m for m in BASELINES if m in curve])
    print("\n".join(lines))


def report(table, tasks, seeds, pear, prune, curve, sources, fewer=()) -> list[str]:
    lines = ["# Pear's claim on the built-in testbed", "",
             f"Tasks averaged: {', '.join(tasks)}; seeds {', '.join(map(str, seeds))}. Each seed's value is its mean "
             "over these tasks; the table gives mean ± sample std over seeds. Stored bytes: the task checkpoint's "
             "files (adapters, head, plan), mean over runs.", "",
             "Made by `python benchmarks/claim_curve.py " + " ".join(str(p) for p in sources)
             + ("" if SCALE == "1" else f" --scale {SCALE or 'tuned'}") + " --out ...`.", "",
             *tuned_lines(table, tasks, curve),
             "| method | mean over tasks | " + " | ".join(tasks) + " | stored bytes | adapter bytes |",
             "| --- | --- | " + " | ".join("---" for _ in tasks) + " | --- | --- |"]
    for m in curve:
        per_task = [fmt(*stat([float(table[m][t][s]["test_acc"]) for s in seeds])) for t in tasks]
        ab = adapter_bytes(table, m, tasks)
        lines.append(f"| {m} | {fmt(*stat(seed_means(table, m, tasks, seeds)))} | " + " | ".join(per_task)
                     + f" | {stored_bytes(table, m, tasks):,.0f} | {'–' if ab is None else f'{ab:,.0f}'} |")
    lines += fewer_lines(table, seeds, list(fewer))
    lines += ["", "## Sharing against pruning (paired: same task, same seed)", "",
              "Over every task on which both have all seeds (which may be more than the table's).", "",
              "| prune ratio | tasks | pear | prune | pear - prune (points) |", "| --- | --- | --- | --- | --- |"]
    prunes = dict(prune)
    for r, m in pear:
        ts = common_tasks(table, [m, prunes[r]], seeds) if r in prunes else []
        if ts:
            lines.append(f"| {r} | {', '.join(ts)} | {fmt(*stat(seed_means(table, m, ts, seeds)))} | "
                         f"{fmt(*stat(seed_means(table, prunes[r], ts, seeds)))} | "
                         f"{fmt(*paired(table, m, prunes[r], ts, seeds))} |")
    lines += ablation_lines(table, seeds)
    lines += target_lines(table, tasks, seeds, dict(pear), prunes)
    return lines


def tuned_lines(table, tasks, curve) -> list[str]:
    """What --tune chose for each method of the table, per task (from the rows' `tuned` cells)."""
    chosen = []
    for m in curve:
        per_task = [f"{t} {v}" for t in tasks if (v := next(iter(table[m][t].values())).get("tuned"))]
        if per_task:
            chosen.append(f"{m}: {', '.join(per_task)}")
    return ["--tune's choices (val200): " + "; ".join(chosen) + ".", ""] if chosen else []


DOCS_BEGIN, DOCS_END = "<!-- claim.md: made by benchmarks/claim_curve.py --docs -->", "<!-- /claim.md -->"


def docs_block(lines: list[str]) -> list[str]:
    """claim.md without its title, its sections one level down: what --docs puts into a document."""
    return [("#" + line) if line.startswith("## ") else line for line in lines[2:]]


def into_docs(path: Path, lines: list[str]) -> None:
    text = path.read_text(encoding="utf-8").split("\n")
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise SystemExit(f"{path} has no {DOCS_BEGIN} ... {DOCS_END} block to fill")
    i, j = text.index(DOCS_BEGIN), text.index(DOCS_END)
    text[i + 1 : j] = docs_block(lines)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(text), encoding="utf-8")
    tmp.replace(path)


LABELS = {"adapter": "adapter", "linear": "linear probe", "full": "full fine-tuning",
          "peft-lora": "LoRA (peft)", "peft-lora-eq": "LoRA at the adapters' size"}


def display_name(method: str) -> str:
    """A baseline's name in the headline and the plot, whatever scale its runs name."""
    return LABELS.get(parse(method)[0], method)


def headline(table, tasks, seeds, pear, prune, curve) -> list[str]:
    """The README's table (headline.md): each method of the plot, its mean over the tasks, its
    stored bytes, and at each prune ratio pear - prune, paired."""
    prunes = dict(prune)
    over = f"mean over the {len(tasks)} tasks" if len(tasks) > 1 else f"on {tasks[0]}"
    lines = [f"| method | accuracy, {over} | stored bytes per task | pear − prune (paired) |",
             "| --- | --- | --- | --- |"]

    def row(m: str, label: str, pair: str = "") -> str:
        return f"| {label} | {fmt(*stat(seed_means(table, m, tasks, seeds)))} | {stored_bytes(table, m, tasks):,.0f} | {pair} |"

    for m in ("linear", ADAPTER):
        if m in curve:
            lines.append(row(m, display_name(m)))
    for r, m in pear:
        if m not in curve:
            continue
        d, sd = paired(table, m, prunes[r], tasks, seeds) if prunes.get(r) in curve else (None, 0.0)
        lines.append(row(m, f"**pear, ratio {r:g}**", f"{d:+.2f} ± {sd:.2f}" if d is not None else ""))
        if prunes.get(r) in curve:
            lines.append(row(prunes[r], f"prune, ratio {r:g}"))
    for m in ("full", "peft-lora", "peft-lora-eq"):
        if m in curve:
            lines.append(row(m, display_name(m)))
    return lines


def fewer_lines(table, seeds, fewer: list[str]) -> list[str]:
    """The methods not yet run with every seed on every task of the table, each on its own tasks,
    beside adapter and pear at 0.75 on the same tasks."""
    refs = [m for m in (ADAPTER, *ANCHOR_RATIO[:1]) if m in table]
    rows = [(m, ts) for m in fewer if (ts := common_tasks(table, [m, *refs], seeds))]
    if not rows:
        return []
    lines = ["", "## Measured on fewer tasks so far", "",
             "Each on the tasks where it has every seed, beside the references on the same tasks.", "",
             "| method | tasks | accuracy | " + " | ".join(f"{r} (same tasks)" for r in refs) + " | stored bytes |",
             "| --- | --- | --- | " + " | ".join("---" for _ in refs) + " | --- |"]
    for m, ts in rows:
        lines.append(f"| {m} | {', '.join(ts)} | {fmt(*stat(seed_means(table, m, ts, seeds)))} | "
                     + " | ".join(fmt(*stat(seed_means(table, r, ts, seeds))) for r in refs)
                     + f" | {stored_bytes(table, m, ts):,.0f} |")
    return lines


def ablation_lines(table, seeds) -> list[str]:
    default = ANCHOR_RATIO[0]
    rows = ablations(table)
    if default not in table or not rows:
        return []
    lines = ["", f"## Ablations (pear, s = {SCALE or 'tuned'}, prune ratio 0.75; one component changed)", "",
             "Over the tasks on which the ablation and the default both have every seed.", "",
             "| component | value | tasks | accuracy | default (same tasks) | value - default (paired) | stored bytes |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for comp, value, m in rows:
        ts = common_tasks(table, [m, default], seeds)
        if not ts:
            continue
        lines.append(f"| {comp} | {value} | {', '.join(ts)} | {fmt(*stat(seed_means(table, m, ts, seeds)))} | "
                     f"{DEFAULTS.get(comp, '?')}: {fmt(*stat(seed_means(table, default, ts, seeds)))} | "
                     f"{fmt(*paired(table, m, default, ts, seeds))} | {stored_bytes(table, m, ts):,.0f} |")
    return lines


def target_lines(table, tasks, seeds, pear: dict, prunes: dict) -> list[str]:
    lines = ["", "## Targets", ""]
    adapter = ADAPTER
    ts = common_tasks(table, [pear[0.5], adapter], seeds) if 0.5 in pear and adapter in table else []
    if ts:
        p, a = stat(seed_means(table, pear[0.5], ts, seeds))[0], stat(seed_means(table, adapter, ts, seeds))[0]
        lines.append(f"- pear ≥ adapter - 0.5 at ratio 0.5 ({', '.join(ts)}): pear {p:.2f}, adapter {a:.2f}, "
                     f"difference {p - a:+.2f}: **{'met' if p >= a - 0.5 else 'missed'}**")
    diffs = {}
    for r in (0.75, 0.9):
        ts = common_tasks(table, [pear[r], prunes[r]], seeds) if r in pear and r in prunes else []
        if ts:
            diffs[r] = (paired(table, pear[r], prunes[r], ts, seeds)[0], ts)
    if diffs:
        met = any(d >= 1.0 for d, _ in diffs.values())
        lines.append("- pear ≥ prune + 1.0 at ratio 0.75 or 0.9: "
                     + ", ".join(f"{r} ({', '.join(ts)}): {d:+.2f}" for r, (d, ts) in diffs.items())
                     + f": **{'met' if met else 'missed'}**")
    lines += knowledge_target(table, seeds)
    return lines


def knowledge_target(table, seeds) -> list[str]:
    default = ANCHOR_RATIO[0]
    modes = [(v, m) for c, v, m in ablations(table) if c == "knowledge"]
    if not modes or default not in table:
        return []
    methods = [default] + [m for _, m in modes]
    ts = common_tasks(table, methods, seeds)
    if not ts:
        return []
    stats = {v: stat(seed_means(table, m, ts, seeds)) for v, m in [("merge", default)] + modes}
    best = max(stats, key=lambda v: stats[v][0])
    met = best == "merge" or stats["merge"][0] >= stats[best][0] - stats[best][1]
    return [f"- the default knowledge checkpoint (merge) is the best mode or within one std of it ({', '.join(ts)}): "
            + ", ".join(f"{v} {fmt(*s)}" for v, s in stats.items()) + f": **{'met' if met else 'missed'}**"]


def plot(table, tasks, seeds, pear, prune, path: Path, points=BASELINES) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, ms, style, dy in (("pear (prune + share)", pear, "o-", 6), ("prune", prune, "s--", -12)):
        if not ms:
            continue
        xs = [stored_bytes(table, m, tasks) for _, m in ms]
        st = [stat(seed_means(table, m, tasks, seeds)) for _, m in ms]
        ax.errorbar(xs, [s[0] for s in st], yerr=[s[1] for s in st], fmt=style, capsize=3, label=label)
        for (r, _), x, s in zip(ms, xs, st):
            ax.annotate(f"{r:g}", (x, s[0]), textcoords="offset points", xytext=(5, dy), fontsize=8)
    for m in points:
        if m in table:
            mean, std = stat(seed_means(table, m, tasks, seeds))
            ax.errorbar([stored_bytes(table, m, tasks)], [mean], yerr=[std], fmt="^", capsize=3,
                        label=display_name(m))
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes per task (checkpoint files, log scale)")
    ax.set_ylabel(f"test accuracy, mean over {len(tasks)} task(s) (%)")
    ax.set_title(f"Built-in ViT, 30 epochs, {len(seeds)} seeds ({', '.join(tasks)}); labels: prune ratio", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
