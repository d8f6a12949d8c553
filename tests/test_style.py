"""The code is pyflakes-clean: no unused imports or variables, no undefined names."""
import subprocess
import sys

from conftest import ROOT


def test_pyflakes_finds_nothing():
  result = subprocess.run([sys.executable, "-m", "pyflakes", "distilbert_jax", "scripts", "tests", "configs", "setup.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
