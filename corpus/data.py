"""Image classification data sets as whole uint8 tensors, cached once, read by sandboxed workers.

    from corpus.data import prepare, load_prepared
    path = prepare("fashion-mnist")           # parent process: find/download, convert, cache
    d = load_prepared(path)                   # worker: {"x_train": uint8 (N,C,H,W), "y_train": int64, "x_test"}
    y = load_test_labels(path)                # parent only: the test labels (int64), never in the sandbox

Sources, first match wins:
- `--data-dir DIR`: a folder holding the data set's files: Fashion-MNIST/MNIST idx files
  (`train-images-idx3-ubyte[.gz]` ...), `cifar-10-batches-py/` or `cifar-100-python/` (the Python
  pickles as published, read by an unpickler that rebuilds numpy arrays and nothing else), or a
  `datasets` folder saved with `save_to_disk` (the Hub's columns).
- Fashion-MNIST: Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`).
- The Hugging Face Hub through `datasets` (`uoft-cs/cifar10`, `uoft-cs/cifar100`, `ylecun/mnist`,
  `zalando-datasets/fashion_mnist`), cached by `datasets` as usual.

The converted tensors are cached under `$NASFORGE_CACHE` (default `~/.cache/nasforge`) as one
`.pt` file per data set in `data/`, written atomically; workers read it (their sandbox has no network).
The test labels are not in it: they go to `labels/` (same name), which the sandbox does not mount
(`mutator.sandbox.read_paths`), so a candidate can neither find them in its memory nor open them; the
parent scores the candidate's predictions (`corpus.evaluator.score`). A cache file from before this
split is split on the next `prepare`. The raw files a data set was read from are hidden from the
sandbox only where bubblewrap runs it (Debian's `/usr/share/datasets`, with `t10k-labels-idx1-ubyte`,
is readable where Landlock alone contains it, since `/usr` is); `--data-dir` folders are never mounted.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np

DATASETS = {
    # name: (hub id, image column, label column, channels, classes, horizontal flip makes sense)
    "fashion-mnist": ("zalando-datasets/fashion_mnist", "image", "label", 1, 10, True),
    "mnist": ("ylecun/mnist", "image", "label", 1, 10, False),
    "cifar10": ("uoft-cs/cifar10", "img", "label", 3, 10, True),
    "cifar100": ("uoft-cs/cifar100", "img", "fine_label", 3, 100, True),
}
DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
WHERE = {
    "fashion-mnist": "apt-get install dataset-fashion-mnist, or put the four idx files in --data-dir",
    "mnist": "put the four MNIST idx files (train-images-idx3-ubyte.gz ...) in --data-dir",
    "cifar10": "put the extracted cifar-10-batches-py folder (or a save_to_disk copy of uoft-cs/cifar10) in --data-dir",
    "cifar100": "put the extracted cifar-100-python folder (or a save_to_disk copy of uoft-cs/cifar100) in --data-dir",
}


from corpus.errors import DataError  # noqa: E402  (defined with the package's other errors)


def cache_dir() -> Path:
    return Path(os.environ.get("NASFORGE_CACHE", Path.home() / ".cache" / "nasforge"))


def info(name: str) -> dict:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r} (known: {', '.join(DATASETS)})")
    hub, _, _, channels, classes, flip = DATASETS[name]
    size = [28, 28] if "mnist" in name else [32, 32]
    return {"name": name, "hub_id": hub, "channels": channels, "classes": classes, "flip": flip, "size": size}


# -- readers ------------------------------------------------------------------------------------

def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    with _open(path) as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise DataError(f"{path}: not an unsigned-byte idx file")
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8).copy()
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated ({data.size} of {int(np.prod(shape))} values)")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / cand).exists():
            return folder / cand
    return None


def from_idx_folder(folder: Path):
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [_find(folder, n) for n in names]
    if None in paths:
        return None
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    return xtr[:, None], ytr, xte[:, None], yte


CIFAR_FILES = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
               "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels")}


def _pickle_globals() -> dict:
    """What the published CIFAR pickles (and numpy arrays pickled under protocols 0-5) may ask for."""
    import codecs

    try:  # numpy >= 2 (numpy.core is a deprecated alias there)
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}  # bytes pickled by Python 3 under protocol <= 2
    for mod in ("numpy.core", "numpy._core"):  # the CIFAR files name numpy.core; numpy 2 writes numpy._core
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar  # a numpy integer in a label list
        allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """`pickle.load` runs whatever callable the file names; a CIFAR batch needs only numpy's array rebuilders."""

    def __init__(self, f, path: Path):
        super().__init__(f, encoding="bytes")  # the published files were written by Python 2
        self.path, self.allowed = path, _pickle_globals()

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise DataError(f"{self.path}: not a CIFAR batch file (it asks for {module}.{name})")
        return self.allowed[(module, name)]


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001  (truncated, not a pickle, or one numpy cannot rebuild)
        detail = (str(exc).splitlines() or [""])[0]
        raise DataError(f"{path}: not a readable CIFAR batch file ({type(exc).__name__}"
                        f"{': ' + detail if detail else ''})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR batch file (a pickled {type(obj).__name__}, not a dict)")
    return obj


