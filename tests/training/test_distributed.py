"""Data-parallel training through torch's own torchrun: two gloo processes on the CPU train, rank 0
alone writes the checkpoint and the log, and the run resumes with two processes or one."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

torch = pytest.importorskip("torch", reason="training needs the train extra: pip install '.[train]'")
train = pytest.importorskip("training.train")
from training.errors import TrainingError  # noqa: E402


def test_torchrun_environment_and_the_global_batch():
    assert train.Processes.from_env({}) == train.Processes()  # not under torchrun: one process
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    processes = train.Processes.from_env(env)
    assert (processes.rank, processes.local_rank, processes.world_size, processes.distributed, processes.main) == (
        3, 1, 4, True, False)
    assert processes.describe() == "4 processes on 2 machines"
    assert train.per_process_batch(32, 4) == 8 and train.per_process_batch(32, 1) == 32
    with pytest.raises(TrainingError, match="batch_size 30 does not divide among 4 processes"):
        train.per_process_batch(30, 4)


def test_one_process_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    two, four = (train.Processes(0, 0, n, n) for n in (2, 4))
    train.check_gpus(two, torch.device("cuda", 0))
    train.check_gpus(four, torch.device("cpu"))  # CPU processes share the cores
    with pytest.raises(TrainingError, match=r"4 processes on this machine .* torch sees 2 GPUs: give --nproc_per_node 2"):
        train.check_gpus(four, torch.device("cuda", 0))


@pytest.fixture
def tiny_config(small_dataset, tmp_path):

    def write(epochs: int, batch_size: int = 16):
        path = tmp_path / f"tiny{epochs}.yaml"
        path.write_text(f"data: {small_dataset}\nout_dir: {tmp_path / 'run'}\nseed: 1\n"
                        "model: {embed_dim: 16, hidden: 32, layers: 2, dropout: 0.1}\n"
                        f"batch_size: {batch_size}\nseq_len: 64\nwarmup_steps: 2\nepoch_tokens: 4096\n"
                        f"epochs: {epochs}\nthreads: 2\n")
        return path
    return write


def torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--standalone", "-m", "training.train", *args]  # --standalone: a free port, so tests may run side by side
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # A session of its own: a hung run is ended with its workers, which torchrun started.
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_two_gloo_processes_train_write_one_checkpoint_and_resume(tiny_config, tmp_path):
    first = torchrun(2, "--config", str(tiny_config(1)), "--device", "cpu")
    assert first.returncode == 0, first.stderr[-3000:]
    # Rank 0 alone logs: each line once.
    assert first.stdout.count("epoch 1/1: train") == 1 and first.stdout.count("best checkpoint:") == 1
    assert "2 processes on 1 machine, 8 windows each a step" in first.stdout
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("*.*")) == ["best.pt", "last.pt"]  # no second writer's leftovers
    try:
        import tensorboard  # noqa: F401
        assert len(list((run / "tensorboard").glob("events.*"))) == 1  # rank 0's logs only
    except ImportError:
        assert not (run / "tensorboard").exists()
    checkpoint = torch.load(run / "last.pt", weights_only=False)
    assert checkpoint["state"]["epoch"] == 1 and checkpoint["state"]["history"][0]["processes"] == 2
    assert checkpoint["state"]["machines"][0].endswith("; 2 processes on 1 machine")
    assert not any(k.startswith("module.") for k in checkpoint["model"])  # the unwrapped model's weights

    second = torchrun(2, "--config", str(tiny_config(2)), "--device", "cpu", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at epoch 1, step 4 on 2 processes" in second.stdout
    assert "epoch 2/2: train" in second.stdout and "epoch 1/2" not in second.stdout
    # Any number of processes resumes it: here one, without torchrun.
    third = subprocess.run([sys.executable, "-m", "training.train", "--config", str(tiny_config(3)), "--device",
                            "cpu", "--resume"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=240)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "at epoch 2, step 8" in third.stdout and "epoch 3/3: train" in third.stdout
    history = torch.load(run / "last.pt", weights_only=False)["state"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and [h["step"] for h in history] == [4, 8, 12]
    assert all(np.isfinite(h["validation_bits"]) for h in history)


@pytest.mark.slow
def test_a_batch_that_does_not_divide_among_the_processes_is_refused(tiny_config, tmp_path):
    result = torchrun(2, "--config", str(tiny_config(1, batch_size=15)), "--device", "cpu")
    assert result.returncode != 0
    assert "error: batch_size 15 does not divide among 2 processes" in result.stderr
    assert not (tmp_path / "run").exists()
