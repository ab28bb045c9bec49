"""The wheel: what it holds, and that it installs and works in a fresh virtualenv.

Building runs ``pip wheel --no-deps .``, which fetches the build backend (hatchling)
from the package index pip is configured with; without one the tests are skipped.
Installing uses ``--no-deps``: the fresh virtualenv sees this environment's packages
(livekit-agents and the rest) through a ``.pth`` file, so nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)

# what pip prints when it cannot reach a package index for the build backend
_NO_INDEX = (
    "Could not find a version that satisfies the requirement",
    "No matching distribution found",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
    "ConnectionError",
    "ReadTimeoutError",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        reasons = [
            line.strip() for line in output.splitlines() if any(h in line for h in _NO_INDEX)
        ]
        if reasons:
            pytest.skip(
                "building the wheel needs the build backend (hatchling) from a package "
                f"index, and none could be reached: {reasons[0]}"
            )
        pytest.fail(f"pip wheel failed:\n{output}")
    (built,) = out.glob("livekit_async_tools-*.whl")
    return built


def _metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]], str]:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(zf.read(meta_name).decode())
    headers: dict[str, list[str]] = {}
    for key, value in message.items():
        headers.setdefault(key, []).append(value)
    return names, headers, str(message.get_payload())


def test_the_wheel_holds_the_package_its_licence_and_typing_marker(wheel: Path) -> None:
    names, headers, _readme = _metadata(wheel)
    assert "livekit_async_tools/py.typed" in names
    assert "livekit_async_tools/testing/pytest_plugin.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "docs/", "examples/"))]
    assert headers["License-Expression"] == ["Apache-2.0"]
    assert not [c for c in headers["Classifier"] if c.startswith("License ::")]
    assert headers["Requires-Python"] == [">=3.10"]
    urls = dict(u.split(", ", 1) for u in headers["Project-URL"])
    assert set(urls) >= {"Homepage", "Source", "Issues", "Documentation"}


def test_the_readme_on_the_index_has_only_absolute_links(wheel: Path) -> None:
    """A package index shows the README without the repository: relative links break."""
    _names, _headers, readme = _metadata(wheel)
    assert readme.startswith("# livekit-async-tools")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "#"))]
    assert relative == []
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert images
    assert all(i.startswith("https://raw.githubusercontent.com/") for i in images)


_CHECK = """
import importlib.metadata as md, json, pathlib, sys
import livekit_async_tools
from livekit_async_tools import function_tool, AsyncRunContext
package = pathlib.Path(livekit_async_tools.__file__).parent
dist = md.distribution("livekit-async-tools")
(plugin,) = [ep for ep in md.entry_points(group="pytest11") if ep.name == "livekit_async_tools"]
module = plugin.load()
print(json.dumps({
    "package": str(package),
    "py_typed": (package / "py.typed").is_file(),
    "dist": str(dist.locate_file("")),
    "version": dist.version,
    "plugin": plugin.value,
    "plugin_file": module.__file__,
    "fixtures": sorted(n for n in ("scripted_llm", "async_tools_session") if hasattr(module, n)),
}))
"""


def test_the_wheel_installs_and_works_in_a_fresh_virtualenv(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies come from this environment, after the wheel's own files
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib) / "zz_test_dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    proc = subprocess.run(
        [*install, "--no-index", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = subprocess.run(
        [str(python), "-I", "-c", _CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert Path(found["package"]).is_relative_to(env)
    assert Path(found["dist"]).is_relative_to(env)
    assert Path(found["plugin_file"]).is_relative_to(env)
    assert found["py_typed"]
    assert VERSION is not None
    assert found["version"] == VERSION.group(1)
    assert found["plugin"] == "livekit_async_tools.testing.pytest_plugin"
    assert found["fixtures"] == ["async_tools_session", "scripted_llm"]
