"""The kustomize manifests (manifests/): well-formed, complete, and in agreement with the code.

What a real apiserver would say cannot be asked here (no cluster in `make test`); these
tests check what can be checked without one:

- every YAML document is a Kubernetes object (apiVersion, kind, metadata.name), every
  kustomization lists files that exist, and every file is listed;
- `kubectl kustomize` builds every kustomization (when a `kubectl` is on PATH) and yields
  exactly the objects the files hold;
- the commands of the Deployment and the DaemonSet are accepted by `migweaver`'s own
  argument parser, and their ports, paths and Secret agree with the Service, the probes
  and the webhook;
- RBAC grants what the code calls (tables below) and nothing of a list of things it must
  never do;
- the webhook cannot block a non-GPU pod while the operator is down;
- the agent's ValidatingAdmissionPolicy, evaluated with a CEL interpreter on sample
  admission requests, lets exactly the agent's own writes through.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

import migweaver
from migweaver.agent.deviceplugin.server import DEFAULT_PLUGIN_DIR
from migweaver.cli import build_parser
from migweaver.core.agent.hami_core import PRELOAD_CONTENT
from migweaver.core.resources.allocation import BIND_FAILED, BIND_SUCCESS, bind_patch
from migweaver.core.resources.api import ANNOTATION_ALLOCATION, ANNOTATION_BIND_PHASE
from migweaver.core.resources.crds import crd_filename, render_crds
from tests import builders
from tests.kustomize import kustomize

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
NAMESPACE = "migweaver-system"
IMAGE = "ghcr.io/migweaver/migweaver"
KUSTOMIZATIONS = [
    MANIFESTS,
    MANIFESTS / "crds",
    ROOT / "examples" / "kustomize" / "cert-manager",
    ROOT / "examples" / "kustomize" / "without-agent-pod-policy",
]
COMPONENTS = sorted(p.parent for p in (MANIFESTS / "components").glob("*/kustomization.yaml"))

JsonDict = dict[str, Any]


# --- loading -------------------------------------------------------------------------------------


def load(path: Path) -> list[JsonDict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def kustomization(directory: Path) -> JsonDict:
    (doc,) = load(directory / "kustomization.yaml")
    return doc


def build(directory: Path) -> list[JsonDict]:
    """The objects of a kustomization: its resources and its components', less the ones
    its patches delete (`$patch: delete`); other patches are not applied."""
    spec = kustomization(directory)
    objects: list[JsonDict] = []
    for entry in [*spec.get("resources", []), *spec.get("components", [])]:
        target = (directory / entry).resolve()
        objects += build(target) if target.is_dir() else load(target)
    for patch in spec.get("patches", []):
        doc = yaml.safe_load(patch["patch"]) if "patch" in patch else {}
        if doc.get("$patch") == "delete":
            gone = (doc["kind"], doc["metadata"]["name"])
            objects = [o for o in objects if (o["kind"], o["metadata"]["name"]) != gone]
    return objects


def objects() -> list[JsonDict]:
    return build(MANIFESTS)


def find(kind: str, name: str, docs: Sequence[JsonDict] | None = None) -> JsonDict:
    matches = [d for d in docs or objects() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} objects"
    return matches[0]


def key(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    return (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace", ""))


def yaml_files() -> list[Path]:
    return sorted(MANIFESTS.rglob("*.yaml"))


# --- files and kustomizations --------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_document_is_an_object(path: Path) -> None:
    docs = load(path)
    assert docs, "empty file"
    for doc in docs:
        for field in ("apiVersion", "kind"):
            assert isinstance(doc.get(field), str), doc
            assert doc[field], doc
        if doc["kind"] in {"Kustomization", "Component"}:
            assert path.name == "kustomization.yaml"
            continue
        name = (doc.get("metadata") or {}).get("name")
        assert isinstance(name, str), f"{doc['kind']} without metadata.name"
        assert name, f"{doc['kind']} with an empty metadata.name"


@pytest.mark.parametrize(
    "directory", KUSTOMIZATIONS + COMPONENTS, ids=lambda p: str(p.relative_to(ROOT))
)
def test_kustomizations_list_files_that_exist(directory: Path) -> None:
    spec = kustomization(directory)
    for entry in [*spec.get("resources", []), *spec.get("components", [])]:
        target = directory / entry
        assert target.exists(), f"{directory.name}/kustomization.yaml lists missing {entry}"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), f"{entry}: no kustomization.yaml"
    for component in spec.get("components", []):
        assert kustomization(directory / component)["kind"] == "Component"


def test_every_file_is_listed_by_a_kustomization() -> None:
    listed: set[Path] = set()
    for directory in [MANIFESTS / "crds", MANIFESTS, *COMPONENTS]:
        listed.add(directory / "kustomization.yaml")
        listed |= {
            (directory / entry).resolve()
            for entry in kustomization(directory).get("resources", [])
            if (directory / entry).is_file()
        }
    assert [p for p in yaml_files() if p.resolve() not in listed] == []
    assert kustomization(MANIFESTS)["kind"] == "Kustomization"


def test_no_two_objects_share_a_name() -> None:
    keys = [key(d) for d in objects()]
    assert len(keys) == len(set(keys))


def test_namespaced_objects_are_in_migweaver_system() -> None:
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterKopfPeering",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for doc in objects():
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] in cluster_scoped:
            assert namespace is None, key(doc)
        else:
            assert namespace == NAMESPACE, key(doc)


def test_the_install_holds_every_part_of_the_design() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in objects()}
    assert kinds >= {
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "miglayouts.migweaver.io"),
        ("CustomResourceDefinition", "nodeconfigs.migweaver.io"),
        ("ServiceAccount", "migweaver-operator"),
        ("ServiceAccount", "migweaver-agent"),
        ("Deployment", "migweaver-operator"),
        ("PodDisruptionBudget", "migweaver-operator"),
        ("DaemonSet", "migweaver-agent"),
        ("Service", "migweaver-operator"),
        ("MutatingWebhookConfiguration", "migweaver-pod-gate"),
        ("ConfigMap", "migweaver-device-config"),
        ("ValidatingAdmissionPolicy", "migweaver-agent"),
        ("ValidatingAdmissionPolicyBinding", "migweaver-agent"),
    }


# --- CRDs ----------------------------------------------------------------------------------------


def test_manifest_crds_are_the_generated_ones() -> None:
    # crds/ is checked against the models by test_crds.py; manifests/crds/ (kustomize may not
    # reach outside manifests/) must hold the same bytes, and nothing else.
    generated = {crd_filename(crd) for crd in render_crds()}
    for name in generated:
        assert (MANIFESTS / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"manifests/crds/{name} differs from crds/{name}; run `make crds`"
        )
    extra = {p.name for p in (MANIFESTS / "crds").glob("*.yaml")} - generated
    assert extra == {"kustomization.yaml"}


def test_one_apply_installs_everything() -> None:
    # kubectl maps every object's kind before it applies anything: an object whose kind is
    # defined by a CRD of the same apply is refused on a new cluster. So: no custom
    # resources in the install (the operator creates its Lease itself).
    defined = {
        (f"{d['spec']['group']}/{v['name']}", d["spec"]["names"]["kind"])
        for d in objects()
        if d["kind"] == "CustomResourceDefinition"
        for v in d["spec"]["versions"]
    }
    custom = [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in objects()]
    assert [c for c in custom if (c[0], c[1]) in defined] == []


# --- kubectl kustomize ---------------------------------------------------------------------------


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kubectl_kustomize_builds(directory: Path) -> None:
    built = kustomize(directory)
    assert sorted(key(d) for d in built) == sorted(key(d) for d in build(directory))


def test_kubectl_kustomize_output() -> None:
    built = kustomize(MANIFESTS)
    for doc in built:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "migweaver", key(doc)
    images = [
        c["image"]
        for d in built
        if d["kind"] in {"Deployment", "DaemonSet"}
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert images == [f"{IMAGE}:{migweaver.__version__}"] * 2


POLICIES = (
    "migweaver-agent",
    "migweaver-agent-layouts",
    "migweaver-pod-fields",
    "migweaver-operator",
)


def test_every_admission_policy_is_installed_by_default() -> None:
    # `kubectl apply -k manifests/` installs each policy with a binding that denies.
    for built in (objects(), kustomize(MANIFESTS)):
        policies = {
            d["metadata"]["name"] for d in built if d["kind"] == "ValidatingAdmissionPolicy"
        }
        assert policies == set(POLICIES)
        for name in POLICIES:
            assert find("ValidatingAdmissionPolicy", name, built)["spec"]["failurePolicy"] == "Fail"
            binding = find("ValidatingAdmissionPolicyBinding", name, built)
            assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}


def test_kubectl_kustomize_variants() -> None:
    default = {key(d) for d in kustomize(MANIFESTS)}
    without = {key(d) for d in kustomize(KUSTOMIZATIONS[3])}
    assert default - without == {
        (kind, name, "")
        for name in POLICIES
        for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    }
    assert without <= default
    certs = kustomize(KUSTOMIZATIONS[2])
    webhook = find("MutatingWebhookConfiguration", "migweaver-pod-gate", certs)
    assert webhook["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/migweaver-webhook"
    }
    certificate = find("Certificate", "migweaver-webhook", certs)
    assert certificate["spec"]["secretName"] == "migweaver-webhook-tls"
    assert certificate["spec"]["dnsNames"][0] == f"migweaver-operator.{NAMESPACE}.svc"


# --- images --------------------------------------------------------------------------------------


def test_images_are_the_package_version() -> None:
    (image,) = kustomization(MANIFESTS)["images"]
    assert image == {"name": IMAGE, "newName": IMAGE, "newTag": migweaver.__version__}
    for workload in [
        find("Deployment", "migweaver-operator"),
        find("DaemonSet", "migweaver-agent"),
    ]:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert container["image"] == f"{IMAGE}:{migweaver.__version__}"


# --- workloads and the CLI -----------------------------------------------------------------------


def pod_spec(workload: Mapping[str, Any]) -> JsonDict:
    spec: JsonDict = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Mapping[str, Any]) -> JsonDict:
    (only,) = pod_spec(workload)["containers"]
    return only


def parse_command(workload: Mapping[str, Any], values: Mapping[str, str]) -> Any:
    """The container's command through `migweaver`'s own parser, $(VAR)s from `values`."""
    command = container(workload)["command"]
    assert command[0] == "migweaver"
    env = {e["name"] for e in container(workload).get("env", [])}
    argv = []
    for raw in command[1:]:
        arg = raw
        for name, value in values.items():
            if f"$({name})" in arg:
                assert name in env, f"{raw} names ${name}, which the container does not define"
                arg = arg.replace(f"$({name})", value)
        assert "$(" not in arg, raw
        argv.append(arg)
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(
            f"`migweaver {' '.join(argv)}` (the {workload['kind']}'s command) is refused by "
            f"migweaver.cli.build_parser() (exit {exc.code}); see the usage error above"
        )


def ports(workload: Mapping[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(workload)["ports"]}


def probe_port(workload: Mapping[str, Any], probe: str) -> int:
    port = container(workload)[probe]["httpGet"]["port"]
    return ports(workload)[port] if isinstance(port, str) else int(port)


def test_agent_command_is_accepted_by_the_cli() -> None:
    agent = find("DaemonSet", "migweaver-agent")
    args = parse_command(agent, {"NODE_NAME": "gpu-node-1"})
    assert args.command == "agent"
    assert args.node_name == "gpu-node-1"
    assert args.backend == "nvml"
    assert args.device_plugin  # the kubelet needs the device plugin
    assert args.probe_port == ports(agent)["probes"] == 8081
    assert probe_port(agent, "livenessProbe") == probe_port(agent, "readinessProbe") == 8081
    assert container(agent)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container(agent)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    plugin_dir = args.device_plugin_dir or DEFAULT_PLUGIN_DIR
    mounts = {m["name"]: m["mountPath"] for m in container(agent)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(agent)["volumes"]}
    assert mounts["device-plugins"] == plugin_dir
    assert volumes["device-plugins"]["hostPath"]["path"] == plugin_dir
    # Paths the agent hands the kubelet or writes for runtimes are host paths, mounted at
    # the same path in the agent (HAMi-core's directory and lock, the CDI spec directory).
    for name, path in (
        ("hami-core", args.hami_core_dir),
        ("hami-core-lock", "/tmp/vgpulock"),
        ("cdi", args.cdi),
    ):
        assert mounts[name] == path == volumes[name]["hostPath"]["path"], name


def test_agent_sees_the_hosts_processes_and_installs_hami_core() -> None:
    agent = find("DaemonSet", "migweaver-agent")
    spec = pod_spec(agent)
    assert spec["hostPID"] is True  # NVML lists processes by the caller's PID namespace
    (init,) = spec["initContainers"]
    script = init["command"][-1]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/usr/local/vgpu"}
    # Installed by rename, under the names Allocate mounts from (core.agent.hami_core).
    assert "mv -f /usr/local/vgpu/.libvgpu.so.new /usr/local/vgpu/libvgpu.so" in script
    assert f"echo {PRELOAD_CONTENT.strip()} > /usr/local/vgpu/.ld.so.preload.new" in script


def test_operator_command_is_accepted_by_the_cli() -> None:
    operator = find("Deployment", "migweaver-operator")
    args = parse_command(operator, {"POD_NAMESPACE": NAMESPACE})
    assert args.command == "operator"
    assert args.namespace == NAMESPACE
    assert args.metrics_port == ports(operator)["metrics"] == 31993
    assert args.webhook_port == ports(operator)["webhook"] == 9443
    assert args.probe_port == ports(operator)["probes"] == 8080
    assert args.lease == "migweaver-operator"
    # Named in the RBAC: the operator may renew only that Lease.
    assert ("coordination.k8s.io", "leases", "update", args.lease) in OPERATOR_NEEDS_NAMED
    mounts = {m["name"]: m for m in container(operator)["volumeMounts"]}
    assert mounts["webhook-tls"]["mountPath"] == args.webhook_tls_dir
    assert mounts["webhook-tls"]["readOnly"] is True


def test_operator_deployment() -> None:
    operator = find("Deployment", "migweaver-operator")
    assert operator["spec"]["replicas"] == 2
    spec = pod_spec(operator)
    assert spec["serviceAccountName"] == "migweaver-operator"
    assert operator["spec"]["selector"]["matchLabels"].items() <= (
        operator["spec"]["template"]["metadata"]["labels"].items()
    )
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container(operator)["env"]}
    assert env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
    assert probe_port(operator, "livenessProbe") == probe_port(operator, "readinessProbe") == 8080
    assert container(operator)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container(operator)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["webhook-tls"]["secret"] == {"secretName": "migweaver-webhook-tls"}
    assert set(volumes) == {"webhook-tls", "tmp"}
    assert container(operator)["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    pdb = find("PodDisruptionBudget", "migweaver-operator")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == operator["spec"]["selector"]


def test_agent_daemonset() -> None:
    agent = find("DaemonSet", "migweaver-agent")
    spec = pod_spec(agent)
    assert spec["serviceAccountName"] == "migweaver-agent"
    assert spec["nodeSelector"] == {"migweaver.io/gpu": "true"}
    assert spec["priorityClassName"] == "system-node-critical"
    assert container(agent)["securityContext"] == {"privileged": True, "runAsUser": 0}
    assert {(t["key"], t.get("effect")) for t in spec["tolerations"]} >= {
        ("nvidia.com/gpu", "NoSchedule"),
        ("nvidia.com/gpu", "NoExecute"),
    }
    env = {e["name"]: e for e in container(agent)["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    for name in (
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_MIG_CONFIG_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
    ):
        assert env[name]["value"] == "all"
    assert agent["spec"]["selector"]["matchLabels"].items() <= (
        agent["spec"]["template"]["metadata"]["labels"].items()
    )
    namespace = find("Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_service_exposes_metrics_and_webhook_of_the_operator() -> None:
    service = find("Service", "migweaver-operator")
    operator = find("Deployment", "migweaver-operator")
    assert service["spec"]["selector"] == operator["spec"]["selector"]["matchLabels"]
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"metrics", "webhook"}
    assert (by_name["metrics"]["port"], by_name["metrics"]["targetPort"]) == (31993, "metrics")
    assert (by_name["webhook"]["port"], by_name["webhook"]["targetPort"]) == (443, "webhook")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "31993"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_device_config_is_the_one_the_operator_reads() -> None:
    config = find("ConfigMap", "migweaver-device-config")
    assert set(config["data"]) == {"config.yaml"}


# --- RBAC ----------------------------------------------------------------------------------------


def rules(kind: str, name: str) -> list[JsonDict]:
    found: list[JsonDict] = find(kind, name)["rules"]
    return found


def allows(
    granted: Sequence[Mapping[str, Any]], group: str, resource: str, verb: str, name: str = ""
) -> bool:
    """Whether RBAC `granted` allows `verb` on `group`/`resource` (named `name`, if given)."""
    for rule in granted:
        if not ({group, "*"} & set(rule.get("apiGroups", []))):
            continue
        if not ({resource, "*"} & set(rule.get("resources", []))):
            continue
        if not ({verb, "*"} & set(rule.get("verbs", []))):
            continue
        names = rule.get("resourceNames")
        if names and name not in names:
            continue
        return True
    return False


# Every API call of the agent, and the code that makes it.
AGENT_NEEDS = [
    ("", "nodes", "get"),  # NodeAgent / NodeCapacity: read_node (labels, capacity)
    ("", "nodes/status", "patch"),  # NodeCapacity: patch_node_status (extended resources)
    ("migweaver.io", "miglayouts", "list"),  # NodeAgent: list its node's layouts
    ("migweaver.io", "miglayouts", "watch"),  # NodeAgent: watch them
    ("migweaver.io", "miglayouts", "get"),
    ("migweaver.io", "miglayouts", "create"),  # NodeAgent: adoption
    ("migweaver.io", "miglayouts/status", "patch"),  # NodeAgent: report
    ("migweaver.io", "nodeconfigs", "list"),  # NodeAgent: the NodeConfig in force
    ("migweaver.io", "nodeconfigs", "watch"),
    ("migweaver.io", "nodeconfigs", "get"),
    ("", "events", "create"),  # EventRecorder
    ("", "pods", "list"),  # PodWatcher, Allocator: the node's pods
    ("", "pods", "watch"),  # PodWatcher
    ("", "pods", "get"),  # Allocator: re-read on conflict
    ("", "pods", "patch"),  # Allocator: bind-phase / bind-error
]
AGENT_NEVER = [
    ("", "pods", "create"),
    ("", "pods", "update"),
    ("", "pods", "delete"),
    ("", "pods", "deletecollection"),
    ("", "pods/eviction", "create"),
    ("", "pods/status", "patch"),
    ("", "pods/exec", "create"),
    ("", "nodes", "patch"),
    ("", "nodes", "update"),
    ("", "nodes", "list"),
    ("", "nodes/status", "update"),
    ("migweaver.io", "miglayouts", "patch"),  # the spec is the operator's (or a person's)
    ("migweaver.io", "miglayouts", "update"),
    ("migweaver.io", "miglayouts", "delete"),
    ("migweaver.io", "nodeconfigs", "patch"),
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "configmaps", "get"),
]

# Every API call of the operator (and of Kopf on its behalf).
OPERATOR_NEEDS = [
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods", "patch"),  # rounds: allocation annotations + nodeSelector + gate removal
    ("", "pods/status", "patch"),  # rounds: the migweaver.io/Placement condition
    ("", "events", "create"),
    ("events.k8s.io", "events", "create"),
    ("migweaver.io", "miglayouts", "get"),
    ("migweaver.io", "miglayouts", "list"),
    ("migweaver.io", "miglayouts", "watch"),
    ("migweaver.io", "miglayouts", "patch"),  # rounds: the planned spec
    ("migweaver.io", "nodeconfigs", "get"),
    ("migweaver.io", "nodeconfigs", "list"),
    ("migweaver.io", "nodeconfigs", "watch"),
    ("migweaver.io", "nodeconfigs/status", "patch"),  # rounds: which NodeConfig is in force
    ("", "pods/eviction", "create"),  # a pod released to a Node deleted before binding
    ("", "nodes", "get"),
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
]
# In its namespace, by name: leader election.
OPERATOR_NEEDS_NAMED = [
    ("coordination.k8s.io", "leases", "get", "migweaver-operator"),
    ("coordination.k8s.io", "leases", "update", "migweaver-operator"),  # renew, take over
]
OPERATOR_NEEDS_IN_NAMESPACE = [
    ("", "configmaps", "get"),  # the geometry ConfigMap
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
    ("coordination.k8s.io", "leases", "create"),  # its Lease, when missing
]
OPERATOR_NEVER = [
    ("", "pods", "create"),
    ("", "pods", "update"),
    ("", "pods", "delete"),
    ("", "pods/status", "update"),  # only the strategic merge patch of its one condition
    ("", "nodes", "patch"),
    ("", "nodes/status", "patch"),
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("migweaver.io", "miglayouts", "create"),  # the agents create them
    ("migweaver.io", "miglayouts", "delete"),
    ("migweaver.io", "miglayouts/status", "patch"),  # the status is the agent's
    ("migweaver.io", "nodeconfigs", "patch"),  # event handlers only: Kopf writes nothing
    ("migweaver.io", "nodeconfigs", "create"),
    ("migweaver.io", "nodeconfigs", "delete"),
    ("coordination.k8s.io", "leases", "update"),  # only its own Lease (named, namespaced)
    ("coordination.k8s.io", "leases", "delete"),
    ("kopf.dev", "clusterkopfpeerings", "list"),  # no Kopf peering: kopf runs standalone
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch"),
]


def rule_ids(rules: Any) -> list[str]:
    """`get nodes`, `patch kopf.dev/clusterkopfpeerings/migweaver`: one id per RBAC case."""
    return [f"{r[2]} {'/'.join(x for x in (r[0], r[1], *r[3:]) if x)}" for r in rules]


@pytest.mark.parametrize(("group", "resource", "verb"), AGENT_NEEDS, ids=rule_ids(AGENT_NEEDS))
def test_agent_may(group: str, resource: str, verb: str) -> None:
    assert allows(rules("ClusterRole", "migweaver-agent"), group, resource, verb)


@pytest.mark.parametrize(("group", "resource", "verb"), AGENT_NEVER, ids=rule_ids(AGENT_NEVER))
def test_agent_may_not(group: str, resource: str, verb: str) -> None:
    assert not allows(rules("ClusterRole", "migweaver-agent"), group, resource, verb)


def test_agent_pod_verbs_are_exactly_read_and_patch() -> None:
    verbs = {
        verb
        for rule in rules("ClusterRole", "migweaver-agent")
        if any(r == "pods" or r.startswith("pods/") or r == "*" for r in rule["resources"])
        for verb in rule["verbs"]
    }
    assert verbs == {"get", "list", "watch", "patch"}


@pytest.mark.parametrize(
    ("group", "resource", "verb"), OPERATOR_NEEDS, ids=rule_ids(OPERATOR_NEEDS)
)
def test_operator_may(group: str, resource: str, verb: str) -> None:
    assert allows(rules("ClusterRole", "migweaver-operator"), group, resource, verb)


@pytest.mark.parametrize(
    ("group", "resource", "verb", "name"), OPERATOR_NEEDS_NAMED, ids=rule_ids(OPERATOR_NEEDS_NAMED)
)
def test_operator_may_on_its_own_object(group: str, resource: str, verb: str, name: str) -> None:
    granted = find("Role", "migweaver-operator")["rules"]
    assert allows(granted, group, resource, verb, name)
    assert not allows(granted, group, resource, verb, "another")


@pytest.mark.parametrize(
    ("group", "resource", "verb"),
    OPERATOR_NEEDS_IN_NAMESPACE,
    ids=rule_ids(OPERATOR_NEEDS_IN_NAMESPACE),
)
def test_operator_may_in_its_namespace(group: str, resource: str, verb: str) -> None:
    role = find("Role", "migweaver-operator")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert allows(role["rules"], group, resource, verb)


@pytest.mark.parametrize(
    ("group", "resource", "verb"), OPERATOR_NEVER, ids=rule_ids(OPERATOR_NEVER)
)
def test_operator_may_not(group: str, resource: str, verb: str) -> None:
    assert not allows(rules("ClusterRole", "migweaver-operator"), group, resource, verb)
    assert not allows(rules("Role", "migweaver-operator"), group, resource, verb)


def test_operator_reads_configmaps_only_in_its_namespace() -> None:
    granted = rules("ClusterRole", "migweaver-operator")
    for verb in ("get", "list", "watch", "patch"):
        assert not allows(granted, "", "configmaps", verb)


def test_no_wildcards_and_no_secrets() -> None:
    for doc in objects():
        if doc["kind"] not in {"Role", "ClusterRole"}:
            continue
        for rule in doc["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (doc["metadata"]["name"], rule)
            assert "secrets" not in rule["resources"], (doc["metadata"]["name"], rule)


@pytest.mark.parametrize(
    ("binding_kind", "role_kind", "name", "account"),
    [
        ("ClusterRoleBinding", "ClusterRole", "migweaver-operator", "migweaver-operator"),
        ("RoleBinding", "Role", "migweaver-operator", "migweaver-operator"),
        ("ClusterRoleBinding", "ClusterRole", "migweaver-agent", "migweaver-agent"),
    ],
    ids=["operator-cluster-role", "operator-namespace-role", "agent-cluster-role"],
)
def test_bindings(binding_kind: str, role_kind: str, name: str, account: str) -> None:
    binding = find(binding_kind, name)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role_kind,
        "name": name,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    find("ServiceAccount", account)


# --- the webhook ---------------------------------------------------------------------------------


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector against `labels`."""
    for label, value in (selector.get("matchLabels") or {}).items():
        if labels.get(label) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        label, operator, values = (
            expression["key"],
            expression["operator"],
            expression.get("values"),
        )
        present = label in labels
        if operator == "In" and not (present and labels[label] in values):
            return False
        if operator == "NotIn" and present and labels[label] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def webhooks() -> dict[str, JsonDict]:
    config = find("MutatingWebhookConfiguration", "migweaver-pod-gate")
    return {w["name"]: w for w in config["webhooks"]}


