"""JupyterLab for real: `jupyter lab` on a free loopback port with a token, driven by headless Chromium through
selenium. Copies of the VFPT experiment notebook and of a library notebook (in a temp project, so nothing is written
into nbs/) are run with the UI's Run → Run All Cells; then every code cell must show an execution count, no output
may be an error, and the experiment's last cell must show its `wrote .../result.json` line. A screenshot of each run
lands in the test's temp dir. Skips where Chromium, chromedriver or selenium is missing; under CI=true (where .ci/run
installs them) their absence is a failure."""
import importlib.util, json, os, re, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

from conftest import IN_CI, ROOT

CHROMIUM = next((p for p in map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome')) if p), None)
CHROMEDRIVER = shutil.which('chromedriver')
MISSING = [what for what, ok in [('chromium (Debian package `chromium`)', CHROMIUM),
                                 ('chromedriver (Debian package `chromium-driver`)', CHROMEDRIVER),
                                 ('selenium (pip install selenium)', importlib.util.find_spec('selenium'))] if not ok]
pytestmark = [pytest.mark.skipif(bool(MISSING) and not IN_CI, reason=f"JupyterLab browser test needs {', '.join(MISSING)}"),
              pytest.mark.timeout(600)]

VENV_BIN = Path(sys.executable).parent
# the experiment's cheap offline smoke run, made cheaper still (one epoch, small images, a subset for evaluation)
SMOKE = dict(epochs=1, image_size=64, max_eval=64)
RUN_TIMEOUT = 300      # seconds for one Run All; measured 10-50 s per notebook on 2 heavily shared cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1); return s.connect_ex(('127.0.0.1', port)) == 0


class Lab:
    "A running `jupyter lab` (root: a temp copy of the project's nbs/) and a headless Chromium logged into it."
    def __init__(self, tmp: Path):
        self.tmp, self.proj = tmp, tmp/'proj'
        self.nbs, self.out_dir = self.proj/'nbs', tmp/'run'
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.base = f'http://127.0.0.1:{self.port}'
        self.proc = self.driver = None
        self.log = tmp/'jupyter.log'

    def api(self, path: str, method: str = 'GET'):
        req = urllib.request.Request(self.base + path, method=method, headers={'Authorization': f'token {self.token}'})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors='replace')[-n:] if self.log.exists() else ''

    def copy_notebooks(self):
        "The two notebooks beside a copy of settings.ini (library notebooks end in nbdev_export(), which needs it)."
        import nbformat
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook
        self.nbs.mkdir(parents=True)
        shutil.copy(ROOT/'settings.ini', self.proj/'settings.ini')
        shutil.copy(ROOT/'nbs'/'00_core.ipynb', self.nbs/'00_core.ipynb')
        # papermill's own injection: a cell after `parameters`, just as `reprod run` does it
        nb = parameterize_notebook(load_notebook_node(str(ROOT/'nbs'/'vfpt_vtab.ipynb')), {**SMOKE, 'out_dir': str(self.out_dir)})
        nbformat.write(nb, self.nbs/'vfpt_vtab.ipynb')
        # a notebook that fails, so the error detection is seen to work
        bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in
                                              ("print('fine')", "raise ValueError('boom from the test')", "print('never')")])
        bad.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
        nbformat.write(bad, self.nbs/'broken.ipynb')

    def start_server(self):
        jupyter = shutil.which('jupyter', path=str(VENV_BIN))
        assert jupyter, f'jupyter not installed in {VENV_BIN}'
        lab = self.tmp/'lab'
        # JupyterLab user settings: no news/update toast (it would ask for the internet and cover the screenshot)
        (lab/'settings'/'@jupyterlab'/'apputils-extension').mkdir(parents=True)
        (lab/'settings'/'@jupyterlab'/'apputils-extension'/'notification.jupyterlab-settings').write_text(
            json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
        env = {**os.environ, 'PATH': f'{VENV_BIN}{os.pathsep}{os.environ.get("PATH", "")}',   # kernel.json runs `python`
               'HF_HUB_OFFLINE': '1', 'REPROD_CACHE': str(self.tmp/'cache'),
               'JUPYTER_CONFIG_DIR': str(lab/'config'), 'JUPYTER_RUNTIME_DIR': str(lab/'runtime'),
               'JUPYTER_DATA_DIR': str(lab/'data'),      # kernels still come from the venv (sys.prefix/share/jupyter)
               'JUPYTERLAB_SETTINGS_DIR': str(lab/'settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(lab/'workspaces'),
               'IPYTHONDIR': str(lab/'ipython')}
        env.pop('REPROD_PROGRESS', None)     # a reader's JupyterLab: the default progress bars (run_notebook sets 'log')
        cmd = [jupyter, 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={self.port}', '--ServerApp.port_retries=0',
               f'--IdentityProvider.token={self.token}', f'--ServerApp.root_dir={self.nbs}']
        if os.geteuid() == 0: cmd.append('--allow-root')        # CI containers run as root
        with open(self.log, 'wb') as log:
            self.proc = subprocess.Popen(cmd, cwd=self.nbs, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f'jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}')
            try:
                self.api('/api/status'); return
            except OSError:
                if time.monotonic() > deadline: raise RuntimeError(f'jupyter lab did not answer within 120 s:\n{self.log_tail()}')
                time.sleep(0.5)

    def start_browser(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1400,1000',
                  f'--user-data-dir={self.tmp/"chrome"}'):
            opts.add_argument(a)
        # both paths given, so selenium-manager (which would go to the internet) is not used
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(self.tmp/'chromedriver.log')), options=opts)
        # JupyterLab loads once (?reset: a fresh workspace); notebooks are then opened from its file browser
        self.driver.get(f'{self.base}/lab?reset&token={self.token}')
        _wait('JupyterLab file browser', lambda: self.driver.find_elements(By.CSS_SELECTOR, '.jp-DirListing-item'), self, 120)

    def close(self):
        "Quit the browser, shut the server and its kernels down (REST, then signals); complain if anything survives."
        import psutil
        if self.driver is not None:
            try: self.driver.quit()
            except Exception: pass
        if self.proc is None: return
        try: procs = [p := psutil.Process(self.proc.pid), *p.children(recursive=True)]   # the server and its kernels
        except psutil.NoSuchProcess: procs = []
        try: self.api('/api/shutdown', 'POST')
        except OSError: pass
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            try: p.kill()
            except psutil.NoSuchProcess: pass
        psutil.wait_procs(alive, timeout=10)
        assert not alive, f'jupyter lab or a kernel ignored /api/shutdown and was killed: {alive}\n{self.log_tail()}'
        assert not _port_open(self.port), f'port {self.port} still open after shutdown'


