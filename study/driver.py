"""The study `mobileattn run` walks: the zoo on this CPU, per-block latency tables, per-block
quality tables against each teacher and its few-step students, the joint search over
(sampling steps, per-block attention), configs built for real and measured, export, report.

Each stage writes its table as JSON into the run folder (atomically). Every measurement
goes through the per-machine cache (study.cache), keyed by everything it depends on, the
code that computes it included (study.cache.code_version), so a re-run reuses what is
still valid (unless fresh) and a killed run resumes from its last finished measurement.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.machine import GEMM_PROBE_N
from export.files import remove_stale_temps, write_json
from hybrid_dit import format_pattern, mobilei2v_pattern, reference_patterns
from study.cache import Cache, code_version
from study.models import student_path, teacher_path

# The backend the search optimises by default, and why: a CPU user ships onnxruntime, a
# runtime without Python; configured alike (threads matched, spinning off) it ran these
# models faster than torch on AVX-512 Zen CPUs and the same within noise or slower on
# others (README, bench/results/model-cpu.json). `--target` picks another.
DEFAULT_TARGET = "onnxruntime-cpu"
# MobileI2V's recipe: its 7:1 pattern, sampled with this many steps after distillation.
RECIPE_STEPS = 2
# The teacher's own sampler in the quality-vs-steps table.
TEACHER_STEPS = 20


@dataclass(frozen=True)
class StudyConfig:
    """What `mobileattn run` measures. `quick()` is the embedded default (<= 15 min on a
    2-core CPU); `full()` is the whole sweep."""

    latency_preset: str = "mobilei2v"  # model whose latency is measured
    latency_grid: tuple[int, int, int] = (3, 23, 40)  # 720p x 17 frames latent
    backends: tuple[str, ...] = ("torch-cpu", "onnxruntime-cpu")  # + cuda when present
    target: str = DEFAULT_TARGET  # the backend whose latency the search trades against
    variants: tuple[str, ...] = ("softmax", "relu_linear")  # MobileI2V's two block kinds
    zoo_grids: tuple[tuple[int, int, int], ...] = ((4, 8, 8), (4, 16, 16), (3, 23, 40))
    zoo_variants: tuple[str, ...] | None = None  # None: every variant
    zoo_repeats: int = 7
    block_repeats: int = 7  # rounds of the interleaved block tables
    block_stack: int = 2  # blocks per timed stack (bench.latency.STACK)
    model_repeats: int = 5  # rounds of the interleaved whole-model timings
    model_backends: tuple[str, ...] | None = None  # whole-model latency (None: the target)
    # n of the (n x n) fp32 GEMM timed through each backend's matmul in the whole models'
    # rounds, which their fraction of the GEMM rate is quoted against (0: none)
    gemm_probe: int = GEMM_PROBE_N
    n_heldout: int = 8  # held-out clips of the quality measurements
    eval_ts: tuple[float, ...] = (0.25, 0.5, 0.75)  # timesteps of the held-out FM loss
    steps: tuple[int, ...] = (1, 2)  # sampling steps of the joint search
    teachers: int = 1  # committed teachers used: seeds 0 .. teachers - 1
    teacher: str | None = None  # one teacher .safetensors instead (its students beside it)
    act_batches: int = 8  # activation batches recorded for block distillation
    distill_steps: int = 200  # block distillation steps per swap: where its held-out error
    # plateaus (make distill-curve: 120-200 steps, bench/results/distill-curve.json)
    joint_steps: int = 0  # whole-model distillation steps for configs built for real
    budget: str = "mobilei2v"  # "mobilei2v" (its recipe's clip latency), "40ms" or "0.5x"
    # front points around the chosen one built for real (0: none). Quick: none, for time:
    # each is a whole model exported and timed on the target (~2.5 min on an AVX2 Zen 3).
    top_k: int = 0
    validate_references: bool = False  # also build all softmax / all relu_linear at its steps
    export: bool = True
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self):
        _validate(self)

    @classmethod
    def from_dict(cls, d: dict) -> StudyConfig:
        """A config from JSON: fields missing take the quick default's values; an unknown
        field is an error that names it. Lists become tuples."""
        if not isinstance(d, dict):
            raise TypeError(f"study config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"study config: unknown field(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        return dataclasses.replace(cls.quick(), **{k: _tuples(v) for k, v in d.items()})

    @classmethod
    def quick(cls) -> StudyConfig:
        return cls()

    def left_out(self) -> list[str]:
        """What this config leaves out of the whole sweep (`full()`), in words: derived
        from the fields, so the report says what really ran."""
        import attention_zoo as az

        full = StudyConfig.full()
        out = []
        missing = [v for v in az.VARIANTS if v not in self.variants]
        if missing:
            out.append(
                f"variants {', '.join(missing)} in the latency, quality and search stages "
                f"(they ran: {', '.join(self.variants)})"
            )
        zoo_missing = [v for v in az.VARIANTS if self.zoo_variants and v not in self.zoo_variants]
        if zoo_missing:
            out.append(f"variants {', '.join(zoo_missing)} in the zoo table")
        if self.teacher is not None:
            out.append(f"the committed teachers: one given teacher, {self.teacher}")
        elif self.teachers < full.teachers:
            out.append(
                f"{full.teachers - self.teachers} of the {full.teachers} committed teachers "
                f"(seeds {', '.join(map(str, range(self.teachers)))} ran; `--teachers "
                f"{full.teachers}` runs the robustness study over all)"
            )
        steps = [k for k in full.steps if k not in self.steps]
        if steps:
            out.append(
                f"sampling steps {', '.join(map(str, steps))} in the joint search (it ran "
                f"{', '.join(map(str, self.steps))})"
            )
        wm = self.whole_model_backends()
        others = [b for b in self.backends if b not in wm]
        if others:
            out.append(f"whole-model latency on {', '.join(others)} (measured on {', '.join(wm)})")
        if self.top_k < full.top_k or not self.validate_references:
            out.append(
                f"configs built for real: the chosen pair, {self.top_k} front neighbour(s) and "
                "MobileI2V's recipe"
                + ("" if self.validate_references else " (not all softmax / all relu_linear)")
            )
        if self.n_heldout < full.n_heldout:
            out.append(
                f"held-out quality on {self.n_heldout} clips (the whole sweep: {full.n_heldout})"
            )
        return [*out, *self.notes]

    @classmethod
    def full(cls) -> StudyConfig:
        import attention_zoo as az

        return cls(
            variants=tuple(az.VARIANTS),
            zoo_grids=((4, 8, 8), (4, 16, 16), (3, 23, 40), (6, 30, 34), (4, 64, 64)),
            block_repeats=9,
            model_repeats=7,
            model_backends=("torch-cpu", "onnxruntime-cpu"),
            n_heldout=16,
            eval_ts=(0.1, 0.3, 0.5, 0.7, 0.9),
            steps=(1, 2, 4, TEACHER_STEPS),
            teachers=3,
            top_k=4,
            validate_references=True,
        )

    def with_cuda(self) -> StudyConfig:
        if "cuda" in self.backends or not torch.cuda.is_available():
            return self
        return dataclasses.replace(self, backends=(*self.backends, "cuda"))

    def teacher_paths(self) -> list[Path]:
        if self.teacher is not None:
            return [Path(self.teacher)]
        return [teacher_path(s) for s in range(self.teachers)]

    def whole_model_backends(self) -> tuple[str, ...]:
        return self.model_backends or (self.target,)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _validate(c: StudyConfig) -> None:
    import attention_zoo as az
    from bench.latency import BACKENDS
    from hybrid_dit import PRESETS
    from study.search import Budget

    def pos_int(name, v, minimum=1):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"study config: {name} must be an int >= {minimum}, got {v!r}")

    def grid(name, g):
        if (
            not isinstance(g, (tuple, list))
            or len(g) != 3
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in g)
        ):
            raise ValueError(f"study config: {name} must be [T, H, W] positive ints, got {g!r}")

    def names(name, vs):
        if not isinstance(vs, (tuple, list)) or not vs:
            raise ValueError(f"study config: {name} must be a non-empty list, got {vs!r}")
        for v in vs:
            if not isinstance(v, str) or v not in az.VARIANTS:
                raise ValueError(
                    f"study config: {name} has unknown variant {v!r}; known: "
                    f"{', '.join(az.VARIANTS)}"
                )

    if c.latency_preset not in PRESETS:
        raise ValueError(
            f"study config: latency_preset must be one of {', '.join(PRESETS)}, "
            f"got {c.latency_preset!r}"
        )
    grid("latency_grid", c.latency_grid)
    depth = PRESETS[c.latency_preset].depth
    if isinstance(c.block_stack, int) and not isinstance(c.block_stack, bool):
        if not 1 <= c.block_stack <= depth:
            raise ValueError(
                f"study config: block_stack must be in [1, {depth}] (the latency preset's "
                f"depth), got {c.block_stack}"
            )
    if not isinstance(c.zoo_grids, (tuple, list)) or not c.zoo_grids:
        raise ValueError(f"study config: zoo_grids must be a non-empty list, got {c.zoo_grids!r}")
    for g in c.zoo_grids:
        grid("zoo_grids", g)
    names("variants", c.variants)
    for needed in ("softmax", "relu_linear"):
        if needed not in c.variants:
            raise ValueError(
                f"study config: variants must include {needed} (the teachers' variant and "
                "MobileI2V's linear block)"
            )
    if c.zoo_variants is not None:
        names("zoo_variants", c.zoo_variants)
    for name in ("backends", "model_backends"):
        vals = getattr(c, name)
        if vals is None and name == "model_backends":
            continue
        if not isinstance(vals, (tuple, list)) or any(b not in BACKENDS for b in vals):
            raise ValueError(f"study config: {name} must be a list of {BACKENDS}, got {vals!r}")
    if c.target not in BACKENDS:
        raise ValueError(f"study config: target must be one of {BACKENDS}, got {c.target!r}")
    if c.target not in c.backends:
        raise ValueError(
            f"study config: target {c.target!r} must be one of the measured backends "
            f"{list(c.backends)}"
        )
    for b in c.model_backends or ():
        if b not in c.backends:
            raise ValueError(f"study config: model_backends has {b!r}, not in backends")
    for name in (
        "zoo_repeats",
        "block_repeats",
        "block_stack",
        "model_repeats",
        "n_heldout",
        "act_batches",
        "distill_steps",
        "teachers",
    ):
        pos_int(name, getattr(c, name))
    pos_int("joint_steps", c.joint_steps, minimum=0)
    pos_int("top_k", c.top_k, minimum=0)  # 0: the chosen pair and the recipe only
    pos_int("gemm_probe", c.gemm_probe, minimum=0)  # 0: no GEMM timed beside the models
    if not isinstance(c.steps, (tuple, list)) or not c.steps:
        raise ValueError(f"study config: steps must be a non-empty list, got {c.steps!r}")
    for k in c.steps:
        pos_int("steps", k)
    if len(set(c.steps)) != len(c.steps):
        raise ValueError(f"study config: steps must be distinct, got {list(c.steps)}")
    if (
        not isinstance(c.eval_ts, (tuple, list))
        or not c.eval_ts
        or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 1
            for t in c.eval_ts
        )
    ):
        raise ValueError(f"study config: eval_ts must be numbers in (0, 1], got {c.eval_ts!r}")
    if c.budget != "mobilei2v":
        try:
            Budget.parse(c.budget)
        except (ValueError, TypeError) as e:
            raise ValueError(f"study config: budget: {e}") from None
    elif RECIPE_STEPS not in c.steps:
        raise ValueError(
            f"study config: budget 'mobilei2v' is MobileI2V's recipe (its pattern at "
            f"{RECIPE_STEPS} steps), so steps must include {RECIPE_STEPS}, got {list(c.steps)}"
        )
    if c.teacher is not None and not isinstance(c.teacher, str):
        raise TypeError(f"study config: teacher must be a path string, got {c.teacher!r}")
    for name in ("export", "validate_references"):
        if not isinstance(getattr(c, name), bool):
            raise TypeError(f"study config: {name} must be true or false, got {getattr(c, name)!r}")
    if not isinstance(c.notes, (tuple, list)) or not all(isinstance(n, str) for n in c.notes):
        raise TypeError(f"study config: notes must be a list of strings, got {c.notes!r}")


# Which code each cached stage depends on: its hash is part of every key of that stage, so
# a measurement computed by other code is never reused (study.cache.code_version).
LATENCY_CODE = (
    "attention_zoo",
    "kernels",
    "hybrid_dit",
    "export/onnx.py",
    "export/host.py",
    "export/bundle.py",
    "bench",
)
QUALITY_CODE = (
    "attention_zoo",
    "kernels",
    "hybrid_dit",
    "study/task.py",
    "study/dataset.py",
    "study/training.py",
    "study/evaluate.py",
    "study/distill.py",
    "study/models.py",
)
STAGE_CODE = {
    "zoo": LATENCY_CODE,
    "blocks": LATENCY_CODE,
    "models": LATENCY_CODE,
    "host": LATENCY_CODE,
    "quality-base": QUALITY_CODE,
    "quality-swap": QUALITY_CODE,
    "quality-steps": QUALITY_CODE,
    "build": QUALITY_CODE,
}


@dataclass
class TeacherRun:
    """One teacher's side of the study: its file, metadata, task data and, per sampling
    step count, the model sampled with it (a student or the teacher) and its activations."""

    index: int
    path: Path
    model: object
    meta: dict
    data: object
    samplers: dict = field(default_factory=dict)  # steps -> (model, kind, path)
    acts: dict = field(default_factory=dict)  # steps -> BlockActivations
    distilled: dict = field(default_factory=dict)  # steps -> {(block, variant, n): weights}


class Study:
    """Runs the stages in order; each returns its table and writes it into `out`."""

    def __init__(self, cfg: StudyConfig, out: Path, cache: Cache, progress: bool = True, log=print):
        self.cfg, self.out, self.cache, self.progress, self.log = (
            cfg,
            Path(out),
            cache,
            progress,
            log,
        )
        self.tables: dict[str, dict] = {}
        self.timings: dict[str, float] = {}
        self.built: dict = {}  # (teacher, steps, pattern) -> built model
        self.samples: dict = {}  # sampled frames for the report's image grid
        self._teachers: list[TeacherRun] | None = None
        remove_stale_temps(self.out)  # a killed run's temporaries

    def measure(self, stage, key, fn):
        """The cache, with the hash of the stage's code in the key."""
        code = STAGE_CODE.get(stage)
        if code is not None:
            key = {**key, "code": code_version(code)}
        return self.cache.get_or_compute(stage, key, fn)

    def _stage(self, name: str, fn):
        self.log(f"[{time.strftime('%H:%M:%S')}] {name} ...")
        t0 = time.perf_counter()
        table = fn()
        self.timings[name] = time.perf_counter() - t0
        self.tables[name] = table
        write_json(self.out / f"{name}.json", table)
        self.log(f"    done in {self.timings[name]:.0f} s -> {self.out / (name + '.json')}")
        return table

    # -- stages -------------------------------------------------------------------------------
    def zoo(self) -> dict:
        from bench.zoo_cpu import compare_implementations

        def run():
            return compare_implementations(
                grids=self.cfg.zoo_grids,
                variants=self.cfg.zoo_variants,
                repeats=self.cfg.zoo_repeats,
                progress=self.progress,
                measure=self.measure,
            )

        return self._stage("zoo_cpu", run)

    def latency(self) -> dict:
        from bench.latency import block_table, machine_block

        def run():
            out = {**machine_block(), "blocks": {}, "target": self.cfg.target}
            for backend in self.cfg.backends:
                out["blocks"][backend] = block_table(
                    self.cfg.latency_preset,
                    self.cfg.latency_grid,
                    backend,
                    variants=self.cfg.variants,
                    repeats=self.cfg.block_repeats,
                    stack=self.cfg.block_stack,
                    progress=self.progress,
                    measure=self.measure,
                )
            out["host"] = self._host_part()
            return out

        return self._stage("latency", run)

    def _host_part(self) -> dict:
        """The host loop's own cost around the exported step (bench.latency.host_table):
        a fixed per-clip part and a per-step part, which the clip latency adds. (A latent
        video codec's encoder and decoder would be fixed costs too; this study's codec is
        space-to-depth, and MobileI2V's VAE is outside it.)"""
        from bench.latency import host_table
        from hybrid_dit import PRESETS

        cfg = PRESETS[self.cfg.latency_preset]
        key = {"preset": cfg.to_dict(), "grid": list(self.cfg.latency_grid)}
        res, cached = self.measure(
            "host",
            {**key, "repeats": self.cfg.block_repeats},
            lambda: host_table(cfg, self.cfg.latency_grid, repeats=self.cfg.block_repeats),
        )
        return {**res, "cached": cached}

    def teachers(self) -> list[TeacherRun]:
        """Loads each teacher, its task data (its own clips; our held-out measurement), and
        the model each step count of the joint search samples with: the committed K-step
        student beside it, or the teacher itself (at 20 steps, or undistilled when no
        student exists)."""
        if self._teachers is None:
            from study.dataset import TaskSpec, load_task
            from study.models import load_model
            from study.task import VideoSpec

            runs = []
            for i, path in enumerate(self.cfg.teacher_paths()):
                teacher, meta = load_model(path)
                check_teacher(path, teacher, meta)
                task = meta["task"]
                spec = TaskSpec(
                    video=VideoSpec(**task["video"]),
                    n_train=task["n_train"],
                    n_heldout=self.cfg.n_heldout,
                    eval_ts=self.cfg.eval_ts,
                )
                run = TeacherRun(i, Path(path), teacher, meta, load_task(spec))
                for k in self.cfg.steps:
                    sp = student_path(path, k)
                    if sp.is_file():
                        student, _ = load_model(sp)
                        if student.cfg.sample_steps != k or student.cfg.replace(
                            sample_steps=None
                        ) != teacher.cfg.replace(sample_steps=None):
                            raise ValueError(
                                f"{sp} is not a {k}-step student of {path}: its config is "
                                f"{student.cfg.to_dict()}, the teacher's {teacher.cfg.to_dict()}"
                            )
                        run.samplers[k] = (student, "student", sp)
                    else:
                        kind = "teacher" if k >= TEACHER_STEPS else "teacher (no student)"
                        run.samplers[k] = (teacher, kind, Path(path))
                runs.append(run)
            self._teachers = runs
        return self._teachers

    def _acts(self, run: TeacherRun, k: int):
        """The activations of step count k's model, recorded on first use (a cached run
        needs only their key)."""
        if k not in run.acts:
            from study.distill import LazyActivations

            model = run.samplers[k][0]
            run.acts[k] = LazyActivations(model, run.data, batches=self.cfg.act_batches)
        return run.acts[k]

    def quality(self) -> dict:
        from study.distill import swap_table
        from study.evaluate import copy_baseline_psnr, evaluate_sampler
        from study.models import fingerprint

        def run():
            out = {
                "teachers": [],
                "variants": list(self.cfg.variants),
                "steps": list(self.cfg.steps),
            }
            for r in self.teachers():
                sidecar = _sidecar(r.path)
                by_steps = {}
                for k in self.cfg.steps:
                    model, kind, path = r.samplers[k]
                    table = swap_table(
                        model,
                        r.data,
                        self.cfg.variants,
                        self._acts(r, k),
                        steps=k,
                        distill_steps=self.cfg.distill_steps,
                        measure=self.measure,
                        progress=self.progress,
                        distilled=r.distilled.setdefault(k, {}),
                    )
                    table["sampler"] = {"kind": kind, "path": _rel(path)}
                    by_steps[str(k)] = table
                steps_table = []
                for k in sorted({1, 2, 4, 8, TEACHER_STEPS, *self.cfg.steps}):
                    key = {
                        "teacher": fingerprint(r.model),
                        "steps": k,
                        "task": r.data.spec.to_dict(),
                    }
                    q, _ = self.measure(
                        "quality-steps",
                        key,
                        lambda k=k, r=r: evaluate_sampler(r.model, r.data, k),
                    )
                    steps_table.append({"model": "teacher", "steps": k, **q})
                for k in self.cfg.steps:
                    model, kind, _ = r.samplers[k]
                    if kind == "student":
                        steps_table.append(
                            {"model": f"{k}-step student", "steps": k, **by_steps[str(k)]["base"]}
                        )
                out["teachers"].append(
                    {
                        "path": _rel(r.path),
                        "seed": r.meta.get("seed"),
                        "trained_by": r.meta.get("command"),
                        "train_seconds": r.meta.get("train_seconds"),
                        "sidecar_heldout": (sidecar or {}).get("heldout"),
                        "sidecar_n_heldout": r.meta["task"].get("n_heldout"),
                        "copy_first_frame_psnr": copy_baseline_psnr(r.data),
                        "task": r.data.spec.to_dict(),
                        "tables": by_steps,
                        "steps_table": steps_table,
                    }
                )
            return out

        return self._stage("quality", run)

    def _options(self, backend: str, t: dict):
        return step_options(
            self.tables["latency"]["blocks"][backend],
            t,
            self.cfg.steps,
            self.tables["latency"]["host"],
        )

    def _search_one(self, backend: str, t: dict) -> dict:
        res = search_pairs(self._options(backend, t), self.cfg.budget)
        return {"backend": backend, **res}

    def _pair_totals(self, options, steps: int, config) -> tuple[float, float]:
        return pair_totals(options, steps, config)

    def search(self) -> dict:
        def run():
            out = {"target": self.cfg.target, "teachers": []}
            for t in self.tables["quality"]["teachers"]:
                per = {b: self._search_one(b, t) for b in self.cfg.backends}
                out["teachers"].append(
                    {"path": t["path"], "by_backend": per, **per[self.cfg.target]}
                )
            return out

        return self._stage("search", run)

    def validate(self) -> dict:
        """Per teacher: the chosen pair, its front neighbours and MobileI2V's recipe built for
        real (block distillation against that step count's model) and measured on held-out
        clips; whole models of every pattern built timed interleaved; predicted vs
        measured; chosen vs recipe per clip (paired) for the robustness table."""
        from bench.latency import full_depth_predictions, model_table, scaled_leave_one_out
        from bench.stats import rank_correlation

        def run():
            teachers = self.teachers()
            depth = teachers[0].model.cfg.depth
            picks_all = []
            for r, s in zip(teachers, self.tables["search"]["teachers"], strict=True):
                chosen = (s["best"]["steps"], tuple(s["best"]["config"]))
                recipe = (s["recipe"]["steps"], tuple(s["recipe"]["config"]))
                picks = [chosen] if recipe == chosen else [chosen, recipe]
                for p in _around(s["front"], chosen, self.cfg.top_k):
                    if p not in picks:
                        picks.append(p)
                for ref in reference_patterns(depth) if self.cfg.validate_references else ():
                    p = (chosen[0], ref)
                    if p not in picks:
                        picks.append(p)
                picks_all.append((r, s, chosen, recipe, picks))
            patterns = []
            for *_, picks in picks_all:
                for _, config in picks:
                    if config not in patterns:
                        patterns.append(config)
            latency = {}
            for backend in self.cfg.whole_model_backends():
                latency[backend] = model_table(
                    self.cfg.latency_preset,
                    self.cfg.latency_grid,
                    backend,
                    patterns=patterns,
                    blocks=self.tables["latency"]["blocks"][backend],
                    repeats=self.cfg.model_repeats,
                    progress=self.progress,
                    measure=self.measure,
                    # the variants' block stacks again, in the models' rounds (no drift)
                    same_rounds=[v for v in self.cfg.variants if any(v in p for p in patterns)],
                    stack=self.cfg.block_stack,
                    gemm_probe_n=self.cfg.gemm_probe or None,
                )
            host = self.tables["latency"]["host"]
            fixed, per_step = host["fixed_ms"], host["per_step_ms"]
            rows, robust = [], []
            for r, _, chosen, recipe, picks in picks_all:
                q_by = {}
                for steps, config in picks:
                    q, cached = self._build_quality(r, steps, config)
                    q_by[steps, config] = q
                    row = {
                        "teacher": r.index,
                        "steps": steps,
                        "pattern": format_pattern(config),
                        "attention": list(config),
                        "chosen": (steps, config) == chosen,
                        "recipe": (steps, config) == recipe,
                        "mse": q["mse"],
                        "psnr": q["psnr"],
                        "quality_cached": cached,
                    }
                    options = self._options(self.cfg.target, self._qt(r))
                    row["predicted_mse"] = self._pair_totals(options, steps, config)[1]
                    for backend, table in latency.items():
                        m = next(x for x in table["models"] if x["attention"] == list(config))
                        row[backend] = {
                            "step_measured_ms": m["median_ms"],
                            "step_ci_ms": [m["ci_low_ms"], m["ci_high_ms"]],
                            "step_predicted_ms": m["predicted_ms"],
                            "step_prediction_error": m["prediction_error"],
                            "step_same_rounds_predicted_ms": m.get("same_rounds_predicted_ms"),
                            "step_prediction_error_ci": m.get("prediction_error_ci"),
                            "step_same_rounds_error": m.get("same_rounds_error"),
                            "step_same_rounds_error_ci": m.get("same_rounds_error_ci"),
                            "step_fraction_of_gemm": m.get("fraction_of_gemm"),
                            "step_fraction_of_gemm_ci": m.get("fraction_of_gemm_ci"),
                            "clip_measured_ms": fixed + steps * (m["median_ms"] + per_step),
                            "clip_ci_ms": [
                                fixed + steps * (m["ci_low_ms"] + per_step),
                                fixed + steps * (m["ci_high_ms"] + per_step),
                            ],
                            "clip_predicted_ms": fixed + steps * (m["predicted_ms"] + per_step),
                        }
                    rows.append(row)
                robust.append(_paired(r.index, q_by[chosen], q_by[recipe], chosen, recipe))

            def rho(backend, a, b, rows=rows):
                xs = [x[backend][a] if backend else x[a] for x in rows]
                ys = [x[backend][b] if backend else x[b] for x in rows]
                return rank_correlation(xs, ys)

            return {
                "configs": rows,
                "whole_models": latency,
                "spearman_latency": {
                    b: rho(b, "clip_predicted_ms", "clip_measured_ms") for b in latency
                },
                "worst_step_prediction_error": {
                    b: max(abs(m["prediction_error"]) for m in t["models"])
                    for b, t in latency.items()
                },
                # the block sum from stacks timed in the whole models' own rounds
                "worst_same_rounds_error": {
                    b: max(
                        (
                            abs(m["same_rounds_error"])
                            for m in t["models"]
                            if "same_rounds_error" in m
                        ),
                        default=None,
                    )
                    for b, t in latency.items()
                },
                # the block table's relative costs times one in-model factor calibrated on
                # the other whole models built here, each model held out in turn
                "calibrated_step_prediction": {
                    b: scaled_leave_one_out(
                        {"blocks": self.tables["latency"]["blocks"][b], "models": t}
                    )
                    for b, t in latency.items()
                },
                # the mixes from the one-variant whole models timed beside them (blocks
                # timed inside full-depth models): where those were built, as with
                # validate_references
                "full_depth_step_prediction": {
                    b: full_depth_predictions(t["models"], depth) for b, t in latency.items()
                },
                "spearman_quality": rho(None, "predicted_mse", "mse"),
                "robustness": robust,
                "robustness_mean": _mean_paired(robust),
            }

        return self._stage("validate", run)

    def _qt(self, r: TeacherRun) -> dict:
        return self.tables["quality"]["teachers"][r.index]

    def _build_quality(self, r: TeacherRun, steps: int, config):
        from study.models import fingerprint

        model_k = r.samplers[steps][0]
        key = {
            "base": fingerprint(model_k),
            "steps": steps,
            "attention": list(config),
            "task": r.data.spec.to_dict(),
            "distill_steps": self.cfg.distill_steps,
            "joint_steps": self.cfg.joint_steps,
            "activations": self._acts(r, steps).key,
        }

        def build():
            return self._build(r, steps, config)[1]

        return self.measure("build", key, build)

    def _build(self, r: TeacherRun, steps: int, config):
        """`config` built for real on the `steps`-step model of teacher r (study.distill.
        build_config), reusing the blocks the quality stage distilled."""
        from study.distill import build_config

        k = (r.index, steps, tuple(config))
        if k not in self.built:
            model, q = build_config(
                r.samplers[steps][0],
                r.data,
                config,
                self._acts(r, steps),
                steps,
                distill_steps=self.cfg.distill_steps,
                joint_steps=self.cfg.joint_steps,
                distilled=r.distilled.setdefault(steps, {}),
            )
            self.built[k] = (model, q)
        return self.built[k]

    def image_grid(self) -> dict:
        """Frames of a few held-out clips for the report: the truth, each teacher at 20
        steps, and teacher 0's chosen pair and MobileI2V's recipe built for real."""
        from hybrid_dit import sample
        from study.task import decode

        r0 = self.teachers()[0]
        s0 = self.tables["search"]["teachers"][0]
        data = r0.data
        clips = slice(0, min(4, data.test_x.shape[0]))
        rows = {"truth": data.test_frames[clips]}

        def frames(model, steps):
            video = sample(
                model, data.test_x[clips, :, 0], data.test_motion[clips], steps, data.grid,
                noise=data.sample_noise[clips],
            )  # fmt: skip
            return decode(video, data.spec.video.factor).clamp(-1, 1)

        for r in self.teachers():
            rows[f"teacher {r.index} (20 steps)"] = frames(r.model, TEACHER_STEPS)
        for label, key in (("chosen", "best"), ("MobileI2V's recipe", "recipe")):
            steps, config = s0[key]["steps"], tuple(s0[key]["config"])
            model, _ = self._build(r0, steps, config)
            rows[f"{label}: {format_pattern(config)} @ {steps} steps"] = frames(model, steps)
        self.samples = rows
        return rows

    def export(self) -> dict:
        from export.bundle import write_bundle
        from hybrid_dit import example_inputs

        def run():
            s0 = self.tables["search"]["teachers"][0]
            r0 = self.teachers()[0]
            steps, config = s0["best"]["steps"], tuple(s0["best"]["config"])
            model, _ = self._build(r0, steps, config)
            inputs = example_inputs(model.cfg, r0.data.grid, seed=0)
            folder = self.out / "export"
            res = write_bundle(model, inputs, folder, steps=steps, progress=self.progress)
            res["preset"] = "small (the trained, distilled chosen config of teacher 0)"
            res["attention"] = list(config)
            res["steps"] = steps
            return res

        return self._stage("export", run)


