/**
 * What the tests share: the live server, clients, unique names, and a way to catch a typed error.
 *
 * The tests drive a running causewayd at $CAUSEWAY_SERVER (host:port); receipt signatures are
 * checked under $CAUSEWAY_PUBLIC_KEY (64 hex digits, the `signing_public_key` causewayd logs when
 * started with --signing-key). Every name a test writes is unique per run and every gate a test
 * registers is removed, so the suite passes again against the same server.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Client } from "../src/index.js";

/** `prefix` with a random suffix, unique per call (and so per run). */
export function unique(prefix: string): string {
  return `${prefix}-${randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

/** The server's address; a missing variable fails the test rather than skipping it. */
export function serverAddress(): string {
  const address = process.env["CAUSEWAY_SERVER"];
  assert.ok(address, "set CAUSEWAY_SERVER to a running causewayd's host:port");
  return address;
}

/** The server's public key; a missing variable fails the test rather than skipping it. */
export function publicKey(): string {
  const key = process.env["CAUSEWAY_PUBLIC_KEY"];
  assert.ok(key, "set CAUSEWAY_PUBLIC_KEY to the server's signing_public_key (start causewayd with --signing-key)");
  return key;
}

/** A client of the live server. */
export function connect(): Client {
  return new Client(serverAddress());
}

/** A scope of the calling test's own, so its gates and reads see no other test's events. */
export function newScope(): string {
  return unique("ts");
}

/** The error `promise` rejects with, asserted to be a `type`. */
export async function rejection<T extends Error>(
  promise: Promise<unknown>,
  type: abstract new (...args: never[]) => T,
): Promise<T> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof type, `expected a ${type.name}, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected a ${type.name}, but the call succeeded`);
}

/** The error `run` throws, asserted to be a `type`. */
export function thrown<T extends Error>(run: () => unknown, type: abstract new (...args: never[]) => T): T {
  try {
    run();
  } catch (err) {
    assert.ok(err instanceof type, `expected a ${type.name}, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected a ${type.name}, but nothing was thrown`);
}
