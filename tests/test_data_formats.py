"""CIFAR-10/100 as users bring them to `--data-dir`: the python tarballs from the CIFAR site, extracted, and
`save_to_disk` folders of the Hub's datasets; `prepare` end to end; malformed files as one-line DataErrors;
CIFAR pickles that would run code refused.

All data is made here, a few dozen images, no network.
"""
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_module
from corpus.data import (DATASETS, DataError, _unpickle, labels_path, load_prepared, load_test_labels, prepare,
                         read_raw)

# -- the published CIFAR pickles --------------------------------------------------------------------


def _str(b: bytes) -> bytes:  # a Python 2 str, as cPickle writes it (protocol 2)
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def py2_pickle(batch: dict) -> bytes:
    """`batch` ({bytes: uint8 2-d array | list of ints | bytes}) as the CIFAR site's files are: pickled by
    Python 2's cPickle (protocol 2), numpy arrays as numpy.core.multiarray._reconstruct, strings as str."""
    out = b"\x80\x02}("
    for key, value in batch.items():
        out += _str(key)
        if isinstance(value, np.ndarray):
            out += (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85" + _str(b"b")
                    + b"\x87R(" + _int(1) + _int(value.shape[0]) + _int(value.shape[1]) + b"\x86"
                    + b"cnumpy\ndtype\n" + _str(b"u1") + _int(0) + _int(1) + b"\x87R"
                    + b"(" + _int(3) + _str(b"|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb"
                    + b"\x89" + _str(value.tobytes()) + b"tb")
        elif isinstance(value, list):
            out += b"](" + b"".join(_int(int(v)) if isinstance(v, (int, np.integer)) else _str(v) for v in value) + b"e"
        else:
            out += _str(value)
    return out + b"u."


def dump(batch: dict, fmt) -> bytes:
    """fmt: "py2" (as published) or a Python 3 pickle protocol (numpy arrays as numpy 2 pickles them)."""
    return py2_pickle(batch) if fmt == "py2" else pickle.dumps(batch, protocol=fmt)


def cifar_batch(rng, n: int, classes: int, key: bytes = b"labels", name: bytes = b"batch") -> dict:
    batch = {b"batch_label": name, b"labels": [int(k) for k in rng.integers(0, classes, n)],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [b"img_%d.png" % i for i in range(n)]}
    if key != b"labels":
        batch[key] = batch.pop(b"labels")
    return batch


def write_cifar10(root: Path, fmt="py2", per_batch: int = 4, test: int = 6, seed: int = 0) -> dict:
    """root/cifar-10-batches-py as the tarball extracts: data_batch_1..5, test_batch, batches.meta."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = {f"data_batch_{i}": cifar_batch(rng, per_batch, 10, name=b"training batch %d of 5" % i)
               for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(rng, test, 10, name=b"testing batch 1 of 1")
    for name, batch in batches.items():
        (d / name).write_bytes(dump(batch, fmt))
    (d / "batches.meta").write_bytes(dump({b"num_cases_per_batch": b"10000"}, fmt))
    (d / "readme.html").write_text("<html></html>")
    return batches


def write_cifar100(root: Path, fmt="py2", train: int = 20, test: int = 8) -> dict:
    """root/cifar-100-python: train, test (fine_labels, coarse_labels), meta."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name, n in (("train", train), ("test", test)):
        b = cifar_batch(rng, n, 100, key=b"fine_labels", name=name.encode())
        b[b"fine_labels"][0] = 99  # the top class is valid
        b[b"coarse_labels"] = [int(k) for k in rng.integers(0, 20, n)]
        batches[name] = b
        (d / name).write_bytes(dump(b, fmt))
    (d / "meta").write_bytes(dump({b"fine_label_names": [b"apple"], b"coarse_label_names": [b"fish"]}, fmt))
    return batches


def pixel(row: np.ndarray, c: int, h: int, w: int) -> int:
    """Where the CIFAR site says a pixel is: 1024 red values, then green, then blue, each plane row-major."""
    return int(row[c * 1024 + h * 32 + w])


@pytest.mark.parametrize("fmt", ["py2", 2, 4, 5])
@pytest.mark.parametrize("point_at", ["parent", "batches folder"])
def test_cifar10_published_layout(tmp_path, fmt, point_at):
    batches = write_cifar10(tmp_path, fmt)
    data_dir = tmp_path if point_at == "parent" else tmp_path / "cifar-10-batches-py"
    (xtr, ytr, xte, yte), source = read_raw("cifar10", str(data_dir))
    assert source == str(data_dir)
    assert xtr.shape == (20, 3, 32, 32) and xte.shape == (6, 3, 32, 32)
    assert xtr.dtype == np.uint8 and xte.dtype == np.uint8 and ytr.dtype == np.int64 and yte.dtype == np.int64
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]  # in batch order
    assert ytr.tolist() == [k for b in train for k in b[b"labels"]]
    assert yte.tolist() == batches["test_batch"][b"labels"]
    rows = np.concatenate([b[b"data"] for b in train])
    for n, c, h, w in [(0, 0, 0, 0), (0, 0, 0, 31), (0, 1, 5, 7), (7, 2, 31, 0), (19, 2, 31, 31), (13, 1, 16, 3)]:
        assert xtr[n, c, h, w] == pixel(rows[n], c, h, w), (n, c, h, w)
    assert (xte[5].reshape(-1) == batches["test_batch"][b"data"][5]).all()


