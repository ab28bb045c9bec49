"""Loading an example script as a module, and checking that its CLI starts."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_example(
    monkeypatch: pytest.MonkeyPatch, path: Path, env: str, time_scale: float
) -> ModuleType:
    """A fresh copy of the example at ``path``, built with ``env`` set to ``time_scale``."""
    monkeypatch.setenv(env, str(time_scale))
    spec = importlib.util.spec_from_file_location(f"{path.stem}_e2e", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_cli_starts(path: Path) -> None:
    """The plugins register at import, on the main thread: the CLI starts."""
    out = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "console" in out.stdout
