"""The Helm chart (charts/migweaver) rendered by Helm's own engine, and the kustomize
manifests by `kubectl kustomize`, as lists of objects; shared by the unit and e2e tests.

Helm's engine comes from helm-python-sdk (ctypes bindings to a C library built from Helm's
official Go SDK): the same `helm lint` and `helm template` code, installed from PyPI with
the dev dependencies (docs/decisions.md, "Installation").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "migweaver"
MANIFESTS = ROOT / "manifests"
NAMESPACE = "migweaver-system"
RELEASE = "migweaver"

JsonDict = dict[str, Any]


def lint(values: JsonDict | None = None) -> JsonDict:
    """`helm lint --strict` of the chart with these values."""
    report: JsonDict = helm.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.36.0"
    )
    return report


def render(values: JsonDict | None = None, namespace: str = NAMESPACE) -> list[JsonDict]:
    """`helm template` of the chart: every object of the templates, then of crds/."""
    with helm.Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(
            values, name=RELEASE, namespace=namespace, is_install=True
        )
    objects = [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return objects + crds()


def crds() -> list[JsonDict]:
    """The chart's CRDs (crds/: Helm installs them before the templates, never upgrades)."""
    return [
        doc
        for path in sorted((CHART / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc
    ]


def key(obj: JsonDict) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])
