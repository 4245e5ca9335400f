"""Preemption and requeue: SLURM's time-limit signal (SIGUSR1) or SIGTERM saves an exact-resume checkpoint at once and
stops the fit; under SLURM (its environment variables and a stand-in ``scontrol`` on PATH that records its arguments)
the job is requeued, and the requeued job resumes the same run folder and logger version by itself, ending
bit-identical to an uninterrupted fit with the same metrics.csv."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from gnvideo.cli import main
from gnvideo.errors import ConfigError
from gnvideo.training.preemption import Preempted, requeue_slurm_job, signal_numbers
from gnvideo.training.run_folders import read_attempts

from .conftest import assert_same_metrics, cli_args, gnvideo_process

JOB = "4242"
# 24 training videos / 4 clips = 6 steps per epoch, 2 epochs, validation after each; last.ckpt every 5 steps, so the
# signal's checkpoint is the only one between steps 5 and 10. Dropout and a cosine LR with warm-up: an inexact resume
# shows in the weights.
COMMON = ["--data.clips_per_device", "4", "--trainer.max_epochs", "2", "--model.dropout", "0.5",
          "--model.schedule", "cosine", "--model.warmup_fraction", "0.2", "--last_checkpoint.every_n_train_steps", "5",
          "--trainer.num_sanity_val_steps", "0"]


def _fake_scontrol(tmp_path, rc: int = 0):
    """A stand-in ``scontrol`` in its own folder that appends its arguments to a log file and exits with ``rc``."""
    bin_dir, log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexit {rc}\n')
    script.chmod(0o755)
    return bin_dir, log


def _slurm_env(bin_dir, restart: int = 0) -> dict:
    """What SLURM sets for a one-task batch job (restart > 0: the job was requeued), the fake scontrol first on PATH."""
    env = {"SLURM_JOB_ID": JOB, "SLURM_JOB_NAME": "gnvideo-fit", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    if restart:
        env["SLURM_RESTART_COUNT"] = str(restart)
    return env


def _same_state(run, ref_run, steps: int) -> None:
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ref = torch.load(ref_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == ref["global_step"] == steps
    for name, value in ref["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name
    for a, b in zip(final["optimizer_states"][0]["state"].values(), ref["optimizer_states"][0]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


def test_signal_names():
    assert signal_numbers(["SIGTERM", "usr1", " SIGUSR2 "]) == [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2]
    with pytest.raises(ConfigError, match="requeue_signals: 'SIGKILL' is not a signal a process can catch"):
        signal_numbers(["SIGKILL"], "requeue_signals")
    with pytest.raises(ConfigError, match="signals: 'SIGNOPE'"):
        signal_numbers(["SIGNOPE"])


def test_bad_signal_name_stops_before_training(synthetic_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", *cli_args(synthetic_root, tmp_path, "--preemption.signals", "[SIGTERM,SIGKIL]")])
    assert exc.value.code == 2
    assert "error: preemption.signals: 'SIGKIL' is not a signal" in capsys.readouterr().err
    assert not (tmp_path / "tiny_r3d_bn").exists()


def test_requeue_calls_scontrol_with_the_job(tmp_path, monkeypatch):
    bin_dir, log = _fake_scontrol(tmp_path)
    for k, v in _slurm_env(bin_dir).items():
        monkeypatch.setenv(k, v)
    assert requeue_slurm_job() == (True, f"requeued SLURM job {JOB}")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert requeue_slurm_job() == (True, "requeued SLURM job 77_3")  # an array task: <array job>_<task>
    assert log.read_text().splitlines() == [f"requeue {JOB}", "requeue 77_3"]

    failing, _ = _fake_scontrol(tmp_path / "failing", rc=1)
    monkeypatch.setenv("PATH", str(failing))
    done, what = requeue_slurm_job()
    assert not done and what.startswith("scontrol requeue 77_3 failed (exit 1)")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert requeue_slurm_job() == (False, "scontrol not found: SLURM job 77_3 not requeued")
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    assert requeue_slurm_job() == (False, "not a SLURM job")


def test_a_signal_during_the_start_is_acted_on_after_the_first_step(synthetic_root, tmp_path):
    """SIGUSR1 when the fit starts (before the sanity check): noted, saved after step 1, stopped."""
    usr1 = ["--trainer.callbacks+=_train_probes.SignalAtStep", "--trainer.callbacks.at_fit_start", "true"]
    with pytest.raises(Preempted) as stopped:
        main(["fit", *cli_args(synthetic_root, tmp_path, *COMMON, "--data.num_workers", "0",
                               "--trainer.num_sanity_val_steps", "1", *usr1)])
    assert stopped.value.code == 128 + signal.SIGUSR1 and stopped.value.step == 1
    assert torch.load(stopped.value.checkpoint, weights_only=True)["global_step"] == 1


def test_the_handlers_before_a_fit_get_the_signals_after_it(synthetic_root, tmp_path):
    """After a fit that ends, the handlers found before it are back; after one that fails, Lightning puts back the
    handler it found when the fit started (ours), and that one passes a signal on to the handler from before."""
    got = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
        assert main(["fit", *cli_args(synthetic_root, tmp_path / "ok", *COMMON, "--data.num_workers", "0",
                                      "--trainer.max_steps", "1")]) == 0
        assert (signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)) == before
        with pytest.raises(RuntimeError, match="simulated kill"):
            main(["fit", *cli_args(synthetic_root, tmp_path, *COMMON, "--data.num_workers", "0",
                                   "--trainer.callbacks+=_train_probes.KillAtStep", "--trainer.callbacks.step", "1")])
        os.kill(os.getpid(), signal.SIGTERM)
        assert got == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) == before[1]  # and it is the handler again
        assert read_attempts(tmp_path / "tiny_r3d_bn" / "version_0")[-1]["event"] == "failed"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigusr1_saves_requeues_and_the_requeued_job_resumes_exactly(synthetic_root, tmp_path):
    """SIGUSR1 to the job's process group (the main process and its 2 DataLoader workers, as SLURM signals a job step)
    after step 8, mid-epoch 2: last.ckpt of step 8, exit 128 + 10, ``scontrol requeue 4242``. The requeued job (same
    command, ``SLURM_RESTART_COUNT=1``, no ``--ckpt_path``) continues version_0 and ends as the uninterrupted fit."""
    common = [*COMMON, "--data.num_workers", "2"]
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    assert main(["fit", *cli_args(synthetic_root, ref_runs, *common)]) == 0
    ref_run, run = ref_runs / "tiny_r3d_bn" / "version_0", runs / "tiny_r3d_bn" / "version_0"
    bin_dir, log = _fake_scontrol(tmp_path)
    usr1 = ["--trainer.callbacks+=_train_probes.SignalAtStep", "--trainer.callbacks.step", "8",
            "--trainer.callbacks.group", "true"]
    first = gnvideo_process("fit", *cli_args(synthetic_root, runs, *common, *usr1), env=_slurm_env(bin_dir),
                            rc=128 + signal.SIGUSR1, start_new_session=True)
    last = run / "checkpoints" / "last.ckpt"
    assert f"SIGUSR1: checkpoint at step 8 saved to {last}" in first.stderr
    assert f"fit stopped at step 8; requeued SLURM job {JOB}" in first.stderr
    assert log.read_text().splitlines() == [f"requeue {JOB}"]
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 8 and saved["epoch"] == 1
    assert not list(runs.glob("**/hpc_ckpt_*.ckpt"))  # Lightning's own SLURM checkpoint is off

    second = gnvideo_process("fit", *cli_args(synthetic_root, runs, *common), env=_slurm_env(bin_dir, restart=1),
                             start_new_session=True)
    assert f"SLURM job {JOB} restart 1: run {run}, resuming from {last}" in second.stderr
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # same folder and logger version
    assert log.read_text().splitlines() == [f"requeue {JOB}"]  # finished: not requeued again
    _same_state(run, ref_run, 12)
    assert_same_metrics(run, ref_run)
    attempts = [(r["event"], r["step"]) for r in read_attempts(run)]
    assert attempts == [("start", 0), ("preempted", 8), ("start", 8), ("finished", 12)]
    first_start, preempted, second_start = read_attempts(run)[:3]
    assert first_start["slurm_job_id"] == second_start["slurm_job_id"] == JOB
    assert (first_start["slurm_restart_count"], second_start["slurm_restart_count"]) == (0, 1)
    assert preempted["signal"] == "SIGUSR1" and preempted["requeued"] is True
    assert second_start["resumed_from"] == str(last)


def test_a_requeued_job_killed_before_its_first_checkpoint_starts_over_in_its_run(synthetic_root, tmp_path,
                                                                                   monkeypatch, capsys):
    """The job's first attempt dies after 2 steps, before any checkpoint; the requeued attempt starts the run over in
    the same folder, and its metrics.csv ends as an uninterrupted run's (the dead attempt's rows replaced)."""
    common = [*COMMON[:COMMON.index("--trainer.max_epochs")], *COMMON[COMMON.index("--trainer.max_epochs") + 2:],
              "--trainer.max_epochs", "1", "--data.num_workers", "0"]
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    assert main(["fit", *cli_args(synthetic_root, ref_runs, *common)]) == 0
    monkeypatch.setenv("SLURM_JOB_ID", JOB)
    with pytest.raises(RuntimeError, match="simulated kill"):
        main(["fit", *cli_args(synthetic_root, runs, *common, "--trainer.callbacks+=_train_probes.KillAtStep",
                                "--trainer.callbacks.step", "2")])
    run = runs / "tiny_r3d_bn" / "version_0"
    assert not list(run.glob("checkpoints/*.ckpt")) and (run / "metrics.csv").is_file()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    capsys.readouterr()
    assert main(["fit", *cli_args(synthetic_root, runs, *common)]) == 0
    assert f"SLURM job {JOB} restart 1: run {run}, no checkpoint yet: starting over in it" in capsys.readouterr().err
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    _same_state(run, ref_runs / "tiny_r3d_bn" / "version_0", 6)
    assert_same_metrics(run, ref_runs / "tiny_r3d_bn" / "version_0")
    assert [r["event"] for r in read_attempts(run)] == ["start", "failed", "start", "finished"]


@pytest.mark.slow
@pytest.mark.parametrize("validate", [True, False])
def test_sigterm_at_an_epoch_end_saves_after_it_and_resumes_exactly(synthetic_root, tmp_path, validate):
    """SIGTERM during the last step of epoch 1, outside SLURM: the step's checkpoint is written, the epoch's
    validation (if any) and end still run, the checkpoint is written again after them, and the fit stops before epoch
    2 with exit 128 + 15, not requeued. Resumed with ``--ckpt_path last``, nothing of epoch 1 is repeated or
    skipped."""
    common = [*COMMON, "--data.num_workers", "0", *([] if validate else ["--trainer.limit_val_batches", "0"])]
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    assert main(["fit", *cli_args(synthetic_root, ref_runs, *common)]) == 0
    ref_run, run = ref_runs / "tiny_r3d_bn" / "version_0", runs / "tiny_r3d_bn" / "version_0"
    term = ["--trainer.callbacks+=_train_probes.SignalAtStep", "--trainer.callbacks.step", "6",
            "--trainer.callbacks.signal", "SIGTERM"]
    with pytest.raises(Preempted) as stopped:
        main(["fit", *cli_args(synthetic_root, runs, *common, *term)])
    assert stopped.value.code == 128 + signal.SIGTERM and stopped.value.step == 6 and not stopped.value.requeued
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 6
    best = next(v for k, v in saved["callbacks"].items() if "val/top1" in k)["best_model_score"]
    assert (best is not None) == validate  # with validation, the checkpoint was written after it
    assert read_attempts(run)[-1]["event"] == "preempted"
    assert main(["fit", *cli_args(synthetic_root, runs, *common), "--ckpt_path", "last"]) == 0
    _same_state(run, ref_run, 12)
    assert_same_metrics(run, ref_run)


@pytest.mark.slow
def test_ddp_ranks_stop_at_the_same_step_and_one_requeues(synthetic_root, tmp_path):
    """DDP on 2 CPU processes (24 videos / (2 ranks x 4 clips) = 3 steps per epoch, 4 epochs), SIGUSR1 to rank 1 only
    after step 4: both ranks save and stop after step 4, rank 0 requeues once; resumed, the fit ends as the
    uninterrupted one."""
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    common = [*COMMON[:COMMON.index("--trainer.max_epochs")], *COMMON[COMMON.index("--trainer.max_epochs") + 2:],
              "--trainer.max_epochs", "4", "--data.num_workers", "0", *ddp]
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    gnvideo_process("fit", *cli_args(synthetic_root, ref_runs, *common))
    ref_run, run = ref_runs / "tiny_r3d_bn" / "version_0", runs / "tiny_r3d_bn" / "version_0"
    bin_dir, log = _fake_scontrol(tmp_path)
    env = {"SLURM_JOB_ID": JOB, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # Lightning starts rank 1
    usr1 = ["--trainer.callbacks+=_train_probes.SignalAtStep", "--trainer.callbacks.step", "4",
            "--trainer.callbacks.rank", "1"]
    gnvideo_process("fit", *cli_args(synthetic_root, runs, *common, *usr1), env=env, rc=128 + signal.SIGUSR1,
                    start_new_session=True)
    assert log.read_text().splitlines() == [f"requeue {JOB}"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    gnvideo_process("fit", *cli_args(synthetic_root, runs, *common), "--ckpt_path", "last")
    _same_state(run, ref_run, 12)
    assert_same_metrics(run, ref_run)
