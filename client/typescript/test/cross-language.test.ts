/**
 * The cross-language receipt check, TypeScript's share: a receipt printed by
 * `causeway --output json append` (file in $CAUSEWAY_RECEIPT), with the events it names as
 * `causeway --output json get` prints them ($CAUSEWAY_RECEIPT_EVENTS) and the server's public key
 * ($CAUSEWAY_PUBLIC_KEY), verifies offline here, as it does in the Rust and Python clients;
 * tampered copies are refused, and so is the same file through `causeway-verify`. These tests
 * skip only when the variables are unset (run by hand); .ci/run sets them.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { ReceiptError, verifyReceipt } from "../src/index.js";
import { thrown } from "./support.js";

const RECEIPT = process.env["CAUSEWAY_RECEIPT"];
const EVENTS = process.env["CAUSEWAY_RECEIPT_EVENTS"];
const PUBLIC_KEY = process.env["CAUSEWAY_PUBLIC_KEY"];
const skip = RECEIPT && EVENTS && PUBLIC_KEY ? false : "CAUSEWAY_RECEIPT, CAUSEWAY_RECEIPT_EVENTS and CAUSEWAY_PUBLIC_KEY are not all set: .ci/run sets them to files the CLI wrote";
/** The compiled `causeway-verify` command beside this test. */
const VERIFY_COMMAND = fileURLToPath(new URL("../src/verify.js", import.meta.url));

function flipHex(text: string): string {
  return (parseInt(text[0]!, 16) ^ 1).toString(16) + text.slice(1);
}

function runVerify(receiptPath: string): { status: number | null; stdout: string } {
  const result = spawnSync(process.execPath, [VERIFY_COMMAND, receiptPath, "--events", EVENTS!, "--public-key", PUBLIC_KEY!], {
    encoding: "utf8",
  });
  return { status: result.status, stdout: result.stdout };
}

test("the verify command prints its help and refuses a wrong call with its usage", () => {
  for (const flag of ["--help", "-h"]) {
    const help = spawnSync(process.execPath, [VERIFY_COMMAND, flag], { encoding: "utf8" });
    assert.equal(help.status, 0, help.stderr);
    assert.ok(help.stdout.startsWith("usage: causeway-verify RECEIPT.json"), help.stdout);
    assert.match(help.stdout, /--public-key HEX/);
  }
  const wrong = spawnSync(process.execPath, [VERIFY_COMMAND, "--bogus"], { encoding: "utf8" });
  assert.equal(wrong.status, 2);
  assert.match(wrong.stderr, /^causeway-verify: .*bogus/);
  assert.match(wrong.stderr, /usage: causeway-verify RECEIPT\.json/);
});

test("the CLI receipt verifies", { skip }, () => {
  const receipt = verifyReceipt(readFileSync(RECEIPT!, "utf8"), { publicKey: PUBLIC_KEY!, events: readFileSync(EVENTS!, "utf8") });
  assert.ok(receipt.signature.length > 0 && receipt.events.length > 0);
});

test("the verify command accepts the CLI receipt", { skip }, () => {
  assert.deepEqual(runVerify(RECEIPT!), { status: 0, stdout: "valid\n" });
});

for (const field of ["hash", "position", "digest", "signature"] as const) {
  test(`a tampered CLI receipt is refused: ${field}`, { skip }, () => {
    const tampered = JSON.parse(readFileSync(RECEIPT!, "utf8"));
    if (field === "hash" || field === "position") {
      const event = tampered.events[0];
      event[field] = field === "position" ? event[field] + 1 : flipHex(event[field]);
    } else {
      tampered[field] = flipHex(tampered[field]);
    }
    const text = JSON.stringify(tampered);
    thrown(() => verifyReceipt(text, { publicKey: PUBLIC_KEY! }), ReceiptError);
    thrown(() => verifyReceipt(text, { publicKey: PUBLIC_KEY!, events: readFileSync(EVENTS!, "utf8") }), ReceiptError);
    const dir = mkdtempSync(join(tmpdir(), "causeway-receipt-"));
    try {
      const path = join(dir, "tampered.json");
      writeFileSync(path, text);
      const verdict = runVerify(path);
      assert.equal(verdict.status, 1, verdict.stdout);
      assert.ok(verdict.stdout.startsWith("invalid:"), verdict.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