def _cifar_batch(path: Path, key: bytes, classes: int):
    """(x uint8 (n,3,32,32), y int64 (n,)) from one batch file, checked."""
    d = _unpickle(path)
    for k in (b"data", key):
        if k not in d:
            found = ", ".join(repr(x) for x in d) or "none"
            raise DataError(f"{path}: no {k!r} entry (found {found})")
    try:
        x = np.asarray(d[b"data"])
        y = np.asarray(d[key])
    except Exception as exc:  # noqa: BLE001  (ragged lists and the like)
        raise DataError(f"{path}: unreadable {b'data'!r} or {key!r} ({type(exc).__name__})") from None
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: {b'data'!r} has shape {tuple(x.shape)}, expected (N, 3072): one row of "
                        f"3x32x32 bytes per image")
    if not (np.issubdtype(x.dtype, np.integer) and (x.size == 0 or (x.min() >= 0 and x.max() <= 255))):
        raise DataError(f"{path}: {b'data'!r} holds {x.dtype} values, expected bytes 0-255")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key!r} holds {y.size} {y.dtype} values for {len(x)} images, "
                        f"expected one integer label per image")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"{path}: {key!r} has labels {int(y.min())}..{int(y.max())}, expected 0..{classes - 1}")
    return x.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), y.astype(np.int64)