def test_cifar10_pixel_planes_are_red_green_blue(tmp_path):
    """An all-red, an all-green and an all-blue image, and one bright pixel at row 2, column 9 of green."""
    write_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    data = np.zeros((4, 3072), dtype=np.uint8)
    for c in range(3):
        data[c, c * 1024:(c + 1) * 1024] = 255
    data[3, 1024 + 2 * 32 + 9] = 77
    (d / "data_batch_1").write_bytes(py2_pickle({b"data": data, b"labels": [0, 1, 2, 3]}))
    (xtr, ytr, _, _), _ = read_raw("cifar10", str(d))
    for c in range(3):
        assert xtr[c, c].min() == 255 and xtr[c].sum() == 255 * 1024
    assert xtr[3, 1, 2, 9] == 77 and xtr[3].sum() == 77
    assert ytr[:4].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("fmt", ["py2", 4])
@pytest.mark.parametrize("point_at", ["parent", "cifar-100-python"])
def test_cifar100_published_layout(tmp_path, fmt, point_at):
    batches = write_cifar100(tmp_path, fmt)
    data_dir = tmp_path if point_at == "parent" else tmp_path / "cifar-100-python"
    (xtr, ytr, xte, yte), _ = read_raw("cifar100", str(data_dir))
    assert xtr.shape == (20, 3, 32, 32) and xte.shape == (8, 3, 32, 32) and xtr.dtype == np.uint8
    assert ytr.tolist() == batches["train"][b"fine_labels"] and yte.tolist() == batches["test"][b"fine_labels"]
    assert ytr.tolist() != batches["train"][b"coarse_labels"]
    assert ytr.max() == 99 and DATASETS["cifar100"][4] == 100
    assert xtr[11, 2, 30, 1] == pixel(batches["train"][b"data"][11], 2, 30, 1)


def test_both_cifars_in_one_data_dir(tmp_path):
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    (xtr10, ytr10, xte10, _), _ = read_raw("cifar10", str(tmp_path))
    (xtr100, ytr100, xte100, _), _ = read_raw("cifar100", str(tmp_path))
    assert (len(xtr10), len(xte10), len(xtr100), len(xte100)) == (20, 6, 20, 8)
    assert ytr10.max() < 10 and ytr100.max() == 99


# -- save_to_disk folders of the Hub's datasets -------------------------------------------------------

# the columns of the Hub's copies (image column, label columns with their number of classes): DATASETS names them
HUB_COLUMNS = {
    "cifar10": ("uoft-cs/cifar10", {"img": "image", "label": 10}),
    "cifar100": ("uoft-cs/cifar100", {"img": "image", "fine_label": 100, "coarse_label": 20}),
    "fashion-mnist": ("zalando-datasets/fashion_mnist", {"image": "image", "label": 10}),
    "mnist": ("ylecun/mnist", {"image": "image", "label": 10}),
}


