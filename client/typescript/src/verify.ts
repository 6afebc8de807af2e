#!/usr/bin/env node
/**
 * `causeway-verify RECEIPT.json [--events EVENTS.json] [--public-key HEX]`: checks a receipt
 * offline, the same check as `causeway verify --offline` and the Python client's
 * `causeway-verify`, from the same files (the receipt `causeway --output json append` prints,
 * the events `get` or `read` print, the key causewayd logs as `signing_public_key`). Prints
 * `valid` or `invalid: REASON`; exits 0 when valid, 1 when not, 2 on a usage error.
 */

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ReceiptError, verifyReceipt } from "./receipt.js";

const USAGE = "usage: causeway-verify RECEIPT.json [--events EVENTS.json] [--public-key HEX]";
/** What `--help` prints, as the Python client's `causeway-verify --help` describes the same. */
const HELP = `${USAGE}

Checks a receipt offline, the same check as \`causeway verify --offline\`.

arguments:
  RECEIPT.json        the receipt JSON file (\`causeway --output json append\` prints it)
  --events FILE       the events JSON file the receipt names (\`get\` or \`read\` print it)
  --public-key HEX    the server's Ed25519 public key, 64 hex digits (signing_public_key)
  -h, --help          this text

Give --events, --public-key or both. Prints \`valid\` (exit 0) or \`invalid: REASON\` (exit 1);
exit 2 on a usage error or an unreadable file.`;

function main(argv: string[]): number {
  let receiptPath: string;
  let eventsPath: string | undefined;
  let publicKey: string | undefined;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: {
        events: { type: "string" },
        "public-key": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new TypeError("give one receipt file");
    }
    receiptPath = positionals[0]!;
    eventsPath = values.events;
    publicKey = values["public-key"];
    if (eventsPath === undefined && publicKey === undefined) {
      throw new TypeError("give --events, --public-key or both: a check of nothing proves nothing");
    }
  } catch (err) {
    console.error(`causeway-verify: ${(err as Error).message}`);
    console.error(USAGE);
    return 2;
  }
  try {
    verifyReceipt(readFileSync(receiptPath, "utf8"), {
      ...(eventsPath === undefined ? {} : { events: readFileSync(eventsPath, "utf8") }),
      ...(publicKey === undefined ? {} : { publicKey }),
    });
  } catch (err) {
    if (err instanceof ReceiptError) {
      console.log(`invalid: ${err.message}`);
      return 1;
    }
    console.error(`causeway-verify: ${(err as Error).message}`);
    return 2;
  }
  console.log("valid");
  return 0;
}

process.exitCode = main(process.argv.slice(2));
