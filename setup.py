"""Packaging for reprod: every value comes from settings.ini (nbdev 2.4 convention)."""
import json
from configparser import ConfigParser
from pathlib import Path

import setuptools
from setuptools.command.build_py import build_py

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
lic = licenses[cfg['license']]
requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()


def experiment_notebooks(nbs: Path) -> list[Path]:
    "The runnable notebooks of nbs/ (no number prefix, a papermill `parameters` cell): the rule of reprod.runs.experiment_notebooks."
    def has_parameters(p): return any('parameters' in c.get('metadata', {}).get('tags', []) for c in json.loads(p.read_text('utf-8'))['cells'])
    return [p for p in sorted(nbs.glob('*.ipynb')) if not p.name[0].isdigit() and not p.name.startswith(('_', '.')) and has_parameters(p)]


class BuildPyWithNotebooks(build_py):
    "Copy the experiment notebooks into the built package as reprod/notebooks/ (package data), so an installed reprod runs them."
    def run(self):
        super().run()
        nbs = Path(cfg['nbs_path'])
        if not nbs.is_dir(): raise FileNotFoundError(f"{nbs.resolve()}: no notebooks folder to ship (an sdist must include {nbs}/, see MANIFEST.in)")
        dest = Path(self.build_lib)/cfg['lib_path']/'notebooks'
        dest.mkdir(parents=True, exist_ok=True)
        for p in experiment_notebooks(nbs): self.copy_file(str(p), str(dest/p.name))

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'],
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'],
                 'License :: ' + lic[1],
                 'Natural Language :: ' + cfg['language'],
                 'Programming Language :: Python :: 3'],
    keywords=cfg['keywords'],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['reprod', 'reprod.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    python_requires='>=' + cfg['min_python'],
    zip_safe=False,
    cmdclass={'build_py': BuildPyWithNotebooks},
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
