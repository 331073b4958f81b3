"""Install checks: dependency lists agree, the wheel holds the runtime package only, and it imports on its own."""
import configparser, json, re, subprocess, sys, venv, zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _names(reqs):
    return {re.split(r'[<>=!~\[ ]', r, 1)[0].lower().replace('_', '-') for r in reqs if r and not r.startswith('-')}


def _settings():
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    d = cfg['DEFAULT']
    return d['requirements'].split(), d['dev_requirements'].split()


def test_environment_yml_lists_settings_requirements():
    req, dev = _settings()
    env = yaml.safe_load((ROOT/'environment.yml').read_text())
    pip = next(d['pip'] for d in env['dependencies'] if isinstance(d, dict) and 'pip' in d)
    assert _names(req) | _names(dev) <= _names(pip), sorted((_names(req) | _names(dev)) - _names(pip))
    # and the pins are the same strings
    assert set(req + dev) <= set(pip), sorted(set(req + dev) - set(pip))


def test_runtime_requirements_cover_imports():
    "Every third-party module imported by reprod/ is a runtime requirement (not only a dev one)."
    req, dev = _settings()
    alias = {'PIL': 'pillow', 'sklearn': 'scikit-learn', 'ot': 'pot', 'yaml': 'pyyaml'}
    provided_by_deps = {'fastcore', 'huggingface-hub', 'pyyaml', 'nbformat', 'ipython', 'tokenizers'}
    stdlib = set(sys.stdlib_module_names)
    mods = set()
    for f in (ROOT/'reprod').rglob('*.py'):
        for m in re.findall(r'^\s*(?:from|import)\s+([A-Za-z_][\w]*)', f.read_text(), re.M):
            mods.add(m)
    third = {alias.get(m, m).lower().replace('_', '-') for m in mods if m not in stdlib and m not in ('reprod', '__future__')}
    missing = third - _names(req) - provided_by_deps
    assert not missing, f"imported by reprod but not in settings.ini requirements: {sorted(missing)}"
    assert not _names(dev) & {'torch', 'timm'}, "dev extras should not repeat runtime deps"


