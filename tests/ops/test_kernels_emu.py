"""The CUDA GroupNorm kernels executed on the CPU (tests/ops/emu): every shared case against float64, a second fiber
schedule bit for bit, AddressSanitizer/UBSan, the emulator's own checks, and planted bugs that must be caught.

Needs only g++ and the torch headers (no GPU, no nvcc). `pytest tests/ops -k emu` selects these tests.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gn_emu
import pytest

from gnvideo.ops import testing

pytestmark = pytest.mark.skipif(gn_emu.compiler() is None, reason="needs g++ to build the kernel emulation")

NAMES = [s.name for s in testing.SPECS]
def _numel(spec: testing.Spec) -> int:
    n = 1
    for d in spec.shape:
        n *= d
    return n


# ASan/UBSan and the second schedule run the cases below this size (the I3D shapes dominate the run time).
SMALL = [s.name for s in testing.SPECS if _numel(s) < 200_000]

# Planted bugs: (name, file in csrc, text, replacement, cases that must expose it). Applied to a copy of csrc.
MUTANTS = [
    ("missing_syncthreads_block_reduce", "group_norm_cuda_utils.h", "  __syncthreads();\n  if (warp == 0) {",
     "  if (warp == 0) {", ["large_mean_f32", "basic_f64"]),
    ("missing_syncthreads_stats_cl", "group_norm_cuda_fwd.h",
     "  __syncthreads();\n  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {\n    Welford<A> st",
     "  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {\n    Welford<A> st", ["basic_f32_cl"]),
    ("off_by_one_tail", "group_norm_cuda_utils.h", "e = r.a1 + threadIdx.x; e < p1;",
     "e = r.a1 + threadIdx.x; e < p1 - 1;", ["basic_f32", "odd_3d_f32"]),
    ("chunk_split_drops_last_packs", "group_norm_cuda_utils.h",
     "const int64_t per = div31(npacks + nchunks - 1, nchunks);",
     "const int64_t per = div31(npacks, nchunks);", ["chunks_per_plane_unaligned_bf16"]),
    ("wrong_silu_gradient", "group_norm_cuda_utils.h", "return g * s * (A(1) + z * (A(1) - s));",
     "return g * s * (A(1) + z * s);", ["basic_f64"]),
    ("too_small_shared_buffer", "group_norm_cuda_fwd.h", "__shared__ Welford<A> smem[kBlock * V];",
     "__shared__ Welford<A> smem[kBlock * V / 2];", ["basic_f32_cl"]),
    ("wrong_partial_stride_cl", "group_norm_cuda_launch.h", "PartStrides{p.nchunks * C, 1, C}",
     "PartStrides{p.nchunks * C, 1, 1}", ["large_mean_f32_cl"]),
    ("dx_without_weight", "group_norm_cuda_bwd.h", "return rs * (wc * gz - k1 - xh * k2);",
     "return rs * (gz - k1 - xh * k2);", ["basic_f32"]),
    ("partial_warp_block", "group_norm_cuda_launch.h", "ceil_div(packs, kWarp) * kWarp", "packs",
     ["large_mean_f32"]),
    ("launch_bound_too_small", "group_norm_cuda_launch.h",
     "p.bound = p.threads <= kBlock ? kBlock : max_cl_lanes(V);", "p.bound = kBlock;", ["wide_512_lanes_f64_cl"]),
]

SELFTEST_FAULTS = ["barrier_exit", "barrier_vs_shuffle", "shuffle_partial_warp", "shuffle_exited_lane",
                   "launch_bounds"]


def _mutant_csrc(root: Path, name: str, file: str, old: str, new: str) -> Path:
    dst = root / name
    shutil.copytree(gn_emu.CSRC, dst, dirs_exist_ok=True)
    text = (dst / file).read_text()
    assert text.count(old) == 1, f"mutant {name}: the patched text must occur once in {file}"
    (dst / file).write_text(text.replace(old, new))
    return dst


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Every binary this module needs, compiled two at a time (cached per source hash across runs)."""
    root = tmp_path_factory.mktemp("mutants")
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {"release": pool.submit(gn_emu.build, "release"),
               "selftest": pool.submit(gn_emu.build, "release", gn_emu.CSRC, "selftest.cpp")}
    for name, file, old, new, _ in MUTANTS:
        futures[name] = pool.submit(gn_emu.build, "mutant", _mutant_csrc(root, name, file, old, new))
    futures["sanitize"] = pool.submit(gn_emu.build, "sanitize")
    yield futures
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def samples():
    return {s.name: s for s in testing.sample_inputs("cpu")}