def called_for(namespace: str, **labels: str) -> list[tuple[str, str]]:
    """(webhook, failurePolicy) of every webhook a new pod in `namespace` goes to."""
    ns_labels = {"kubernetes.io/metadata.name": namespace, **labels}
    return [
        (name, hook["failurePolicy"])
        for name, hook in webhooks().items()
        if selects(hook["namespaceSelector"], ns_labels)
        and selects(hook.get("objectSelector") or {}, {})
    ]


def test_webhooks_gate_new_pods_only() -> None:
    service = find("Service", "migweaver-operator")
    webhook_port = {p["name"]: p["port"] for p in service["spec"]["ports"]}["webhook"]
    assert set(webhooks()) == {"gate-gpu-pods.migweaver.io"}
    for hook in webhooks().values():
        assert hook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] <= 5
        # Kopf serves a webhook handler at /<handler id>.
        assert hook["clientConfig"] == {
            "service": {
                "name": service["metadata"]["name"],
                "namespace": NAMESPACE,
                "path": "/gate-gpu-pods",
                "port": webhook_port,
            }
        }
        assert "caBundle" not in hook["clientConfig"]  # left to cert-manager or the user


@pytest.mark.parametrize(
    ("namespace", "labels", "expected"),
    [
        ("default", {}, [("gate-gpu-pods.migweaver.io", "Fail")]),
        ("team-a", {"other": "label"}, [("gate-gpu-pods.migweaver.io", "Fail")]),
        ("kube-system", {}, []),
        (NAMESPACE, {}, []),
        ("batch", {"migweaver.io/webhook": "disabled"}, []),
    ],
    ids=[
        "plain-namespace", "other-labels", "kube-system-exempt", "own-namespace-exempt",
        "disabled-by-label",
    ],
)  # fmt: skip
def test_which_webhook_a_namespace_gets(
    namespace: str, labels: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    # failurePolicy Fail: no GPU pod escapes the gate while the operator is down; only GPU
    # pods are sent (matchConditions), so no other pod waits on the operator.
    assert called_for(namespace, **labels) == expected


@pytest.mark.parametrize(
    ("containers", "sent"),
    [
        pytest.param(
            [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}}], True, id="gpu"
        ),
        pytest.param(
            [
                {"name": "a"},
                {"name": "b", "resources": {"requests": {"nvidia.com/gpumem": "8000"}}},
            ],
            True,
            id="memory-in-requests-of-a-second-container",
        ),
        pytest.param(
            [{"name": "a", "resources": {"limits": {"nvidia.com/gpucores": "50"}}}],
            True,
            id="cores",
        ),
        pytest.param(
            [{"name": "a", "resources": {"limits": {"nvidia.com/gpumem-percentage": "50"}}}],
            True,
            id="percentage",
        ),
        pytest.param([{"name": "a", "resources": {"limits": {"cpu": "1"}}}], False, id="cpu-only"),
        pytest.param([{"name": "a"}], False, id="no-resources"),
    ],
)
def test_only_pods_naming_a_gpu_resource_are_sent(containers: list[JsonDict], sent: bool) -> None:
    pytest.importorskip("celpy", reason="cel-python (the dev extra) is not installed")
    from migweaver.core.resources.requests import DEFAULTS, wants_gpu
    from tests.e2e.emulator.policies import conditions_hold

    (hook,) = webhooks().values()
    pod = {"metadata": {"name": "p"}, "spec": {"containers": containers}}
    assert conditions_hold(hook["matchConditions"], {"operation": "CREATE"}, pod, None) is sent
    # The same pods the operator's webhook gates.
    assert wants_gpu(pod, DEFAULTS) is sent
    assert set(DEFAULTS.gpu_resources) <= set(
        re.findall(r"'(nvidia\.com/[a-z-]+)'", hook["matchConditions"][0]["expression"])
    )


