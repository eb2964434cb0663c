"""More than one process: every script trains under torchrun (gloo on this CPU), each process on
its shard of every batch, their gradients averaged, one set of outputs, one result."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing

import gan_complete
import machinery
from conftest import ROOT, SCRIPTS, subprocess_env, tiny_args

WORLD = 2


def torchrun(*args, processes=WORLD):
    """The command a user types: torchrun --nproc_per_node N script ...; one thread a process."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        *map(str, args),
    ]


def run_torchrun(*args, processes=WORLD):
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        torchrun(*args, processes=processes),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def weights(path):
    return machinery.load_state_dict_safely(path)


def assert_same_weights(first, second):
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a), f"{first} and {second} differ"


# ------------------------------------------------------------------ the gradient of the batch
def critic_gradient(rank, world, real, fake, alpha, folder):
    """The WGAN-GP critic's loss gradient as gan_complete.train takes it, on this process's shard
    of the batch, averaged over the processes by machinery.average_gradients; saved for the test."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_PORT"])
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    config = gan_complete.Config(img_size=32, d_channels=16)
    critic = gan_complete.Discriminator(config).apply(gan_complete.weights_init)
    shard = slice(rank * len(real) // world, (rank + 1) * len(real) // world)
    real, fake = real[shard], fake[shard]
    # the penalty's random interpolation weights: this shard's part of the whole batch's
    torch.rand = lambda *size, **kwargs: alpha[shard].view(*size)
    penalty = gan_complete.gradient_penalty(critic, real, fake)
    d_loss = critic(fake).mean() - critic(real).mean() + config.lambda_gp * penalty
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.0)
    optimizer.zero_grad()
    d_loss.backward()
    machinery.average_gradients(optimizer)
    torch.save([p.grad for p in critic.parameters()], folder / f"gradients_{world}_{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


def test_the_averaged_critic_gradient_of_two_processes_is_the_whole_batchs(tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(1)
    real, fake = torch.rand(2, 8, 3, 32, 32, generator=generator) * 2 - 1
    alpha = torch.rand(8, generator=generator)
    with socket.socket() as probe:  # a free port for the two processes to meet on
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("TEST_PORT", str(probe.getsockname()[1]))
    # the whole batch in one process, then its halves in two
    whole = torch.multiprocessing.get_context("spawn").Process(
        target=critic_gradient, args=(0, 1, real, fake, alpha, tmp_path)
    )
    whole.start()
    whole.join()
    torch.multiprocessing.spawn(
        critic_gradient, args=(WORLD, real, fake, alpha, tmp_path), nprocs=WORLD
    )
    expected = torch.load(tmp_path / "gradients_1_0.pt")
    for rank in range(WORLD):
        averaged = torch.load(tmp_path / f"gradients_{WORLD}_{rank}.pt")
        assert len(averaged) == len(expected) > 0
        for got, want in zip(averaged, expected):
            # the penalty's double backward included: each shard's penalty is its half of the mean
            scale = want.abs().max()  # float32 sums in another order: equal to their rounding
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale), (got - want).abs().max()


def test_each_process_takes_its_own_shard_of_every_batch(monkeypatch):
    labels = torch.arange(40)
    images = labels.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
    config = gan_complete.Config(batch_size=8, channels_last=False)
    shards = []
    for rank in range(WORLD):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(WORLD))
        loader = machinery.InMemoryLoader(images, labels, ["all"], config, "cpu")
        shards.append([batch_labels for _, batch_labels in loader.batches(epoch=3)])
    assert len(shards[0]) == len(shards[1]) == 5  # the global batch of 8 sets the step count
    for first, second in zip(*shards):
        assert len(first) == len(second) == 4 and not set(first.tolist()) & set(second.tolist())
    # together, the epoch's order of one process with the whole batch
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    alone = machinery.InMemoryLoader(images, labels, ["all"], config, "cpu")
    for (first, second), whole in zip(zip(*shards), (b for _, b in alone.batches(epoch=3))):
        assert torch.equal(torch.cat([first, second]), whole)


# ------------------------------------------------------------------------------ whole runs
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_trains_under_torchrun_into_one_set_of_outputs(name, cache_dir, tmp_path):
    done = run_torchrun(f"{name}.py", *tiny_args(cache_dir, tmp_path, "--conditional"))
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # the first process says every line, once; the processes end with the same weights
    assert out.count("done: 2 epochs") == 1 and out.count("epoch 1/2 ") == 1, out
    assert "over 2 processes" in out and "the 2 processes end with the same weights" in out
    steps = [int(line.split(",")[0]) for line in (tmp_path / "metrics.csv").read_text().split()[1:]]
    assert steps == list(range(1, 19)), "every step once, written by one process"
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["processes"] == WORLD and info["images_seen"] == 18 * 16  # the global batch
    for output in ("generator.pkl", "training_progress.gif", "samples_per_class.png"):
        assert (tmp_path / output).stat().st_size > 0, output


def start_until_first_epoch(*args):
    """A torchrun run in a session of its own, as a terminal starts one, once its first epoch is
    done (so that a stop lands inside the second)."""
    process = subprocess.Popen(
        torchrun(*args),
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**subprocess_env(), "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    for line in process.stdout:
        if line.startswith("epoch 1/"):
            return process
    raise AssertionError("the run ended before its first epoch")


def test_a_two_process_run_stopped_by_ctrl_c_resumes_bitwise_equal(cache_dir, tmp_path):
    args = lambda out: tiny_args(cache_dir, out, "--synthetic-images", "160", "--epochs", "3")
    assert run_torchrun("gan_complete.py", *args(tmp_path / "whole")).returncode == 0

    # Ctrl-C in a terminal reaches torchrun and every process of its group
    process = start_until_first_epoch("gan_complete.py", *args(tmp_path / "stopped"))
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0
    command = (
        f"torchrun --nproc_per_node 2 gan_complete.py --out-dir {tmp_path / 'stopped'} --resume"
    )
    assert command in err
    checkpoint = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert 0 < checkpoint["counters"]["step"] < 90 and len(checkpoint["rng"]) == WORLD

    resumed = run_torchrun("gan_complete.py", "--out-dir", tmp_path / "stopped", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("generator.pkl", "discriminator.pkl"):
        assert_same_weights(tmp_path / "whole" / name, tmp_path / "stopped" / name)


def test_a_killed_process_stops_the_others_and_one_process_resumes(cache_dir, tmp_path):
    out = tmp_path / "run"
    arguments = tiny_args(cache_dir, out, "--synthetic-images", "160", "--epochs", "4")
    process = start_until_first_epoch("dcgan.py", *arguments)
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True)
    workers = [
        pid
        for pid in map(int, children.stdout.split())
        if b"\0RANK=1\0" in b"\0" + open(f"/proc/{pid}/environ", "rb").read()
    ]
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    started = time.monotonic()
    process.communicate(timeout=300)
    assert process.returncode != 0 and time.monotonic() - started < 120
    assert subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True).returncode == 1
    # the last checkpoint is whole, and one process goes on from it
    epoch = torch.load(out / "checkpoint.pt", weights_only=True)["counters"]["epoch"]
    assert epoch >= 1
    env = {**subprocess_env(), "OMP_NUM_THREADS": "2"}
    resumed = subprocess.run(
        [sys.executable, "dcgan.py", "--out-dir", str(out), "--resume", "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "run_info.json").read_text())["epochs_done"] == 4


def test_a_wrong_launch_is_one_line(cache_dir, tmp_path, monkeypatch):
    done = run_torchrun("sngan.py", *tiny_args(cache_dir, tmp_path, "--batch-size", "15"))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: --batch-size 15 is the batch of all 2 processes together and must divide among "
        "them: pass a multiple of 2"
    ]
    # more processes than GPUs, without a GPU to try it on
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(machinery.ConfigError, match="pass --nproc_per_node 2 or fewer"):
        machinery.join_processes(gan_complete.Config(device="cuda", batch_size=32))
    with pytest.raises(machinery.ConfigError, match="torchrun gives each process the GPU"):
        machinery.join_processes(gan_complete.Config(device="cuda:1", batch_size=32))
