/**
 * Gates: named conditions the writer enforces atomically with every append they are bound to.
 *
 * One rule shape per rule of proto/causeway/v1/gate.proto, each with the denial code it raises
 * (`Denied.code`), built by the functions below. Registering a gate appends its definition to
 * the log; its version is that event's position. docs/GATES.md describes each rule and the CEL
 * variables.
 */

import { create } from "@bufbuild/protobuf";
import {
  GateDefinitionSchema,
  type GateDefinition,
  type RegisteredGate,
} from "./gen/causeway/v1/gate_pb.js";
import { uint64, type Uint64 } from "./events.js";

/** What a gate checks. */
export type Rule =
  | { readonly kind: "uniqueTag"; readonly prefix: string }
  | { readonly kind: "allowedTypes"; readonly types: readonly string[] }
  | { readonly kind: "causationExists" }
  | { readonly kind: "rateLimit"; readonly maxEvents: bigint; readonly windowMs: bigint }
  | { readonly kind: "sizeLimit"; readonly maxPayloadBytes: bigint }
  | { readonly kind: "cel"; readonly expression: string };

/** A tag starting with `prefix` appears at most once per scope. Denial code TAG_TAKEN. */
export function uniqueTag(prefix: string): Rule {
  return { kind: "uniqueTag", prefix };
}

/** Only these types may be written. Denial code TYPE_NOT_ALLOWED. */
export function allowedTypes(types: readonly string[]): Rule {
  return { kind: "allowedTypes", types: [...types] };
}

/** Every causation parent must exist. Denial code CAUSATION_MISSING. */
export function causationExists(): Rule {
  return { kind: "causationExists" };
}

/** At most `maxEvents` per entity per `windowMs` of event time. Denial code RATE_LIMITED. */
export function rateLimit(maxEvents: Uint64, windowMs: Uint64): Rule {
  return { kind: "rateLimit", maxEvents: uint64(maxEvents, "max_events"), windowMs: uint64(windowMs, "window_ms") };
}

/** Payloads of at most `maxPayloadBytes`. Denial code TOO_LARGE. */
export function sizeLimit(maxPayloadBytes: Uint64): Rule {
  return { kind: "sizeLimit", maxPayloadBytes: uint64(maxPayloadBytes, "max_payload_bytes") };
}

/** A CEL expression that must be true. Denial codes CEL_FALSE and CEL_ERROR. */
export function cel(expression: string): Rule {
  return { kind: "cel", expression };
}

/** A gate in force. */
export interface Gate {
  readonly name: string;
  /** The position of its registration; 0 for a gate built into the server. */
  readonly version: bigint;
  /** The scopes it judges; all when empty. */
  readonly scopes: readonly string[];
  /** The types it judges; all when empty. */
  readonly types: readonly string[];
  /** The rule; null for a built-in gate or a rule this client does not know yet. */
  readonly rule: Rule | null;
}

/** Options of `Client.registerGate`. */
export interface GateScope {
  /** The scopes whose events it judges; all when empty. */
  readonly scopes?: readonly string[];
  /** The event types it judges; all when empty. */
  readonly types?: readonly string[];
}

export function definitionToPb(name: string, rule: Rule, { scopes = [], types = [] }: GateScope): GateDefinition {
  const definition = create(GateDefinitionSchema, { name, scopes: [...scopes], types: [...types] });
  switch (rule.kind) {
    case "uniqueTag":
      definition.rule = { case: "uniqueTag", value: { $typeName: "causeway.v1.UniqueTagRule", prefix: rule.prefix } };
      break;
    case "allowedTypes":
      definition.rule = { case: "allowedTypes", value: { $typeName: "causeway.v1.AllowedTypesRule", types: [...rule.types] } };
      break;
    case "causationExists":
      definition.rule = { case: "causationExists", value: { $typeName: "causeway.v1.CausationExistsRule" } };
      break;
    case "rateLimit":
      definition.rule = {
        case: "rateLimit",
        value: { $typeName: "causeway.v1.RateLimitRule", maxEvents: rule.maxEvents, windowMs: rule.windowMs },
      };
      break;
    case "sizeLimit":
      definition.rule = {
        case: "sizeLimit",
        value: { $typeName: "causeway.v1.SizeLimitRule", maxPayloadBytes: rule.maxPayloadBytes },
      };
      break;
    case "cel":
      definition.rule = { case: "cel", value: { $typeName: "causeway.v1.CelRule", expression: rule.expression } };
      break;
    default:
      throw new TypeError(`${JSON.stringify(rule)} is not a gate rule`);
  }
  return definition;
}

export function gateFromPb(message: RegisteredGate): Gate {
  const definition = message.definition;
  return {
    name: message.name,
    version: message.version,
    scopes: [...(definition?.scopes ?? [])],
    types: [...(definition?.types ?? [])],
    rule: definition ? ruleFromPb(definition) : null,
  };
}

function ruleFromPb(definition: GateDefinition): Rule | null {
  const rule = definition.rule;
  switch (rule.case) {
    case "uniqueTag":
      return uniqueTag(rule.value.prefix);
    case "allowedTypes":
      return allowedTypes(rule.value.types);
    case "causationExists":
      return causationExists();
    case "rateLimit":
      return rateLimit(rule.value.maxEvents, rule.value.windowMs);
    case "sizeLimit":
      return sizeLimit(rule.value.maxPayloadBytes);
    case "cel":
      return cel(rule.value.expression);
    default:
      return null;
  }
}
