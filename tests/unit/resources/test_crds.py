"""The CRDs generated from the models: structural, complete, and equal to the files in crds/."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from migweaver.cli import main
from migweaver.core.resources.crds import (
    HEADER,
    SchemaError,
    crd_filename,
    crd_to_yaml,
    crds_to_yaml,
    render_crds,
    structural_schema,
)
from migweaver.core.resources.models import MigLayout, NodeConfig
from tests.unit.resources.test_models import miglayout_doc, nodeconfig_doc

CRDS_DIR = Path(__file__).resolve().parents[3] / "crds"

# The keys apiextensions.k8s.io/v1 JSONSchemaProps has (the ones a CRD may carry).
SCHEMA_KEYS = {
    "description",
    "type",
    "format",
    "title",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "required",
    "items",
    "properties",
    "additionalProperties",
    "nullable",
    "example",
    "externalDocs",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def crds() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in render_crds()}


def schema_of(kind: str) -> dict[str, Any]:
    version = crds()[kind]["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def walk(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node under `node` (itself included) with its path."""
    yield path or "<root>", node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), Mapping):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from walk(node["additionalProperties"], f"{path}.*")


def structural_problems(schema: Mapping[str, Any]) -> list[str]:
    """What would make the API server refuse `schema` as a structural CRD schema."""
    problems = []
    for path, node in walk(schema):
        unknown = set(node) - SCHEMA_KEYS
        if unknown:
            problems.append(f"{path}: keys a CRD schema does not have: {sorted(unknown)}")
        if "$ref" in node or "$defs" in node or "definitions" in node:
            problems.append(f"{path}: $ref/$defs/definitions")
        if "title" in node:
            problems.append(f"{path}: title")
        if node.get("type") not in TYPES and not node.get("x-kubernetes-int-or-string"):
            problems.append(f"{path}: no valid type ({node.get('type')!r})")
        for junctor in ("anyOf", "oneOf", "allOf", "not"):
            parts = node.get(junctor, [])
            for part in [parts] if isinstance(parts, Mapping) else parts:
                if {"type", "description", "default", "additionalProperties", "nullable"} & set(
                    part
                ):
                    problems.append(f"{path}: {junctor} sets type/description/default/...")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if node.get("uniqueItems"):
            problems.append(f"{path}: uniqueItems")
        if node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: x-kubernetes-preserve-unknown-fields")
        if "default" in node and node["default"] is None and not node.get("nullable"):
            problems.append(f"{path}: null default")
        for name in node.get("required", []):
            if name not in node.get("properties", {}):
                problems.append(f"{path}: required {name!r} is not a property")
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node.get("x-kubernetes-list-map-keys", []):
                if key not in item.get("required", []) and "default" not in item["properties"][key]:
                    problems.append(f"{path}: list-map key {key!r} neither required nor defaulted")
    if "metadata" in schema.get("properties", {}):
        problems.append("metadata must be left to the API server")
    return problems


def validate(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """A small OpenAPI validator (the subset the CRDs use), to check that models and CRDs agree."""
    where = path or "<root>"
    kind = schema["type"]
    checks = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }
    if not checks[kind]:
        return [f"{where}: not {kind}: {value!r}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: {value} < {schema['minimum']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{where}: shorter than {schema['minLength']}")
    if kind == "object":
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: missing {name}")
        for name, sub in value.items():
            if name in schema.get("properties", {}):
                errors += validate(schema["properties"][name], sub, f"{path}.{name}")
            elif "additionalProperties" in schema:
                errors += validate(schema["additionalProperties"], sub, f"{path}.{name}")
            elif path:  # below the root, an unknown field would be pruned: the models differ
                errors.append(f"{where}: unknown field {name}")
    if kind == "array":
        for i, item in enumerate(value):
            errors += validate(schema["items"], item, f"{path}[{i}]")
    return errors


# --- structure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["MigLayout", "NodeConfig"])
def test_schemas_are_structural(kind: str) -> None:
    assert structural_problems(schema_of(kind)) == []


def test_checker_catches_pydantic_output() -> None:
    # The raw pydantic schema is not structural: the checker must say so.
    raw = MigLayout.model_json_schema(by_alias=True)
    problems = structural_problems(raw)
    assert any("title" in p for p in problems)
    assert any("$ref" in p for p in problems)


