"""The Helm chart (charts/migweaver), linted and rendered by Helm's own engine.

- `helm lint --strict` passes for the default values and every documented variant;
- the default render holds the same objects as `kubectl kustomize manifests/`, field for
  field (labels and annotations as a superset, the webhook's caBundle aside), and the
  cert-manager and no-policy variants match their kustomize counterparts: a change to
  manifests/ that the chart does not follow fails here, whatever the change is;
- every value the chart offers reaches the object it is meant for;
- the self-signed certificate made at install is valid for the webhook's Service and
  signed by the caBundle the API server is given.
"""

from __future__ import annotations

import base64
import copy
import datetime
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from cryptography import x509

import migweaver
from migweaver.core.config import load_device_config
from tests.helm_chart import (
    CHART,
    MANIFESTS,
    NAMESPACE,
    ROOT,
    JsonDict,
    key,
    lint,
    render,
)
from tests.kustomize import kustomize

EXAMPLES = ROOT / "examples" / "kustomize"

# What the chart adds to, or leaves out of, its kustomize counterpart, and why.
SELF_SIGNED_SECRET = ("Secret", NAMESPACE, "migweaver-webhook-tls")  # made by Helm
NAMESPACE_OBJECT = ("Namespace", "", NAMESPACE)  # `helm install --create-namespace`


def find(objects: list[JsonDict], kind: str, name: str) -> JsonDict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


# --- helm lint -----------------------------------------------------------------------------------

VARIANTS = [
    pytest.param({}, id="defaults"),
    pytest.param({"webhook": {"certificate": {"source": "certManager"}}}, id="cert-manager"),
    pytest.param(
        {
            "webhook": {
                "certificate": {
                    "source": "certManager",
                    "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
                }
            }
        },
        id="cert-manager-own-issuer",
    ),
    pytest.param(
        {
            "webhook": {
                "certificate": {
                    "source": "existingSecret",
                    "existingSecret": {"name": "my-tls", "caBundle": "Q0E="},
                }
            }
        },
        id="existing-secret",
    ),
    pytest.param(
        {
            "serviceMonitor": {"enabled": True},
            "monitoring": {"enabled": True, "ruleLabels": {"release": "prom"}},
            "networkPolicy": {"enabled": True},
        },
        id="monitoring-and-network-policy",
    ),
    pytest.param(
        {"namespace": {"create": True}, "agent": {"podPolicy": {"enabled": False}}},
        id="namespace-without-pod-policy",
    ),
]


