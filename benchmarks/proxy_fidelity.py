"""Proxy fidelity: does the one-epoch proxy rank networks as longer training does, and how noisy is it?

    python benchmarks/proxy_fidelity.py --out proxy_fidelity               # 3 families x 40 variants, seeds 0,1,2
    python benchmarks/proxy_fidelity.py --out pf --families lenet --variants 12 --seeds 0,1,2
    python benchmarks/proxy_fidelity.py --out proxy_fidelity --cost 3 --tags default,steps300   # cost, side by side
    python benchmarks/proxy_fidelity.py --out pf --report                   # the table and plot of what is done
    python benchmarks/proxy_fidelity.py --out pf_ema --tag ema --set ema=0.9  # the same networks, another recipe
    python benchmarks/proxy_fidelity.py --out pf --references-only & \
    python benchmarks/proxy_fidelity.py --out pf --proxies-only             # two processes, one core each

For each seed family (built-in seeds or .py files), `python -m mutator generate` writes `--variants` width
variants (the seed network is one more); every network is trained through the sandboxed evaluator exactly
as `corpus build` and `search run` train it (`corpus.evaluator.Evaluator`):
- proxy: the recipe under test (default: `search run`'s, `--train-limit 8000`, one epoch, >= 150 steps)
  under each rng seed of `--seeds` (initial weights, training subset, batch order and augmentation draws);
- reference: the whole training set, the proxy's batch size, `--reference-factor` (default 10) times the
  proxy's optimizer steps, rng seed 0 (one run: the reference's own seed noise is not measured).
Every result is one line of OUT/rows.jsonl, written as it finishes; a run that is killed resumes where it
stopped (same command). Networks are visited in rounds (variant i of every family, then i+1), each with all
its proxy seeds and its reference, so a partial run has complete networks in every family.

The report (OUT/result.md, OUT/proxy_fidelity.png), per family, over the networks with every measurement:
- noise: the median over networks of the std of proxy accuracy across rng seeds (points), and the mean
  Kendall tau between the rankings two rng seeds give (rank stability);
- fidelity: Kendall tau, Spearman rho and top-10 overlap of proxy vs reference accuracy, for one rng seed
  (the median over seeds) and for the mean of all seeds (what `--proxy-seeds K` buys);
- cost: median proxy and reference training seconds per network (under whatever else ran: `--cost ROUNDS`
  measures every recipe side by side on the same networks and keeps the ratios in OUT/cost.json);
- the protocol's decision per recipe other than `default` (`decide`: noise cut or CPU option).
Failed networks (status not ok) are counted and left out of the statistics.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def parse_set(items: list[str]) -> dict:
    """`--set key=value` recipe overrides, values as JSON where they parse (numbers, true/false)."""
    from corpus.train import Recipe

    out, known = {}, set(Recipe().to_dict())
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def generate(family: str, n: int, out: Path, in_shape: str, classes: int) -> list[dict]:
    """The seed network and n width variants of one family (the mutator's manifest rows, seed first)."""
    from mutator import seeds

    folder = out / "variants" / Path(family).stem
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        cmd = [sys.executable, "-m", "mutator", "generate", "--seed", family, "--num", str(n), "--out", str(folder),
               "--rng-seed", "0", "--in-shape", in_shape, "--classes", str(classes)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mutator generate --seed {family}: {done.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    src = seeds.seed_source(family) if family in seeds.SEEDS else Path(family).read_text()
    return [{"id": "seed", "code": src}] + [{"id": r["id"], "code": (folder / r["file"]).read_text()} for r in rows][:n + 1]


def load_rows(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
                done[(r["family"], r["network"], r["kind"], r["seed"], r["tag"])] = r
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a kill: measured again
    return done


def jobs(families: dict, seeds: list[int], tag: str) -> list[tuple]:
    """(family, network, kind, seed, tag) in rounds: network i of every family, each with every seed and its
    reference (tag "reference": one reference per network, shared by every proxy recipe measured in OUT)."""
    order = []
    for i in range(max(len(v) for v in families.values())):
        for fam, nets in families.items():
            if i < len(nets):
                order += [(fam, nets[i]["id"], "proxy", s, tag) for s in seeds] + \
                    [(fam, nets[i]["id"], "reference", 0, "reference")]
    return order


def run(args, recipe: dict) -> int:
    from corpus.data import info
    from corpus.evaluator import Evaluator, recipe_for
    from corpus.errors import CorpusError
    from corpus.train import Recipe, schedule

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = info(args.dataset)
    in_shape = None
    from corpus.data import load_prepared, prepare

    data = load_prepared(prepare(args.dataset, args.data_dir))
    in_shape = ",".join(map(str, [1, *data["x_train"].shape[1:]]))
    n_full = len(data["y_train"])
    del data
    families = {Path(f).stem: generate(f, args.variants, out, in_shape, meta["classes"]) for f in args.families}
    proxy = recipe_for(args.dataset, train_limit=args.train_limit, **recipe)
    base = recipe_for(args.dataset, train_limit=args.train_limit)  # the reference does not move with --set
    bs, steps = schedule(min(args.train_limit or n_full, n_full), Recipe(**base))
    reference = {**base, "train_limit": 0, "batch_size": bs, "epochs": 0.0, "min_steps": args.reference_factor * steps}
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else \
        {"dataset": args.dataset, "reference": reference, "families": args.families, "variants": args.variants,
         "seeds": args.seeds, "proxies": {}}
    same = lambda a, b: Recipe(**a).to_dict() == Recipe(**b).to_dict()  # noqa: E731  (fields added since: defaults)
    if cfg["dataset"] != args.dataset or not same(cfg["reference"], reference):
        raise ValueError(f"{out} holds another data set or reference recipe: use another --out")
    if not same(cfg["proxies"].setdefault(args.tag, proxy), proxy):
        raise ValueError(f"--tag {args.tag} in {out} was measured with another recipe: use another --tag")
    cfg_path.write_text(json.dumps(cfg, indent=1))
    path = out / "rows.jsonl"
    done = load_rows(path)
    todo = [j for j in jobs(families, args.seeds, args.tag) if j not in done]
    if args.proxies_only:  # another recipe on networks whose references another command measures
        todo = [j for j in todo if j[2] == "proxy"]
    if args.references_only:  # the references while another command measures the proxies (one core each)
        todo = [j for j in todo if j[2] == "reference"]
    code = {(f, n["id"]): n["code"] for f, nets in families.items() for n in nets}
    print(f"{len(done)} done, {len(todo)} to do; proxy {steps} steps of batch {bs}, reference "
          f"{reference['min_steps']} steps on all {n_full:,} images", flush=True)
    t0, n0 = time.perf_counter(), 0
    with Evaluator(args.dataset, proxy, data_dir=args.data_dir, device=args.device,
                   timeout_s=args.timeout_s) as ev:
        ev.payload["latency"] = "none"  # not what is measured here: a network's cost is its training seconds
        for fam, net, kind, seed, tag in todo:
            rec = {**(reference if kind == "reference" else proxy), "seed": seed}
            ev.recipe = rec
            try:
                row = ev.evaluate(code[(fam, net)], limits={})
            except CorpusError as exc:
                return fail(str(exc))
            keep = {k: row.get(k) for k in ("status", "accuracy", "train_seconds", "seconds", "flops", "params", "error")}
            with path.open("a") as f:
                f.write(json.dumps({"family": fam, "network": net, "kind": kind, "seed": seed, "tag": tag,
                                    **keep}) + "\n")
            n0 += 1
            el = time.perf_counter() - t0
            rate = n0 / el
            acc = keep["accuracy"]
            print(f"[{n0}/{len(todo)}] {fam} {net} {kind} seed {seed}: {keep['status']} "
                  f"acc {'-' if acc is None else f'{acc:.4f}'} train {keep['train_seconds']}s | "
                  f"{60 * rate:.2f}/min, ETA {(len(todo) - n0) / rate / 60:.0f} min", flush=True)
    return 0


def cost(args) -> str:
    """Side by side, in one process: every proxy recipe of OUT's config (or `--tags`) trains the same networks
    (each family's seed and its first `--cost-networks - 1` variants, rng seed 0), interleaved in `--cost`
    rounds (this machine is noisy: run it with nothing else on the CPU). The table: median training seconds
    per family and recipe, and its ratio to the default's (the issue's "cost per candidate")."""
    from corpus.data import info, load_prepared, prepare
    from corpus.evaluator import Evaluator, recipe_for

    out = Path(args.out)
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        raise ValueError(f"{out} holds no config.json: measure a proxy first")
    cfg = json.loads(cfg_path.read_text())
    tags = args.tags or list(cfg["proxies"])
    unknown = [t for t in tags if t not in cfg["proxies"]]
    if unknown or "default" not in cfg["proxies"]:
        raise ValueError(f"--tags: {', '.join(unknown) or 'default'} not measured in {out} "
                         f"(known: {', '.join(cfg['proxies'])})")
    if "default" not in tags:
        tags = ["default", *tags]
    meta = info(cfg["dataset"])
    data = load_prepared(prepare(cfg["dataset"], args.data_dir))
    in_shape = ",".join(map(str, [1, *data["x_train"].shape[1:]]))
    del data
    nets = {Path(f).stem: generate(f, args.variants, out, in_shape, meta["classes"])[:args.cost_networks]
            for f in args.families}
    secs: dict[tuple, list[float]] = {(f, t): [] for f in nets for t in tags}
    base = recipe_for(cfg["dataset"], train_limit=args.train_limit)
    with Evaluator(cfg["dataset"], base, data_dir=args.data_dir, device=args.device, timeout_s=args.timeout_s) as ev:
        ev.payload["latency"] = "none"
        for r in range(args.cost):
            for fam, members in nets.items():
                for net in members:
                    for tag in (tags if r % 2 == 0 else tags[::-1]):  # alternate the order: no arm always first
                        ev.recipe = {**cfg["proxies"][tag], "seed": 0}
                        row = ev.evaluate(net["code"], limits={})
                        if row["status"] != "ok":
                            raise RuntimeError(f"{fam} {net['id']} {tag}: {row['status']} {row.get('error')}")
                        secs[(fam, tag)].append(row["train_seconds"])
            print(f"round {r + 1}/{args.cost}: " + ", ".join(
                f"{f} {t} {statistics.median(v):.2f}s" for (f, t), v in secs.items()), flush=True)
    medians = {fam: {tag: statistics.median(secs[(fam, tag)]) for tag in tags} for fam in nets}
    done = json.loads((out / "cost.json").read_text()) if (out / "cost.json").exists() else {}
    for fam, per in medians.items():  # a later measurement of a (family, recipe) replaces the earlier one
        done.setdefault(fam, {}).update({t: {"train_s": v, "vs_default": v / per["default"], "rounds": args.cost,
                                             "networks": len(nets[fam])} for t, v in per.items()})
    (out / "cost.json").write_text(json.dumps(done, indent=1, sort_keys=True))
    lines = [f"Cost per candidate, side by side ({args.cost} rounds x {args.cost_networks} networks per family, "
             f"rng seed 0, arms alternated; training seconds in the sandboxed evaluator)", "",
             "| family | proxy | median train s | vs default |", "|---|---|---:|---:|"]
    for fam in nets:
        d = statistics.median(secs[(fam, "default")])
        for tag in tags:
            m = statistics.median(secs[(fam, tag)])
            lines.append(f"| {fam} | {tag} | {m:.2f} | {m / d:.2f}x |")
    return "\n".join(lines) + "\n"


def stats(rows: dict, seeds: list[int]) -> list[dict]:
    """One dict per (family, proxy tag): the report's numbers over the networks with every measurement ok."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    pairs = sorted({(k[0], k[4]) for k in rows if k[2] == "proxy"})
    table = []
    for fam, tag in pairs:
        nets = sorted({k[1] for k in rows if k[0] == fam})
        complete, failed = [], 0
        for n in nets:
            got = [rows.get((fam, n, "proxy", s, tag)) for s in seeds] + [rows.get((fam, n, "reference", 0, "reference"))]
            if any(g is None for g in got):
                continue
            if any(g["status"] != "ok" or g["accuracy"] is None for g in got):
                failed += 1
                continue
            complete.append(([g["accuracy"] for g in got[:-1]], got[-1]["accuracy"],
                             [g["train_seconds"] for g in got[:-1]], got[-1]["train_seconds"]))
        row = {"family": fam, "tag": tag, "networks": len(complete), "failed": failed}
        if len(complete) >= 3:
            P = np.array([c[0] for c in complete]) * 100  # networks x seeds, points
            R = np.array([c[1] for c in complete]) * 100
            k = min(10, len(R))
            top = lambda v: set(np.argsort(-v)[:k])  # noqa: E731
            per_seed = [(kendalltau(P[:, j], R)[0], spearmanr(P[:, j], R)[0], len(top(P[:, j]) & top(R)) / k)
                        for j in range(P.shape[1])]
            mean = P.mean(1)
            row.update(
                std_median=float(np.median(P.std(1, ddof=1))) if P.shape[1] > 1 else None,
                seed_tau=float(np.mean([kendalltau(P[:, a], P[:, b])[0] for a, b in combinations(range(P.shape[1]), 2)]))
                if P.shape[1] > 1 else None,
                tau_one=float(np.median([t[0] for t in per_seed])), rho_one=float(np.median([t[1] for t in per_seed])),
                top_one=float(np.median([t[2] for t in per_seed])),
                tau_mean=float(kendalltau(mean, R)[0]), rho_mean=float(spearmanr(mean, R)[0]),
                top_mean=len(top(mean) & top(R)) / k, topk=k,
                proxy_acc=float(np.median(mean)), ref_acc=float(np.median(R)),
                proxy_s=float(statistics.median(s for c in complete for s in c[2])),
                ref_s=float(statistics.median(c[3] for c in complete)),
                points=(mean.tolist(), P.std(1, ddof=1).tolist() if P.shape[1] > 1 else [0.0] * len(R), R.tolist()))
        table.append(row)
    return table


SPEED_FIELDS = {"channels_last", "bf16"}  # the amendment's CPU options: arithmetic, not recipe (no-worse rule)


def decide(rows: dict, cfg: dict, seeds: list[int], costs: dict) -> list[dict]:
    """The protocol's rules (benchmarks/proxy_fidelity.md), per recipe other than `default`, each family compared
    with the default on the networks complete under both:
    - a noise cut (the recipe differs in more than the CPU options) becomes the default only if on every family
      where it was measured (>= 3 networks) it lowers the median std, its tau (one seed) is not lower than the
      default's by more than 0.05, and its cost (`cost.json`, side by side) is <= 1.5x the default's;
    - a CPU option (differs in `channels_last` / `bf16` only) only if on every family with >= 20 networks its
      median std is <= the default's + 0.2 and its tau (one seed) not lower by more than 0.05;
    - a recipe that is another recipe plus CPU options (amendment 2: `s300clbf16` = `steps300` + both) by the
      CPU options' rule against that recipe.
    A family without a side-by-side cost leaves a noise cut undecided, as does a CPU option with no family at
    20 networks."""
    from corpus.train import Recipe

    if "default" not in cfg["proxies"]:
        return []
    full = {t: Recipe(**r).to_dict() for t, r in cfg["proxies"].items()}  # fields added since: their defaults
    differs = lambda a, b: {k for k in full[a] if full[a][k] != full[b][k]}  # noqa: E731
    out = []
    for tag in full:
        if tag == "default":
            continue
        plus = [t for t in full if t != tag and differs(tag, t) and differs(tag, t) <= SPEED_FIELDS
                and not (differs(t, "default") & SPEED_FIELDS)]
        against = "default" if "default" in plus else plus[0] if plus else "default"
        speed = bool(plus)
        fams, fails, undecided = {}, [], []
        for fam in sorted({k[0] for k in rows if k[4] == tag}):
            nets = {k[1] for k in rows if k[0] == fam}
            both = {n for n in nets if all((fam, n, "proxy", s, t) in rows for s in seeds for t in (tag, against))
                    and (fam, n, "reference", 0, "reference") in rows}
            sub = {k: v for k, v in rows.items() if k[0] == fam and k[1] in both and k[4] in (tag, against, "reference")}
            table = {r["tag"]: r for r in stats(sub, seeds)}
            t, d = table.get(tag), table.get(against)
            if not t or not d or t["networks"] < 3 or None in (t["std_median"], d["std_median"]):
                continue  # std needs >= 2 seeds
            c = (costs.get(fam) or {}).get(tag, {}).get("vs_default")  # shown; a noise cut's rule reads it
            f = {"networks": t["networks"], "std": t["std_median"], "std_default": d["std_median"],
                 "tau": t["tau_one"], "tau_default": d["tau_one"], "cost": c}
            fams[fam] = f
            if speed:
                if t["networks"] < 20:
                    continue
                if f["std"] > f["std_default"] + 0.2:
                    fails.append(f"{fam}: std {f['std']:.2f} > {f['std_default']:.2f} + 0.2")
                if f["tau"] < f["tau_default"] - 0.05:
                    fails.append(f"{fam}: tau {f['tau']:.2f} < {f['tau_default']:.2f} - 0.05")
            else:
                if not f["std"] < f["std_default"]:
                    fails.append(f"{fam}: std {f['std']:.2f} not below {f['std_default']:.2f}")
                if f["tau"] < f["tau_default"] - 0.05:
                    fails.append(f"{fam}: tau {f['tau']:.2f} < {f['tau_default']:.2f} - 0.05")
                if c is None:
                    undecided.append(f"{fam}: cost not measured side by side (--cost)")
                elif c > 1.5:
                    fails.append(f"{fam}: cost {c:.2f}x > 1.5x")
        if speed and not any(f["networks"] >= 20 for f in fams.values()):
            undecided.append("no family with >= 20 complete networks")
        missing = sorted({k[0] for k in rows if k[4] == "default"} - set(fams))
        verdict = "fails" if fails else "undecided" if undecided or not fams else \
            f"passes where measured, not measured on {', '.join(missing)}" if missing else "passes"
        out.append({"tag": tag, "rule": "CPU option (no-worse)" if speed else "noise cut", "against": against,
                    "families": fams,
                    "verdict": verdict, "why": fails or undecided or (["measured on no family"] if not fams else [])})
    return out


def decision_text(decisions: list[dict]) -> str:
    f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = ["Decision by the protocol's rules (each recipe against `default`, or a recipe plus CPU options against "
             "that recipe, on the networks complete under both; cost: `--cost`, side by side):", "",
             "| proxy | rule | against | family | networks | std vs against | tau (one seed) vs against | cost vs default |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for d in decisions:
        for fam, x in d["families"].items():
            lines.append(f"| {d['tag']} | {d['rule']} | {d.get('against', 'default')} | {fam} | {x['networks']} | "
                         f"{f(x['std'])} vs {f(x['std_default'])} | "
                         f"{f(x['tau'])} vs {f(x['tau_default'])} | {f(x['cost'])}{'x' if x['cost'] is not None else ''} |")
    lines.append("")
    for d in decisions:
        lines.append(f"- `{d['tag']}` ({d['rule']}): **{d['verdict']}**" + (f": {'; '.join(d['why'])}" if d["why"] else ""))
    return "\n".join(lines) + "\n"


def report(out: Path, seeds: list[int] | None = None) -> str:
    """The table, decision and plot of what is in `out`, over `seeds` (None: the folder's, as configured: a
    command that measured a subset of them, `--seeds 2`, reports the whole table)."""
    rows = load_rows(out / "rows.jsonl")
    if not rows:
        raise ValueError(f"no results in {out / 'rows.jsonl'} yet")
    cfg = json.loads((out / "config.json").read_text())
    seeds = cfg["seeds"] if seeds is None else seeds
    table = stats(rows, seeds)
    f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    base = cfg["proxies"].get("default") or next(iter(cfg["proxies"].values()))
    lines = [f"Proxy fidelity on {cfg['dataset']}, rng seeds {seeds}; reference: all training images, "
             f"{cfg['reference']['min_steps']} steps of batch {cfg['reference']['batch_size']}, rng seed 0. "
             f"Proxy recipes (tag: what differs from `{json.dumps(base, sort_keys=True)}`): "
             + "; ".join(f"`{t}`: {json.dumps({k: v for k, v in r.items() if base.get(k) != v}, sort_keys=True)}"
                         for t, r in cfg["proxies"].items()) + ".", "",
             "| family | proxy | networks (failed) | median std over seeds, pts | seed-to-seed tau | tau, one seed | "
             "rho, one seed | top-10, one seed | tau, mean of seeds | rho, mean | top-10, mean | median proxy acc | "
             "median reference acc | proxy s | reference s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        if r["networks"] < 3:
            lines.append(f"| {r['family']} | {r['tag']} | {r['networks']} ({r['failed']}) | fewer than 3 complete networks |"
                         + " |" * 11)
            continue
        lines.append(f"| {r['family']} | {r['tag']} | {r['networks']} ({r['failed']}) | {f(r['std_median'])} | {f(r['seed_tau'])} | "
                     f"{f(r['tau_one'])} | {f(r['rho_one'])} | {f(r['top_one'])} | {f(r['tau_mean'])} | "
                     f"{f(r['rho_mean'])} | {f(r['top_mean'])} | {f(r['proxy_acc'])} | {f(r['ref_acc'])} | "
                     f"{f(r['proxy_s'], 1)} | {f(r['ref_s'], 1)} |")
    lines += ["", "one seed: the median over the rng seeds of the statistic for that seed's proxy alone; "
              "top-10: the share of the reference's 10 best that the proxy's 10 best contain (top-k of fewer "
              "networks where a family has fewer than 10)."]
    costs = json.loads((out / "cost.json").read_text()) if (out / "cost.json").exists() else {}
    text = "\n".join(lines) + "\n\n" + decision_text(decide(rows, cfg, seeds, costs))
    (out / "result.md").write_text(text)
    plot(table, out / "proxy_fidelity.png", cfg)
    return text


def plot(table: list[dict], path: Path, cfg: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in table if r.get("points")]
    if not shown:
        return
    cols = min(3, len(shown))
    rows_n = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 4.2 * rows_n), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, r in zip(axes.flat, shown):
        mean, std, ref = r["points"]
        ax.errorbar(ref, mean, yerr=std, fmt="o", ms=4, capsize=2, alpha=0.8)
        ax.grid(alpha=0.3)  # no y = x line: the proxy sits 10-15 points below the reference, the ranking is the point
        ax.set_xlabel("reference accuracy (%)")
        ax.set_ylabel(f"proxy accuracy, mean of {len(cfg['seeds'])} seeds (%)")
        ax.set_title(f"{r['family']} ({r['tag']}): tau {r['tau_mean']:.2f}, one seed {r['tau_one']:.2f}", fontsize=9)
    fig.suptitle(f"Proxy vs reference accuracy on {cfg['dataset']}; bars: std over rng seeds")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title above the top row
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="results folder (rows.jsonl, result.md, proxy_fidelity.png); resumes")
    p.add_argument("--families", default="lenet,vgg-small,resnet-small",
                   help="comma-separated built-in seeds or .py files (default lenet,vgg-small,resnet-small)")
    p.add_argument("--variants", type=int, default=40, help="width variants per family, besides the seed (default 40)")
    p.add_argument("--seeds", default="0,1,2", help="proxy rng seeds (default 0,1,2)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-limit", type=int, default=8000, help="the proxy's training subset (default 8000, as search run)")
    p.add_argument("--reference-factor", type=int, default=10, help="reference steps / proxy steps (default 10)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a proxy recipe field (repeatable)")
    p.add_argument("--tag", default="default", help="the recipe's name in the report")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("--proxies-only", action="store_true", help="measure no reference (another command does)")
    p.add_argument("--references-only", action="store_true",
                   help="measure only the references (a --proxies-only command beside it measures the proxies)")
    p.add_argument("--report", action="store_true", help="only print the report of what is in --out")
    p.add_argument("--cost", type=int, default=0, metavar="ROUNDS",
                   help="only measure the cost per candidate of OUT's proxy recipes side by side, ROUNDS rounds")
    p.add_argument("--cost-networks", type=int, default=3, help="--cost: networks per family (the seed first)")
    p.add_argument("--tags", default="", help="--cost: comma-separated recipes (default: every one in OUT)")
    try:
        args = p.parse_args()
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        args.families = [f for f in args.families.split(",") if f]
        args.tags = [t for t in args.tags.split(",") if t]
        recipe = parse_set(args.set)
    except ValueError as exc:
        return fail(str(exc))
    if args.proxies_only and args.references_only:
        return fail("--proxies-only and --references-only exclude each other")
    if not args.seeds or args.variants < 2 or args.reference_factor < 1:
        return fail("need at least one --seeds value, --variants >= 2 and --reference-factor >= 1")
    from mutator import seeds as builtin

    for fam in args.families:
        if fam not in builtin.SEEDS and not Path(fam).is_file():
            return fail(f"--families: {fam!r} is neither a built-in seed ({', '.join(builtin.SEEDS)}) nor a file")
    if args.cost < 0 or args.cost_networks < 1:
        return fail("--cost must be >= 0 rounds and --cost-networks >= 1")
    try:
        if args.cost:
            print(cost(args))
            return 0
        if not args.report:
            rc = run(args, recipe)
            if rc:
                return rc
        print(report(Path(args.out), args.seeds if args.report else None))
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:
        return fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