def check_teacher(path, teacher, meta: dict) -> None:
    """A teacher is a flow model (sampled with any step count) that records its task."""
    if teacher.cfg.sample_steps is not None:
        raise ValueError(
            f"--teacher: {path} is a {teacher.cfg.sample_steps}-step student, not a teacher "
            "(a flow model sampled with any step count)"
        )
    task = meta.get("task")
    if not isinstance(task, dict) or not {"video", "n_train"} <= set(task):
        raise ValueError(f"--teacher: {path} records no task (video, n_train) in its metadata")


def step_options(blocks: dict, teacher_quality: dict, steps, host: dict | None = None) -> list:
    """The joint search's input for one teacher: a StepOption per step count, from a block
    table (bench.latency.block_table), the host loop's cost (bench.latency.host_table: a
    fixed per-clip part, and a per-step part charged with the model's overhead) and the
    teacher's entry of the quality table (its swap tables by step count). Variants missing
    from either table are left out."""
    fixed_ms = 0.0 if host is None else host["fixed_ms"]
    host_step_ms = 0.0 if host is None else host["per_step_ms"]
    from bench.latency import per_block_latency
    from study.distill import quality_delta_table
    from study.search import StepOption

    depth = blocks["depth"]
    lat = per_block_latency(blocks)
    options = []
    for k in steps:
        table = teacher_quality["tables"].get(str(k))
        if table is None:
            raise ValueError(
                f"the quality table has no swap table at {k} steps; it has "
                f"{', '.join(teacher_quality['tables'])}"
            )
        if len(table["base"]["attention"]) != depth:
            raise ValueError(
                f"the latency preset has {depth} blocks but the teacher has "
                f"{len(table['base']['attention'])}; the tables must describe the same blocks"
            )
        qual = quality_delta_table(table, depth)
        missing = [(i, v) for i, row in enumerate(qual) for v in row if v not in lat[i]]
        if missing:
            raise ValueError(
                f"the latency table lacks variants the quality table has: {missing[:3]}"
            )
        lat_k = [{v: ms for v, ms in row.items() if v in qual[i]} for i, row in enumerate(lat)]
        options.append(
            StepOption(
                steps=int(k),
                latency=lat_k,
                quality=qual,
                base_quality=table["base"]["mse"],
                step_overhead_ms=blocks["overhead"]["median_ms"] + host_step_ms,
                fixed_ms=fixed_ms,
            )
        )
    return options