@pytest.mark.parametrize("values", VARIANTS)
def test_helm_lint_strict_passes(values: JsonDict) -> None:
    report = lint(values)
    assert report["errors"] == []
    # Severity 2 = warning, 3 = error (1 = info, such as "icon is recommended").
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"webhook": {"certificate": {"source": "selfsigned"}}},
            "must be selfSigned, certManager or existingSecret",
            id="unknown-certificate-source",
        ),
        pytest.param(
            {"webhook": {"certificate": {"source": "existingSecret"}}},
            "existingSecret.name is required",
            id="existing-secret-without-name",
        ),
        pytest.param(
            {
                "webhook": {
                    "certificate": {"source": "existingSecret", "existingSecret": {"name": "x"}}
                }
            },
            "existingSecret.caBundle is required",
            id="existing-secret-without-ca",
        ),
    ],
)
def test_a_wrong_certificate_setting_fails_the_render_with_its_name(
    values: JsonDict, message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


# --- the chart and manifests/ hold the same objects ----------------------------------------------


def normalised(obj: JsonDict) -> JsonDict:
    """The object as the comparison sees it: metadata reduced to name and namespace (labels
    and annotations are compared as supersets), no caBundle (the chart fills it in), and
    the ConfigMap's YAML documents parsed (comments and layout may differ)."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    obj["metadata"] = {k: meta[k] for k in ("name", "namespace") if k in meta}
    for webhook in obj.get("webhooks") or []:
        webhook.get("clientConfig", {}).pop("caBundle", None)
    if obj["kind"] == "ConfigMap":
        obj["data"] = {k: yaml.safe_load(v) for k, v in (obj.get("data") or {}).items()}
    return _spaces_collapsed(obj)


def _spaces_collapsed(value: Any) -> Any:
    """Strings with every run of white space made one space: kustomize re-folds `>-`
    scalars (the CEL expressions) with extra line breaks that mean nothing."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, dict):
        return {k: _spaces_collapsed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_spaces_collapsed(v) for v in value]
    return value


def differences(chart: list[JsonDict], manifests: list[JsonDict]) -> list[str]:
    """Every way an object of `manifests` is missing from, or differs in, `chart`."""
    by_key = {key(o): o for o in chart}
    found: list[str] = []
    for want in manifests:
        got = by_key.get(key(want))
        if got is None:
            found.append(f"{key(want)}: missing from the chart")
            continue
        crd = want["kind"] == "CustomResourceDefinition"
        for part in ("labels", "annotations"):
            have = got["metadata"].get(part) or {}
            for name, value in (want["metadata"].get(part) or {}).items():
                # kustomize adds its common label to the CRDs too; the chart's crds/ are
                # the generated files as they are (compared byte for byte below).
                if crd and name == "app.kubernetes.io/part-of":
                    continue
                if have.get(name) != value:
                    found.append(f"{key(want)}: {part} {name}={value!r}, chart {have.get(name)!r}")
        if normalised(got) != normalised(want):
            found.append(
                f"{key(want)} differs:\n--- manifests\n"
                f"{yaml.safe_dump(normalised(want), sort_keys=True)}\n--- chart\n"
                f"{yaml.safe_dump(normalised(got), sort_keys=True)}"
            )
    return found


# (chart values, kustomization, its extra components from manifests/components/, objects
# only the chart has)
COUNTERPARTS = [
    pytest.param(
        {"serviceMonitor": {"enabled": True}, "monitoring": {"enabled": True}},
        MANIFESTS,
        ("servicemonitor", "monitoring"),
        {SELF_SIGNED_SECRET},
        id="monitoring=manifests+components/servicemonitor,monitoring",
    ),
    pytest.param({}, MANIFESTS, (), {SELF_SIGNED_SECRET}, id="defaults=manifests"),
    pytest.param(
        {"webhook": {"certificate": {"source": "certManager"}}},
        EXAMPLES / "cert-manager",
        (),
        set(),
        id="cert-manager=examples/kustomize/cert-manager",
    ),
    pytest.param(
        {"agent": {"podPolicy": {"enabled": False}}, "admissionPolicies": {"enabled": False}},
        EXAMPLES / "without-agent-pod-policy",
        (),
        {SELF_SIGNED_SECRET},
        id="no-pod-policy=examples/kustomize/without-agent-pod-policy",
    ),
]


def is_hook(obj: JsonDict) -> bool:
    """Helm hooks run at a moment of the release's life; they are not installed objects."""
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


@pytest.mark.parametrize(("values", "directory", "components", "chart_only"), COUNTERPARTS)
def test_chart_renders_what_kustomize_builds(
    values: JsonDict,
    directory: Path,
    components: tuple[str, ...],
    chart_only: set[tuple[str, str, str]],
) -> None:
    chart = [o for o in render(values) if not is_hook(o)]
    built = kustomize(directory, components)
    assert {key(o) for o in chart} - {key(o) for o in built} == chart_only
    assert {key(o) for o in built} - {key(o) for o in chart} == {NAMESPACE_OBJECT}
    assert differences(chart, [o for o in built if key(o) != NAMESPACE_OBJECT]) == []


def test_chart_can_make_the_namespace_as_manifests_do() -> None:
    (want,) = [o for o in kustomize(MANIFESTS) if key(o) == NAMESPACE_OBJECT]
    chart = render({"namespace": {"create": True}})
    assert differences(chart, [want]) == []


@pytest.mark.parametrize(
    ("copy", "source"),
    [
        pytest.param(f"files/{c}", s, id=c)
        for c, s in [
            ("migweaver-dashboard.json", "components/monitoring/migweaver-dashboard.json"),
            ("prometheusrule.yaml", "components/monitoring/prometheusrule.yaml"),
            ("networkpolicy.yaml", "networkpolicy.yaml"),
            ("policies/agent-pod-policy.yaml", "components/agent-pod-policy/policy.yaml"),
            ("policies/agent-layouts.yaml", "components/admission-policies/agent-layouts.yaml"),
            (
                "policies/operator-writes.yaml",
                "components/admission-policies/operator-writes.yaml",
            ),
            ("policies/pod-fields.yaml", "components/admission-policies/pod-fields.yaml"),
        ]
    ],
)
def test_chart_files_are_copies_of_the_manifests(copy: str, source: str) -> None:
    # Helm reads no file outside the chart: files/ holds copies of the source of truth.
    assert (CHART / copy).read_bytes() == (MANIFESTS / source).read_bytes()


def test_every_copied_file_is_listed() -> None:
    copies = sorted(str(p.relative_to(CHART)) for p in (CHART / "files").rglob("*") if p.is_file())
    assert len(copies) == 7, copies


def test_chart_crds_are_the_generated_files() -> None:
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    shipped = sorted(p.name for p in (MANIFESTS / "crds").glob("*.yaml"))
    assert chart == [n for n in shipped if n != "kustomization.yaml"]
    for name in chart:
        assert (CHART / "crds" / name).read_bytes() == (MANIFESTS / "crds" / name).read_bytes()


def test_chart_and_image_carry_the_package_version() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert meta["version"] == migweaver.__version__
    assert meta["appVersion"] == migweaver.__version__
    images = {
        c["image"]
        for o in render()
        if o["kind"] in {"Deployment", "DaemonSet"}
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"ghcr.io/migweaver/migweaver:{migweaver.__version__}"}
    assert "VERSION := $(shell sed" in (ROOT / "Makefile").read_text(encoding="utf-8")


# --- every value reaches its object --------------------------------------------------------------


def pod_spec(objects: list[JsonDict], kind: str, name: str) -> JsonDict:
    spec: JsonDict = find(objects, kind, name)["spec"]["template"]["spec"]
    return spec


def test_agent_node_selection_runtime_class_and_resources() -> None:
    values = {
        "agent": {
            # Helm merges maps with the defaults: null removes a default key.
            "nodeSelector": {"migweaver.io/gpu": None, "nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "runtimeClassName": "nvidia",
            "resources": {"limits": {"memory": "2Gi"}},
            "extraArgs": ["--cdi"],
        }
    }
    spec = pod_spec(render(values), "DaemonSet", "migweaver-agent")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert spec["runtimeClassName"] == "nvidia"
    (container,) = spec["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "2Gi"},
    }
    assert container["command"][-1] == "--cdi"
    assert "runtimeClassName" not in pod_spec(render(), "DaemonSet", "migweaver-agent")


def test_agent_without_hami_core_and_cdi() -> None:
    values = {"agent": {"hamiCore": {"enabled": False}, "cdi": {"enabled": False}}}
    spec = pod_spec(render(values), "DaemonSet", "migweaver-agent")
    assert "initContainers" not in spec
    (container,) = spec["containers"]
    assert not {"--cdi", "--hami-core-dir"} & set(container["command"])
    assert [v["name"] for v in spec["volumes"]] == ["device-plugins"]
    assert [m["name"] for m in container["volumeMounts"]] == ["device-plugins"]
    image = {"agent": {"hamiCore": {"image": "registry.example/hami:v2.7.0"}}}
    (init,) = pod_spec(render(image), "DaemonSet", "migweaver-agent")["initContainers"]
    assert init["image"] == "registry.example/hami:v2.7.0"


def test_operator_replicas_resources_and_image() -> None:
    values = {
        "operator": {"replicas": 3, "resources": {"requests": {"cpu": "1"}}},
        "image": {"repository": "registry.example/mw", "tag": "9.9.9", "pullPolicy": "Always"},
    }
    objects = render(values)
    deployment = find(objects, "Deployment", "migweaver-operator")
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert container["image"] == "registry.example/mw:9.9.9"
    assert container["imagePullPolicy"] == "Always"
    digest = "sha256:" + "ab" * 32
    (pinned,) = pod_spec(render({"image": {"digest": digest}}), "DaemonSet", "migweaver-agent")[
        "containers"
    ]
    assert pinned["image"] == f"ghcr.io/migweaver/migweaver@{digest}"


def test_existing_secret_is_mounted_and_its_ca_given_to_the_api_server() -> None:
    values = {
        "webhook": {
            "certificate": {
                "source": "existingSecret",
                "existingSecret": {"name": "my-tls", "caBundle": "Q0E="},
            }
        }
    }
    objects = render(values)
    assert not [o for o in objects if o["kind"] in {"Secret", "Certificate", "Issuer"}]
    volumes = pod_spec(objects, "Deployment", "migweaver-operator")["volumes"]
    assert {"name": "webhook-tls", "secret": {"secretName": "my-tls"}} in volumes
    webhook = find(objects, "MutatingWebhookConfiguration", "migweaver-pod-gate")
    assert {w["clientConfig"]["caBundle"] for w in webhook["webhooks"]} == {"Q0E="}


def test_cert_manager_with_an_issuer_of_ones_own() -> None:
    issuer = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    values = {
        "webhook": {"certificate": {"source": "certManager", "certManager": {"issuerRef": issuer}}}
    }
    objects = render(values)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Issuer"] == []
    certificate = find(objects, "Certificate", "migweaver-webhook")
    assert certificate["spec"]["issuerRef"] == issuer
    assert certificate["spec"]["secretName"] == "migweaver-webhook-tls"


def test_service_monitor_and_network_policies() -> None:
    objects = render(
        {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "15s"}}
    )
    monitor = find(objects, "ServiceMonitor", "migweaver-operator")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s"}
    service = find(objects, "Service", "migweaver-operator")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    pods = find(objects, "PodMonitor", "migweaver-agent")
    assert pods["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
    # The NetworkPolicies are on by default (as in manifests/), off on request.
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "NetworkPolicy"} == {
        "migweaver-operator",
        "migweaver-agent",
    }
    quiet = render({"networkPolicy": {"enabled": False}, "admissionPolicies": {"enabled": False}})
    assert not [o for o in quiet if o["kind"] in {"NetworkPolicy", "ServiceMonitor"}]
    # Without the admission policies only the agent's own (agent.podPolicy) stays.
    assert {o["metadata"]["name"] for o in quiet if o["kind"] == "ValidatingAdmissionPolicy"} == {
        "migweaver-agent"
    }


def test_geometry_config_is_the_configmap_check_config_reads() -> None:
    config = (ROOT / "examples" / "device-config.yaml").read_text(encoding="utf-8")
    text = yaml.safe_load(config)["data"]["config.yaml"] if "kind:" in config else config
    objects = render({"geometry": {"config": text}})
    configmap = find(objects, "ConfigMap", "migweaver-device-config")
    assert yaml.safe_load(configmap["data"]["config.yaml"]) == yaml.safe_load(text)
    loaded = load_device_config(yaml.safe_dump(configmap), "chart")
    assert loaded.ok, loaded.errors
    default = find(render(), "ConfigMap", "migweaver-device-config")
    assert load_device_config(yaml.safe_dump(default), "chart").ok


def test_release_namespace_reaches_every_reference() -> None:
    objects = render(namespace="gpu-system")
    for obj in objects:
        if obj["kind"] != "CustomResourceDefinition" and "namespace" in obj["metadata"]:
            assert obj["metadata"]["namespace"] == "gpu-system", key(obj)
    text = yaml.safe_dump_all(objects)
    assert NAMESPACE not in text
    webhook = find(objects, "MutatingWebhookConfiguration", "migweaver-pod-gate")
    for entry in webhook["webhooks"]:
        assert entry["clientConfig"]["service"]["namespace"] == "gpu-system"


# --- uninstall ----------------------------------------------------------------------------------


def test_uninstall_hook_releases_the_gates_with_just_enough_rights() -> None:
    hooks = [o for o in render() if is_hook(o)]
    assert {key(o) for o in hooks} == {
        ("ServiceAccount", NAMESPACE, "migweaver-release-gates"),
        ("ClusterRole", "", "migweaver-release-gates"),
        ("ClusterRoleBinding", "", "migweaver-release-gates"),
        ("Job", NAMESPACE, "migweaver-release-gates"),
    }
    for hook in hooks:
        # After the webhook and the operator are gone: no pod is gated after it ran.
        assert hook["metadata"]["annotations"]["helm.sh/hook"] == "post-delete"
    job = find(hooks, "Job", "migweaver-release-gates")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["migweaver", "release-gates"]
    assert container["image"] == f"ghcr.io/migweaver/migweaver:{migweaver.__version__}"
    (rule,) = find(hooks, "ClusterRole", "migweaver-release-gates")["rules"]
    assert rule == {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}
    assert not [o for o in render({"uninstall": {"releaseGates": False}}) if is_hook(o)]


# --- the self-signed certificate ----------------------------------------------------------------


def test_self_signed_certificate_serves_the_webhook_service() -> None:
    objects = render()
    secret = find(objects, "Secret", "migweaver-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    webhook = find(objects, "MutatingWebhookConfiguration", "migweaver-pod-gate")
    bundles = {w["clientConfig"]["caBundle"] for w in webhook["webhooks"]}
    assert bundles == {secret["data"]["ca.crt"]}
    ca = x509.load_pem_x509_certificate(base64.b64decode(bundles.pop()))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"migweaver-operator.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_after_utc > now + datetime.timedelta(days=365)
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN")