@pytest.fixture(scope="module")
def emu_run(builds, samples, tmp_path_factory):
    work = tmp_path_factory.mktemp("emu")
    results = gn_emu.run(builds["release"].result(), list(samples.values()), work)
    return work, results


@pytest.mark.parametrize("name", NAMES)
def test_emu_kernel_matches_float64(emu_run, samples, name):
    _, results = emu_run
    got, plan = results[name]
    bad = testing.compare(samples[name], got)
    assert not bad, f"{name} (plan {plan}): " + "; ".join(bad)


def test_emu_random_schedule_is_bit_identical(builds, samples, emu_run, tmp_path):
    """Seeded random fiber order and block order: every output byte equals the in-order run's."""
    work, _ = emu_run
    names = SMALL + ["i3d_res5_bf16_cl"]
    gn_emu.run(builds["release"].result(), [samples[n] for n in names], tmp_path, schedule=20261202)
    for n in names:
        assert (tmp_path / f"{n}.s20261202.out").read_bytes() == (work / f"{n}.s0.out").read_bytes(), n


def test_emu_sanitizers_clean(builds, samples, tmp_path):
    """The same harness with -fsanitize=address,undefined: no report, and the results still pass."""
    results = gn_emu.run(builds["sanitize"].result(), [samples[n] for n in SMALL], tmp_path, schedule=3)
    for n in SMALL:
        assert not testing.compare(samples[n], results[n][0]), n


def test_emu_res5_partials_are_a_small_fraction(emu_run, samples):
    """I3D res5 (N4, C2048, 8x7x7, bf16, channels-last): partials <= 1/8 of the tensor's bytes, forward and backward
    (the plan before the cap had 98 chunks per sample: 9,633,792 bytes of forward partials for a 6,422,528-byte
    tensor)."""
    _, results = emu_run
    s = samples["i3d_res5_bf16_cl"]
    plan = results["i3d_res5_bf16_cl"][1]
    tensor_bytes = s.x.numel() * s.x.element_size()
    assert tensor_bytes == 6_422_528
    assert plan["fwd_cl"] == "1" and plan["copy"] == "0"
    assert int(plan["fwd_part_bytes"]) * 8 <= tensor_bytes
    assert int(plan["bwd_part_bytes"]) * 8 <= tensor_bytes
    assert int(plan["fwd_nchunks"]) >= 4  # still several blocks per sample


@pytest.mark.parametrize("mode", SELFTEST_FAULTS)
def test_emu_reports_fault_instead_of_hanging(builds, mode):
    binary = builds["selftest"].result()
    for seed in ("0", "9"):
        proc = subprocess.run([str(binary), mode, seed], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 86 and "EMU ERROR" in proc.stderr, (mode, seed, proc.stderr)


def test_emu_shuffle_barrier_and_nan_shared_memory(builds):
    binary = builds["selftest"].result()
    for seed in ("0", "9"):
        out = subprocess.run([str(binary), "reduce", seed], capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.split() == ["32640"] * 3
        out = subprocess.run([str(binary), "shared_nan", seed], capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.split() == ["1", "1"]


@pytest.mark.parametrize(("name", "cases"), [(m[0], m[4]) for m in MUTANTS])
def test_emu_mutant_is_caught(builds, samples, tmp_path, name, cases):
    binary = builds[name].result()
    try:
        results = gn_emu.run(binary, [samples[c] for c in cases], tmp_path, jobs=1)
    except gn_emu.HarnessError as err:
        assert "EMU ERROR" in str(err) or "runtime error" in str(err), str(err)
        return
    failures = {c: testing.compare(samples[c], results[c][0]) for c in cases}
    assert any(failures.values()), f"mutant {name} passed every case: {failures}"
