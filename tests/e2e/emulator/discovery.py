"""Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`.

Kopf and the kubernetes clients find kinds, scopes and subresources here (kopf patches
`/status` only when `<plural>/status` is listed), so every registered kind and every
CRD's group appears, with the preferred version first by Kubernetes' version priority.
"""

from __future__ import annotations

from typing import Any

from .resources import Registry

JsonDict = dict[str, Any]

VERSION_INFO: JsonDict = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-migweaver-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(address: str) -> JsonDict:
    """`/api`: the legacy core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(name: str, versions: list[str]) -> JsonDict:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> JsonDict:
    """`/apis`: every named group, CRD groups included."""
    groups = [_group(g, v) for g, v in sorted(registry.groups().items()) if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> JsonDict | None:
    versions = registry.groups().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def resource_list(registry: Registry, group: str, version: str) -> JsonDict | None:
    """`/api/v1` or `/apis/<group>/<version>`: the kinds served there."""
    types = registry.in_group_version(group, version)
    if not types:
        return None
    resources = [entry for rt in sorted(types, key=lambda t: t.plural) for entry in rt.discovery()]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
