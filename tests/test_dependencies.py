"""pyproject.toml and environment.yml must declare the same dependencies."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import yaml

ROOT = Path(__file__).resolve().parents[1]

# conda name -> pip name
ALIASES = {"pytorch": "torch", "pytorch-cpu": "torch"}
# entries of environment.yml that are not Python dependencies of the book
NOT_DEPENDENCIES = {"python", "pip"}


def normalize(spec: str) -> str | None:
    """Bare, canonical package name of a pip/conda spec; None for pip options like ``-e .``."""
    spec = spec.strip()
    if not spec or spec.startswith("-"):
        return None
    spec = spec.split(";", 1)[0]  # environment markers
    spec = spec.split("::", 1)[-1]  # conda channel prefix
    name = re.split(r"[\s\[<>=!~^*;]", spec, maxsplit=1)[0]
    name = re.sub(r"[-_.]+", "-", name).lower()
    return ALIASES.get(name, name)


def names(specs) -> set[str]:
    out = {normalize(s) for s in specs}
    return {n for n in out if n and n not in NOT_DEPENDENCIES}


def pyproject_dependencies(path: Path = ROOT / "pyproject.toml") -> set[str]:
    project = tomllib.loads(path.read_text())["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return names(specs)


def environment_dependencies(path: Path = ROOT / "environment.yml") -> set[str]:
    env = yaml.safe_load(path.read_text())
    specs: list[str] = []
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            specs += dep.get("pip", [])
        else:
            specs.append(dep)
    return names(specs)


def drift(a: set[str], b: set[str]) -> dict[str, set[str]]:
    """Packages found in only one of the two sets (empty dict: no drift)."""
    report = {"only_in_pyproject": a - b, "only_in_environment": b - a}
    return {k: v for k, v in report.items() if v}


def test_pyproject_and_environment_agree():
    report = drift(pyproject_dependencies(), environment_dependencies())
    assert not report, f"dependency drift between pyproject.toml and environment.yml: {report}"


def test_core_packages_declared():
    deps = pyproject_dependencies()
    for pkg in ["torch", "pyomo", "highspy", "jupyter-book", "ipywidgets", "matplotlib", "papermill"]:
        assert pkg in deps


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("torch>=2.1,<2.14", "torch"),
        ("pytorch=2.1", "torch"),
        ("conda-forge::pytorch", "torch"),
        ("dask[distributed]", "dask"),
        ("Scikit_Learn >= 1.0", "scikit-learn"),
        ("jupyter-book>=1,<2", "jupyter-book"),
        ("-e .", None),
    ],
)
def test_normalize(spec, expected):
    assert normalize(spec) == expected


def test_drift_is_detected(tmp_path):
    """The check can fail: a synthetic mismatch is reported on both sides."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["torch>=2.1", "numpy", "pyomo"]\n'
        '[project.optional-dependencies]\ntest = ["pytest"]\n'
    )
    (tmp_path / "environment.yml").write_text(
        "dependencies:\n  - python=3.11\n  - pip\n  - pytorch\n  - numpy\n"
        "  - pip:\n      - pytest\n      - highspy\n"
    )
    report = drift(
        pyproject_dependencies(tmp_path / "pyproject.toml"),
        environment_dependencies(tmp_path / "environment.yml"),
    )
    assert report == {"only_in_pyproject": {"pyomo"}, "only_in_environment": {"highspy"}}
    with pytest.raises(AssertionError):
        assert not report
