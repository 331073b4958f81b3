"""VTAB-1k from clip_benchmark webdataset shards, offline: every one of the 19 tasks built from synthetic shards in the
hub's format and run through `vfpt_vtab` in the sweep protocol's tune and final modes; selection rules; the `hf:`
plumbing with a local stand-in for the download; every bad input the builder must name; and the class-folder
builder with a source's own test split through `reprod run`."""
import json, shutil, tarfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import reprod.data.vtab_wds as vw
from reprod.cli import main
from reprod.data.vtab import SPLITS, VTAB_TASKS, read_split, task_dir
from reprod.data.vtab_wds import (SOURCES, WdsError, encode_image, iter_wds_samples, list_shards, make_layout_from_wds,
                                  write_shard, write_synthetic_wds)
from reprod.runs import run_notebook

ROOT = Path(__file__).resolve().parent.parent
N_TR, N_VA = 10, 5


def leftovers(parent):
    return [p.name for p in Path(parent).iterdir() if '.partial-' in p.name or '.old-' in p.name] if Path(parent).exists() else []


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('wds')
    for task in SOURCES: write_synthetic_wds(task, root/task)
    return root


@pytest.fixture(scope='module')
def vtab_root(synth_root, tmp_path_factory):
    "All 19 task folders under one data_root, built from the synthetic shards."
    root = tmp_path_factory.mktemp('vtab-1k')
    for task in SOURCES: make_layout_from_wds(task, synth_root/task, root/VTAB_TASKS[task].folder, n_train=N_TR, n_val=N_VA)
    return root


@pytest.mark.parametrize('task', list(SOURCES))
def test_layout_every_task(task, synth_root, vtab_root):
    src, n_cls, dest = SOURCES[task], VTAB_TASKS[task].num_classes, vtab_root/VTAB_TASKS[task].folder
    assert task_dir(vtab_root, task) == dest and not leftovers(vtab_root)
    lists = {s: read_split(dest, s) for s in SPLITS}
    assert [len(lists['train800']), len(lists['val200'])] == [N_TR, N_VA]
    assert lists['train800val200'] == lists['train800'] + lists['val200']
    tr, va, te = ({p for p, _ in lists[s]} for s in ('train800', 'val200', 'test'))
    assert not (tr & va) and not (te & (tr | va))
    raw = {f'images/{split}/{s.key}.{s.ext}': s for split in {src.train_split or 'test', 'test'} for s in iter_wds_samples(synth_root/task, split)}
    for split in SPLITS:   # labels are the shards' after the task's mapping; image bytes untouched
        for p, y in lists[split]:
            assert 0 <= y < n_cls and y == src.map_label(raw[p].label, n_cls) and (dest/p).read_bytes() == raw[p].read()
    info = json.loads((dest/'layout.json').read_text())
    assert info['hf_name'] == src.hf_name and info['params']['task'] == task
    n_test = sum(1 for _ in iter_wds_samples(synth_root/task, 'test'))
    if src.train_split:    # 'first': shard order; all of the hub's test split
        assert [p for p, _ in lists['train800val200']] == [f'images/train/s{i:07d}.webp' for i in range(N_TR + N_VA)]
        assert len(lists['test']) == n_test
    else:                  # sun397: one pool, 20 % test
        assert len(lists['test']) == round(0.2 * n_test)


def test_every_task_through_vfpt_vtab_tune_and_final(vtab_root, tmp_path, monkeypatch):
    "The sweep protocol on all 19 tasks: a tune run (train800 → val200) and a final run (train800val200 → test) each."
    monkeypatch.chdir(ROOT); monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    rd = tmp_path/'sweep'
    assert main(['sweep', 'run', str(rd), 'vfpt_vtab', '--tasks', ','.join(SOURCES), '--lrs', '0.1', '--wds', '0', '--seeds', '1',
                 '--workers', '2', f'data_root={vtab_root}', 'epochs=1', 'image_size=16', 'batch_size=8', 'save_adapter=False']) == 0
    runs = pd.read_csv(rd/'runs.csv')
    assert (runs.status == 'done').all() and len(runs) == 38
    for stage, split, n in (('tune', 'val200', lambda t: N_VA), ('final', 'test', lambda t: len(read_split(vtab_root/VTAB_TASKS[t].folder, 'test')))):
        got = runs[runs.stage == stage].set_index('task')
        assert sorted(got.index) == sorted(SOURCES)
        for t in SOURCES:
            rec = json.loads((rd/'runs'/got.loc[t, 'run_id']/'result.json').read_text())
            assert rec['metrics'][f'{split}/n'] == n(t), (t, stage, rec['metrics'])
            assert rec['model']['config']['num_classes'] == VTAB_TASKS[t].num_classes


