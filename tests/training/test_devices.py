"""training.train's --device and --amp: the device chosen, one-line refusals, the mixed-precision step,
and checkpoints that load on the CPU wherever they were trained."""

from dataclasses import replace

import numpy as np
import pytest


torch = pytest.importorskip("torch", reason="training needs the train extra: pip install '.[train]'")
train = pytest.importorskip("training.train")
from training import export  # noqa: E402
from training.errors import TrainingError  # noqa: E402


def tiny(small_dataset, tmp_path, **changes):
    return replace(train.TrainConfig.from_yaml(train.config_path("tiny")), data=str(small_dataset),
                   out_dir=str(tmp_path / "run"), **{"epoch_tokens": 4096, "epochs": 1, **changes})


def test_auto_is_a_gpu_when_torch_sees_one_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train, "mps_available", lambda: False)
    assert train.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(train, "mps_available", lambda: True)
    assert train.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert train.resolve_device("auto") == torch.device("cuda", 0)
    assert train.resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)  # a process per GPU


def test_amp_picks_bf16_where_the_gpu_has_it_and_is_refused_on_the_cpu(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert train.amp_dtype("auto", cuda) == torch.bfloat16 and train.amp_dtype("fp16", cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert train.amp_dtype("auto", cuda) == torch.float16 and train.amp_dtype(None, cuda) is None
    with pytest.raises(TrainingError, match="--amp is for GPUs"):
        train.amp_dtype("auto", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_device_that_is_not_there_and_amp_on_the_cpu_are_one_line_errors(small_dataset, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"data: {small_dataset}\nout_dir: {tmp_path / 'run'}\n")
    assert train.main(["--config", str(config), "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda: torch") and err.count("\n") == 1
    assert train.main(["--config", str(config), "--device", "cpu", "--amp"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --amp is for GPUs") and err.count("\n") == 1
    assert not (tmp_path / "run" / "last.pt").exists()  # refused before any training


@pytest.mark.parametrize("scaled", [False, True])
def test_the_mixed_precision_step_trains_and_saves_float32_weights(small_dataset, tmp_path, monkeypatch, scaled):
    # The GPU path, run under the CPU's bfloat16 autocast (the CPU LSTM has no float16 kernel):
    # autocast, and with `scaled` the gradient scaler that float16 takes.
    monkeypatch.setattr(train, "amp_dtype", lambda amp, device: torch.bfloat16)
    assert train.needs_grad_scaler(torch.float16) and not train.needs_grad_scaler(torch.bfloat16)
    monkeypatch.setattr(train, "needs_grad_scaler", lambda dtype: scaled)
    lines = []
    best = train.train(tiny(small_dataset, tmp_path), log=lines.append, device="cpu", amp="auto")
    assert any("mixed precision" in line for line in lines)
    checkpoint = torch.load(best, weights_only=False, map_location="cpu")
    assert all(t.dtype == torch.float32 for t in checkpoint["model"].values())
    assert (checkpoint["scaler"] is not None) == scaled
    assert np.isfinite(checkpoint["state"]["history"][-1]["validation_bits"])


def test_a_checkpoint_holds_cpu_float_weights_and_resumes_and_exports_from_them(small_dataset, tmp_path):
    config = tiny(small_dataset, tmp_path)
    train.train(config, log=lambda _: None, device="cpu")
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=False)  # no map_location needed
    assert {t.device.type for t in checkpoint["model"].values()} == {"cpu"}
    lines = []
    train.train(replace(config, epochs=2), resume=True, log=lines.append, device="auto")
    assert any("resumed from" in line for line in lines)
    model, _ = export.load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_tensorboard_logs_train_and_validation_bits_and_the_learning_rate(small_dataset, tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard logs need tensorboard (in the train extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lines = []
    train.train(tiny(small_dataset, tmp_path, epochs=2), log=lines.append, device="cpu")
    logs = tmp_path / "run" / "tensorboard"
    assert f"TensorBoard logs in {logs} (tensorboard --logdir {tmp_path / 'run'})" in lines
    events = EventAccumulator(str(logs))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/bits_per_token", "train/learning_rate", "validation/bits_per_token", "train/tokens_per_s"} <= tags
    assert [e.step for e in events.Scalars("validation/bits_per_token")] == [2, 4]  # 2 steps an epoch
    rates = [e.value for e in events.Scalars("train/learning_rate")]
    assert len(rates) == 4 and rates[0] < max(rates)  # warmup
