"""The package as a user installs it: the wheel alone, in a fresh virtual environment."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("simsiam-pretrain", "simsiam-knn-eval", "simsiam-linear-eval", "simsiam-export", "simsiam-benchmark",
            "simsiam-plot", "simsiam-convert", "simsiam-finetune", "simsiam-embed")
IMPORT_EVERY_MODULE = """
import importlib, pkgutil, simsiam_keras
names = [m.name for m in pkgutil.walk_packages(simsiam_keras.__path__, "simsiam_keras.")]
for name in names:
    importlib.import_module(name)
assert simsiam_keras.__file__.startswith({prefix!r}), simsiam_keras.__file__
print(len(names), "modules")
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    # Without PYTHONDONTWRITEBYTECODE (set on these machines) the import check writes the bytecode
    # that the command's start then reads, as in a user's venv: `--help` 14 s -> 5 s of CPU.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    result = subprocess.run(args, capture_output=True, text=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            timeout=900, **kwargs)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
    return result


@pytest.mark.slow
def test_the_wheel_alone_installs_every_dependency_module_and_command(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info/ next to the sources.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "simsiam_keras", source / "simsiam_keras", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source),
        "--wheel-dir", str(tmp_path / "dist"))
    (wheel,) = (tmp_path / "dist").glob("simsiam_keras-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    # This pip installs into the new venv; no bytecode compilation of TensorFlow's thousands of files.
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile", str(wheel))

    imported = run(str(python), "-c", IMPORT_EVERY_MODULE.format(prefix=str(venv)), cwd=tmp_path)
    assert int(imported.stdout.split()[0]) >= 40, imported.stdout
    assert all((venv / "bin" / command).is_file() for command in COMMANDS)
    # Each command's module was imported above; one of them runs end to end.
    assert "usage: simsiam-pretrain" in run(str(venv / "bin" / "simsiam-pretrain"), "--help", cwd=tmp_path).stdout