def test_default_sizes_and_reuse(tmp_path):
    root = write_synthetic_wds('svhn', tmp_path/'svhn', n_train=1010, n_test=30, image_size=4, shard_size=300)
    dest = make_layout_from_wds('svhn', root, tmp_path/'out')
    assert json.loads((dest/'layout.json').read_text())['sizes'] == {'train800': 800, 'val200': 200, 'test': 30, 'train800val200': 1000}
    stamp = (dest/'test.txt').stat().st_mtime_ns
    assert make_layout_from_wds('svhn', root, dest) == dest and (dest/'test.txt').stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match=r"already exists, built with .*overwrite=True"):
        make_layout_from_wds('svhn', root, dest, seed=1, selection='random')
    make_layout_from_wds('svhn', root, dest, seed=1, selection='random', overwrite=True)
    assert json.loads((dest/'layout.json').read_text())['params']['selection'] == 'random' and not leftovers(tmp_path)


def test_random_selection_max_test_and_reencoding(synth_root, tmp_path):
    a, b, c = (make_layout_from_wds('cifar100', synth_root/'cifar100', tmp_path/n, seed=s, selection='random', n_train=20, n_val=10)
               for n, s in (('a', 3), ('b', 3), ('c', 4)))
    assert read_split(a, 'train800') == read_split(b, 'train800') != read_split(c, 'train800')
    tr, va = [p for p, _ in read_split(a, 'train800')], [p for p, _ in read_split(a, 'val200')]
    assert tr == sorted(tr) and va == sorted(va) and not set(tr) & set(va)
    t = [p for p, _ in read_split(make_layout_from_wds('caltech101', synth_root/'caltech101', tmp_path/'d', n_train=N_TR, n_val=N_VA, max_test=7), 'test')]
    assert len(t) == 7 and t == sorted(t)
    assert len(read_split(make_layout_from_wds('sun397', synth_root/'sun397', tmp_path/'s', n_train=N_TR, n_val=N_VA, max_test=9), 'test')) == 9
    e = make_layout_from_wds('eurosat', synth_root/'eurosat', tmp_path/'e', n_train=N_TR, n_val=N_VA, image_format='jpg')
    p = read_split(e, 'train800')[0][0]
    with Image.open(e/p) as im: assert p.endswith('.jpg') and im.format == 'JPEG'


def test_reader_numeric_shard_order_and_formats(tmp_path):
    d = tmp_path/'train'; d.mkdir()
    for k in range(12):   # no nshards.txt: numeric order; png and jpg images accepted
        ext = 'png' if k % 2 else 'jpg'
        write_shard(d/f'{k}.tar', [{'__key__': f's{k:07d}', 'cls': k % 3, ext: encode_image(k, k, 4, ext)}])
    assert [s.key for s in iter_wds_samples(tmp_path, 'train')] == [f's{k:07d}' for k in range(12)]
    assert list_shards(d)[10].name == '10.tar'
    one = list(iter_wds_samples(d/'3.tar'))
    assert len(one) == 1 and one[0].ext == 'png' and one[0].label == 0


