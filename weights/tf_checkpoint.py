"""Read TensorFlow checkpoints (the "tensor bundle" format of ``tf.train.Saver`` / ``tf.train.Checkpoint``) in
pure Python, so converting official TF weights needs no TensorFlow.

A checkpoint ``<prefix>`` is two kinds of files:

- ``<prefix>.index``: a LevelDB-style SSTable (github.com/google/leveldb ``doc/table_format.md``). It ends with a
  48-byte footer (metaindex and index ``BlockHandle``\\ s as varints, padding, magic ``0xdb4775248b80fb57``); the
  index block maps to data blocks; each block is prefix-compressed entries (varint shared, non-shared and value
  lengths, key suffix, value) plus a restart array, followed by a 5-byte trailer (compression type, crc32c).
  Keys are tensor names; the empty key holds a ``BundleHeaderProto`` (number of shards, endianness), every other
  value is a ``BundleEntryProto`` (dtype, shape, shard id, offset, size; tensorflow/core/protobuf/
  tensor_bundle.proto).
- ``<prefix>.data-<shard>-of-<num_shards>``: the tensors' raw bytes, little-endian, at the entries' offsets.

Unsupported, with a clear error: compressed blocks (TF writes none), big-endian bundles, partitioned (sliced)
variables, and reading string / variant tensors (listed by :meth:`TFCheckpointReader.keys`, but ``get`` raises).
Checksums are not verified. Released archives (``.tar.gz``) are unpacked by :func:`load_tf_checkpoint` (only the
bundle's regular files, written under their base names).
"""

from __future__ import annotations

import os
import struct
import tarfile
from pathlib import Path

import torch

__all__ = ["TFCheckpointError", "TFCheckpointReader", "is_tf_checkpoint", "load_tf_checkpoint"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
# tensorflow/core/framework/types.proto DataType -> torch dtype (those a weight can have)
_DTYPES = {
    1: torch.float32,
    2: torch.float64,
    3: torch.int32,
    4: torch.uint8,
    5: torch.int16,
    6: torch.int8,
    9: torch.int64,
    10: torch.bool,
    14: torch.bfloat16,
    19: torch.float16,
}
_DTYPE_NAMES = {7: "string", 8: "complex64", 18: "complex128", 20: "resource", 21: "variant"}


class TFCheckpointError(ValueError):
    """The file is not a TF tensor bundle, or uses a feature this reader does not support."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError("truncated varint")
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Protobuf wire format -> {field number: [values]} (varints as ints, length-delimited as bytes)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _block(data: bytes, handle: bytes | tuple[int, int]) -> bytes:
    """The contents of the block at a ``BlockHandle`` (varint offset, varint size), trailer checked."""
    if isinstance(handle, bytes):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
    else:
        offset, size = handle
    if offset + size + 5 > len(data):
        raise TFCheckpointError("block handle points past the end of the index file")
    if data[offset + size] != 0:
        raise TFCheckpointError(f"compressed SSTable block (type {data[offset + size]}) is not supported")
    return data[offset : offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of one SSTable block (prefix-compressed keys, restart array at the end)."""
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + value_len]))
        pos += value_len
    return out


