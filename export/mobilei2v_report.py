"""The paper's size through the Core ML export: one denoising step of the `mobilei2v` preset
(265M parameters, L*7 S L*7 S) at the 720p x 17-frame token grid 3 x 23 x 40, converted to
an fp16 ML Program on this machine, with its weight size, conversion time, peak memory and
ANE lint counts, and (--parity) the step through the MIL interpreter against PyTorch.

    python -m export.mobilei2v_report [--grid 3x23x40] [--parity] [--keep DIR]

Writes bench/results/coreml-mobilei2v.json (atomically). The weights are a seeded random
init: size, time, memory and lint do not depend on their values. iOS keeps an ANE model's
weights under about 1 GB; the report says whether this one needs chunking.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from export import host
from export.bundle import COREML_MIN_PSNR, errors, program_io, step_spec
from export.coreml import to_coreml
from export.files import write_json
from export.lint import ane_lint
from hybrid_dit import PRESETS, HybridDiT, example_inputs, parse_grid, to_ane
from hybrid_dit.ane import STEP_INPUTS

IOS_ANE_WEIGHT_LIMIT_BYTES = 1 << 30  # ~1 GB: larger ANE models are chunked
DEFAULT_OUT = Path("bench/results/coreml-mobilei2v.json")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def rss_bytes() -> int:
    """The process's resident memory now, in bytes (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _counts(findings) -> dict[str, int]:
    return dict(sorted(collections.Counter(f"{f.check}:{f.op_type}" for f in findings).items()))


def report(grid, parity: bool, keep: Path | None, seed: int = 0) -> dict:
    import coremltools as ct

    cfg = PRESETS["mobilei2v"]
    load_start = os.getloadavg()[0]
    torch.manual_seed(seed)
    model = HybridDiT(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    inputs = example_inputs(cfg, grid, seed=seed)
    ref = None
    if parity:
        with torch.no_grad():
            ref = model(*inputs).numpy()
    twin = to_ane(model)
    del model  # the twin holds a copy of the weights
    step = twin.step_module(grid)
    x_t, t, first_frame, motion = (np.asarray(a) for a in inputs)
    spec32 = step_spec(cfg, grid, 1, "float32")
    feeds = host.step_inputs(spec32, x_t, t, first_frame, motion)
    example = tuple(torch.from_numpy(feeds[n]) for n in STEP_INPUTS)

    folder = Path(tempfile.mkdtemp(prefix="mobilei2v-coreml-")) if keep is None else keep
    path = folder / "model.mlpackage"
    rss_before = rss_bytes()
    t0 = time.perf_counter()
    to_coreml(step, example, path, "fp16", output_names=[host.V])
    convert_s = time.perf_counter() - t0
    peak_rss = _peak_rss_bytes()
    load_after = os.getloadavg()[0]

    weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weight_bytes = weights.stat().st_size if weights.is_file() else _tree_bytes(path)
    lint = ane_lint(path)
    io = program_io(path)
    res = {
        "preset": "mobilei2v",
        "attention": list(cfg.attention),
        "grid": list(grid),
        "tokens": int(np.prod(grid)),
        "params": params,
        "exported_unit": "one denoising step (hybrid_dit.ane.ANEStep), fp16 ML Program, iOS16",
        "inputs": {n: [list(s), d] for n, (s, d) in io["inputs"].items()},
        "outputs": {n: [list(s), d] for n, (s, d) in io["outputs"].items()},
        "max_rank": io["max_rank"],
        "weights_fp16_bytes": weight_bytes,
        "weights_fp16_mib": weight_bytes / 2**20,
        "package_bytes": _tree_bytes(path),
        "params_x2_bytes": 2 * params,
        "chunked": weight_bytes > IOS_ANE_WEIGHT_LIMIT_BYTES,
        "chunking": (
            "not needed: the fp16 weights are under iOS's ~1 GB ANE limit"
            if weight_bytes <= IOS_ANE_WEIGHT_LIMIT_BYTES
            else "needed: over iOS's ~1 GB ANE limit; not done here"
        ),
        "convert_s": convert_s,
        "rss_before_convert_gib": rss_before / 2**30,
        "peak_rss_gib": peak_rss / 2**30,
        "peak_rss_note": "the process's peak resident memory up to the end of the conversion "
        "(getrusage ru_maxrss): the model, its twin and coremltools' program together",
        "lint": {
            "errors": len(lint.errors),
            "warnings": len(lint.warnings),
            "error_kinds": _counts(lint.errors),
            "warning_kinds": _counts(lint.warnings),
            "ops": lint.n_ops,
            "reshape": lint.histogram.get("reshape", 0),
            "transpose": lint.histogram.get("transpose", 0),
            "error_list": [str(e) for e in lint.errors],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "coremltools": ct.__version__,
            "loadavg_1min_start": load_start,
            "loadavg_1min_after_convert": load_after,
        },
    }
    if parity:
        t0 = time.perf_counter()
        spec = step_spec(cfg, grid, 1, "float16")
        v = host.velocity(host.mil_predictor(path, "fp16"), spec, x_t, t, first_frame, motion)
        res["run_mil"] = errors(v, ref)
        res["run_mil"]["ok"] = res["run_mil"]["psnr_db"] >= COREML_MIN_PSNR
        res["run_mil"]["seconds"] = time.perf_counter() - t0
    res["machine"]["loadavg_1min_end"] = os.getloadavg()[0]
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        res["package"] = str(path)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="3x23x40", help="token grid TxHxW (default: 720p x 17)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON written")
    p.add_argument("--parity", action="store_true", help="run the step through run_mil too")
    p.add_argument("--keep", type=Path, default=None, help="keep the .mlpackage in this folder")
    args = p.parse_args(argv)
    grid = parse_grid(args.grid, "--grid")
    if args.out.is_dir():
        raise SystemExit(f"--out must be a file path, got the folder {str(args.out)!r}")
    res = report(grid, args.parity, args.keep)
    write_json(args.out, res)
    lint = res["lint"]
    print(
        f"mobilei2v {'x'.join(map(str, grid))}: {res['weights_fp16_mib']:.0f} MiB fp16 weights "
        f"({res['chunking']}); converted in {res['convert_s']:.0f} s, peak RSS "
        f"{res['peak_rss_gib']:.1f} GiB; lint {lint['errors']} errors, {lint['warnings']} "
        f"warnings; max rank {res['max_rank']} -> {args.out}"
    )
    if "run_mil" in res:
        print(f"  run_mil (fp16) vs torch (fp32): PSNR {res['run_mil']['psnr_db']:.1f} dB")
    return 0 if lint["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
