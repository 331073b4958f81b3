"""Notebook hygiene for every notebook in nbs/: the parameters cell parses completely under papermill (a comment
holding '=' silently drops a parameter), kernels are registered for JupyterLab, executed copies never land in nbs/."""
import ast, json, shutil, subprocess, sys
from pathlib import Path

import pytest

from reprod.runs import experiment_notebooks, notebook_path, notebook_parameters

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted((ROOT/'nbs').glob('*.ipynb'))


def _parameters_cell(nb: dict):
    cells = [c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
    return cells[0] if cells else None


@pytest.mark.parametrize('name', experiment_notebooks())
def test_every_parameter_is_visible_to_papermill(name):
    path = notebook_path(name)
    cell = _parameters_cell(json.loads(path.read_text()))
    assert cell is not None, f'{name} has no cell tagged "parameters"'
    assigned = [t.id for node in ast.parse(''.join(cell['source'])).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]
    assert assigned and list(notebook_parameters(path)) == assigned
    assert 'out_dir' in assigned, f'{name} must take out_dir'


@pytest.mark.parametrize('path', NBS, ids=lambda p: p.name)
def test_notebook_kernel_and_cleanliness(path):
    nb = json.loads(path.read_text())
    assert nb['metadata']['kernelspec']['name'] == 'python3', path.name
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    assert code and all(not c.get('outputs') for c in code), f'{path.name}: run nbdev_clean (outputs committed)'
    assert all(c.get('execution_count') is None for c in code), f'{path.name}: run nbdev_clean'


def test_jupyterlab_has_the_python3_kernel():
    "`jupyter lab` in this environment offers the kernel every notebook names."
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec('python3')
    assert Path(spec.argv[0]).name.startswith('python')
    exe = shutil.which('jupyter', path=str(Path(sys.executable).parent))
    assert exe, 'jupyter not installed in this environment'
    r = subprocess.run([exe, 'lab', '--version'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip()[0].isdigit(), r.stderr


@pytest.mark.parametrize('name', experiment_notebooks())
def test_experiment_notebooks_are_skipped_by_nbdev_test(name):
    "nbdev_test must skip experiment notebooks (pytest runs them through papermill into temp dirs): their frontmatter says so."
    from execnb.nbio import read_nb
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    path = notebook_path(name)
    nb = read_nb(path)
    NBProcessor(path, procs=FrontmatterProc, nb=nb).process()
    assert str(getattr(nb, 'frontmatter_', {}).get('skip_exec')).lower() == 'true', f'{name}: frontmatter lacks skip_exec: true'