def test_hf_source_plumbing_offline(synth_root, tmp_path, monkeypatch):
    fetched = []
    def fake_hub_file(repo, filename, revision):
        assert repo == SOURCES['smallnorb_ele'].hf_name and revision == 'abc123'
        fetched.append(filename)
        if not (p := synth_root/'smallnorb_ele'/filename).exists(): raise FileNotFoundError(f"hf:{repo}: no file {filename!r} on the hub")
        return p
    monkeypatch.setattr(vw, 'hub_file', fake_hub_file)
    d = make_layout_from_wds('smallnorb_ele', 'hf:@abc123', tmp_path/'ele', n_train=N_TR, n_val=N_VA)
    assert len(read_split(d, 'train800')) == N_TR and (d/'classnames.txt').exists()
    assert 'train/1.tar' not in fetched                 # 'first' reads only the first train shard (16 samples)
    assert json.loads((d/'layout.json').read_text())['source'] == f"hf:{SOURCES['smallnorb_ele'].hf_name}@abc123"


# ------------------------------------------------------------------------------------------------------- bad input
def _copy(synth_root, task, tmp_path): return Path(shutil.copytree(synth_root/task, tmp_path/f'src-{task}'))


def _rewrite_train_shard0(root, mutate):
    samples, cur = [], None
    with tarfile.open(root/'train'/'0.tar') as tf:
        for m in tf:
            key, ext = m.name.split('.', 1)
            if key != cur: samples.append({'__key__': key}); cur = key
            samples[-1][ext] = tf.extractfile(m).read()
    mutate(samples); write_shard(root/'train'/'0.tar', samples)


def _build(task, src, tmp_path, **kw): return make_layout_from_wds(task, src, tmp_path/'out'/task, n_train=N_TR, n_val=N_VA, **kw)


def test_unknown_task_and_bad_parameters(synth_root, tmp_path):
    with pytest.raises(ValueError, match=r"unknown VTAB-1k task 'imagenet'; expected one of: cifar100, caltech101"): _build('imagenet', synth_root/'cifar100', tmp_path)
    with pytest.raises(ValueError, match=r"selection='best': expected 'first' or 'random'"): _build('svhn', synth_root/'svhn', tmp_path, selection='best')
    with pytest.raises(ValueError, match=r"max_test=0"): _build('svhn', synth_root/'svhn', tmp_path, max_test=0)
    with pytest.raises(ValueError, match=r"expected 'hf:', 'hf:@<revision>' or 'hf:<owner>/<name>"): _build('svhn', 'hf:not-a-repo', tmp_path)


def test_missing_source_or_split(synth_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"task 'kitti': src='.*nope' is not a folder; expected a webdataset root like <root>/train/0.tar"):
        _build('kitti', tmp_path/'nope', tmp_path)
    src = _copy(synth_root, 'kitti', tmp_path); shutil.rmtree(src/'test')
    with pytest.raises(FileNotFoundError, match=r"task 'kitti': .*split 'test' not found \(expected folder .*test\); splits present: \['train'\]"):
        _build('kitti', src, tmp_path)
    assert not (tmp_path/'out'/'kitti').exists() and not leftovers(tmp_path/'out')


@pytest.mark.parametrize('mutate,msg', [
    (lambda s: s[3].pop('cls'), r"task 'dtd': .*0\.tar: sample 's0000003' has no '\.cls' label member \(found: \.webp\); expected 's0000003\.cls'"),
    (lambda s: s[2].pop('webp'), r"sample 's0000002' has no image member \(found: \.cls\); expected one of \.webp, \.png, \.jpg, \.jpeg"),
    (lambda s: s[1].update(cls=b'seven'), r"sample 's0000001': label is not an integer: 'seven'"),
    (lambda s: s[1].update(cls=b'47'), r"task 'dtd': .*sample 's0000001': label 47 outside \[0, 47\)"),
    (lambda s: s.pop(5), r"sample 's0000006': expected key 's0000005' next"),
    (lambda s: s.append(dict(s[0])), r"sample key 's0000000' appears twice"),
])
def test_bad_samples_are_named(mutate, msg, synth_root, tmp_path):
    src = _copy(synth_root, 'dtd', tmp_path); _rewrite_train_shard0(src, mutate)
    with pytest.raises(WdsError, match=msg): _build('dtd', src, tmp_path, selection='random')
    assert not (tmp_path/'out'/'dtd').exists() and not leftovers(tmp_path/'out')


