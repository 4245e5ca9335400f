"""Where the time of ``gnvideo demo`` goes: start-up, dataset, and per run its build, fit phases and test.

Runs demo cells (``--cells bn:8,gn:1``) in this process with the demo's own arguments (any ``gnvideo demo`` option
after ``--``) and Lightning's ``SimpleProfiler`` extended with CPU time, then prints one table per run: wall and CPU
seconds of this process (all its threads) for each phase, and the CPU seconds of the finished DataLoader workers.
On a shared machine, CPU time is the steadier figure (wall time moves with the other jobs); CPU time above wall time
in a phase means several threads worked, and CPU time far above the work itself means threads spun waiting for one
another (OpenMP with more threads than free cores).

Phases of a fit: ``wait for data`` (the loop's ``next`` on the train loader: worker start-up at each epoch start,
then decoding that did not keep up), ``uint8 -> float`` (batch transfer and ``BatchTransform``), ``forward``
(``training_step``: model, loss, metric updates, ``self.log``), ``backward``, ``optimizer`` (the rest of a training
batch: SGD step, zero_grad, LR scheduler), ``callbacks`` (every callback hook: LR and throughput monitors, checkpoint
triggers, precise BN), ``checkpoint`` (writing ``.ckpt`` files), ``validation`` and ``Lightning`` (what is left of
the fit: loop bookkeeping, logger flushes, set-up and tear-down). A test is ``wait for data`` (decoding the views of
each video) and ``forward`` (the views through the model).

Usage (from the repository root, after the dataset exists or is made by the first cell):
    python benchmarks/profile_demo.py --cells bn:2,gn:2 -- --epochs 2
    python benchmarks/profile_demo.py --cells bn:1 --json prof.json -- --epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import time

T_START = time.perf_counter()
CPU_START = time.process_time()

import torch  # noqa: E402
from lightning.pytorch.profilers import SimpleProfiler  # noqa: E402

from gnvideo.demo.runs import cell_args, evaluate_last_checkpoint, make_dataset, parse_args, training_threads  # noqa: E402
from gnvideo.training.runner import build_cli  # noqa: E402

T_IMPORTS, CPU_IMPORTS = time.perf_counter() - T_START, time.process_time() - CPU_START


class CPUProfiler(SimpleProfiler):
    """``SimpleProfiler`` that also records the process CPU time (all threads) of every action."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: dict[str, float] = {}
        self._cpu_start: dict[str, float] = {}

    def start(self, action_name: str) -> None:
        super().start(action_name)
        self._cpu_start[action_name] = time.process_time()

    def stop(self, action_name: str) -> None:
        super().stop(action_name)
        start = self._cpu_start.pop(action_name, None)
        if start is not None:
            self.cpu[action_name] = self.cpu.get(action_name, 0.0) + time.process_time() - start

    def describe(self) -> None:  # no report at teardown: this script prints its own
        pass

    def totals(self, select) -> tuple[float, float, int]:
        """(wall s, CPU s, calls) summed over the actions for which ``select(name)`` is true."""
        names = [a for a in self.recorded_durations if select(a)]
        return (sum(sum(self.recorded_durations[a]) for a in names), sum(self.cpu.get(a, 0.0) for a in names),
                sum(len(self.recorded_durations[a]) for a in names))


