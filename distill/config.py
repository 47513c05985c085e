"""Resolved configurations written beside every output, so any result can be rerun.

A stage's settings are a dataclass; `write_config` stores it as JSON next to the checkpoint or
image file it produced, together with the versions and the command line that made it.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["config_dict", "write_config", "read_config", "config_path_for"]


def config_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (or mapping) as a JSON-ready dict; paths become strings."""
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return json.loads(json.dumps(d, default=str))


def config_path_for(output: str | Path) -> Path:
    """`out/convnet.pt` -> `out/convnet.config.json`; a folder -> `folder/config.json`."""
    output = Path(output)
    if output.is_dir():
        return output / "config.json"
    return output.with_name(output.stem + ".config.json")


def write_config(output: str | Path, stage: str, cfg: Any, **extra: Any) -> Path:
    """Write the resolved config of `stage` beside `output`; returns the JSON path."""
    import torch

    record = {
        "stage": stage,
        "config": config_dict(cfg),
        **json.loads(json.dumps(extra, default=str)),
        "command": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    path = config_path_for(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """The record `write_config` wrote (give it the output or the JSON path)."""
    path = Path(path)
    if path.suffix != ".json":
        path = config_path_for(path)
    return json.loads(path.read_text())
