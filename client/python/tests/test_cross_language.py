"""The cross-language receipt check, Python's share: a receipt printed by
`causeway --output json append` (file in $CAUSEWAY_RECEIPT), with the events it names as
`causeway --output json get` prints them ($CAUSEWAY_RECEIPT_EVENTS) and the server's public key
($CAUSEWAY_PUBLIC_KEY), verifies offline here, as it does in the Rust and TypeScript clients;
tampered copies of the file are refused, and so is the same file through `causeway-verify`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from causeway_client import ReceiptError, verify_receipt


def env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set: .ci/run sets it to a file the CLI wrote")
    return Path(value)


@pytest.fixture
def receipt_json() -> dict[str, Any]:
    return json.loads(env_path("CAUSEWAY_RECEIPT").read_text())


@pytest.fixture
def events_path() -> Path:
    return env_path("CAUSEWAY_RECEIPT_EVENTS")


def flip_hex(text: str) -> str:
    return f"{int(text[0], 16) ^ 1:x}{text[1:]}"


def test_the_cli_receipt_verifies(
    receipt_json: dict[str, Any], events_path: Path, public_key: str
) -> None:
    receipt = verify_receipt(Path(os.environ["CAUSEWAY_RECEIPT"]), public_key, events=events_path)
    assert receipt.signature and receipt.events


@pytest.mark.parametrize("field", ["hash", "position", "digest", "signature"])
def test_a_tampered_cli_receipt_is_refused(
    receipt_json: dict[str, Any], events_path: Path, public_key: str, field: str, tmp_path: Path
) -> None:
    tampered = json.loads(json.dumps(receipt_json))
    if field in ("hash", "position"):
        event = tampered["events"][0]
        event[field] = event[field] + 1 if field == "position" else flip_hex(event[field])
    else:
        tampered[field] = flip_hex(tampered[field])
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(tampered))
    with pytest.raises(ReceiptError):
        verify_receipt(path, public_key)
    with pytest.raises(ReceiptError):
        verify_receipt(path, public_key, events=events_path)
    verdict = subprocess.run(
        [sys.executable, "-m", "causeway_client.verify", str(path),
         "--events", str(events_path), "--public-key", public_key],
        capture_output=True, text=True, check=False,
    )
    assert verdict.returncode == 1 and verdict.stdout.startswith("invalid:"), verdict


def test_the_verify_command_accepts_the_cli_receipt(events_path: Path, public_key: str) -> None:
    receipt_path = env_path("CAUSEWAY_RECEIPT")
    verdict = subprocess.run(
        [sys.executable, "-m", "causeway_client.verify", str(receipt_path),
         "--events", str(events_path), "--public-key", public_key],
        capture_output=True, text=True, check=False,
    )
    assert (verdict.returncode, verdict.stdout) == (0, "valid\n"), verdict
