"""Gates: named conditions the writer enforces atomically with every append they are bound to.

One dataclass per rule of proto/causeway/v1/gate.proto, each with the denial code it raises
(`Denied.code`). Registering a gate appends its definition to the log; its version is that
event's position. docs/GATES.md describes each rule and the CEL variables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from causeway_client.pb import gate_pb2


@dataclass(frozen=True)
class UniqueTag:
    """A tag starting with `prefix` appears at most once per scope. Denial code TAG_TAKEN."""

    prefix: str


@dataclass(frozen=True)
class AllowedTypes:
    """Only these types may be written. Denial code TYPE_NOT_ALLOWED."""

    types: Sequence[str]


@dataclass(frozen=True)
class CausationExists:
    """Every causation parent must exist. Denial code CAUSATION_MISSING."""


@dataclass(frozen=True)
class RateLimit:
    """At most `max_events` per entity per `window_ms` of event time. Denial code RATE_LIMITED."""

    max_events: int
    window_ms: int


@dataclass(frozen=True)
class SizeLimit:
    """Payloads of at most `max_payload_bytes`. Denial code TOO_LARGE."""

    max_payload_bytes: int


@dataclass(frozen=True)
class Cel:
    """A CEL expression that must be true. Denial codes CEL_FALSE and CEL_ERROR."""

    expression: str


Rule = Union[UniqueTag, AllowedTypes, CausationExists, RateLimit, SizeLimit, Cel]


@dataclass(frozen=True)
class Gate:
    """A gate in force. `version` is the position of its registration (0 when built in);
    `rule` is None for a gate built into the server."""

    name: str
    version: int
    scopes: tuple[str, ...]
    types: tuple[str, ...]
    rule: Rule | None

    @staticmethod
    def from_pb(message: gate_pb2.RegisteredGate) -> Gate:
        definition = message.definition if message.HasField("definition") else None
        return Gate(
            name=message.name,
            version=message.version,
            scopes=tuple(definition.scopes) if definition else (),
            types=tuple(definition.types) if definition else (),
            rule=rule_from_pb(definition) if definition else None,
        )


def definition_to_pb(
    name: str, rule: Rule, scopes: Sequence[str], types: Sequence[str]
) -> gate_pb2.GateDefinition:
    """The wire definition of a gate."""
    definition = gate_pb2.GateDefinition(name=name, scopes=list(scopes), types=list(types))
    if isinstance(rule, UniqueTag):
        definition.unique_tag.prefix = rule.prefix
    elif isinstance(rule, AllowedTypes):
        definition.allowed_types.types.extend(rule.types)
    elif isinstance(rule, CausationExists):
        definition.causation_exists.SetInParent()
    elif isinstance(rule, RateLimit):
        definition.rate_limit.max_events = rule.max_events
        definition.rate_limit.window_ms = rule.window_ms
    elif isinstance(rule, SizeLimit):
        definition.size_limit.max_payload_bytes = rule.max_payload_bytes
    elif isinstance(rule, Cel):
        definition.cel.expression = rule.expression
    else:
        raise TypeError(f"{rule!r} is not a gate rule")
    return definition


def rule_from_pb(definition: gate_pb2.GateDefinition) -> Rule | None:
    """The rule of a wire definition; None for a rule this client does not know yet."""
    kind = definition.WhichOneof("rule")
    if kind == "unique_tag":
        return UniqueTag(definition.unique_tag.prefix)
    if kind == "allowed_types":
        return AllowedTypes(tuple(definition.allowed_types.types))
    if kind == "causation_exists":
        return CausationExists()
    if kind == "rate_limit":
        return RateLimit(definition.rate_limit.max_events, definition.rate_limit.window_ms)
    if kind == "size_limit":
        return SizeLimit(definition.size_limit.max_payload_bytes)
    if kind == "cel":
        return Cel(definition.cel.expression)
    return None
