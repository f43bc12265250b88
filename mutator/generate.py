"""Write validated channel-width variants of a seed network.

    python -m mutator generate --seed resnet-small --num 100 --out variants

The seed is analysed in a sandbox worker (`mutator.analysis`), width configurations are sampled
(each width times a factor drawn log-uniformly from [min_factor, max_factor], rounded to a multiple
of the divisor, never below it; or drawn from `--width-choices`), realized and validated in
sandbox workers (built, forward at the declared input shape, output shape checked), and written as
`OUT/<id>.py` plus one line in `OUT/manifest.jsonl`. Failed candidates are counted, never written.
Re-running into the same folder adds new distinct configurations and never rewrites a variant.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

from mutator import seeds
from mutator.calls import realize, realize_payload, variants_of
from mutator.records import append
from mutator.literals import SourceError, parse


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits with code 2."""


@dataclass(frozen=True)
class GenerateConfig:
    seed: str = seeds.DEFAULT_SEED
    num: int = 100
    out: str = "variants"
    in_shape: tuple[int, ...] = (1, 3, 32, 32)
    classes: int = 10
    class_name: str | None = None
    min_factor: float = 0.25
    max_factor: float = 2.0
    divisor: int = 8
    rng_seed: int = 0
    width_choices: tuple[tuple[int, ...], ...] | None = None
    workers: int = 0
    timeout_s: float = 300.0
    memory_mb: int = 6144


def resolve_seed(name_or_path: str) -> tuple[str, str]:
    """(parent label, source) for a built-in seed name or a file path."""
    if name_or_path in seeds.SEEDS:
        return name_or_path, seeds.seed_source(name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(seeds.SEEDS)
        raise UserError(f"no such file or built-in seed: {name_or_path} (built-in: {known})")
    if path.is_dir():
        raise UserError(f"{name_or_path} is a folder, not a Python file")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {name_or_path}: {exc}") from None
    try:
        parse(source)
    except SourceError as exc:
        raise UserError(f"{name_or_path}: {exc}") from None
    return str(path), source


def check_in_shape(shape) -> None:
    """UserError unless `shape` is what `--in-shape` documents: exactly four positive integers,
    batch,channels,height,width (an image model's NCHW input; three numbers are refused rather than
    guessed at: `1,3,32` is as likely a height left out as a batch)."""
    ok = isinstance(shape, (tuple, list)) and len(shape) == 4 and \
        all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    if not ok:
        shown = shape if isinstance(shape, str) else ",".join(map(str, shape))
        raise UserError(f"--in-shape needs four positive integers batch,channels,height,width like 1,3,32,32, "
                        f"got {shown}")


def spec_of(cfg) -> dict:
    check_in_shape(cfg.in_shape)
    if cfg.classes < 1:
        raise UserError("--classes must be at least 1")
    return {"in_shape": [int(d) for d in cfg.in_shape], "classes": int(cfg.classes),
            "class_name": cfg.class_name}


def make_pool(cfg):
    from mutator.sandbox import WorkerPool

    n = cfg.workers or min(2, os.cpu_count() or 1)
    return WorkerPool(n, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb)


def analyze_seed(pool, source: str, spec: dict, divisor: int, label: str):
    """The seed's width analysis (`mutator.calls.Analysis`); a one-line UserError when it fails."""
    from mutator.calls import analyze

    a = analyze(pool, source, spec, divisor)
    if not a.ok:
        raise UserError(f"{label}: {a.error}")
    return a


# -- manifest -----------------------------------------------------------------------------------

def read_manifest(out: Path) -> list[dict]:
    """Rows of OUT/manifest.jsonl (`mutator.records`: a torn last line from a killed run is dropped)."""
    from mutator.records import JournalError, read

    try:
        return read(out / "manifest.jsonl", required=("id", "widths"), what="variant record")
    except JournalError as exc:
        raise UserError(str(exc)) from None


def _write_variant(out: Path, row: dict, source: str) -> None:
    path = out / row["file"]
    tmp = out / f".{row['file']}.tmp"
    tmp.write_text(source)
    os.replace(tmp, path)
    append(out / "manifest.jsonl", row)


# -- sampling -----------------------------------------------------------------------------------

def sample_widths(rng: random.Random, groups: list[dict], cfg) -> list[int]:
    out = []
    for i, g in enumerate(groups):
        if cfg.width_choices:
            out.append(int(rng.choice(cfg.width_choices[i])))
            continue
        m = int(g["multiple"])
        f = math.exp(rng.uniform(math.log(cfg.min_factor), math.log(cfg.max_factor)))
        out.append(max(m, int(round(g["value"] * f / m)) * m))
    return out


def label_stem(parent: str) -> str:
    stem = Path(parent).stem if parent.endswith(".py") else parent
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in stem) or "variant"


