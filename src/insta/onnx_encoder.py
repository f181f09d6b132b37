"""Sentence embeddings without torch: ONNX Runtime + the ``tokenizers`` library.

``insta select`` with a new instruction needs a handful of vectors, and importing torch,
transformers and sentence-transformers costs ten seconds on a small machine while the
encoding itself takes milliseconds. This module runs the same model with ONNX Runtime:

* **export, once per model identity** (torch is needed then, as for any encoding today): the
  sentence-transformers model's transformer is exported to ONNX (dynamic batch and length)
  from the token embeddings on (the embedding table is kept as a memory-mapped ``.npy``: only
  the rows a text uses are read, and the session loads in half the time), its fast tokenizer saved as ``tokenizer.json``, and its pooling (mean, CLS, max or last
  token), maximum sequence length and input names written to ``insta-onnx.json``; the export is
  checked against sentence-transformers on a few texts before it is kept (vectors within
  1e-5), all under ``CACHE/onnx/<identity>/``; on load each file is checked against the
  manifest (size; checksum when its time changed);
* **inference**: tokenize (truncated to the model's maximum length, padded to the longest of
  the batch), run, pool as the model says, L2-normalise: float32 rows equal to the
  sentence-transformers ones within ~1e-6, so the embedding cache's vectors stay valid.

A model this path cannot reproduce (modules other than Transformer → Pooling → Normalize, a
pooling mode without an equivalent here, a tokenizer with no fast version) is reported by
:func:`export` as :class:`Unsupported`, and :class:`insta.encoder.Encoder` falls back to
sentence-transformers with one warning. A damaged export is removed and rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InstaError, first_line

FORMAT = 3  # of the exported folder; a new format re-exports
MANIFEST = "insta-onnx.json"
FILES = ("model.onnx", "embeddings.npy", "tokenizer.json")
POOLING = ("mean", "cls", "max", "lasttoken")
CHECK_TEXTS = ("Suppose the premise is true. Can we infer that the hypothesis is true?", "x",
               "Übersetze den Satz ins Französische — 日本語のテキスト " * 30)


class Unsupported(InstaError):
    """The model cannot be run by this path (the reason says why); use sentence-transformers."""


def available() -> bool:
    """Are onnxruntime and tokenizers importable (without importing them for good)?"""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("tokenizers") is not None


def export_dir(root: Path, identity: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity.split("@")[0])[-40:]
    return root / "onnx" / f"{slug}-{hashlib.sha256(f'{FORMAT}:{identity}'.encode()).hexdigest()[:16]}"


def _pooling(module: Any) -> str:
    mode = getattr(module, "pooling_mode", None)
    if mode is None:  # sentence-transformers < 5: one flag per mode
        flags = {m: getattr(module, f"pooling_mode_{m}_tokens", False) for m in ("mean", "cls", "max")}
        flags["lasttoken"] = getattr(module, "pooling_mode_lasttoken", False)
        on = [m for m, v in flags.items() if v]
        mode = on[0] if len(on) == 1 else "+".join(on) or "none"
    if mode not in POOLING:
        raise Unsupported(f"pooling {mode!r} (this path pools by {', '.join(POOLING)})")
    return str(mode)


def export(st: Any, out: Path, identity: str) -> Path:
    """Export a loaded sentence-transformers model into ``out`` (written beside it and renamed
    into place, so a half-written export is never taken for a whole one)."""
    import torch

    kinds = [type(m).__name__ for m in st]
    if not kinds or kinds[0] != "Transformer" or kinds[1:2] != ["Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise Unsupported(f"modules {' → '.join(kinds)} (this path runs Transformer → Pooling → Normalize)")
    pooling = _pooling(st[1])
    tokenizer = st.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise Unsupported("the tokenizer has no fast (tokenizers) version")
    names = [n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
    if "attention_mask" not in names:
        raise Unsupported(f"the tokenizer's inputs {names} lack an attention mask")

    # the graph starts after the token lookup: the embedding table (most of a small encoder's
    # weights) is a memory-mapped array read row by row, so a session loads in half the time
    graph_inputs = ["inputs_embeds"] + [n for n in names if n != "input_ids"]

    class LastHidden(torch.nn.Module):  # positional inputs in graph_inputs' order, given by name
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(graph_inputs, args))).last_hidden_state

    from .io import _temp_prefix, remove_stale_temporaries

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # of exports killed midway
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out.name), suffix=".tmp", dir=out.parent))  # one per process
    try:
        example = tokenizer(["a short text", "a somewhat longer text for the export"], return_tensors="pt", padding=True)
        model = st[0].auto_model
        if next(model.parameters()).device.type != "cpu":  # the user's model stays where it is
            import copy

            model = copy.deepcopy(model).cpu()
        table = model.get_input_embeddings().weight.detach().float().cpu()
        np.save(tmp / "embeddings.npy", table.numpy())
        example["inputs_embeds"] = table[example["input_ids"]]
        with warnings.catch_warnings(), torch.no_grad():  # the tracer's warnings are not for users
            warnings.simplefilter("ignore")
            warnings.showwarning = lambda *args, **kwargs: None  # the tracer installs filters of its own
            dynamic = {0: "batch", 1: "sequence"}
            torch.onnx.export(LastHidden(model.eval()), tuple(example[n] for n in graph_inputs), str(tmp / "model.onnx"),
                              input_names=graph_inputs, output_names=["last_hidden_state"], opset_version=17,
                              dynamo=False, dynamic_axes={n: dynamic for n in [*graph_inputs, "last_hidden_state"]})
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        manifest = {"format": FORMAT, "identity": identity, "inputs": graph_inputs, "pooling": pooling,
                    "max_seq_length": int(st.max_seq_length), "pad_id": int(tokenizer.pad_token_id or 0),
                    "pad_token": str(tokenizer.pad_token), "dim": int(_dimension(st[1])),
                    "files": {name: _stamp(tmp / name, checksum=True) for name in FILES}}
        manifest["seal"] = _seal(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        got = OnnxEncoder(tmp, identity).encode(CHECK_TEXTS)
        want = st.encode(list(CHECK_TEXTS), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        gap = float(np.abs(got - want).max())
        if not gap <= 1e-5:
            raise Unsupported(f"the exported model differs from sentence-transformers by {gap:.1e}")
        if out.exists():
            try:  # another process finished a whole export meanwhile: keep theirs (ours is removed below)
                OnnxEncoder(out, identity)
                return out
            except Exception:  # noqa: BLE001 - a damaged export, whatever is wrong with it: replaced
                shutil.rmtree(out, ignore_errors=True)
        try:
            tmp.rename(out)  # the files keep their sizes and times: the manifest's stamps stay true
        except OSError:
            if not (out / MANIFEST).is_file():  # not another process's export, finished meanwhile
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def verdict_file(folder: Path) -> Path:
    """Where an export that could not be made says why (so that it is not tried on every run)."""
    return folder.with_name(folder.name + ".unsupported.json")


def _stamp(path: Path, checksum: bool = False) -> dict[str, Any]:
    st = path.stat()
    # the change time cannot be set back (touch -r can only restore the modification time)
    stamp: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                             "inode": st.st_ino}
    if checksum:
        stamp["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return stamp


def _check(folder: Path, files: dict[str, Any]) -> dict[str, Any] | None:
    """Each file as exported: the same size, and where anything about it changed (modification
    or change time, inode: rewritten, replaced, copied), the same checksum. An untouched file
    costs a stat. Returns the new stamps when files were verified by checksum (e.g. the cache
    was copied elsewhere), so that later loads are cheap again; None when nothing changed."""
    fresh: dict[str, Any] = {}
    for name in FILES:
        want = files[name]
        got = _stamp(folder / name)
        if got["size"] != want["size"]:
            raise ValueError(f"{name} is {got['size']} bytes, exported as {want['size']}")
        if any(got[k] != want.get(k) for k in ("mtime_ns", "ctime_ns", "inode")):
            got = _stamp(folder / name, checksum=True)
            if got["sha256"] != want["sha256"]:
                raise ValueError(f"{name} does not match its checksum")
            fresh[name] = got
    return {**files, **fresh} if fresh else None


def _dimension(pooling: Any) -> int:
    get = getattr(pooling, "get_embedding_dimension", None) or pooling.get_sentence_embedding_dimension
    return get()


def _seal(manifest: dict[str, Any]) -> str:
    """A checksum of the manifest's own fields: an edited manifest is a damaged export."""
    fields = {k: v for k, v in manifest.items() if k != "seal"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _manifest(folder: Path, identity: str) -> dict[str, Any]:
    """The export's manifest, every field checked (a reason naming the field, else)."""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{MANIFEST} is unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{MANIFEST} is not a JSON object")
    if doc.get("format") != FORMAT:
        raise ValueError(f"{MANIFEST} has format {doc.get('format')!r}, not {FORMAT}")
    if doc.get("seal") != _seal(doc):
        raise ValueError(f"{MANIFEST} was edited (its checksum does not match)")
    if doc.get("identity") != identity:
        raise ValueError(f"it is the export of another model ({str(doc.get('identity'))[:80]!r})")

    def whole(name: str, low: int, high: int) -> int:
        v = doc.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise ValueError(f"{MANIFEST} field {name!r} is {v!r}")
        return v

    whole("max_seq_length", 1, 1_000_000), whole("dim", 1, 1_000_000), whole("pad_id", 0, 10_000_000)
    inputs = doc.get("inputs")
    if (doc.get("pooling") not in POOLING or not isinstance(doc.get("pad_token"), str) or not isinstance(inputs, list)
            or not {"inputs_embeds", "attention_mask"} <= set(inputs) <= {"inputs_embeds", "attention_mask", "token_type_ids"}):
        raise ValueError(f"{MANIFEST} fields pooling / pad_token / inputs are not an export's")
    files = doc.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(files.get(n), dict) and isinstance(files[n].get("size"), int)
            and isinstance(files[n].get("mtime_ns"), int) and isinstance(files[n].get("sha256"), str) for n in FILES):
        raise ValueError(f"{MANIFEST} field 'files' is not an export's")
    return doc


