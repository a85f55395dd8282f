"""Distributed training on the CPU: ``tools/dist_train.sh CONFIG 2`` runs two ``gloo`` ranks of the
classification demo recipe (EMA, validation), and a checkpoint written by the two-rank run resumes
in one process with the same total batch. (GPU runs with NCCL, SyncBN and several GPUs are in docs/BENCHMARKS.md.)"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import MNIST, REPO, write_digits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def config(tmp: Path) -> Path:
    loader = (f"dict(batch_size=5, num_workers=0, persistent_workers=False, "
              f"dataset=dict(data_root={str(tmp / 'digits')!r}))")
    path = tmp / 'dist_mnist.py'
    path.write_text(f'_base_ = [{str(MNIST)!r}]\n'
                    f'train_dataloader = {loader}\nval_dataloader = {loader}\ntest_dataloader = {loader}\n'
                    "env_cfg = dict(dist_cfg=dict(backend='gloo'))\n"
                    "default_hooks = dict(logger=dict(interval=1),\n"
                    "                     checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=-1))\n"
                    "custom_hooks = [dict(type='EMAHook', momentum=0.1, update_buffers=True)]\n")
    return path


def scalars(work_dir: Path) -> list:
    logs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert logs, f'no scalars.json under {work_dir}'
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


def test_two_ranks_train_and_a_two_rank_checkpoint_resumes_in_one_process(tmp_path):
    write_digits(tmp_path / 'digits', train=20, test=10)
    cfg = config(tmp_path)
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    work = tmp_path / 'two'
    proc = subprocess.run(['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir', str(work)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert 'Distributed training: True' in output
    logs = sorted(work.glob('*/*.log'))
    assert 'world_size: 2' in logs[-1].read_text() or "'world_size': 2" in logs[-1].read_text() \
        or 'GPU number: 2' in logs[-1].read_text()
    train_steps = [row for row in scalars(work) if 'loss' in row]
    # 20 images, 5 per rank and step, 2 ranks: two steps per epoch, 2 epochs
    assert [row['step'] for row in train_steps] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(row['loss'])) for row in train_steps)
    assert (work / 'epoch_2.pth').is_file()

    one = tmp_path / 'one'
    proc = subprocess.run([sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(one), '--resume',
                           str(work / 'epoch_1.pth'), '--cfg-options', 'train_cfg.max_epochs=3',
                           'train_dataloader.batch_size=10'], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    resumed = [row for row in scalars(one) if 'loss' in row]
    # the same total batch in one process (10 images a step): epochs 2 and 3 go on from epoch 1's steps
    assert [row['step'] for row in resumed] == [3, 4, 5, 6]
    assert (one / 'epoch_3.pth').is_file()