@pytest.mark.parametrize("kind", ["MigLayout", "NodeConfig"])
def test_crd_envelope(kind: str) -> None:
    crd = crds()[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    plural = crd["spec"]["names"]["plural"]
    assert crd["metadata"]["name"] == f"{plural}.migweaver.io"
    assert crd["spec"]["group"] == "migweaver.io"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["categories"] == ["migweaver"]
    assert crd["spec"]["names"]["singular"] == kind.lower()
    assert crd["spec"]["names"]["listKind"] == f"{kind}List"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    root = version["schema"]["openAPIV3Schema"]
    assert root["type"] == "object"
    assert set(root["properties"]) == {"apiVersion", "kind", "spec", "status"}
    assert root["required"] == ["spec"]


def test_names() -> None:
    assert crds()["MigLayout"]["spec"]["names"]["plural"] == "miglayouts"
    assert crds()["MigLayout"]["spec"]["names"]["shortNames"] == ["ml"]
    assert crds()["NodeConfig"]["spec"]["names"]["plural"] == "nodeconfigs"
    assert crds()["NodeConfig"]["spec"]["names"]["shortNames"] == ["nc"]


def columns(kind: str) -> list[tuple[str, str, str]]:
    version = crds()[kind]["spec"]["versions"][0]
    return [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]


def test_printer_columns() -> None:
    assert columns("MigLayout") == [
        ("NODE", "string", ".spec.nodeName"),
        ("GPU", "integer", ".spec.gpuIndex"),
        ("MODEL", "string", ".status.gpu.model"),
        ("MODE", "string", ".status.mode"),
        ("INSTANCES", "string", ".status.instancesSummary"),
        ("USED", "string", ".status.used"),
        ("PHASE", "string", ".status.phase"),
        ("AGE", "date", ".metadata.creationTimestamp"),
    ]
    assert columns("NodeConfig") == [
        ("NODE", "string", ".spec.nodeName"),
        ("MODE", "string", ".spec.operatingMode"),
        ("AGE", "date", ".metadata.creationTimestamp"),
    ]


@pytest.mark.parametrize("kind", ["MigLayout", "NodeConfig"])
def test_printer_columns_point_at_fields_of_their_type(kind: str) -> None:
    root = schema_of(kind)
    for name, type_, json_path in columns(kind):
        if json_path.startswith(".metadata."):
            continue
        node: Mapping[str, Any] = root
        for part in json_path.strip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == type_, name


# --- content -----------------------------------------------------------------------------------


def test_miglayout_schema_content() -> None:
    root = schema_of("MigLayout")
    spec = root["properties"]["spec"]
    assert spec["required"] == ["nodeName", "gpuIndex", "gpuUUID"]
    assert list(spec["properties"]) == [
        "nodeName",
        "gpuIndex",
        "gpuUUID",
        "policy",
        "migEnabled",
        "instances",
    ]
    assert spec["properties"]["gpuIndex"]["minimum"] == 0
    assert spec["properties"]["policy"]["enum"] == ["dynamic", "static"]
    assert spec["properties"]["policy"]["default"] == "dynamic"
    instance = spec["properties"]["instances"]["items"]
    assert instance["required"] == ["profile", "placement"]
    placement = instance["properties"]["placement"]
    assert placement["required"] == ["start", "size"]
    assert placement["properties"]["size"]["minimum"] == 1
    assert placement["properties"]["start"]["minimum"] == 0

    status = root["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Applying", "Ready", "Degraded", "Failed"]
    assert status["mode"]["enum"] == ["mig", "hami-core"]
    assert status["migMode"]["properties"]["current"]["enum"] == ["Enabled", "Disabled"]
    assert "memoryMiB" in status["gpu"]["properties"]
    assert "memoryMiB" in status["profiles"]["items"]["properties"]
    assert "inUse" in status["instances"]["items"]["properties"]
    assert {"instancesSummary", "used"} <= set(status)
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_nodeconfig_schema_content() -> None:
    spec = schema_of("NodeConfig")["properties"]["spec"]
    assert "required" not in spec  # exactly-one-of is the CEL rule's job
    assert spec["x-kubernetes-validations"] == [
        {
            "rule": "has(self.nodeName) != has(self.nodeSelector)",
            "message": "exactly one of nodeName or nodeSelector must be set",
        }
    ]
    assert spec["properties"]["operatingMode"]["enum"] == ["mig", "hami-core"]
    assert spec["properties"]["operatingMode"]["default"] == "hami-core"
    selector = spec["properties"]["nodeSelector"]["properties"]
    assert selector["matchLabels"] == {
        "description": selector["matchLabels"]["description"],
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    expression = selector["matchExpressions"]["items"]
    assert expression["properties"]["operator"]["enum"] == ["In", "NotIn", "Exists", "DoesNotExist"]
    assert expression["required"] == ["key", "operator"]
    filters = spec["properties"]["filterDevices"]["properties"]
    assert filters["index"]["items"] == {"type": "integer", "minimum": 0}
    assert filters["uuid"]["items"] == {"type": "string"}
    status = schema_of("NodeConfig")["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-type"] == "map"


@pytest.mark.parametrize("kind", ["MigLayout", "NodeConfig"])
def test_every_field_is_documented(kind: str) -> None:
    undocumented = [
        path
        for path, node in walk(schema_of(kind))
        if not path.endswith(("[]", ".*")) and not node.get("description")
    ]
    assert undocumented == []


@pytest.mark.parametrize("kind", ["MigLayout", "NodeConfig"])
def test_defaults_satisfy_their_schema(kind: str) -> None:
    for path, node in walk(schema_of(kind)):
        if "default" in node:
            assert validate(node, node["default"], path) == []


@pytest.mark.parametrize(
    ("kind", "make_doc"),
    [("MigLayout", miglayout_doc), ("NodeConfig", nodeconfig_doc)],
    ids=["miglayout", "nodeconfig"],
)
def test_design_examples_satisfy_the_crd(kind: str, make_doc: Any) -> None:
    doc = make_doc()
    doc.pop("metadata")
    assert validate(schema_of(kind), doc) == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d["spec"]["instances"][0]["placement"].update(size=0), "< 1"),
        (lambda d: d["spec"].update(gpuIndex=-1), "< 0"),
        (lambda d: d["spec"].update(policy="auto"), "not in"),
        (lambda d: d["spec"].pop("gpuUUID"), "missing gpuUUID"),
        (lambda d: d["status"].update(phase="Done"), "not in"),
        (lambda d: d["spec"].update(gpuUuid="x"), "unknown field gpuUuid"),
    ],
    ids=[
        "zero-size-placement",
        "negative-gpu-index",
        "unknown-policy",
        "no-gpu-uuid",
        "unknown-phase",
        "misspelt-field",
    ],
)
def test_crd_refuses_what_the_models_refuse(change: Any, error: str) -> None:
    doc = miglayout_doc()
    doc.pop("metadata")
    change(doc)
    assert any(error in e for e in validate(schema_of("MigLayout"), doc))


