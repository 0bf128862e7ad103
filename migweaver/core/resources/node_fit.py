"""Would kube-scheduler accept this node for this pod? The node-level half of placement.

The operator pins a released pod to its node with `nodeSelector kubernetes.io/hostname`,
so a node the scheduler would refuse leaves the pod Pending for good (and its devices
reserved for nothing). The planner therefore skips a node when:

- it does not match the pod's `spec.nodeSelector` (every key=value);
- it matches none of the terms of the pod's required node affinity
  (`spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution
  .nodeSelectorTerms`: terms ORed; in a term `matchExpressions` on labels and
  `matchFields` on `metadata.name` ANDed; operators In, NotIn, Exists, DoesNotExist,
  Gt, Lt as in Kubernetes);
- it is cordoned (`spec.unschedulable: true`) or not Ready (condition `Ready` present and
  not "True"; a Node without a Ready condition, such as a hand-made object, counts as
  Ready: nothing says otherwise). Stricter than kube-scheduler, which lets a pod that
  tolerates every taint onto such a node: a cordon means maintenance, and a NotReady
  node's agent cannot apply a layout;
- it has a taint with effect NoSchedule or NoExecute that none of the pod's tolerations
  tolerates (Kubernetes' rules: operator Equal or Exists, an empty key with Exists
  tolerates every taint, an empty effect matches every effect; PreferNoSchedule is only
  a preference and is ignored).

Preferred affinity, inter-pod affinity and anti-affinity and topology spread are not
considered. Pure, and never raises: input that does not parse (a term with an unknown
operator, `Gt` with a value that is not an integer) makes that term match nothing, and
the reason says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "EMPTY_CONSTRAINTS",
    "NodeFacts",
    "PodConstraints",
    "Requirement",
    "Taint",
    "Term",
    "Toleration",
    "node_facts",
    "node_refusal",
    "pod_constraints",
    "refusal_phrase",
]

_HARD_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})
_LABEL_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
_FIELD_OPERATORS: Final = ("In", "NotIn")
_NAME_FIELD: Final = "metadata.name"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        value = f"={self.value}" if self.value else ""
        return f"{self.key}{value}:{self.effect}"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' `Toleration.ToleratesTaint`."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        if self.operator in ("", "Equal"):
            return bool(self.key) and self.value == taint.value
        return False


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the planner needs of a Node object to know whether it takes new pods."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    unschedulable: bool = False
    ready: bool = True
    taints: tuple[Taint, ...] = ()

    @property
    def open(self) -> bool:
        """Takes any pod that asks nothing of nodes (no cordon, Ready, no hard taint)."""
        return (
            not self.unschedulable
            and self.ready
            and not any(t.effect in _HARD_EFFECTS for t in self.taints)
        )


@dataclass(frozen=True, slots=True)
class Requirement:
    """One `matchExpressions` or `matchFields` entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{self.key} {self.operator}"
        return f"{self.key} {self.operator} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True)
