"The committed studies in figures/: every table is what its archived result records give, every listed figure exists."
import re
from pathlib import Path

import pytest

from reprod import studies
from reprod.runs import run_notebook

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT/'figures'
STUDIES = sorted(p.parent for p in FIG.glob(f'*/{studies.STUDY_FILE}'))


def test_figures_folder_has_the_three_studies():
    assert (FIG/'README.md').exists()
    assert {'vfpt_eurosat', 'mept_cb', 'pta_wikitext2'} <= {p.name for p in STUDIES}, [p.name for p in STUDIES]


@pytest.mark.parametrize('study', STUDIES, ids=lambda p: p.name)
def test_committed_table_matches_the_archived_runs(study):
    "Recompute results.csv/results.md from the committed result.json files: any difference fails."
    assert studies.stale_tables(study) == [], f"{study.name}: rerun `reprod run fig_study study_dir=figures/{study.name}` and commit"
    assert not list(study.rglob('*.ipynb')) and not list(study.rglob('*.safetensors'))   # records only: no notebooks, no weights


def test_every_figure_in_the_readme_exists_as_png_and_pdf():
    names = re.findall(r'`?([\w./-]+)\.(?:png|pdf)`?', (FIG/'README.md').read_text())
    assert names, 'figures/README.md lists no figure'
    missing = [f'{n}.{ext}' for n in dict.fromkeys(names) for ext in ('png', 'pdf') if not (FIG/f'{n}.{ext}').exists()]
    assert not missing, missing


def test_fig_study_default_smoke_run(tmp_path):
    "The notebook's default: a tiny smoke study built, tabled and plotted (the real studies use the same code)."
    out = tmp_path/'run'
    run_notebook('fig_study', {'out_dir': str(out)})
    s = out/'smoke_study'
    for f in ('results.csv', 'results.md', 'comparison.png', 'comparison.pdf', 'study.json'): assert (s/f).stat().st_size > 0, f
    assert studies.stale_tables(s) == []
    assert len(studies.study_runs(s)) == 4          # 2 methods x 2 seeds, final stage only


def test_alpha_curve_regenerates_from_the_archived_sweep(tmp_path):
    "Fig. 2 from the committed α sweep (a sweep without prompt lengths: no num_tokens column), the command in figures/README.md."
    run_notebook('fig_vfpt_sweep', {'run_dir': str(FIG/'vfpt_eurosat_alpha'/'runs'/'alpha'), 'out_dir': str(tmp_path)})
    for ext in ('png', 'pdf'): assert (tmp_path/f'fig2_accuracy_vs_fourier_percentage.{ext}').stat().st_size > 0
    assert not list(tmp_path.glob('figS1_*'))      # one prompt length: no α × length map
