"""Fetch a published weight file through its publisher's machinery, check it, convert it once and cache the result.

- URL files (torchvision, timm's GitHub releases, Keras): torch.hub's ``download_url_to_file`` (progress bar, SHA-256
  prefix check) into the cache their library uses: ``$TORCH_HOME/hub/checkpoints`` for PyTorch files, Keras'
  ``$KERAS_HOME/models`` (default ``~/.keras/models``) for ``.h5`` files, under the published file name, so a file
  the peer library already downloaded is used without a download. Keras' MD5 hashes are checked here.
- Hugging Face Hub files: ``huggingface_hub.hf_hub_download`` (its cache, its progress bars; ``HF_ENDPOINT``,
  ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` honoured at call time).

The download lands in a temporary file in the cache folder and is renamed only once complete and checked: an
interrupted or refused download leaves no file a later call would trust. The converted checkpoint goes to
``$MOBILENETS_HOME/weights`` (default ``~/.cache/mobilenets``), written atomically; a second call reads it alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Optional

from ..checkpoint import CheckpointError, read_metadata, save
from .table import PretrainedWeights

__all__ = ["WeightsError", "mobilenets_home", "converted_path", "source_path", "fetch_source", "fetch_converted"]


class WeightsError(ValueError):
    """A published weight file that cannot be fetched, fails its hash check or does not convert."""


def mobilenets_home() -> Path:
    return Path(os.environ.get("MOBILENETS_HOME") or Path.home() / ".cache" / "mobilenets").expanduser()


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def _hf_cache() -> Optional[str]:
    """huggingface_hub reads these at import; reading them per call lets a process change them."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def converted_path(entry: PretrainedWeights) -> Path:
    """Where the converted checkpoint of ``entry`` is cached."""
    source, _, name = entry.tag.partition(":")
    return mobilenets_home() / "weights" / f"{entry.model}_{entry.width_mult:g}" / f"{source}-{name}.safetensors"


def source_path(entry: PretrainedWeights) -> Path:
    """Where the published file is looked for before any download (and where to put it by hand)."""
    if entry.url is not None:
        if entry.source == "keras":
            return _keras_home() / "models" / entry.filename
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints" / entry.filename
    assert entry.hf_hub_id is not None
    return mobilenets_home() / "sources" / entry.hf_hub_id.replace("/", "--") / entry.hf_filename


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_problem(entry: PretrainedWeights, path: Path) -> Optional[str]:
    if entry.sha256_prefix is not None:
        got = _digest(path, "sha256")
        if not got.startswith(entry.sha256_prefix):
            return f"SHA-256 {got[:16]}... does not start with the published {entry.sha256_prefix}"
    if entry.md5 is not None:
        got = _digest(path, "md5")
        if got != entry.md5:
            return f"MD5 {got} is not the published {entry.md5}"
    return None


def _offline_hint(entry: PretrainedWeights, target: Path) -> str:
    return f"download it by hand from {entry.location} and put it at {target}, then run again"


def _download_url(entry: PretrainedWeights, progress: bool) -> Path:
    import urllib.error

    import torch.hub

    assert entry.url is not None
    target = source_path(entry)
    if target.is_file():
        problem = _hash_problem(entry, target)
        if problem:
            raise WeightsError(
                f"{target}: {problem}; it is not the file of {entry.url}: delete it and run again"
            )
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the cache folder {target.parent} ({exc.strerror})") from None
    # torch.hub moves its own .partial file onto tmp once complete; tmp is renamed onto target only once checked
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        try:
            torch.hub.download_url_to_file(entry.url, str(tmp), hash_prefix=entry.sha256_prefix, progress=progress)
        except RuntimeError as exc:  # torch.hub's hash check
            raise WeightsError(
                f"{entry.url}: refused, the download does not match the published hash ({exc}); nothing was cached"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise WeightsError(f"cannot download {entry.url} ({reason}); {_offline_hint(entry, target)}") from None
        problem = _hash_problem(entry, tmp)
        if problem:
            raise WeightsError(f"{entry.url}: refused, the download's {problem}; nothing was cached")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _download_hub(entry: PretrainedWeights) -> Path:
    assert entry.hf_hub_id is not None
    by_hand = source_path(entry)
    if by_hand.is_file():
        return by_hand
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise ImportError("weights on the Hugging Face Hub need huggingface_hub: pip install 'mobilenets[hub]'") from None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = f"{endpoint.rstrip('/')}/{entry.hf_hub_id}/resolve/main/{entry.hf_filename}"
    try:
        return Path(
            hf_hub_download(entry.hf_hub_id, entry.hf_filename, endpoint=endpoint, cache_dir=_hf_cache())
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot download {url} ({reason}); {_offline_hint(entry, by_hand)}") from None


def fetch_source(entry: PretrainedWeights, progress: bool = True) -> Path:
    """The published file of ``entry`` on disk, downloaded and checked if it is not there yet."""
    return _download_url(entry, progress) if entry.url is not None else _download_hub(entry)


def _describe(entry: PretrainedWeights) -> dict:
    return json.loads(json.dumps(entry.describe()))


def _cached_fits(path: Path, entry: PretrainedWeights) -> bool:
    try:
        meta = read_metadata(path)
    except CheckpointError:
        return False  # damaged or foreign: converted again, the rename replaces it
    return meta.get("pretrained") == _describe(entry)


def fetch_converted(entry: PretrainedWeights, progress: bool = True) -> Path:
    """The mobilenets checkpoint of ``entry``: from the cache, or fetched, converted and cached.

    The checkpoint carries the row of the table (``pretrained``: source, tag, license, published metrics),
    ``preprocessing`` (resize, crop, interpolation, mean/std) and the row's ``class_names`` (ImageNet-1k's, VOC's).
    """
    from ..convert import convert_state_dict

    path = converted_path(entry)
    if path.is_file() and _cached_fits(path, entry):
        return path
    source = fetch_source(entry, progress)
    try:
        model = convert_state_dict(entry.source, source, entry.source_arch, entry.width_mult)
    except ValueError as exc:
        raise WeightsError(f"{entry.location}: does not convert to {entry.model} ({exc})") from None
    if model.num_classes != len(entry.class_names):
        raise WeightsError(
            f"{entry.location}: has {model.num_classes} classes, not the {len(entry.class_names)} of {entry.dataset}"
        )
    pre = entry.preprocessing
    save(
        model,
        path,
        **model.info.extra,
        input_size=[model.options.in_chans, pre.size, pre.size],
        mean=list(pre.mean),
        std=list(pre.std),
        class_names=list(entry.class_names),
        pretrained=_describe(entry),
        preprocessing=pre.to_dict(),
    )
    return path