def test_wheel_builds_and_imports_in_clean_env(tmp_path):
    "Build the wheel; its metadata names runtime deps only; installed alone into a fresh venv it imports."
    out = subprocess.run([sys.executable, '-m', 'build', '--wheel', '--no-isolation', '--outdir', str(tmp_path/'dist'), str(ROOT)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    whl = next((tmp_path/'dist').glob('reprod-*.whl'))
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith('METADATA'))).decode()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT/'reprod').rglob('*.py')}
    assert modules - set(names) == set(), f"modules missing from the wheel: {sorted(modules - set(names))}"   # subpackages included
    assert not any(n.startswith(('nbs/', 'tests/')) for n in names)
    runtime = [l for l in meta.splitlines() if l.startswith('Requires-Dist:') and 'extra ==' not in l]
    assert any('torch' in l for l in runtime) and not any('nbdev' in l for l in runtime)
    assert any('nbdev' in l and 'extra == "dev"' in l for l in meta.splitlines())
    # a fresh venv: the wheel installed without the checkout on the path; third-party deps borrowed read-only
    env = tmp_path/'venv'; venv.create(env, with_pip=True)
    py = env/'bin'/'python'
    site = subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith('site-packages')]
    Path(site, '_deps.pth').write_text('\n'.join(deps) + '\n')
    r = subprocess.run([str(py), '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', str(whl)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    code = "import reprod, reprod.vfpt, reprod.vfpt.swin, reprod.engine, reprod.data.vtab_wds; print(reprod.__file__, reprod.__version__)"
    r = subprocess.run([str(py), '-I', '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert str(env) in r.stdout, r.stdout      # imported from the wheel, not from the checkout
    _run_installed(env, whl, tmp_path)


def _run_installed(env: Path, whl: Path, tmp_path: Path):
    "The installed package runs its shipped notebooks from an unrelated folder: `reprod notebooks`, `reprod run`, papermill."
    py, bindir = env/'bin'/'python', env/'bin'
    with zipfile.ZipFile(whl) as z:             # every experiment notebook ships as package data
        shipped = {Path(n).stem for n in z.namelist() if n.startswith('reprod/notebooks/') and n.endswith('.ipynb')}
    assert {'vfpt_vtab', 'mept_superglue', 'pta_fusion'} <= shipped, shipped
    assert not any(n.startswith('reprod/notebooks/0') for n in z.namelist())      # library notebooks stay out
    nb_dir = Path(subprocess.run([str(py), '-I', '-c', 'from reprod.runs import notebooks_dir; print(notebooks_dir())'],
                                 capture_output=True, text=True, check=True).stdout.strip())
    assert nb_dir.is_relative_to(env) and nb_dir.name == 'notebooks', nb_dir
    work = tmp_path/'elsewhere'; work.mkdir()     # an unrelated folder: no nbs/, no checkout on any path
    env_vars = {'PATH': f"{bindir}:/usr/bin:/bin", 'HOME': str(tmp_path), 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1',
                'MPLBACKEND': 'Agg'}
    # the kernel papermill starts must be this venv's interpreter (so it imports the installed reprod)
    k = subprocess.run([str(py), '-c', "from jupyter_client.kernelspec import KernelSpecManager as K; print(K().get_kernel_spec('python3').argv[0])"],
                       capture_output=True, text=True, cwd=work, env=env_vars)
    assert k.returncode == 0 and Path(k.stdout.strip()).parent == bindir, k.stdout + k.stderr[-2000:]
    before = {p: p.stat().st_mtime_ns for p in nb_dir.iterdir()}
    r = subprocess.run([str(bindir/'reprod'), 'notebooks'], capture_output=True, text=True, cwd=work, env=env_vars)
    assert r.returncode == 0 and {'vfpt_vtab', 'mept_superglue', 'pta_fusion'} <= set(r.stdout.split()), r.stdout + r.stderr[-2000:]
    tiny = ['epochs=1', 'image_size=32', 'batch_size=64', 'max_eval=64', 'save_adapter=False']
    # `reprod run` and papermill itself on the installed notebook, side by side (each is mostly kernel start-up), each with a
    # cold cache of its own, so the image-decoding bars run
    pm_args = [a for t in tiny for a in ('-p', *t.split('='))]
    procs = {'run': subprocess.Popen([str(bindir/'reprod'), 'run', 'vfpt_vtab', '--log-output', f'out_dir={work/"run"}', *tiny],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env={**env_vars, 'REPROD_CACHE': str(tmp_path/'cache_run')}),
             'pm': subprocess.Popen([str(py), '-m', 'papermill', str(nb_dir/'vfpt_vtab.ipynb'), str(work/'pm.ipynb'), '-p', 'out_dir', str(work/'pm'), *pm_args],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env={**env_vars, 'REPROD_CACHE': str(tmp_path/'cache_pm')})}
    outs = {k: p.communicate(timeout=300) for k, p in procs.items()}
    for k, p in procs.items(): assert p.returncode == 0, (k, outs[k][0][-2000:], outs[k][1][-3000:])
    assert (work/'run'/'result.json').is_file() and (work/'run'/'notebook.ipynb').is_file() and (work/'pm'/'result.json').is_file()
    assert 'epoch 1/1' in outs['run'][0], outs['run'][0][-2000:]                  # --log-output after the notebook name streams it
    assert not (work/'nbs').exists() and not (work/'_runs').exists()               # everything went to out_dir
    assert {p: p.stat().st_mtime_ns for p in nb_dir.iterdir()} == before         # the shipped notebooks are only read
    # executed notebooks stay small: the training loop logs one line per epoch, other bars draw at most a few times
    nb = json.loads((work/'run'/'notebook.ipynb').read_text())
    streams = [''.join(o['text']) for c in nb['cells'] for o in c.get('outputs', []) if o['output_type'] == 'stream']
    redraws = sum(t.count('\r') for t in streams)
    assert any('decode' in t for t in streams), streams                            # the cold cache did decode
    assert redraws <= 12, (redraws, streams[:20])
