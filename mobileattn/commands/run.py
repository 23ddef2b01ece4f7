"""`mobileattn run`: the whole study on the embedded default (study.driver), then the
report. `--full` runs the whole sweep instead of the quick default."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

# bench.latency.BACKENDS (not imported here: --help stays fast and torch-free)
TARGETS = ("torch-cpu", "onnxruntime-cpu", "cuda")


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run the study on the embedded default and write a report")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: results/run-<timestamp>)"
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="measure everything again instead of reusing this machine's cache",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="the whole sweep (every variant, three teachers, steps 1, 2, 4 and 20, more "
        "grids and clips; hours on 2 cores)",
    )
    p.add_argument(
        "--budget",
        default=None,
        help='clip latency budget: "mobilei2v" (MobileI2V\'s recipe, its 7:1 pattern at 2 '
        'steps, default), "40ms" or "0.5x" (of all softmax at 2 steps)',
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path("results") / ".cache",
        help="measurement cache folder (default: results/.cache)",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="one teacher .safetensors instead of the committed ones (its students, "
        "<stem>-student<K>.safetensors, are used where they exist beside it)",
    )
    p.add_argument(
        "--teachers",
        type=int,
        default=None,
        help="how many committed teachers (seeds 0..N-1) the quality stage and the robustness "
        "table use (quick default: 1; --full: 3)",
    )
    p.add_argument(
        "--target",
        default=None,
        choices=TARGETS,
        help="the backend whose latency the search trades against (default: onnxruntime-cpu, "
        "what a CPU user ships; the report shows both CPU backends' choices side by side)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON file of study settings (fields of study.driver.StudyConfig; missing "
        "fields take the quick default's values)",
    )
    p.add_argument("--no-export", action="store_true", help="skip the export stage")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_label(args) -> str:
    """What this run is, in words: its base config and the options that change it."""
    if args.config is not None:
        base = f"config {args.config}"
    else:
        base = "full sweep" if args.full else "quick default"
    flags = [
        f"--{name} {getattr(args, name)}"
        for name in ("budget", "teacher", "teachers", "target")
        if getattr(args, name) is not None
    ]
    if args.no_export:
        flags.append("--no-export")
    return base + (f" with {', '.join(flags)}" if flags else "")


def run(args) -> int:
    from study.cache import Cache
    from study.driver import Study, StudyConfig
    from study.report import write_report
    from study.search import Budget

    if args.config is not None:
        if args.full:
            raise ValueError("--config and --full do not go together")
        if not args.config.is_file():
            raise FileNotFoundError(f"--config: no such file {str(args.config)!r}")
        try:
            raw = json.loads(args.config.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--config: {args.config} is not valid JSON ({e})") from None
        cfg = StudyConfig.from_dict(raw)
    else:
        cfg = StudyConfig.full() if args.full else StudyConfig.quick()
    if args.budget is not None:
        if args.budget != "mobilei2v":
            try:
                Budget.parse(args.budget)
            except (ValueError, TypeError) as e:
                raise ValueError(f"--budget: {e}") from None
        cfg = dataclasses.replace(cfg, budget=args.budget)
    if args.teacher is not None:
        if not args.teacher.is_file():
            raise FileNotFoundError(f"--teacher: no such file {str(args.teacher)!r}")
        if args.teachers is not None:
            raise ValueError("--teacher and --teachers do not go together")
        cfg = dataclasses.replace(cfg, teacher=str(args.teacher))
    if args.teachers is not None:
        from study.models import teacher_path

        if not 1 <= args.teachers <= 3:
            raise ValueError(f"--teachers must be 1, 2 or 3 (committed seeds), got {args.teachers}")
        for seed in range(args.teachers):
            if not teacher_path(seed).is_file():
                raise FileNotFoundError(f"--teachers: the teacher {teacher_path(seed)} is missing")
        cfg = dataclasses.replace(cfg, teachers=args.teachers)
    if args.target is not None:
        if args.target == "cuda" and not torch_cuda():
            raise ValueError("--target cuda needs a CUDA device; none is available here")
        backends = cfg.backends if args.target in cfg.backends else (*cfg.backends, args.target)
        cfg = dataclasses.replace(cfg, target=args.target, backends=backends)
    if args.no_export:
        cfg = dataclasses.replace(cfg, export=False)
    cfg = cfg.with_cuda()
    out = args.out or Path("results") / time.strftime("run-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    study = Study(cfg, out, Cache(args.cache, fresh=args.fresh), progress=not args.no_progress)
    print(f"mobileattn run ({run_label(args)}) -> {out}")
    t0 = time.perf_counter()
    study.zoo()
    study.latency()
    study.quality()
    study.search()
    study.validate()
    study.image_grid()
    if cfg.export:
        study.export()
    path = write_report(study)
    print(
        f"\nreport: {path} ({time.perf_counter() - t0:.0f} s in all, "
        f"{len(study.cache.hits)} measurements reused from the cache)"
    )
    return 0
