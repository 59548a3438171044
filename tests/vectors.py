"""The shared protocol test vectors (tests/vectors/protocol.json): the exact bytes of each message kind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from support import ROOT

PATH = ROOT / "tests" / "vectors" / "protocol.json"


@dataclass(frozen=True)
class Vector:
    name: str
    sender: str  # "engine", "worker" or "both"
    message: list  # with bin as bytes
    frame: bytes


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


@cache
def vectors() -> dict[str, Vector]:
    data = json.loads(PATH.read_text())
    return {v["name"]: Vector(v["name"], v["from"], _from_json(v["message"]), bytes.fromhex(v["hex"]))
            for v in data["vectors"]}


def frame(name: str) -> bytes:
    return vectors()[name].frame