def pair_totals(options, steps: int, config) -> tuple[float, float]:
    """(predicted clip latency ms, predicted pixel MSE) of one (steps, config) pair."""
    from study.search import _exact_totals

    opt = next((o for o in options if o.steps == steps), None)
    if opt is None:
        raise ValueError(
            f"no tables at {steps} steps; the options have {[o.steps for o in options]}"
        )
    lat, q = _exact_totals(opt, config)
    return float(lat), float(q)


def search_pairs(options, budget: str = "mobilei2v") -> dict:
    """The joint front over `options`, MobileI2V's recipe on it, and the best pair under the
    budget: "mobilei2v" (the recipe's own clip latency), "40ms" (clip latency) or "0.5x"
    (of all softmax at the recipe's step count)."""
    from study.search import Budget, joint_best, joint_front

    depth = len(options[0].latency)
    front = joint_front(options)
    steps = RECIPE_STEPS if any(o.steps == RECIPE_STEPS for o in options) else options[0].steps
    config = mobilei2v_pattern(depth)
    lat, q = pair_totals(options, steps, config)
    recipe = {"steps": steps, "config": list(config), "latency_ms": lat, "quality": q}
    if budget == "mobilei2v":
        budget_ms = lat * (1 + 1e-12)  # its own latency, widened so rounding cannot exclude it
    else:
        b = Budget.parse(budget)
        ref = pair_totals(options, steps, ("softmax",) * depth)[0] if b.unit == "x" else None
        budget_ms = b.to_ms(ref)
    best = joint_best(front, budget_ms)
    return {
        "front": [p.to_dict() for p in front],
        "best": best.to_dict(),
        "budget_ms": budget_ms,
        "budget_from": budget,
        "recipe": recipe,
    }


