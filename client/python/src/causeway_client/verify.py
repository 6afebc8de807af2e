"""`causeway-verify` (also `python -m causeway_client.verify`): checks a receipt offline.

The same check as `causeway verify --offline`, from the same files: the receipt JSON printed by
`causeway --output json append`, optionally the events JSON printed by `get` or `read`, and the
server's public key (64 hex digits, logged by causewayd as `signing_public_key`). Prints `valid`
or `invalid: REASON`; exits 0 when valid, 1 when not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from causeway_client.receipt import ReceiptError, verify_receipt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="causeway-verify", description=__doc__.splitlines()[0])
    parser.add_argument("receipt", type=Path, help="the receipt JSON file")
    parser.add_argument("--events", type=Path, help="the events JSON file the receipt names")
    parser.add_argument("--public-key", help="the server's Ed25519 public key, 64 hex digits")
    args = parser.parse_args(argv)
    if args.events is None and args.public_key is None:
        parser.error("give --events, --public-key or both: a check of nothing proves nothing")
    # Read here, as bytes (always taken as the text): a file that cannot be read is a usage
    # error (exit 2), while what it holds is judged by the check (exit 1 when malformed).
    try:
        receipt = args.receipt.read_bytes()
        events = None if args.events is None else args.events.read_bytes()
    except OSError as err:
        print(f"causeway-verify: {err}", file=sys.stderr)
        return 2
    try:
        verify_receipt(receipt, args.public_key, events=events)
    except ReceiptError as err:
        print(f"invalid: {err}")
        return 1
    except (OSError, ValueError) as err:
        print(f"causeway-verify: {err}", file=sys.stderr)
        return 2
    print("valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