def test_the_webhook_path_is_the_operators_handler() -> None:
    # Kopf serves the handler with id `gate-gpu-pods` at /gate-gpu-pods.
    from migweaver.operator import webhook

    assert webhook.WEBHOOK_PATH == f"/{webhook.HANDLER_ID}" == "/gate-gpu-pods"
    for hook in webhooks().values():
        assert hook["clientConfig"]["service"]["path"] == webhook.WEBHOOK_PATH


# --- the agent's ValidatingAdmissionPolicy -------------------------------------------------------

AGENT_USER = f"system:serviceaccount:{NAMESPACE}:migweaver-agent"
NODE_KEY = "authentication.kubernetes.io/node-name"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


class Policy:
    """A ValidatingAdmissionPolicy evaluated as the apiserver does, with cel-python (the
    e2e emulator's evaluator, `tests.e2e.emulator.policies`). An evaluation error counts
    as a denial (the policies' failurePolicy is Fail)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        pytest.importorskip("celpy", reason="cel-python (the dev extra) is not installed")
        from tests.e2e.emulator.policies import Evaluation

        self.spec = spec
        self.evaluation = Evaluation(spec)

    def admit(self, request: Mapping[str, Any], obj: Any, old: Any) -> tuple[bool, str]:
        """(allowed, message): the first failing validation's message, or 'not matched'."""
        allowed, message, _ = self.evaluation.admit(request, obj, old)
        return allowed, message


