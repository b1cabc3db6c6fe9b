"""Weight files are validated by their header: valid files whatever their first bytes, pickles and
zips refused, only the header read."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from posfeat import PosfeatError
from posfeat.io import read_header, read_tensors, tensor_names
from posfeat.io.safetensors_io import read_metadata


def _header_len(path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def _file_with_header_len(tmp_path, length: int):
    """A valid safetensors file whose header is ``length`` bytes long (a multiple of 8), by padding
    its metadata."""
    path = tmp_path / f"w{length}.safetensors"
    save_file({"W": torch.arange(6.0).reshape(2, 3)}, str(path), metadata={"pad": ""})
    base = _header_len(path)
    for pad in range(max(0, length - base - 16), length - base + 16):
        save_file({"W": torch.arange(6.0).reshape(2, 3)}, str(path), metadata={"pad": "x" * pad})
        if _header_len(path) == length:
            return path
    raise AssertionError("no padding gave that header length")


def test_valid_file_whose_first_byte_is_0x80_is_read(tmp_path):
    path = _file_with_header_len(
        tmp_path, 128 + 256
    )  # header length 384: low byte 0x80, like a pickle's first byte
    assert path.read_bytes()[:1] == b"\x80"
    assert tensor_names(path) == ["W"]
    assert torch.equal(read_tensors(path)["W"], torch.arange(6.0).reshape(2, 3))


def test_valid_file_starting_with_pk_is_read(tmp_path):
    path = _file_with_header_len(
        tmp_path, 0x4B50
    )  # header length 19280: its low bytes spell "PK", like a zip
    assert path.read_bytes()[:2] == b"PK"
    assert tensor_names(path) == ["W"] and torch.equal(
        read_tensors(path)["W"], torch.arange(6.0).reshape(2, 3)
    )


@pytest.mark.parametrize(
    "kind",
    [
        "pickle",
        "torch_save_zip",
        "zip",
        "truncated",
        "absurd_header",
        "not_json",
        "empty",
        "bad_offsets",
        "bad_metadata",
    ],
)
def test_bad_files_are_named_in_one_sentence(kind, tmp_path):
    path = tmp_path / "w.safetensors"
    good = tmp_path / "good.safetensors"
    save_file({"W": torch.ones(4, 4)}, str(good))
    data = good.read_bytes()
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"W": [1.0, 2.0]}))
    elif kind == "torch_save_zip":
        torch.save({"W": torch.ones(2)}, str(path))
    elif kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("data.pkl", b"x")
        path.write_bytes(buf.getvalue())
    elif kind == "truncated":
        path.write_bytes(data[: len(data) - 10])
    elif kind == "absurd_header":
        path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    elif kind == "not_json":
        path.write_bytes(struct.pack("<Q", 8) + b"\xff" * 8)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bad_metadata":  # safetensors allows only strings there
        header = json.dumps(
            {
                "__metadata__": {"step": 3},
                "W": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
            }
        ).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    else:
        header = json.dumps(
            {"W": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 60]}}
        ).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(PosfeatError) as err:
        tensor_names(path)
    with pytest.raises(PosfeatError):
        read_metadata(path)
    msg = str(err.value)
    assert str(path) in msg and "not a valid safetensors file" in msg and "\n" not in msg
    if kind in ("pickle", "torch_save_zip"):
        assert "never unpickles" in msg


def test_metadata_is_read_from_the_validated_header(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"W": torch.ones(2)}, str(path), metadata={"step": "3", "note": "x"})
    assert read_metadata(path) == {"step": "3", "note": "x"} and list(read_header(path)) == ["W"]
    save_file({"W": torch.ones(2)}, str(path))
    assert read_metadata(path) == {}


def test_only_the_header_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.safetensors"
    save_file({"W": torch.zeros(256, 1024)}, str(path))  # 1 MiB of data
    sizes = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            out = self.f.read(n)
            sizes.append(len(out))
            return out

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    import posfeat.io.safetensors_io as st

    monkeypatch.setattr(st, "open", lambda p, mode="r": Counting(real_open(p, mode)), raising=False)
    header = read_header(path)
    assert list(header) == ["W"] and sum(sizes) == 8 + _header_len(path) < 1000