def _phases(prof: CPUProfiler, fit_wall: float, fit_cpu: float) -> list[tuple[str, float, float, int]]:
    """Fit phases as (name, wall s, CPU s, calls), with the rest of the fit as "Lightning"."""
    def exact(*names):
        return lambda a: a in names

    rows = [
        ("wait for data", *prof.totals(exact("[_TrainingEpochLoop].train_dataloader_next"))),
        ("uint8 -> float", *prof.totals(lambda a: a.endswith(".batch_to_device") and "Strategy" in a)),
        ("forward", *prof.totals(lambda a: a.endswith("Strategy.training_step"))),
        ("backward", *prof.totals(lambda a: a.endswith("Strategy.backward"))),
    ]
    batch_w, batch_c, batches = prof.totals(exact("run_training_batch"))
    inner_w = rows[2][1] + rows[3][1]
    inner_c = rows[2][2] + rows[3][2]
    rows.append(("optimizer", batch_w - inner_w, batch_c - inner_c, batches))
    rows.append(("callbacks", *prof.totals(lambda a: a.startswith("[Callback]"))))
    rows.append(("checkpoint", *prof.totals(exact("save_checkpoint"))))
    rows.append(("validation", *prof.totals(lambda a: a in ("[_EvaluationLoop].val_next",)
                                           or a.endswith("Strategy.validation_step"))))
    # batch_to_device of validation batches is in "uint8 -> float"; run_training_batch holds forward and backward
    counted_w = rows[0][1] + rows[1][1] + batch_w + sum(r[1] for r in rows[5:])
    counted_c = rows[0][2] + rows[1][2] + batch_c + sum(r[2] for r in rows[5:])
    rows.append(("Lightning", fit_wall - counted_w, fit_cpu - counted_c, 0))
    return rows


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def profile_cell(a, norm: str, clips: int, seed: int, fit_args: list[str]) -> dict:
    """Build, fit and test one demo cell under :class:`CPUProfiler`; returns its phases."""
    name, args = cell_args(a, norm, clips, seed)
    w0, c0 = time.perf_counter(), time.process_time()
    cli = build_cli([*args, "--trainer.enable_progress_bar", "false", *fit_args], run=False)
    build = (time.perf_counter() - w0, time.process_time() - c0)
    prof = CPUProfiler()
    cli.trainer.profiler = prof
    kids0 = _children_cpu()
    w0, c0 = time.perf_counter(), time.process_time()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit = (time.perf_counter() - w0, time.process_time() - c0)
    kids_fit = _children_cpu() - kids0
    test_prof = CPUProfiler()
    cli.trainer.profiler = test_prof
    w0, c0 = time.perf_counter(), time.process_time()
    result, _ = evaluate_last_checkpoint(cli)
    test = (time.perf_counter() - w0, time.process_time() - c0)
    kids_test = _children_cpu() - kids0 - kids_fit
    test_rows = [("wait for data", *test_prof.totals(lambda x: x == "[_EvaluationLoop].test_next")),
                 ("forward", *test_prof.totals(lambda x: x.endswith("Strategy.test_step")))]
    steps = int(cli.trainer.global_step)
    return {"run": name, "threads": torch.get_num_threads(), "steps": steps, "top1": result.top1,
            "build": build, "fit": fit, "fit_phases": _phases(prof, *fit), "fit_workers_cpu": kids_fit,
            "test": test, "test_phases": test_rows, "test_workers_cpu": kids_test}


def _print(row: dict) -> None:
    print(f"\n{row['run']}: {row['steps']} optimizer steps, torch threads {row['threads']}, top-1 {row['top1']}")
    print(f"  {'phase':<22}{'wall s':>9}{'CPU s':>9}{'calls':>8}")
    print(f"  {'build (CLI, model)':<22}{row['build'][0]:9.2f}{row['build'][1]:9.2f}")
    print(f"  {'fit':<22}{row['fit'][0]:9.2f}{row['fit'][1]:9.2f}")
    for name, wall, cpu, calls in row["fit_phases"]:
        print(f"  {'  ' + name:<22}{wall:9.2f}{cpu:9.2f}{calls or '':>8}")
    print(f"  {'  workers (CPU)':<22}{'':>9}{row['fit_workers_cpu']:9.2f}")
    print(f"  {'test':<22}{row['test'][0]:9.2f}{row['test'][1]:9.2f}")
    for name, wall, cpu, calls in row["test_phases"]:
        print(f"  {'  ' + name:<22}{wall:9.2f}{cpu:9.2f}{calls or '':>8}")
    print(f"  {'  workers (CPU)':<22}{'':>9}{row['test_workers_cpu']:9.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", default="bn:8,gn:8,bn:1,gn:1", help="norm:clips_per_device, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--fit_args", default="", help="gnvideo fit options added to each run's (later ones win), e.g. "
                   "'--data.persistent_workers false' for the earlier setting")
    p.add_argument("demo_args", nargs=argparse.REMAINDER, help="-- then gnvideo demo options")
    opts = p.parse_args()
    demo = [x for x in opts.demo_args if x != "--"]
    a = parse_args(demo)
    print(f"start-up (imports): {T_IMPORTS:.2f} s wall, {CPU_IMPORTS:.2f} s CPU")
    w0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    torch.set_num_threads(training_threads(a))
    summary = make_dataset(a)
    dataset = (time.perf_counter() - w0, time.process_time() - c0, _children_cpu() - k0)
    print(f"dataset ({'found' if summary.skipped else 'made'}): {dataset[0]:.2f} s wall, {dataset[1]:.2f} s CPU, "
          f"workers {dataset[2]:.2f} s CPU")
    rows = []
    for cell in opts.cells.split(","):
        norm, clips = cell.split(":")
        rows.append(profile_cell(a, norm, int(clips), opts.seed, opts.fit_args.split()))
        _print(rows[-1])
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"imports": [T_IMPORTS, CPU_IMPORTS], "dataset": dataset, "runs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