def policy() -> Policy:
    vap = find("ValidatingAdmissionPolicy", "migweaver-agent")
    assert vap["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert vap["spec"]["failurePolicy"] == "Fail"
    binding = find("ValidatingAdmissionPolicyBinding", "migweaver-agent")
    assert binding["spec"] == {"policyName": "migweaver-agent", "validationActions": ["Deny"]}
    return Policy(vap["spec"])


def pod(node: str | None = "gpu-1", **annotations: str) -> JsonDict:
    return builders.pod(
        "train",
        "team-a",
        typed=True,
        labels={"app": "train"},
        annotations={"team": "a", ANNOTATION_ALLOCATION: "{}", **annotations},
        containers=[builders.container(image="cuda")],
        node_name=node,
    )


def request(
    operation: str = "UPDATE",
    resource: str = "pods",
    sub: str = "",
    name: str = "train",
    user: str = AGENT_USER,
    node: str | None = "gpu-1",
) -> JsonDict:
    extra = {} if node is None else {NODE_KEY: [node]}
    return {
        "operation": operation,
        "resource": {"group": "", "version": "v1", "resource": resource},
        # The apiserver leaves subResource out for the object itself.
        **({"subResource": sub} if sub else {}),
        "name": name,
        "namespace": "team-a" if resource == "pods" else "",
        "userInfo": {"username": user, "groups": ["system:serviceaccounts"], "extra": extra},
    }


def test_policy_matches_the_agents_service_account() -> None:
    (condition,) = policy().spec["matchConditions"]
    account = find("ServiceAccount", "migweaver-agent")["metadata"]["name"]
    assert f":{account}'" in condition["expression"]


@pytest.mark.parametrize("phase", [BIND_SUCCESS, BIND_FAILED])
def test_policy_allows_the_agents_own_bind_patches(phase: Any) -> None:
    # The very patch the device plugin sends (allocation.bind_patch), on a pod of its node.
    old = pod(**{ANNOTATION_BIND_PHASE: "allocating"})
    new = merge_patch(old, bind_patch(phase, "no such device" if phase == BIND_FAILED else None))
    assert policy().admit(request(), new, old) == (True, "allowed")
    # ... and clearing the error again.
    assert policy().admit(request(), merge_patch(new, bind_patch(BIND_SUCCESS)), new)[0]


def test_bind_patches_touch_only_bind_annotations() -> None:
    for patch in (bind_patch(BIND_SUCCESS), bind_patch(BIND_FAILED, "why")):
        assert set(patch) == {"metadata"}
        assert set(patch["metadata"]) == {"annotations"}
        assert all(k.startswith("migweaver.io/bind-") for k in patch["metadata"]["annotations"])


def test_policy_allows_a_pod_without_annotations() -> None:
    old = pod()
    del old["metadata"]["annotations"]
    new = merge_patch(old, bind_patch(BIND_FAILED, "x"))
    assert policy().admit(request(), new, old)[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["metadata"]["labels"].update(app="x"), "only the migweaver.io/bind-*"),
        (lambda p: p["metadata"]["labels"].clear(), "only the migweaver.io/bind-*"),
        (lambda p: p["metadata"]["annotations"].update(team="b"), "only the migweaver.io/bind-*"),
        (lambda p: p["metadata"]["annotations"].pop("team"), "only the migweaver.io/bind-*"),
        (
            lambda p: p["metadata"]["annotations"].update({ANNOTATION_ALLOCATION: '{"x":1}'}),
            "only the migweaver.io/bind-*",
        ),
        (lambda p: p["metadata"].update(finalizers=["x/y"]), "only the migweaver.io/bind-*"),
        (lambda p: p["spec"].update(priority=7), "only the migweaver.io/bind-*"),
    ],
    ids=[
        "label-added",
        "labels-cleared",
        "other-annotation-added",
        "other-annotation-removed",
        "allocation-rewritten",
        "finalizer-added",
        "spec-changed",
    ],
)
def test_policy_refuses_other_pod_changes(change: Any, message: str) -> None:
    old = pod()
    new = copy.deepcopy(old)
    change(new)
    allowed, why = policy().admit(request(), new, old)
    assert not allowed
    assert message in why