class OnnxEncoder:
    """An exported model folder, loaded: ``encode(texts)`` → L2-normalised float32 rows."""

    def __init__(self, folder: Path, identity: str, *, threads: int | None = None):
        folder = Path(folder)
        step = MANIFEST
        try:
            self.manifest = _manifest(folder, identity)
            step = "the exported files"
            restamped = _check(folder, self.manifest["files"])
            step = "embeddings.npy"
            self.table = np.load(folder / step, mmap_mode="r")
            if self.table.ndim != 2 or self.table.dtype != np.float32 or self.table.shape[1] != self.manifest["dim"]:
                raise ValueError(f"{step} is not the float32 matrix of {self.manifest['dim']} columns the manifest says")
            import onnxruntime as ort
            from tokenizers import Tokenizer

            options = ort.SessionOptions()
            options.log_severity_level = 4  # errors are ours to report, in one line
            if threads:
                options.intra_op_num_threads = threads
            step = "model.onnx"
            self.session = ort.InferenceSession(str(folder / step), options, providers=["CPUExecutionProvider"])
            step = "tokenizer.json"
            self.tokenizer = Tokenizer.from_file(str(folder / step))
        except ValueError as exc:  # a reason of our own
            raise DamagedExport(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - what the libraries say of a damaged file, first line
            first = first_line(exc, 160)
            raise DamagedExport(f"{step}: {first}") from None
        if restamped:  # verified whole: remember the files as they are now (best effort)
            try:
                doc = {**self.manifest, "files": restamped}
                doc["seal"] = _seal(doc)
                from .io import write_json_atomic

                write_json_atomic(folder / MANIFEST, doc)
            except Exception:  # noqa: BLE001 - a read-only cache: verified again next time
                pass
        self.tokenizer.enable_truncation(self.manifest["max_seq_length"])
        self.tokenizer.enable_padding(pad_id=self.manifest["pad_id"], pad_token=self.manifest["pad_token"])
        self.dim = int(self.manifest["dim"])

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            enc = self.tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            feed = {"inputs_embeds": np.asarray(self.table[ids], dtype=np.float32),
                    "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                    "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
            hidden = self.session.run(["last_hidden_state"], {n: feed[n] for n in self.manifest["inputs"]})[0]
            out[rows] = self._pool(hidden.astype(np.float32), feed["attention_mask"])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mode = self.manifest["pooling"]
        m = mask[..., None].astype(np.float32)
        if mode == "mean":
            return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if mode == "cls":
            return hidden[:, 0]
        if mode == "max":
            return np.where(m > 0, hidden, -1e9).max(axis=1)
        last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)  # lasttoken: the last unmasked position
        return hidden[np.arange(len(hidden)), last]


class DamagedExport(InstaError):
    """An exported folder that cannot be loaded as written (it is rebuilt)."""