class Term:
    """One node selector term; `error` set when it does not parse (it then matches
    nothing)."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PodConstraints:
    """What a pod asks of its node. Hashable: the planner groups pods by it."""

    node_selector: tuple[tuple[str, str], ...] = ()
    terms: tuple[Term, ...] | None = None
    """The required affinity's terms; None when the pod has no required node affinity."""
    tolerations: tuple[Toleration, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.node_selector and self.terms is None and not self.tolerations


EMPTY_CONSTRAINTS: Final = PodConstraints()


# --------------------------------------------------------------------------- parsing


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def node_facts(node: Mapping[str, Any]) -> NodeFacts:
    """The facts of a Node object (as the API returns it). Never raises."""
    node = _mapping(node)
    meta = _mapping(node.get("metadata"))
    spec = _mapping(node.get("spec"))
    status = _mapping(node.get("status"))
    labels = {str(k): _text(v) for k, v in _mapping(meta.get("labels")).items()}
    raw_taints = spec.get("taints")
    taints = tuple(
        Taint(_text(t.get("key")), _text(t.get("value")), _text(t.get("effect")))
        for t in (raw_taints if isinstance(raw_taints, list) else [])
        if isinstance(t, Mapping)
    )
    ready = True
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    return NodeFacts(
        name=_text(meta.get("name")),
        labels=labels,
        unschedulable=spec.get("unschedulable") is True,
        ready=ready,
        taints=taints,
    )


def _requirement(raw: Any, where: str, operators: tuple[str, ...]) -> Requirement | str:
    """A requirement, or why it does not parse."""
    if not isinstance(raw, Mapping):
        return f"{where} is not a mapping"
    key, operator, values = raw.get("key"), raw.get("operator"), raw.get("values")
    if not isinstance(key, str) or not key:
        return f"{where} has no key"
    if operator not in operators:
        return f"{where} has operator {operator!r}, not one of {', '.join(operators)}"
    if values is None:
        values = []
    if not isinstance(values, list) or not all(isinstance(v, str | int) for v in values):
        return f"{where} values must be a list of strings"
    texts = tuple(str(v) for v in values)
    if operator in ("In", "NotIn") and not texts:
        return f"{where} ({key} {operator}) needs at least one value"
    if operator in ("Exists", "DoesNotExist") and texts:
        return f"{where} ({key} {operator}) takes no values"
    if operator in ("Gt", "Lt") and (len(texts) != 1 or _integer(texts[0]) is None):
        return f"{where} ({key} {operator}) needs exactly one integer value"
    if where.startswith("matchFields") and key != _NAME_FIELD:
        return f"{where} names field {key!r}; only {_NAME_FIELD} is supported"
    return Requirement(key, str(operator), texts)


def _term(raw: Any, index: int) -> Term:
    name = f"term {index + 1}"
    if not isinstance(raw, Mapping):
        return Term(error=f"{name} is not a mapping")
    parsed: dict[str, list[Requirement]] = {"matchExpressions": [], "matchFields": []}
    for part, operators in (
        ("matchExpressions", _LABEL_OPERATORS),
        ("matchFields", _FIELD_OPERATORS),
    ):
        items = raw.get(part)
        if items is None:
            continue
        if not isinstance(items, list):
            return Term(error=f"{name}: {part} is not a list")
        for j, item in enumerate(items):
            found = _requirement(item, f"{part}[{j}]", operators)
            if isinstance(found, str):
                return Term(error=f"{name}: {found}")
            parsed[part].append(found)
    expressions, fields = tuple(parsed["matchExpressions"]), tuple(parsed["matchFields"])
    if not expressions and not fields:
        return Term(error=f"{name} is empty (an empty term matches no node)")
    return Term(expressions, fields)


def _toleration(raw: Any) -> Toleration | None:
    if not isinstance(raw, Mapping):
        return None
    return Toleration(
        key=_text(raw.get("key")),
        operator=_text(raw.get("operator")) or "Equal",
        value=_text(raw.get("value")),
        effect=_text(raw.get("effect")),
    )


def pod_constraints(pod: Mapping[str, Any]) -> PodConstraints:
    """What the pod (as the API returns it) asks of its node. Never raises."""
    spec = _mapping(_mapping(pod).get("spec"))
    selector = tuple(
        sorted((str(k), _text(v)) for k, v in _mapping(spec.get("nodeSelector")).items())
    )
    terms: tuple[Term, ...] | None = None
    affinity = _mapping(_mapping(spec.get("affinity")).get("nodeAffinity"))
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        raw_terms = _mapping(required).get("nodeSelectorTerms")
        if isinstance(raw_terms, list) and raw_terms:
            terms = tuple(_term(t, i) for i, t in enumerate(raw_terms))
        else:
            terms = (Term(error="nodeSelectorTerms is missing or empty"),)
    raw_tolerations = spec.get("tolerations")
    tolerations = tuple(
        t
        for t in (
            _toleration(r) for r in (raw_tolerations if isinstance(raw_tolerations, list) else [])
        )
        if t is not None
    )
    if not selector and terms is None and not tolerations:
        return EMPTY_CONSTRAINTS
    return PodConstraints(selector, terms, tolerations)


# --------------------------------------------------------------------------- matching


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _matches(req: Requirement, value: str | None) -> bool:
    """Kubernetes' label requirement semantics (`value` None: the label is absent)."""
    op = req.operator
    if op == "In":
        return value is not None and value in req.values
    if op == "NotIn":
        return value is None or value not in req.values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if value is None:
        return False
    have, bound = _integer(value), _integer(req.values[0])
    if have is None or bound is None:
        return False
    return have > bound if op == "Gt" else have < bound


def _term_matches(term: Term, facts: NodeFacts) -> bool:
    if term.error is not None:
        return False
    return all(_matches(r, facts.labels.get(r.key)) for r in term.expressions) and all(
        _matches(r, facts.name) for r in term.fields
    )


def refusal_phrase(constraints: PodConstraints, facts: NodeFacts) -> str | None:
    """Why kube-scheduler would refuse the node for the pod, as a phrase that follows the
    node's name ("is cordoned"); None when it would accept it.

    Checked in this order: the pod's nodeSelector, its required node affinity, then the
    node's state (cordoned, not Ready, taints). The pod's own constraints come first:
    they say the pod never wants the node, whatever its state.
    """
    for key, value in constraints.node_selector:
        if facts.labels.get(key) != value:
            return f"does not match the pod's nodeSelector {key}={value}"
    if constraints.terms is not None and not any(
        _term_matches(t, facts) for t in constraints.terms
    ):
        errors = [t.error for t in constraints.terms if t.error is not None]
        unparsable = f" ({'; '.join(errors)})" if errors else ""
        return f"does not match the pod's required node affinity{unparsable}"
    if facts.unschedulable:
        return "is cordoned"
    if not facts.ready:
        return "is not Ready"
    for taint in facts.taints:
        if taint.effect in _HARD_EFFECTS and not any(
            t.tolerates(taint) for t in constraints.tolerations
        ):
            return f"has taint {taint} the pod does not tolerate"
    return None


def node_refusal(constraints: PodConstraints, facts: NodeFacts) -> str | None:
    """None when kube-scheduler would accept the node for the pod, as far as node
    constraints go; otherwise a short reason naming the node ("node-a is cordoned")."""
    phrase = refusal_phrase(constraints, facts)
    return None if phrase is None else f"{facts.name} {phrase}"