@pytest.fixture(scope='module')
def lab(tmp_path_factory, request):
    if MISSING: pytest.fail(f"JupyterLab browser test needs {', '.join(MISSING)} (required when CI=true; .ci/run installs them)")
    lab = Lab(tmp_path_factory.mktemp('jupyterlab'))
    request.addfinalizer(lab.close)      # registered before anything starts: the server goes down even on failure
    lab.copy_notebooks()
    lab.start_server()
    lab.start_browser()
    return lab


# The state of the notebook in view, read from the DOM: its tab, the kernel status its toolbar shows, each code cell's prompt
# and its outputs (mime type the output area rendered, text as shown).
_STATE_JS = """
const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
if (!panel) return null;
const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')];
return {tab: document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel')?.textContent ?? null,
        status: panel.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status ?? null,
        prompts: cells.map(c => (c.querySelector('.jp-InputArea-prompt')?.textContent ?? '').trim()),
        outputs: cells.map(c => [...c.querySelectorAll('.jp-OutputArea-output')].map(
            o => ({mime: o.dataset.mimeType ?? '', text: o.innerText})))};
"""
_EXECUTED = re.compile(r'^\[\d+\]:$')


def _errors(state) -> list[str]:
    "Error outputs as a reader sees them: the error mime type, or stderr that holds a traceback."
    return [o['text'] for cell in state['outputs'] for o in cell
            if o['mime'] == 'application/vnd.jupyter.error'
            or (o['mime'] == 'application/vnd.jupyter.stderr' and re.search(r'Traceback|^\w+(Error|Exception): ', o['text'], re.M))]


def _kernel_state(lab: Lab, name: str) -> str | None:
    sessions = [s for s in lab.api('/api/sessions') if s['path'] == name]
    return sessions[0]['kernel']['execution_state'] if sessions else None


