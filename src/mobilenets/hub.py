"""Hugging Face Hub: ``mobilenets.load("hf-hub:ORG/NAME")`` and ``mobilenets push-to-hub CKPT ORG/NAME``.

A repository holds one mobilenets checkpoint as ``model.safetensors`` (the metadata rebuilds the model) and a
``README.md`` model card generated from that metadata. Downloads go through ``huggingface_hub.hf_hub_download``
(its cache, its progress bars, ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE``, read per call).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .checkpoint import CheckpointError, read_metadata
from .registry import get_entry
from .weights.table import TASK_METRICS

__all__ = ["HUB_PREFIX", "CHECKPOINT_FILE", "is_hub_id", "hub_download", "model_card", "push_to_hub"]

HUB_PREFIX = "hf-hub:"
CHECKPOINT_FILE = "model.safetensors"


def is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def _hf() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError("the Hugging Face Hub needs huggingface_hub: pip install 'mobilenets[hub]'") from None
    return huggingface_hub


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _parse(hub_id: str) -> tuple[str, Optional[str]]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> (repo id, revision)."""
    body = hub_id[len(HUB_PREFIX):] if hub_id.startswith(HUB_PREFIX) else hub_id
    repo, _, revision = body.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"expected 'hf-hub:ORG/NAME' (optionally '@REVISION'), got {hub_id!r}")
    return repo, revision or None


def hub_download(hub_id: str) -> Path:
    """The checkpoint of ``hf-hub:ORG/NAME[@REVISION]``, from huggingface_hub's cache or downloaded into it."""
    repo, revision = _parse(hub_id)
    hf = _hf()
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )
    url = f"{_endpoint()}/{repo}/resolve/{revision or 'main'}/{CHECKPOINT_FILE}"
    try:
        return Path(hf.hf_hub_download(repo, CHECKPOINT_FILE, revision=revision, endpoint=_endpoint(), cache_dir=cache))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot fetch {url} ({reason}); a repository for mobilenets.load holds a mobilenets checkpoint "
            f"named {CHECKPOINT_FILE}"
        ) from None


# the Hub's pipeline tag of each task
_PIPELINE_TAGS = {"classification": "image-classification", "segmentation": "image-segmentation",
                  "detection": "object-detection"}


def _figures(record: dict[str, Any], names: Any, prefix: str = "") -> str:
    """"top1 67.668, top5 87.402": the numbers ``record`` holds under those of ``names`` that start with
    ``prefix`` (shown without it)."""
    return ", ".join(f"{k[len(prefix):]} {record[k]}" for k in names if k.startswith(prefix)
                     and isinstance(record.get(k), (int, float)) and not isinstance(record[k], bool))


def model_card(meta: dict[str, Any], repo_id: str) -> str:
    """A README.md for the Hub from a checkpoint's metadata: what it is, how to load it, where it came from, and
    the figures it carries (the published ones of converted weights, the test and best validation ones of a
    training run, whatever the task's metrics)."""
    opts = meta.get("options", {})
    try:
        task: Optional[str] = get_entry(str(meta.get("arch"))).task
    except ValueError:  # written by a newer mobilenets: no pipeline tag rather than a guessed one
        task = None
    pretrained = meta.get("pretrained") or {}
    converted = meta.get("converted_from") or {}
    license_ = pretrained.get("license") or "other"
    lines = [
        "---",
        "library_name: mobilenets",
        f"license: {license_}",
        f"tags: [{', '.join([*([_PIPELINE_TAGS[task]] if task else []), 'mobilenet'])}]",
        "---",
        "",
        f"# {repo_id}",
        "",
        f"`{meta.get('arch')}` (width_mult={opts.get('width_mult')}, {opts.get('num_classes')} classes, "
        f"input {meta.get('input_size')}) as a mobilenets checkpoint (weights and the options that rebuild it).",
        "",
        "```python",
        "import mobilenets",
        f'model = mobilenets.load("hf-hub:{repo_id}")',
        "```",
        "",
        "## Preprocessing",
        "",
        f"mean {meta.get('mean')}, std {meta.get('std')} on inputs scaled to [0, 1]"
        + (f"; {json.dumps(meta['preprocessing'])}" if meta.get("preprocessing") else "")
        + ".",
    ]
    if pretrained:
        metrics = _figures(pretrained, TASK_METRICS.get(pretrained.get("task") or task or "", ())) or "none published"
        lines += [
            "",
            "## Source",
            "",
            f"Converted from {pretrained.get('source')} `{pretrained.get('source_arch')}` "
            f"(`{pretrained.get('tag')}`, {pretrained.get('location')}), license {license_}.",
            f"Published figures ({pretrained.get('dataset')}): {metrics}"
            + (f" ({pretrained['metrics_source']})" if pretrained.get("metrics_source") else "")
            + ".",
        ]
    elif converted:
        lines += ["", "## Source", "", f"Converted from {converted.get('library')} `{converted.get('arch')}`."]
    training = meta.get("training")
    if training:
        lines += ["", "## Training", ""]
        for prefix, what in (("test_", "Test"), ("best_", "Best validation")):
            figures = _figures(training, list(training), prefix)
            if figures:
                lines.append(f"{what}: {figures}.")
        lines += ["", "```json", json.dumps(training, indent=1), "```"]  # whole: a cut record is not JSON
    return "\n".join(lines) + "\n"


def push_to_hub(
    checkpoint: os.PathLike | str,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: Optional[str] = None,
    api: Any = None,
) -> str:
    """Upload a mobilenets checkpoint and its generated model card to ``repo_id`` in one commit; returns the
    commit URL. ``api`` is a ``huggingface_hub.HfApi`` (default: one for ``HF_ENDPOINT`` with the saved token)."""
    path = Path(checkpoint)
    meta = read_metadata(path)  # refuses files that mobilenets.load could not rebuild
    repo, revision = _parse(repo_id)
    if revision is not None:
        raise ValueError(f"push-to-hub takes ORG/NAME without a revision, got {repo_id!r}")
    hf = _hf()
    if api is None:
        api = hf.HfApi(endpoint=_endpoint())
    api.create_repo(repo, private=private, exist_ok=True)
    operations = [
        hf.CommitOperationAdd(path_in_repo=CHECKPOINT_FILE, path_or_fileobj=str(path)),
        hf.CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=model_card(meta, repo).encode("utf8")),
    ]
    info = api.create_commit(
        repo, operations=operations, commit_message=commit_message or f"mobilenets checkpoint {meta.get('arch')}"
    )
    return str(getattr(info, "commit_url", info))