def _around(front: list[dict], chosen: tuple, k: int) -> list[tuple]:
    """Up to k front points nearest the chosen one along the front (by index)."""
    pts = [(p["steps"], tuple(p["config"])) for p in front]
    if chosen not in pts:
        return pts[:k]
    i = pts.index(chosen)
    order = sorted(range(len(pts)), key=lambda j: (abs(j - i), j))
    return [pts[j] for j in order[1 : k + 1]]


def _paired(teacher: int, chosen: dict, recipe: dict, c_key, r_key) -> dict:
    """Chosen vs recipe on the same held-out clips and noise: PSNR of each, and the mean
    per-clip MSE difference (recipe - chosen; > 0: the chosen is better) with a bootstrap
    interval over clips."""
    from bench.stats import mean_ci

    diffs = [b - a for a, b in zip(chosen["clip_mse"], recipe["clip_mse"], strict=True)]
    lo, hi = mean_ci(diffs)
    return {
        "teacher": teacher,
        "chosen": {
            "steps": c_key[0],
            "pattern": format_pattern(c_key[1]),
            "psnr": chosen["psnr"],
            "mse": chosen["mse"],
        },
        "recipe": {
            "steps": r_key[0],
            "pattern": format_pattern(r_key[1]),
            "psnr": recipe["psnr"],
            "mse": recipe["mse"],
        },
        "psnr_gain_db": chosen["psnr"] - recipe["psnr"],
        "mse_gain": sum(diffs) / len(diffs),
        "mse_gain_ci": [lo, hi],
        "clips": len(diffs),
        "clip_mse_differences": diffs,
    }


def _mean_paired(robust: list[dict]) -> dict:
    """Chosen vs recipe over all teachers: the mean per-clip MSE gain with a bootstrap
    interval over all (teacher, clip) pairs, and the mean PSNR gain."""
    from bench.stats import mean_ci

    diffs = [d for r in robust for d in r["clip_mse_differences"]]
    lo, hi = mean_ci(diffs)
    return {
        "teachers": len(robust),
        "mse_gain": sum(diffs) / len(diffs),
        "mse_gain_ci": [lo, hi],
        "psnr_gain_db": sum(r["psnr_gain_db"] for r in robust) / len(robust),
        "chosen_better_for": sum(r["mse_gain_ci"][0] > 0 for r in robust),
        "recipe_better_for": sum(r["mse_gain_ci"][1] < 0 for r in robust),
    }


def _sidecar(path: Path) -> dict | None:
    import json

    side = Path(path).with_suffix(".json")
    return json.loads(side.read_text()) if side.is_file() else None


def _rel(path) -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def finite(x) -> bool:
    return x is not None and math.isfinite(x)