def from_cifar_folder(folder: Path, name: str):
    """The extracted python tarball from the CIFAR site: `folder` holds `cifar-10-batches-py/` (or
    `cifar-100-python/`), or is that folder. None if neither; DataError if it is incomplete or malformed."""
    subdir, train_files, test_files, key = CIFAR_FILES[name]
    sub = folder / subdir
    if not sub.is_dir():
        sub = folder if any((folder / f).is_file() for f in (*train_files, *test_files)) else None
    if sub is None:
        return None
    missing = [f for f in (*train_files, *test_files) if not (sub / f).is_file()]
    if missing:
        raise DataError(f"{sub}: incomplete {subdir} folder, missing {', '.join(missing)}")
    classes = DATASETS[name][4]

    def stack(files):
        parts = [_cifar_batch(sub / f, key, classes) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return (*stack(train_files), *stack(test_files))


def _hf_to_arrays(ds, image_col, label_col, channels, where):
    imgs = []
    for img in ds[image_col]:
        if not hasattr(img, "convert"):
            raise DataError(f"{where}: column {image_col!r} holds {type(img).__name__}, expected images "
                            f"(a datasets Image column)")
        a = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        imgs.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
    if len({a.shape for a in imgs}) > 1:
        raise DataError(f"{where}: column {image_col!r} mixes image sizes "
                        f"({', '.join(sorted({'x'.join(map(str, a.shape[1:])) for a in imgs}))})")
    try:
        y = np.asarray(ds[label_col], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: column {label_col!r} does not hold integer labels") from None
    x = np.stack(imgs) if imgs else np.zeros((0, channels, 0, 0), dtype=np.uint8)
    return x, y


def from_hf(name: str, local: Path | None = None):
    """A `datasets` DatasetDict with train and test splits: `local`, a folder written by `save_to_disk`,
    or the Hub's copy (DATASETS: its id and the image and label columns it has there)."""
    import datasets

    hub, image_col, label_col, channels, _, _ = DATASETS[name]
    try:
        if local is not None:
            dd = datasets.load_from_disk(str(local))
        else:
            dd = datasets.load_dataset(hub)
    except Exception as exc:  # offline, missing, or not a dataset folder
        if local is not None:
            detail = (str(exc).splitlines() or [""])[0][:200]
            raise DataError(f"{local}: not a readable datasets folder ({type(exc).__name__}"
                            f"{': ' + detail if detail else ''})") from None
        raise DataError(f"{name}: not found locally and the Hub is unreachable ({type(exc).__name__}); "
                        f"{WHERE[name]}") from None
    where = local if local is not None else f"hub:{hub}"
    if not hasattr(dd, "keys") or "train" not in dd or "test" not in dd:
        splits = list(dd.keys()) if hasattr(dd, "keys") else "one Dataset, no splits"
        raise DataError(f"{where}: expected train and test splits (found {splits})")
    for split in ("train", "test"):
        missing = [c for c in (image_col, label_col) if c not in dd[split].column_names]
        if missing:
            raise DataError(f"{where}: the {split} split has columns {dd[split].column_names}, expected "
                            f"{image_col!r} and {label_col!r} as in the Hub's {hub}")
    return (*_hf_to_arrays(dd["train"], image_col, label_col, channels, where),
            *_hf_to_arrays(dd["test"], image_col, label_col, channels, where))


TARBALLS = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _checked(name: str, arrays, source: str):
    """The arrays as read, or DataError if their labels do not fit the data set's classes."""
    classes = DATASETS[name][4]
    for split, y in (("train", arrays[1]), ("test", arrays[3])):
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise DataError(f"{source}: {name} {split} labels run {int(y.min())}..{int(y.max())}, "
                            f"expected 0..{classes - 1}")
    return arrays


def read_raw(name: str, data_dir: str | None = None):
    """(x_train, y_train, x_test, y_test) as uint8 NCHW / int64 arrays, from the first source found."""
    info(name)
    folders = [Path(data_dir)] if data_dir else []
    if name in DEBIAN_DIRS and not data_dir:
        folders.append(Path(DEBIAN_DIRS[name]))
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"--data-dir {folder} is not a folder")
        for sub in (folder, folder / name):
            arrays = (from_cifar_folder(sub, name) if name.startswith("cifar") else from_idx_folder(sub)) \
                if sub.is_dir() else None
            if arrays is None and sub.is_dir() and any((sub / f).exists() for f in ("dataset_dict.json", "state.json")):
                arrays = from_hf(name, sub)  # a save_to_disk folder (state.json: one split only, refused there)
            if arrays is not None:
                return _checked(name, arrays, str(sub)), str(sub)
    if data_dir:
        tarball = TARBALLS.get(name)
        if tarball and (Path(data_dir) / tarball).exists():
            raise DataError(f"{name}: {data_dir} holds {tarball} unextracted; run "
                            f"`tar xzf {Path(data_dir) / tarball} -C {data_dir}` first")
        raise DataError(f"{name}: no data set files in {data_dir}; {WHERE[name]}")
    if _offline():
        raise DataError(f"{name}: not found locally and offline mode is on; {WHERE[name]}")
    return _checked(name, from_hf(name), f"hub:{DATASETS[name][0]}"), f"hub:{DATASETS[name][0]}"


def labels_path(data_path) -> Path:
    """Where the test labels of a prepared file live: `labels/` beside its `data/` folder."""
    p = Path(data_path)
    return p.parent.parent / "labels" / p.name


def _save(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def prepare(name: str, data_dir: str | None = None) -> Path:
    """Convert once and cache; returns the cache file (its test labels apart: `labels_path`). Parent
    process only (may download)."""
    import torch

    info(name)
    key = hashlib.sha256(f"{name}|{Path(data_dir).resolve() if data_dir else ''}".encode()).hexdigest()[:12]
    path = cache_dir() / "data" / f"{name}-{key}.pt"
    labels = labels_path(path)
    if path.exists() and not labels.exists():  # cached before the labels moved out: split it
        d = torch.load(path, weights_only=True)
        if "y_test" in d:
            _save(d.pop("y_test"), labels)
            _save(d, path)
    if path.exists() and labels.exists():
        return path
    (xtr, ytr, xte, yte), source = read_raw(name, data_dir)
    if len(xtr) == 0 or len(xte) == 0 or len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"{name}: empty or inconsistent arrays in {source}")
    _save(torch.from_numpy(yte.astype(np.int64)), labels)
    _save({"name": name, "source": source, "x_train": torch.from_numpy(np.ascontiguousarray(xtr)),
           "y_train": torch.from_numpy(ytr.astype(np.int64)), "x_test": torch.from_numpy(np.ascontiguousarray(xte))},
          path)
    return path


def load_prepared(path, with_test_labels: bool = False) -> dict:
    """A prepared file: x_train, y_train, x_test (and y_test with `with_test_labels`: trusted code only)."""
    import torch

    d = torch.load(path, weights_only=True)
    if with_test_labels:
        d["y_test"] = load_test_labels(path)
    else:
        d.pop("y_test", None)  # a file written without `prepare` (tests) may hold them
    return d


def load_test_labels(data_path):
    """The test labels (int64 tensor) of a prepared file: parent process only (the sandbox cannot read them)."""
    import torch

    lp = labels_path(data_path)
    if lp.exists():
        return torch.load(lp, weights_only=True)
    d = torch.load(data_path, weights_only=True, mmap=True)
    if "y_test" not in d:
        raise DataError(f"no test labels for {data_path} (expected {lp})")
    return d["y_test"]


def stratified_indices(labels, limit: int, seed: int = 0):
    """`limit` indices with the classes in their original proportions (deterministic)."""
    labels = np.asarray(labels)
    if limit <= 0 or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * limit).astype(int)
    for i in np.argsort(-(counts / counts.sum() * limit - quota))[: limit - quota.sum()]:
        quota[i] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))