def test_datasets_table_uses_the_hub_columns():
    assert set(HUB_COLUMNS) == set(DATASETS)
    for name, (hub, cols) in HUB_COLUMNS.items():
        hub_id, image_col, label_col, *_ = DATASETS[name]
        assert hub_id == hub and cols[image_col] == "image" and isinstance(cols[label_col], int)
        assert cols[label_col] == DATASETS[name][4]


def write_hub_copy(folder: Path, name: str, train: int = 12, test: int = 5, columns=None, seed: int = 0):
    """A DatasetDict with the Hub's columns (PIL images, ClassLabel labels) written by save_to_disk; returns
    the pixel arrays (HWC or HW) and labels per split."""
    import datasets
    from PIL import Image

    _, cols = HUB_COLUMNS[name]
    cols = columns or cols
    gray = "mnist" in name
    size = 28 if gray else 32
    rng = np.random.default_rng(seed)
    features = datasets.Features({c: datasets.Image() if kind == "image" else
                                  datasets.ClassLabel(names=[f"c{i}" for i in range(kind)]) for c, kind in cols.items()})
    splits, made = {}, {}
    for split, n in (("train", train), ("test", test)):
        pixels = rng.integers(0, 256, (n, size, size) if gray else (n, size, size, 3), dtype=np.uint8)
        rows = {c: [Image.fromarray(p) for p in pixels] if kind == "image" else [int(k) for k in rng.integers(0, kind, n)]
                for c, kind in cols.items()}
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
        made[split] = (pixels, rows)
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return made


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashion-mnist", "mnist"])
def test_hub_save_to_disk_folder(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    made = write_hub_copy(tmp_path / "hub", name)
    (xtr, ytr, xte, yte), source = read_raw(name, str(tmp_path / "hub"))
    assert source == str(tmp_path / "hub")
    _, _, label_col, channels, *_ = DATASETS[name]
    size = 28 if "mnist" in name else 32
    assert xtr.shape == (12, channels, size, size) and xte.shape == (5, channels, size, size)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert ytr.tolist() == made["train"][1][label_col] and yte.tolist() == made["test"][1][label_col]
    pixels = made["train"][0]
    if channels == 3:  # PIL's HWC to CHW
        assert (xtr == pixels.transpose(0, 3, 1, 2)).all()
        assert xtr[4, 2, 3, 17] == pixels[4, 3, 17, 2]
    else:
        assert (xtr[:, 0] == pixels).all()
    assert (xte == (made["test"][0].transpose(0, 3, 1, 2) if channels == 3 else made["test"][0][:, None])).all()


def test_hub_copy_in_a_subfolder_named_after_the_data_set(tmp_path):
    write_hub_copy(tmp_path / "cifar100", "cifar100")  # --data-dir data, with data/cifar100/dataset_dict.json
    (xtr, _, _, _), source = read_raw("cifar100", str(tmp_path))
    assert source == str(tmp_path / "cifar100") and xtr.shape == (12, 3, 32, 32)


# -- prepare: convert once, cache, test labels apart ---------------------------------------------------

@pytest.mark.parametrize("layout", ["cifar10 tarball", "cifar100 hub copy"])
def test_prepare_and_load_prepared_round_trip(tmp_path, monkeypatch, layout):
    monkeypatch.setenv("NASFORGE_CACHE", str(tmp_path / "cache"))
    name = layout.split()[0]
    if name == "cifar10":
        write_cifar10(tmp_path / "src")
    else:
        write_hub_copy(tmp_path / "src", "cifar100")
    (xtr, ytr, xte, yte), _ = read_raw(name, str(tmp_path / "src"))
    path = prepare(name, str(tmp_path / "src"))
    assert path.parent == tmp_path / "cache" / "data" and path.name.startswith(name)
    labels = labels_path(path)
    assert labels == tmp_path / "cache" / "labels" / path.name and labels.is_file()
    raw = torch.load(path, weights_only=True)
    assert "y_test" not in raw and raw["name"] == name  # the test labels are not in the file workers read
    d = load_prepared(path)
    assert set(d) >= {"x_train", "y_train", "x_test"} and "y_test" not in d
    assert d["x_train"].dtype == torch.uint8 and d["x_train"].shape == (len(xtr), 3, 32, 32)
    assert torch.equal(d["x_train"], torch.from_numpy(xtr)) and torch.equal(d["x_test"], torch.from_numpy(xte))
    assert d["y_train"].dtype == torch.int64 and d["y_train"].tolist() == ytr.tolist()
    assert load_prepared(path, with_test_labels=True)["y_test"].tolist() == yte.tolist()
    assert load_test_labels(path).tolist() == yte.tolist()
    mtime = path.stat().st_mtime_ns
    assert prepare(name, str(tmp_path / "src")) == path and path.stat().st_mtime_ns == mtime  # cached: not redone


# -- malformed inputs: one-line DataErrors -------------------------------------------------------------

def _truncate(d: Path):
    raw = (d / "data_batch_2").read_bytes()
    (d / "data_batch_2").write_bytes(raw[: len(raw) // 2])


def _rewrite(d: Path, name: str, **change):
    batch = cifar_batch(np.random.default_rng(3), 4, 10)
    for k, v in change.items():
        if v is None:
            batch.pop(k.encode())
        else:
            batch[k.encode()] = v
    data = batch.get(b"data")
    published = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
    (d / name).write_bytes(py2_pickle(batch) if published else pickle.dumps(batch, protocol=2))


MALFORMED = {
    "truncated batch": (_truncate, "data_batch_2: not a readable CIFAR batch file"),
    "not a pickle": (lambda d: (d / "test_batch").write_text("hello\n"), "test_batch: not a readable CIFAR batch"),
    "short rows": (lambda d: _rewrite(d, "data_batch_1", data=np.zeros((4, 3000), np.uint8)),
                   "has shape (4, 3000), expected (N, 3072)"),
    "flat data": (lambda d: _rewrite(d, "data_batch_1", data=np.zeros(4 * 3072, np.uint8)),
                  "has shape (12288,), expected (N, 3072)"),
    "wrong label key": (lambda d: _rewrite(d, "data_batch_3", labels=None, fine_labels=[1, 2, 3, 4]),
                        "data_batch_3: no b'labels' entry (found b'batch_label', b'data', b'filenames', b'fine_labels')"),
    "no data key": (lambda d: _rewrite(d, "test_batch", data=None), "test_batch: no b'data' entry"),
    "label count": (lambda d: _rewrite(d, "data_batch_4", labels=[1, 2, 3]), "3 int64 values for 4 images"),
    "label range": (lambda d: _rewrite(d, "data_batch_5", labels=[0, 1, 10, 2]), "labels 0..10, expected 0..9"),
    "pixel values": (lambda d: _rewrite(d, "data_batch_5", data=np.full((4, 3072), 300)), "expected bytes 0-255"),
    "not a dict": (lambda d: (d / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3])), "a pickled list, not a dict"),
    "some batches": (lambda d: [(d / n).unlink() for n in ("data_batch_3", "test_batch")],
                     "incomplete cifar-10-batches-py folder, missing data_batch_3, test_batch"),
    "only batch 5": (lambda d: [(d / n).unlink() for n in ("data_batch_1", "data_batch_2", "data_batch_3")],
                     "missing data_batch_1, data_batch_2, data_batch_3"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_cifar10_is_a_one_line_data_error(tmp_path, case):
    spoil, needle = MALFORMED[case]
    write_cifar10(tmp_path)
    spoil(tmp_path / "cifar-10-batches-py")
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        with pytest.raises(DataError) as err:
            read_raw("cifar10", str(data_dir))
        msg = str(err.value)
        assert needle in msg and "\n" not in msg, msg


def test_malformed_cifar100_label_key(tmp_path):
    write_cifar100(tmp_path)
    d = tmp_path / "cifar-100-python"
    batch = cifar_batch(np.random.default_rng(0), 4, 10)  # CIFAR-10's b"labels", not b"fine_labels"
    (d / "test").write_bytes(py2_pickle(batch))
    with pytest.raises(DataError, match=r"test: no b'fine_labels' entry \(found b'batch_label', b'labels'"):
        read_raw("cifar100", str(tmp_path))
    (d / "train").unlink()
    with pytest.raises(DataError, match="incomplete cifar-100-python folder, missing train$"):
        read_raw("cifar100", str(d))


def test_wrong_or_missing_folders_say_what_to_do(tmp_path):
    write_cifar10(tmp_path / "c10")
    with pytest.raises(DataError, match="no data set files in .*cifar-100-python folder"):
        read_raw("cifar100", str(tmp_path / "c10"))  # the other CIFAR
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="holds cifar-10-python.tar.gz unextracted; run `tar xzf"):
        read_raw("cifar10", str(tmp_path / "dl"))
    with pytest.raises(DataError, match="is not a folder"):
        read_raw("cifar10", str(tmp_path / "dl" / "cifar-10-python.tar.gz"))


def test_malformed_hub_copies(tmp_path):
    import datasets

    write_hub_copy(tmp_path / "cols", "cifar10", columns={"image": "image", "label": 10})  # the MNIST column name
    with pytest.raises(DataError, match=r"the train split has columns \['image', 'label'\], expected 'img' and "
                                        r"'label' as in the Hub's uoft-cs/cifar10"):
        read_raw("cifar10", str(tmp_path / "cols"))
    write_hub_copy(tmp_path / "c10", "cifar10")
    with pytest.raises(DataError, match="expected 'img' and 'fine_label'"):
        read_raw("cifar100", str(tmp_path / "c10"))  # CIFAR-10's copy given as CIFAR-100
    datasets.Dataset.from_dict({"img": [1], "label": [0]}).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(DataError, match="expected train and test splits"):
        read_raw("cifar10", str(tmp_path / "one"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"img": [[1, 2]], "label": [0]}),
                          "test": datasets.Dataset.from_dict({"img": [[1, 2]], "label": [0]})}
                         ).save_to_disk(str(tmp_path / "arrays"))
    with pytest.raises(DataError, match="column 'img' holds list, expected images"):
        read_raw("cifar10", str(tmp_path / "arrays"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "dataset_dict.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable datasets folder") as err:
        read_raw("cifar10", str(tmp_path / "broken"))
    assert "\n" not in str(err.value)


def test_cli_reports_a_malformed_folder_in_one_line(tmp_path, tiny_seed):
    write_cifar10(tmp_path / "data")
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_4").unlink()
    res = run_module("corpus", "profile", tiny_seed, "--dataset", "cifar10", "--data-dir", tmp_path / "data",
                     timeout=300, env={"NASFORGE_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(res, "missing data_batch_4")


# -- pickles that would run code -----------------------------------------------------------------------

class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["whole file", "inside the dict"])
def test_a_pickle_that_runs_code_is_refused(tmp_path, where):
    marker = tmp_path / "pwned"
    write_cifar10(tmp_path)
    evil = RunsCode(marker) if where == "whole file" else {b"data": RunsCode(marker), b"labels": [1]}
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=rf"data_batch_1: not a CIFAR batch file \(it asks for "
                                        rf"{os.system.__module__}\.system\)$"):
        read_raw("cifar10", str(tmp_path))
    with pytest.raises(DataError, match="not a CIFAR batch file"):
        _unpickle(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(evil, protocol=2))  # the file would have run it: the test's premise
    assert marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen")])
def test_only_numpy_array_rebuilders_are_allowed(tmp_path, target):
    mod, name = target
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x02c" + f"{mod}\n{name}\n".encode() + b"X\x01\x00\x00\x001\x85R.")
    with pytest.raises(DataError, match=rf"it asks for {mod}\.{name}\)"):
        _unpickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_of_every_protocol_load(tmp_path, protocol):
    data = np.arange(3 * 3072, dtype=np.int64).astype(np.uint8).reshape(3, 3072)
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [1, np.int64(2), 3]}, protocol=protocol))
    d = _unpickle(path)
    assert d[b"data"].dtype == np.uint8 and (d[b"data"] == data).all() and d[b"labels"] == [1, 2, 3]
