"""The project's promises: README quick start, CI, native core, CUDA sources."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_readme_commands():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_start_has_exactly_the_two_commands():
    mod = load_readme_commands()
    commands = mod.quick_start_commands((ROOT / "README.md").read_text())
    assert len(commands) == 2
    demo, tests = commands
    assert demo.startswith("pip install .") and demo.endswith("airtp demo")
    assert tests.startswith('pip install ".[test]"') and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py test" in ci and 'bash -c "$test_cmd"' in ci
    # pytest's options live in pyproject, so README and CI cannot differ in them
    assert re.search(r'testpaths\s*=\s*\["tests"\]', (ROOT / "pyproject.toml").read_text())


def test_readme_parser_refuses_a_drifted_quick_start():
    mod = load_readme_commands()
    three = "## Quick start\n\n```sh\npip install .\nairtp demo\npython -m pytest\n```\n"
    assert len(mod.quick_start_commands(three)) == 3
    with pytest.raises(SystemExit):
        mod.quick_start_commands("# nothing here\n")


def test_every_kernel_family_has_a_cuda_source_listed_in_cmake():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    families = [p.stem for p in (ROOT / "csrc").glob("*.cpp") if p.stem != "bindings"]
    assert families
    for fam in families:
        assert (ROOT / "csrc" / f"{fam}.cu").exists(), f"csrc/{fam}.cu is missing"
        assert f"csrc/{fam}.cpp" in cmake and f"csrc/{fam}.cu" in cmake, f"{fam} is not built"


def test_native_core_is_the_compiled_one():
    from airtp import _core, core

    assert Path(_core.__file__).suffix in (".so", ".pyd")
    assert core.backend() in ("cpu", "cuda")
    assert _core.max_threads() >= 1