def test_policy_refuses_pods_of_other_nodes() -> None:
    old = pod(node="gpu-2")
    new = merge_patch(old, bind_patch(BIND_SUCCESS))
    assert policy().admit(request(), new, old) == (
        False,
        "the migweaver agent of node gpu-1 may only patch pods bound to it, not team-a/train",
    )
    unbound = pod(node=None)
    assert not policy().admit(request(), merge_patch(unbound, bind_patch(BIND_SUCCESS)), unbound)[0]


def test_policy_refuses_credentials_without_a_node() -> None:
    old = pod()
    allowed, why = policy().admit(
        request(node=None), merge_patch(old, bind_patch(BIND_SUCCESS)), old
    )
    assert not allowed
    assert "name no node" in why


@pytest.mark.parametrize(
    ("operation", "resource", "sub"),
    [
        ("DELETE", "pods", ""),
        ("CREATE", "pods", ""),
        ("CREATE", "pods", "eviction"),
        ("UPDATE", "pods", "status"),
        ("CONNECT", "pods", "exec"),
        ("UPDATE", "nodes", ""),
        ("DELETE", "nodes", ""),
    ],
    ids=[
        "delete-pod",
        "create-pod",
        "evict-pod",
        "update-pod-status",
        "exec-into-pod",
        "update-node",
        "delete-node",
    ],
)
def test_policy_refuses_everything_else(operation: str, resource: str, sub: str) -> None:
    obj = pod() if resource == "pods" else {"metadata": {"name": "gpu-1"}}
    allowed, why = policy().admit(
        request(operation, resource, sub, name=obj["metadata"]["name"]),
        None if operation == "DELETE" else obj,
        None if operation == "CREATE" else obj,
    )
    assert not allowed
    assert why.startswith(
        f"the migweaver agent may only patch pods and node status, not {operation}"
    )


