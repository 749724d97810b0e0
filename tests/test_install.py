"""What a user installs: one version everywhere, the typing and example files, a small module.

CI runs these against the installed wheel (PIPEMODE_TEST_INSTALLED=1, see .ci/test-wheel).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pipemode
import pipemode._native
import pytest

PACKAGE = Path(pipemode.__file__).parent
CARGO_TOML = Path(__file__).parents[1] / "Cargo.toml"
TESTING_THE_WHEEL = os.environ.get("PIPEMODE_TEST_INSTALLED") == "1"


def workspace_version() -> str:
    """`[workspace.package] version` of the clone's Cargo.toml, the one version pipemode has."""
    section = CARGO_TOML.read_text().split("[workspace.package]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^version = "([^"]+)"$', section, re.MULTILINE)
    assert found, f"no version in [workspace.package] of {CARGO_TOML}"
    return found.group(1)


def test_one_version_from_the_cargo_workspace() -> None:
    version = workspace_version()
    assert pipemode.__version__ == version
    assert importlib.metadata.version("pipemode") == version


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "pipemode"], [str(Path(sys.executable).parent / "pipemode")]],
    ids=["module", "script"],
)
def test_the_command_says_the_version(command: list[str]) -> None:
    shown = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.split() == ["pipemode", workspace_version()]


@pytest.mark.parametrize(
    "name",
    [
        "py.typed",
        "_native.pyi",
        "examples/tutorial.py",
        "examples/tutorial_dense.py",
        "examples/tutorial_torch.py",
        "examples/image_classification.py",
    ],
)
def test_the_package_carries_its_typing_and_examples(name: str) -> None:
    assert (PACKAGE / name).is_file()


def elf_section_names(path: Path) -> set[str]:
    """The section names of a 64-bit little-endian ELF file (a Linux x86_64 extension module)."""
    data = path.read_bytes()
    assert data[:6] == b"\x7fELF\x02\x01", f"{path} is not a 64-bit little-endian ELF file"
    section_table, entry_size, count, names_index = struct.unpack_from("<Q10xHHH", data, 0x28)
    headers = [
        struct.unpack_from("<I20xQQ", data, section_table + i * entry_size) for i in range(count)
    ]
    names_at = headers[names_index][1]
    return {
        data[names_at + name : data.index(b"\0", names_at + name)].decode()
        for name, _offset, _size in headers
    }


@pytest.mark.skipif(not TESTING_THE_WHEEL, reason="a development build keeps its symbols")
def test_the_wheels_native_module_is_stripped() -> None:
    module = Path(pipemode._native.__file__)
    sections = elf_section_names(module)
    assert ".text" in sections and ".dynsym" in sections, sections
    assert ".symtab" not in sections and ".debug_info" not in sections, sections
    assert module.stat().st_size < 4_000_000