def test_corrupt_image_keeps_the_old_layout(synth_root, tmp_path):
    src = _copy(synth_root, 'oxford_iiit_pet', tmp_path)
    good = _build('oxford_iiit_pet', src, tmp_path); before = (good/'train800.txt').read_text()
    _rewrite_train_shard0(src, lambda s: s[4].update(webp=b'RIFF\x00\x00\x00\x00WEBPjunk'))
    with pytest.raises(WdsError, match=r"task 'oxford_iiit_pet': .*0\.tar: sample 's0000004': corrupt or undecodable \.webp image"):
        _build('oxford_iiit_pet', src, tmp_path, overwrite=True)
    assert (good/'train800.txt').read_text() == before and not leftovers(tmp_path/'out')


def test_unreadable_truncated_and_miscounted_shards(synth_root, tmp_path):
    src = _copy(synth_root, 'resisc45', tmp_path); shard = src/'train'/'0.tar'; data = shard.read_bytes()
    shard.write_bytes(b'this is not a tar file' * 40)
    with pytest.raises(WdsError, match=r"task 'resisc45': .*0\.tar: unreadable shard .*expected an uncompressed webdataset \.tar"): _build('resisc45', src, tmp_path)
    shard.write_bytes(data[:len(data) // 2 + 100])
    with pytest.raises(WdsError, match=r"0\.tar: corrupt or truncated shard"): _build('resisc45', src, tmp_path)
    shard.write_bytes(data); n = int((src/'train'/'nshards.txt').read_text())
    (src/'train'/'nshards.txt').write_text(f'{n + 1}\n')
    with pytest.raises(FileNotFoundError, match=rf"nshards.txt says {n + 1} shards but 1 are missing, e\.g\. {n}\.tar"): _build('resisc45', src, tmp_path)
    assert not (tmp_path/'out'/'resisc45').exists()


def test_too_few_samples_and_foreign_dest(synth_root, tmp_path):
    root = write_synthetic_wds('patch_camelyon', tmp_path/'pcam', n_train=12, n_test=4)
    with pytest.raises(WdsError, match=r"task 'patch_camelyon': split 'train' of .* has 12 samples; need n_train \+ n_val = 10 \+ 5 = 15"):
        _build('patch_camelyon', root, tmp_path)
    dest = tmp_path/'out'/'svhn'; dest.mkdir(parents=True); (dest/'junk.txt').write_text('x')
    with pytest.raises(FileExistsError, match=r"exists, is not empty and holds no complete layout"): _build('svhn', synth_root/'svhn', tmp_path)


def test_run_vfpt_vtab_on_a_custom_task_uses_its_own_test_split(tmp_path, monkeypatch):
    "`reprod data vtab` on train/ + test/ class folders, then `reprod run vfpt_vtab task=<custom>`: final mode evaluates on test/."
    monkeypatch.setenv('REPROD_CACHE', str(tmp_path/'cache'))
    for split, n in (('train', 30), ('test', 7)):
        for c in ('cat', 'dog'):
            (tmp_path/'src'/split/c).mkdir(parents=True)
            for j in range(n): Image.new('RGB', (8, 8), (40 * j % 256, 200 if c == 'dog' else 0, 9)).save(tmp_path/'src'/split/c/f'{j}.png')
    assert main(['data', 'vtab', 'pets_small', str(tmp_path/'root'/'pets_small'), '--src', str(tmp_path/'src'), '--n-train', '40', '--n-val', '10']) == 0
    out = tmp_path/'run'
    run_notebook('vfpt_vtab', dict(task='pets_small', data_root=str(tmp_path/'root'), epochs=1, image_size=16, batch_size=8,
                                   save_adapter=False, out_dir=str(out)), cwd=ROOT)
    rec = json.loads((out/'result.json').read_text())
    assert rec['metrics']['test/n'] == 14 and rec['data'] == {'train800val200': 50, 'test': 14}
    assert all(p.startswith('images/test/') for p, _ in read_split(tmp_path/'root'/'pets_small', 'test'))