def test_policy_allows_only_its_own_node_status() -> None:
    node = {"metadata": {"name": "gpu-1"}, "status": {"capacity": {"nvidia.com/gpumem": "81920"}}}
    assert policy().admit(request("UPDATE", "nodes", "status", name="gpu-1"), node, node)[0]
    other = {"metadata": {"name": "gpu-2"}}
    assert policy().admit(request("UPDATE", "nodes", "status", name="gpu-2"), other, other) == (
        False,
        "the migweaver agent of node gpu-1 may not change the status of node gpu-2",
    )


@pytest.mark.parametrize(
    "user",
    [
        f"system:serviceaccount:{NAMESPACE}:migweaver-operator",
        "system:node:gpu-1",
        "kubernetes-admin",
        f"system:serviceaccount:{NAMESPACE}:migweaver-agent-x",
    ],
    ids=["operator", "node-kubelet", "cluster-admin", "other-account-with-agent-prefix"],
)
def test_policy_leaves_everyone_else_alone(user: str) -> None:
    old = pod(node="gpu-9")
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["app"] = "changed"
    assert policy().admit(request(user=user), new, old) == (True, "not matched")


def test_policy_matches_every_pod_and_node_request() -> None:
    (rule,) = policy().spec["matchConstraints"]["resourceRules"]
    assert rule["operations"] == ["*"]
    assert set(rule["resources"]) == {"pods", "pods/*", "nodes", "nodes/*"}