# --- conversion edge cases -----------------------------------------------------------------------


class _FreeForm(BaseModel):
    """Free-form."""

    data: dict[str, Any] = Field(description="anything")


class _Union(BaseModel):
    """Union."""

    value: int | str = Field(description="either")


class _Set(BaseModel):
    """Set."""

    names: set[str] = Field(description="unique")


class _Exclusive(BaseModel):
    """Exclusive."""

    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(gt=0, lt=1, description="fraction")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_FreeForm, "free-form"),
        (_Union, "union"),
        (_Set, "uniqueItems"),
    ],
    ids=["free-form", "union", "set"],
)
def test_unsupported_schemas_raise(model: type[BaseModel], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        structural_schema(model)


def test_exclusive_bounds_become_openapi_flags() -> None:
    ratio = structural_schema(_Exclusive)["properties"]["ratio"]
    assert ratio["minimum"] == 0
    assert ratio["exclusiveMinimum"] is True
    assert ratio["maximum"] == 1
    assert ratio["exclusiveMaximum"] is True


# --- files -------------------------------------------------------------------------------------


def test_rendering_is_deterministic() -> None:
    assert crds_to_yaml(render_crds()) == crds_to_yaml(render_crds())
    assert render_crds() == render_crds()


def test_yaml_form() -> None:
    for crd in render_crds():
        text = crd_to_yaml(crd)
        assert text.startswith(HEADER)
        assert "&id" not in text
        assert "*id" not in text  # no YAML anchors/aliases: kubectl users read these files
        assert yaml.safe_load(text) == crd
    assert list(yaml.safe_load_all(crds_to_yaml(render_crds()))) == render_crds()


@pytest.mark.parametrize("crd", render_crds(), ids=crd_filename)
def test_checked_in_crds_are_current(crd: dict[str, Any]) -> None:
    path = CRDS_DIR / crd_filename(crd)
    assert path.exists(), f"crds/{path.name} is missing; run `make crds`"
    assert path.read_text(encoding="utf-8") == crd_to_yaml(crd), (
        f"crds/{path.name} is out of date with migweaver/core/resources/models.py; run `make crds`"
    )


def test_no_stray_crd_files() -> None:
    expected = {crd_filename(crd) for crd in render_crds()}
    stray = {p.name for p in CRDS_DIR.glob("*.yaml")} - expected
    assert not stray, f"crds/ holds files `make crds` does not write: {sorted(stray)}"


# --- cli ---------------------------------------------------------------------------------------


def test_cli_prints_all_crds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds"]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == render_crds()


def test_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--check", str(tmp_path)]) == 1
    assert "is missing; run `make crds`" in capsys.readouterr().err

    out = tmp_path / "out"
    assert main(["crds", "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(crd_filename(c) for c in render_crds())
    assert main(["crds", "--check", str(out)]) == 0

    target = out / "nodeconfigs.migweaver.io.yaml"
    target.write_text(target.read_text(encoding="utf-8").replace("hami-core", "mig"))
    capsys.readouterr()
    assert main(["crds", "--check", str(out)]) == 1
    assert f"{target} is out of date; run `make crds`" in capsys.readouterr().err

    assert main(["crds", "--output-dir", str(out)]) == 0
    assert main(["crds", "--check", str(out)]) == 0


def test_cli_output_dir_and_check_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["crds", "--output-dir", str(tmp_path), "--check", str(tmp_path)])
    assert exc.value.code == 2


def test_models_are_the_source() -> None:
    # The CRD root description is the model's docstring: proof the schema comes from it.
    assert schema_of("MigLayout")["description"].startswith("The MIG layout of one GPU")
    assert schema_of("NodeConfig")["description"].startswith("How migweaver runs the GPUs")
    assert NodeConfig.__doc__ is not None