def _wait(what: str, cond, lab: Lab, timeout: float):
    deadline = time.monotonic() + timeout
    while not (res := cond()):
        if time.monotonic() > deadline: raise TimeoutError(f'{what} not within {timeout} s\n{lab.log_tail()}')
        time.sleep(0.5)
    return res


def run_all(lab: Lab, name: str, shot: str) -> dict:
    "Open `name` from the file browser, Run → Run All Cells, wait until the kernel is idle and no cell is queued; screenshot."
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    d = lab.driver
    xpath = ('//li[contains(@class,"jp-DirListing-item")]'
             f'[.//span[contains(@class,"jp-DirListing-itemText")][normalize-space(.)="{name}"]]')
    laid_out = lambda: [e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed() and e.size['height'] > 0]
    ActionChains(d).double_click(_wait(f'{name} in the file browser', laid_out, lab, 60)[0]).perform()
    state = lambda: (s := d.execute_script(_STATE_JS)) and s['tab'] == name and s
    # the UI has rendered every code cell and shows the kernel started and idle (toolbar indicator); the server agrees
    n_code = sum(c['cell_type'] == 'code' for c in json.loads((lab.nbs/name).read_text())['cells'])
    _wait(f'{name}: all {n_code} code cells shown and the kernel idle', lambda: (s := state()) and s['status'] == 'idle'
          and len(s['prompts']) == n_code and _kernel_state(lab, name) == 'idle', lab, 120)
    menu = d.find_element(By.XPATH, '//li[contains(@class,"lm-MenuBar-item")][normalize-space(.)="Run"]')
    menu.click()
    run = _wait('Run menu', lambda: d.find_elements(By.CSS_SELECTOR, 'li.lm-Menu-item[data-command="runmenu:run-all"]'), lab, 10)[0]
    assert run.text.strip() == 'Run All Cells', run.text
    run.click()

    def finished():
        s = state()
        done = s and s['status'] == 'idle' and not any(p == '[*]:' for p in s['prompts']) and (
            all(_EXECUTED.match(p) for p in s['prompts']) or _errors(s))
        return s if done and _kernel_state(lab, name) == 'idle' else None
    s = _wait(f'{name}: Run All Cells', finished, lab, RUN_TIMEOUT)
    assert len(s['prompts']) == n_code, f'{name}: the DOM shows {len(s["prompts"])} of {n_code} code cells'
    last = d.find_elements(By.CSS_SELECTOR, '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell')[-1]
    d.execute_script('arguments[0].scrollIntoView({block: "end"});', last)
    time.sleep(0.5)                                                     # let the scroll paint
    png = lab.tmp/f'{shot}.png'
    assert d.save_screenshot(str(png)) and png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    print(f'screenshot: {png}')
    return s


def test_vfpt_vtab_runs_in_jupyterlab(lab):
    "The experiment notebook, its smoke defaults: every cell ran, no error, the last cell shows the record it wrote."
    s = run_all(lab, 'vfpt_vtab.ipynb', 'vfpt_vtab')
    assert not _errors(s), _errors(s)
    assert all(_EXECUTED.match(p) for p in s['prompts']), s['prompts']
    record = lab.out_dir/'result.json'
    shown = [line for o in s['outputs'][-1] if o['mime'] == 'application/vnd.jupyter.stdout' for line in o['text'].splitlines()]
    assert f'wrote {record}' in shown, s['outputs'][-1]
    assert json.loads(record.read_text())['status'] == 'done'     # written into the temp out_dir, not beside nbs/


def test_library_notebook_runs_in_jupyterlab(lab):
    "A library notebook (00_core: code, its fastcore tests, nbdev_export into the temp project) runs clean."
    s = run_all(lab, '00_core.ipynb', '00_core')
    assert not _errors(s), _errors(s)
    assert all(_EXECUTED.match(p) for p in s['prompts']), s['prompts']


def test_an_error_in_a_cell_is_seen(lab):
    "The check above can fail: a raising cell shows as an error, and Run All stops before the next cell."
    s = run_all(lab, 'broken.ipynb', 'broken')
    errs = _errors(s)
    assert len(errs) == 1 and 'ValueError' in errs[0] and 'boom from the test' in errs[0], errs
    assert _EXECUTED.match(s['prompts'][0]) and s['outputs'][0][0]['text'].strip() == 'fine'
    assert not _EXECUTED.match(s['prompts'][2]) and not s['outputs'][2], s
