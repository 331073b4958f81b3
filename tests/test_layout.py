"""The house rules, checked: imports run one way (down the layer order below, never up), every exported module has a
place in that order, library notebooks are numbered in the same order, and no notebook or module points readers to
files outside the repository."""
import ast, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT/'reprod'

# The one statement of the order. A module may import modules of earlier layers only, and inside a layer only the
# modules listed before it in the same group; the method packages (vfpt, mept, pta) never import each other.
LAYERS = [
    ['core'], ['paper'], ['figures'],
    ['data.images', 'data.vtab', 'data.vtab_wds', 'data.fgvc'], ['data.superglue'], ['data.text'],
    ['models'], ['engine'], ['adapters'],
    {'vfpt': ['vfpt.prompts', 'vfpt.vit', 'vfpt.swin', 'vfpt', 'vfpt.analysis'], 'mept': ['mept', 'mept.pathways'],
     'pta': ['pta.logits', 'pta.pairing', 'pta.align', 'pta.fusion', 'pta.train', 'pta.pipeline']},
    ['runs'], ['sweep'], ['studies'], ['cli'],
]


def rank(mod: str):
    "(layer, group, position) of a module of the package; KeyError for a module the order does not know."
    for i, layer in enumerate(LAYERS):
        groups = layer.items() if isinstance(layer, dict) else [(None, layer)]
        for g, mods in groups:
            if mod in mods: return i, g, mods.index(mod)
    raise KeyError(mod)


def allowed(src: str, dst: str) -> bool:
    (li, gi, pi), (lj, gj, pj) = rank(src), rank(dst)
    if lj != li: return lj < li
    return gj == gi and pj < pi


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix('')
    parts = [p for p in rel.parts if p != '__init__']
    return '.'.join(parts)


def imports_of(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    "(line, imported reprod module) for every import statement in the file, also those inside functions."
    tree = ast.parse(source if source is not None else path.read_text())
    here = module_name(path).split('.')
    pkg = here if path.name == '__init__.py' else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.removeprefix('reprod.')) for a in node.names if a.name.startswith('reprod.')]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = '.'.join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == 'reprod' or node.module.startswith('reprod.')):
                mod = node.module.removeprefix('reprod').lstrip('.')
            else: continue
            # `from reprod.data import vtab` / `from . import x` import submodules by name
            names = [f'{mod}.{a.name}' if mod else a.name for a in node.names]
            subs = [n for n in names if _is_module(n)]
            out += [(node.lineno, n) for n in subs] or ([(node.lineno, mod)] if mod else [])
    return [(l, m) for l, m in out if m and m not in ('data', 'pta')]   # the bare (empty) package __init__ files


def _is_module(name: str) -> bool:
    p = PKG.joinpath(*name.split('.'))
    return p.with_suffix('.py').is_file() or (p/'__init__.py').is_file()


def violations(path: Path, source: str | None = None) -> list[str]:
    src = module_name(path)
    return [f"{path.relative_to(ROOT)}:{line}: reprod.{src} imports reprod.{dst}, which is not below it in the layer order"
            for line, dst in imports_of(path, source) if not allowed(src, dst)]


MODULES = sorted(p for p in PKG.rglob('*.py') if p.name != '_modidx.py' and module_name(p) not in ('', 'data', 'pta'))


def test_every_module_has_a_place_in_the_order():
    unknown = []
    for p in MODULES:
        try: rank(module_name(p))
        except KeyError: unknown.append(module_name(p))
    assert not unknown, f"modules missing from LAYERS in tests/test_layout.py: {unknown}"


def test_imports_point_down_the_order():
    bad = [v for p in MODULES for v in violations(p)]
    assert not bad, '\n'.join(bad)


def test_the_guard_catches_an_upward_import():
    "The check itself can fail: an engine that imports the sweep module, or MEPT that imports PTA, is refused."
    engine, mept = PKG/'engine.py', PKG/'mept'/'__init__.py'
    assert violations(engine, engine.read_text() + '\nfrom .sweep import run_sweep\n')
    assert violations(mept, mept.read_text() + '\ndef f():\n    from reprod.pta.logits import TopKStore\n')
    assert violations(PKG/'core.py', 'import reprod.models\n')
    assert not violations(PKG/'cli.py', 'from reprod.sweep import run_sweep\n')


def test_notebooks_are_numbered_in_the_same_order():
    "Reading the library notebooks in file order never meets a module before the ones it imports."
    seen = []
    for nb in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        src = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        m = re.search(r'#\|\s*default_exp\s+([\w.]+)', src)
        assert m, f'{nb.name} has no default_exp'
        seen.append((nb.name, m.group(1).removesuffix('.__init__')))
    ranks = [rank(mod) for _, mod in seen]
    flat = [(r[0], r[2]) if r[1] is None else (r[0], 0) for r in ranks]
    assert flat == sorted(flat), [n for n, _ in seen]


@pytest.mark.parametrize('path', sorted((ROOT/'nbs').glob('*.ipynb')) + MODULES + sorted((ROOT/'tests').glob('*.py'))
                         + sorted((ROOT/'benchmarks').glob('*.py')) + [ROOT/'README.md'], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pointers_outside_the_repository(path):
    "Readers of the package cannot follow references to method notes that are not in it: state the fact instead."
    text = path.read_text()
    if path.name == 'test_layout.py': return
    hits = re.findall(r'.{0,40}(?:\bspec\b\s*§|specs/|\.\./shared/specs|vfpt\.md|mept\.md|pta_llm\.md).{0,40}', text)
    assert not hits, hits[:5]


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())['cells']


@pytest.mark.parametrize('nb', sorted((ROOT/'nbs').glob('[0-9]*.ipynb')), ids=lambda p: p.name)
def test_export_cells_are_small(nb):
    "One idea per cell: no exported cell over 60 lines (classes grow with `@patch` cells, each with its test below)."
    big = [(i, len(''.join(c['source']).splitlines())) for i, c in enumerate(_cells(nb))
           if c['cell_type'] == 'code' and ''.join(c['source']).startswith('#| export') and len(''.join(c['source']).splitlines()) > 60]
    assert not big, f'{nb.name}: export cells (index, lines) over 60 lines: {big}'


@pytest.mark.parametrize('nb', [p for p in sorted((ROOT/'nbs').glob('*.ipynb')) if not p.name[0].isdigit()], ids=lambda p: p.name)
def test_experiment_notebooks_only_call_the_library(nb):
    "A parameters cell, a handful of library calls, the record: at most ~60 lines of code outside the parameters cell, no definitions."
    code = [''.join(c['source']) for c in _cells(nb) if c['cell_type'] == 'code' and 'parameters' not in c.get('metadata', {}).get('tags', [])]
    n = sum(len([l for l in s.splitlines() if l.strip()]) for s in code)
    assert n <= 60, f'{nb.name}: {n} lines of code outside the parameters cell'
    defs = [node.name for s in code for node in ast.walk(ast.parse(s)) if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert not defs, f'{nb.name} defines {defs}: library code belongs in a library notebook'