# --- helpers -------------------------------------------------------------------------------------


def test_selector_helper() -> None:
    assert selects({}, {"a": "b"})
    assert not selects({"matchLabels": {"a": "c"}}, {"a": "b"})
    assert selects({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["c"]}]}, {})
    assert not selects({"matchExpressions": [{"key": "a", "operator": "In", "values": ["c"]}]}, {})


def iter_rbac() -> Iterator[JsonDict]:
    yield from (d for d in objects() if d["kind"] in {"Role", "ClusterRole"})


def test_allows_helper() -> None:
    granted = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]}]
    assert allows(granted, "", "pods", "get", "a")
    assert not allows(granted, "", "pods", "get")
    assert not allows(granted, "", "pods", "list", "a")
    assert len(list(iter_rbac())) == 3


@pytest.mark.parametrize(
    ("kind", "name", "open_ports"),
    [
        pytest.param("Deployment", "migweaver-operator", {"webhook", "probes"}, id="operator"),
        pytest.param("DaemonSet", "migweaver-agent", {"probes"}, id="agent"),
    ],
)
def test_metrics_are_open_only_to_labelled_scraper_namespaces(
    kind: str, name: str, open_ports: set[str]
) -> None:
    policy = find("NetworkPolicy", name)
    template = find(kind, name)["spec"]["template"]
    assert selects(policy["spec"]["podSelector"], template["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    open_to_all = [r for r in policy["spec"]["ingress"] if "from" not in r]
    (metrics,) = [r for r in policy["spec"]["ingress"] if "from" in r]
    assert {p["port"] for r in open_to_all for p in r["ports"]} == open_ports
    assert [p["port"] for p in metrics["ports"]] == ["metrics"]
    assert "metrics" in ports
    assert open_ports <= ports
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"migweaver.io/metrics-scraper": "true"}}}
    ]