class TFCheckpointReader:
    """Lazy reader of a TF checkpoint ``prefix`` (``prefix.index`` + ``prefix.data-*``).

    >>> reader = TFCheckpointReader("/ckpt/model.ckpt")
    >>> reader.shape("moat/stem/conv_0/kernel")      # (3, 3, 3, 64)
    >>> reader.get("moat/stem/conv_0/kernel")        # torch.float32 tensor, TF layout
    """

    def __init__(self, prefix: str | os.PathLike) -> None:
        prefix = os.fspath(prefix)
        if prefix.endswith(".index"):
            prefix = prefix[: -len(".index")]
        self.prefix = prefix
        index = Path(prefix + ".index")
        if not index.is_file():
            raise TFCheckpointError(f"no TF checkpoint index at {index}")
        data = index.read_bytes()
        if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
            raise TFCheckpointError(f"{index} is not an SSTable (no LevelDB table magic in its footer)")
        footer = data[-_FOOTER:]
        _, pos = _varint(footer, 0)  # the metaindex handle: empty in tensor bundles
        _, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, _ = _varint(footer, pos)
        self._entries: dict[str, dict[int, list]] = {}
        self.num_shards = 1
        for _, handle in _block_entries(_block(data, (index_offset, index_size))):
            for key, value in _block_entries(_block(data, handle)):
                fields = _proto_fields(value)
                if key == b"":  # BundleHeaderProto: num_shards (1), endianness (2: 0 little, 1 big)
                    self.num_shards = int(fields.get(1, [1])[0])
                    if fields.get(2, [0])[0] != 0:
                        raise TFCheckpointError(f"{index}: big-endian tensor bundles are not supported")
                else:
                    self._entries[key.decode("utf-8")] = fields

    def keys(self) -> list[str]:
        """Every tensor name in the checkpoint, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def _entry(self, name: str) -> dict[int, list]:
        if name not in self._entries:
            raise KeyError(f"{name!r} is not in the checkpoint {self.prefix}")
        return self._entries[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of ``name`` (TensorShapeProto: repeated dim (2) with size (1))."""
        shape = self._entry(name).get(2, [b""])[0]
        dims = _proto_fields(shape).get(2, [])
        return tuple(int(_proto_fields(d).get(1, [0])[0]) for d in dims)

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as stored (TF layout, its own dtype)."""
        fields = self._entry(name)
        dtype_id = int(fields.get(1, [0])[0])
        if dtype_id not in _DTYPES:
            kind = _DTYPE_NAMES.get(dtype_id, f"DataType {dtype_id}")
            raise TFCheckpointError(f"{name!r} is a {kind} tensor; only numeric tensors can be read")
        if fields.get(7):
            raise TFCheckpointError(f"{name!r} is a partitioned (sliced) variable; not supported")
        shard, offset, size = (int(fields.get(i, [0])[0]) for i in (3, 4, 5))
        path = f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.read(size)
        if len(raw) != size:
            raise TFCheckpointError(f"{path} is truncated: {name!r} needs bytes {offset}..{offset + size}")
        dtype, shape = _DTYPES[dtype_id], self.shape(name)
        if size == 0:
            return torch.zeros(shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)

    def to_dict(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` for ``names`` (default: every numeric tensor; string/variant entries are skipped)."""
        if names is None:
            names = [k for k in self.keys() if int(self._entries[k].get(1, [0])[0]) in _DTYPES]
        return {n: self.get(n) for n in names}


def _find_prefix(path: Path) -> str:
    """The checkpoint prefix of a ``.index`` file, a prefix, or a folder holding exactly one ``.index``."""
    if path.is_dir():
        found = sorted(path.rglob("*.index"))
        if len(found) != 1:
            names = [str(p.relative_to(path)) for p in found]
            raise TFCheckpointError(f"{path} must hold exactly one TF checkpoint (.index), found {names}")
        return str(found[0])[: -len(".index")]
    text = os.fspath(path)
    return text[: -len(".index")] if text.endswith(".index") else text


def _extract_bundle(archive: Path, dest: Path) -> Path:
    """Unpack the ``.index`` / ``.data-*`` members of a tar archive into ``dest`` (base names only)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.isfile() and (m.name.endswith(".index") or ".data-" in os.path.basename(m.name))
        ]
        if not any(m.name.endswith(".index") for m in members):
            raise TFCheckpointError(f"{archive} holds no TF checkpoint (.index file)")
        for m in members:
            target = dest / os.path.basename(m.name)
            if target.is_file() and target.stat().st_size == m.size:
                continue  # already unpacked
            src = tar.extractfile(m)
            tmp = target.with_name(target.name + ".part")
            with open(tmp, "wb") as f:
                while chunk := src.read(1 << 24):
                    f.write(chunk)
            os.replace(tmp, target)
    return dest


def _is_archive(path: str) -> bool:
    # not plain ".tar": timm-era torch files are often named ".pth.tar" (zip archives, not tar)
    return path.endswith((".tar.gz", ".tgz"))


def is_tf_checkpoint(path: str | os.PathLike) -> bool:
    """True for a ``.tar.gz``/``.tgz`` archive, a ``.index`` file, a prefix with one, or a folder holding one."""
    p, text = Path(path), os.fspath(path)
    if _is_archive(text):
        return p.is_file()
    if p.is_dir():
        return any(p.rglob("*.index"))
    return Path(text if text.endswith(".index") else text + ".index").is_file()


def load_tf_checkpoint(
    path: str | os.PathLike, extract_dir: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """Every numeric tensor of a TF checkpoint, ``{TF variable name: tensor}`` in TF layout.

    ``path``: a ``.tar.gz``/``.tgz`` archive (unpacked next to it in ``<archive>.extracted/``, or in
    ``extract_dir``), a folder holding one checkpoint, a ``.index`` file or a checkpoint prefix.
    """
    p = Path(path)
    text = os.fspath(p)
    if _is_archive(text):
        if not p.is_file():
            raise TFCheckpointError(f"checkpoint archive not found: {p}")
        p = _extract_bundle(p, Path(extract_dir) if extract_dir else p.with_name(p.name + ".extracted"))
    return TFCheckpointReader(_find_prefix(p)).to_dict()
