"""A bundle copied as a new bundle version, for the rollout bench and tests, without training again.

``clone_bundle`` copies a bundle folder as a new bundle version whose models are new versions
in the repository (copies of the live files), as an export of the same models would write
them. ``scramble=True`` replaces the fp32 TorchScript weights with noise and rewrites the golden
requests from those files: a wrong model that export would still have shipped consistently, so
only the guardrails (top-10 overlap with live) can catch it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from export.golden import write_golden


def clone_bundle(
    source: Path, target: Path, repository: Path, model_version: int, bundle_version: int, scramble: bool = False
) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((source / "manifest.json").read_text())
    pins = {}
    for model, version in manifest["repository"].items():
        new = repository / model / str(model_version)
        if not new.exists():
            shutil.copytree(repository / model / str(version), new)
            if scramble and model.endswith("torchscript_fp32"):
                _scramble(new / "model.pt", seed=model_version)
        pins[model] = model_version
    manifest.update(bundle_version=bundle_version, repository=pins)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if scramble:
        write_golden(target, repository, pins)
    return target


def _scramble(path: Path, seed: int) -> None:
    module = torch.jit.load(str(path))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.is_floating_point():
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.copy_(noise * float(parameter.std()) if parameter.numel() > 1 else noise)
    torch.jit.save(module, str(path))


def edit_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