def generate(cfg: GenerateConfig, progress: bool = True, pool=None, analysis: dict | None = None) -> dict:
    """Write cfg.num new variants; returns counts. `pool` and a finished `analysis` of the same
    seed and spec may be passed in to reuse them."""
    if cfg.num < 0:
        raise UserError("--num must be >= 0")
    if not 0 < cfg.min_factor <= cfg.max_factor:
        raise UserError("need 0 < --min-factor <= --max-factor")
    if cfg.divisor < 1:
        raise UserError("--divisor must be >= 1")
    parent, source = resolve_seed(cfg.seed)
    spec = spec_of(cfg)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    existing = read_manifest(out)
    own_pool = pool is None
    pool = pool or make_pool(cfg)
    try:
        analysis = analysis or analyze_seed(pool, source, spec, cfg.divisor, parent)
        groups = analysis.groups
        if not groups:
            raise UserError(f"{parent}: no width literals found ({_frozen_summary(analysis)})")
        if cfg.width_choices is not None and len(cfg.width_choices) != len(groups):
            raise UserError(f"--width-choices gives {len(cfg.width_choices)} lists, the model has {len(groups)} widths")
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        return _fill(cfg, pool, parent, source, spec, analysis, existing, out, progress)
    finally:
        if own_pool:
            pool.close()


def _frozen_summary(analysis) -> str:
    """Why an analysis found no widths (an Analysis or its raw dict)."""
    a = getattr(analysis, "raw", analysis)
    if a.get("frozen"):
        f = a["frozen"][0]
        return f"line {f['line']}: {f['reason']}"
    kinds = [l for l in a["literals"] if l["value"] >= a["divisor"]]
    return f"{len(kinds)} integer literals >= {a['divisor']}, none sets a layer's output channels"


def _fill(cfg, pool, parent, source, spec, analysis, existing, out, progress) -> dict:
    from tqdm import tqdm

    seed_widths = analysis.seed_widths
    seen = {tuple(r["widths"]) for r in existing if r.get("parent") == parent}
    seen.add(tuple(seed_widths))
    rng = random.Random(cfg.rng_seed)
    stem = label_stem(parent)
    counts = {"written": 0, "invalid": 0, "timeout": 0, "crash": 0, "duplicate_draws": 0}
    errors: dict[str, int] = {}
    bar = tqdm(total=cfg.num, desc=f"variants of {stem}", unit="var", disable=not progress)
    stale = 0
    try:
        while counts["written"] < cfg.num and stale < 50:
            need = cfg.num - counts["written"]
            batch = []
            for _ in range(max(8, 2 * need) * 20):
                w = tuple(sample_widths(rng, analysis.groups, cfg))
                if w in seen:
                    counts["duplicate_draws"] += 1
                    continue
                seen.add(w)
                batch.append(list(w))
                if len(batch) >= min(need + 4, 2 * need + 4):
                    break
            if not batch:
                stale += 1
                continue
            chunk = max(1, min(8, len(batch) // max(1, pool.size)))
            chunks = [batch[i:i + chunk] for i in range(0, len(batch), chunk)]
            payloads = [realize_payload(source, spec, analysis, c) for c in chunks]
            before = counts["written"]
            for i, res in pool.imap("mutator.analysis:variants", payloads, timeout_s=cfg.timeout_s):
                for r in variants_of(res, chunks[i]):
                    if not r.ok:
                        key = "invalid" if r.status in ("invalid", "error") else r.status
                        counts[key] = counts.get(key, 0) + 1
                        msg = (r.error or "")[:120]
                        errors[msg] = errors.get(msg, 0) + 1
                        continue
                    if counts["written"] >= cfg.num:
                        continue
                    text = r.source
                    sha = hashlib.sha256(text.encode()).hexdigest()
                    row = {"id": f"{stem}-{sha[:10]}", "parent": parent, "file": f"{stem}-{sha[:10]}.py",
                           "widths": r.widths, "seed_widths": seed_widths, "params": r.params,
                           "sha256": sha, "in_shape": spec["in_shape"], "classes": spec["classes"],
                           "class_name": spec["class_name"]}
                    _write_variant(out, row, text)
                    counts["written"] += 1
                    bar.update(1)
                bar.set_postfix(failed=counts["invalid"] + counts["timeout"] + counts["crash"])
            stale = stale + 1 if counts["written"] == before else 0
    finally:
        bar.close()
    counts["exhausted"] = counts["written"] < cfg.num
    counts["top_errors"] = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    counts["widths"] = len(analysis.groups)
    counts["out"] = str(out)
    return counts


def apply_widths(cfg: GenerateConfig, widths: list[int], out_file: str, pool=None) -> dict:
    """Write the seed with exactly these width values (group order as `check` prints them)."""
    parent, source = resolve_seed(cfg.seed)
    spec = spec_of(cfg)
    own_pool = pool is None
    pool = pool or make_pool(cfg)
    try:
        analysis = analyze_seed(pool, source, spec, cfg.divisor, parent)
        groups = analysis.groups
        if len(widths) != len(groups):
            raise UserError(f"{parent} has {len(groups)} widths ({','.join(map(str, analysis.seed_widths))}), "
                            f"--widths gives {len(widths)}")
        r = realize(pool, source, spec, analysis, [list(widths)])[0]
        if not r.ok:
            raise UserError(f"widths {','.join(map(str, widths))} do not give a valid model: {r.error}")
    finally:
        if own_pool:
            pool.close()
    path = Path(out_file)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(r.source)
    os.replace(tmp, path)
    return {"file": str(path), "params": r.params, "widths": list(widths),
            "seed_widths": analysis.seed_widths}
