"""`kubectl kustomize`, as the manifest, chart and e2e tests run it (skipped without kubectl)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"

JsonDict = dict[str, Any]


def kustomize(directory: Path, components: tuple[str, ...] = ()) -> list[JsonDict]:
    """`kubectl kustomize directory`; with `components` (names under
    manifests/components/), an overlay of `directory` that adds them."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH: `kubectl kustomize` could not be run")
    with tempfile.TemporaryDirectory() as overlay:
        target = directory
        if components:
            target = Path(overlay)
            document = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only
                "resources": [os.path.relpath(directory, overlay)],
                "components": [
                    os.path.relpath(MANIFESTS / "components" / c, overlay) for c in components
                ],
            }
            (target / "kustomization.yaml").write_text(yaml.safe_dump(document))
        result = subprocess.run(
            [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]
