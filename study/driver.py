"""The study `mobileattn run` walks: zoo latency vs N, per-block latency tables, per-block
quality tables against the teacher, the search, configs built for real, export, report.

Each stage writes its table as JSON into the run folder (atomically). Every single
measurement goes through the per-machine cache (study.cache), so a re-run reuses
them (unless fresh) and a killed run resumes from its last finished measurement.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from export.files import remove_stale_temps, write_json
from hybrid_dit import mobilei2v_pattern, reference_patterns
from study.cache import Cache


@dataclass(frozen=True)
class StudyConfig:
    """What `mobileattn run` measures. `quick()` is the embedded default (<= 15 min on a
    2-core CPU); `full()` is the whole sweep."""

    latency_preset: str = "mobilei2v"  # model whose latency is measured
    latency_grid: tuple[int, int, int] = (3, 23, 40)  # 720p x 17 frames latent
    backends: tuple[str, ...] = ("torch-cpu", "onnxruntime-cpu")  # + cuda when present
    variants: tuple[str, ...] = ("softmax", "relu_linear", "focused_linear", "softmax_frame")
    zoo_grids: tuple[tuple[int, int, int], ...] = ((4, 8, 8), (4, 16, 16), (3, 23, 40))
    zoo_variants: tuple[str, ...] | None = None  # None: every variant
    block_repeats: int = 3
    model_repeats: int = 2
    model_backends: tuple[str, ...] = ("torch-cpu",)  # whole-model latency backends
    n_heldout: int = 8  # held-out clips of the quality measurements
    eval_ts: tuple[float, ...] = (0.25, 0.5, 0.75)
    sample_steps: int = 2
    act_batches: int = 8  # teacher activation batches recorded for block distillation
    distill_steps: int = 60  # block distillation steps per swap
    joint_steps: int = 20  # whole-model distillation steps for configs built for real
    budget: str = "mobilei2v"  # "mobilei2v" (its pattern's latency), "40ms" or "0.5x"
    teacher: str | None = None  # teacher .safetensors (None: the committed one)
    top_k: int = 2  # front configs around the budget built for real
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
        omitted = (
            "variants elu_linear, cosformer, performer and sigmoid in the latency, quality "
            "and search stages (the zoo latency plot has all eight)",
            "whole-model latency on onnxruntime (per-block onnxruntime tables are measured)",
            "held-out quality on 8 clips, 3 timesteps and 2 sampling steps",
        )
        return cls(notes=omitted)

    @classmethod
    def full(cls) -> StudyConfig:
        import attention_zoo as az

        return cls(
            variants=tuple(az.VARIANTS),
            zoo_grids=((4, 8, 8), (4, 16, 16), (3, 23, 40), (6, 30, 34), (4, 64, 64)),
            block_repeats=5,
            model_repeats=3,
            model_backends=("torch-cpu", "onnxruntime-cpu"),
            n_heldout=16,
            eval_ts=(0.1, 0.3, 0.5, 0.7, 0.9),
            sample_steps=4,
            top_k=5,
        )

    def with_cuda(self) -> StudyConfig:
        if "cuda" in self.backends or not torch.cuda.is_available():
            return self
        return dataclasses.replace(self, backends=(*self.backends, "cuda"))

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
    if not isinstance(c.zoo_grids, (tuple, list)) or not c.zoo_grids:
        raise ValueError(f"study config: zoo_grids must be a non-empty list, got {c.zoo_grids!r}")
    for g in c.zoo_grids:
        grid("zoo_grids", g)
    names("variants", c.variants)
    if "softmax" not in c.variants:
        raise ValueError("study config: variants must include softmax (the teacher's variant)")
    if c.zoo_variants is not None:
        names("zoo_variants", c.zoo_variants)
    for name in ("backends", "model_backends"):
        vals = getattr(c, name)
        if not isinstance(vals, (tuple, list)) or any(b not in BACKENDS for b in vals):
            raise ValueError(f"study config: {name} must be a list of {BACKENDS}, got {vals!r}")
    if "torch-cpu" not in c.backends:
        raise ValueError("study config: backends must include torch-cpu (the search uses it)")
    for name in (
        "block_repeats",
        "model_repeats",
        "n_heldout",
        "sample_steps",
        "act_batches",
        "distill_steps",
        "top_k",
    ):
        pos_int(name, getattr(c, name))
    pos_int("joint_steps", c.joint_steps, minimum=0)
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
    if c.teacher is not None and not isinstance(c.teacher, str):
        raise TypeError(f"study config: teacher must be a path string, got {c.teacher!r}")
    if not isinstance(c.export, bool):
        raise TypeError(f"study config: export must be true or false, got {c.export!r}")
    if not isinstance(c.notes, (tuple, list)) or not all(isinstance(n, str) for n in c.notes):
        raise TypeError(f"study config: notes must be a list of strings, got {c.notes!r}")


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
        self.distilled: dict = {}  # (block, variant, steps) -> distilled block weights
        self.timings: dict[str, float] = {}
        remove_stale_temps(self.out)  # a killed run's temporaries

    def measure(self, stage, key, fn):
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
        from bench.machine import copy_bandwidth
        from bench.zoo_cpu import compare_references

        def run():
            res = compare_references(
                grids=self.cfg.zoo_grids,
                variants=self.cfg.zoo_variants,
                progress=self.progress,
                measure=self.measure,
            )
            res["copy_gbps"] = copy_bandwidth()
            return res

        return self._stage("zoo_cpu", run)

    def latency(self) -> dict:
        from bench.latency import block_table, machine_block, model_table
        from hybrid_dit import PRESETS

        def run():
            out = {**machine_block(), "blocks": {}, "models": {}}
            depth = PRESETS[self.cfg.latency_preset].depth
            for backend in self.cfg.backends:
                out["blocks"][backend] = block_table(
                    self.cfg.latency_preset,
                    self.cfg.latency_grid,
                    backend,
                    variants=self.cfg.variants,
                    repeats=self.cfg.block_repeats,
                    progress=self.progress,
                    measure=self.measure,
                )
            for backend in self.cfg.model_backends:
                out["models"][backend] = model_table(
                    self.cfg.latency_preset,
                    self.cfg.latency_grid,
                    backend,
                    patterns=reference_patterns(depth),
                    blocks=out["blocks"][backend],
                    repeats=self.cfg.model_repeats,
                    progress=self.progress,
                    measure=self.measure,
                )
            return out

        return self._stage("latency", run)

    def _quality_setup(self):
        if not hasattr(self, "_q"):
            from study.dataset import TaskSpec, load_task
            from study.distill import record_activations
            from study.models import TEACHER_PATH, load_model
            from study.task import VideoSpec

            teacher, meta = load_model(self.cfg.teacher or TEACHER_PATH)
            task = meta.get("task", {})
            # the teacher's own clips and training pool; the held-out measurement is ours
            spec = TaskSpec(
                video=VideoSpec(**task["video"]),
                n_train=task["n_train"],
                n_heldout=self.cfg.n_heldout,
                eval_ts=self.cfg.eval_ts,
                sample_steps=self.cfg.sample_steps,
            )
            data = load_task(spec)
            acts = record_activations(teacher, data, batches=self.cfg.act_batches)
            self._q = (teacher, meta, data, acts)
        return self._q

    def quality(self) -> dict:
        from study.distill import swap_table
        from study.evaluate import copy_baseline_psnr

        def run():
            teacher, meta, data, acts = self._quality_setup()
            table = swap_table(
                teacher,
                data,
                self.cfg.variants,
                acts,
                distill_steps=self.cfg.distill_steps,
                measure=self.measure,
                progress=self.progress,
                distilled=self.distilled,
            )
            table["teacher"]["trained_by"] = meta.get("command")
            table["task"] = data.spec.to_dict()
            table["copy_first_frame_psnr"] = copy_baseline_psnr(data)
            return table

        return self._stage("quality", run)

    def search(self) -> dict:
        from bench.latency import per_block_latency, predict_ms
        from study.distill import quality_loss_table
        from study.search import Budget, config_totals, search

        def run():
            blocks = self.tables["latency"]["blocks"]["torch-cpu"]
            depth = blocks["depth"]
            q_depth = len(self.tables["quality"]["teacher"]["attention"])
            if q_depth != depth:
                raise ValueError(
                    f"the latency preset has {depth} blocks but the teacher has {q_depth}; "
                    "the per-block tables must describe the same blocks"
                )
            lat = per_block_latency(blocks)
            qual = quality_loss_table(self.tables["quality"], depth)
            lat = [
                {v: ms for v, ms in row.items() if v in qual[i] or v == "softmax"}
                for i, row in enumerate(lat)
            ]
            qual = [{v: q for v, q in row.items() if v in lat[i]} for i, row in enumerate(qual)]
            paper = mobilei2v_pattern(depth)
            paper_lat, paper_q = config_totals(lat, qual, paper)
            if self.cfg.budget == "mobilei2v":
                # its own latency, widened by a hair so rounding cannot exclude it
                budget = Budget(paper_lat * (1 + 1e-12), "ms")
            else:
                budget = Budget.parse(self.cfg.budget)
            res = search(lat, qual, budget)
            out = res.to_dict()
            out["budget_from"] = self.cfg.budget
            out["overhead_ms"] = blocks["overhead"]["median_ms"]
            out["mobilei2v"] = {
                "attention": list(paper),
                "latency_ms": paper_lat,
                "quality_loss": paper_q,
                "model_ms": predict_ms(blocks, paper),
            }
            out["latency_table"] = lat
            out["quality_table"] = qual
            return out

        return self._stage("search", run)

    def validate(self) -> dict:
        from bench.latency import model_table
        from hybrid_dit.config import format_pattern
        from study.search import spearman

        def run():
            s = self.tables["search"]
            teacher, _, data, _ = self._quality_setup()
            depth = teacher.cfg.depth
            front = s["front"]
            chosen = tuple(s["best"]["config"])
            picks = pick_around(front, tuple(chosen), self.cfg.top_k)
            configs = [chosen, *[c for c in picks if c != chosen]]
            for c in reference_patterns(depth):
                if c not in configs:
                    configs.append(c)
            blocks = self.tables["latency"]["blocks"]["torch-cpu"]
            lat = model_table(
                self.cfg.latency_preset,
                self.cfg.latency_grid,
                "torch-cpu",
                patterns=configs,
                blocks=blocks,
                repeats=self.cfg.model_repeats,
                progress=self.progress,
                measure=self.measure,
            )
            q_teacher = self.tables["quality"]["teacher"]["loss"]
            rows = []
            for c, m in zip(configs, lat["models"], strict=True):
                key = {
                    "attention": list(c),
                    "teacher": self.tables["quality"]["teacher"],
                    "task": data.spec.to_dict(),
                    "distill_steps": self.cfg.distill_steps,
                    "joint_steps": self.cfg.joint_steps,
                }

                def build(c=c):
                    model, q = self._build(c)
                    if c == chosen:
                        self.chosen_model = model  # the export stage ships this one
                    return q

                q, cached = self.measure("build", key, build)
                pred_q = sum(s["quality_table"][i][v] for i, v in enumerate(c))
                rows.append(
                    {
                        "pattern": format_pattern(c),
                        "attention": list(c),
                        "chosen": c == chosen,
                        "predicted_ms": m["predicted_ms"],
                        "measured_ms": m["median_ms"],
                        "predicted_loss": pred_q,
                        "measured_loss": q["loss"] - q_teacher,
                        "loss": q["loss"],
                        "psnr": q["psnr"],
                        "quality_cached": cached,
                        "latency_cached": m["cached"],
                    }
                )

            def rho(a, b):
                xs, ys = [r[a] for r in rows], [r[b] for r in rows]
                return spearman(xs, ys) if len(set(xs)) > 1 and len(set(ys)) > 1 else None

            return {
                "configs": rows,
                "spearman_latency": rho("predicted_ms", "measured_ms"),
                "spearman_quality": rho("predicted_loss", "measured_loss"),
            }

        return self._stage("validate", run)

    def _build(self, pattern):
        """`pattern` built for real on the teacher (study.distill.build_config), reusing
        the blocks the quality stage distilled."""
        from study.distill import build_config

        teacher, _, data, acts = self._quality_setup()
        return build_config(
            teacher,
            data,
            pattern,
            acts,
            self.cfg.distill_steps,
            self.cfg.joint_steps,
            distilled=self.distilled,
        )

    def export(self) -> dict:
        from bench.machine import time_fn
        from export.bundle import coreml_stage, onnx_stage
        from hybrid_dit import example_inputs

        def run():
            data = self._quality_setup()[2]
            chosen = next(r for r in self.tables["validate"]["configs"] if r["chosen"])
            model = getattr(self, "chosen_model", None)
            if model is None or list(model.cfg.attention) != chosen["attention"]:
                model, _ = self._build(tuple(chosen["attention"]))
            inputs = example_inputs(model.cfg, data.grid, seed=0)
            with torch.no_grad():
                ref = model(*inputs).numpy()
            folder = self.out / "export"
            folder.mkdir(parents=True, exist_ok=True)
            res = {
                "preset": "small (the trained, distilled chosen config)",
                "attention": chosen["attention"],
                "grid": list(data.grid),
            }
            res["onnx"] = onnx_stage(
                model, inputs, folder, None, ref, timer=lambda fn: time_fn(fn, repeats=5)
            )
            res["coreml"] = coreml_stage(model, inputs, folder, "fp16", ref)
            return res

        return self._stage("export", run)


def pick_around(front: list[dict], chosen: tuple, k: int) -> list[tuple]:
    """Up to k front configs nearest the chosen one along the front (by index)."""
    configs = [tuple(p["config"]) for p in front]
    if chosen not in configs:
        return configs[:k]
    i = configs.index(chosen)
    order = sorted(range(len(configs)), key=lambda j: (abs(j - i), j))
    return [configs[j] for j in order[:k]]


def finite(x) -> bool:
    return x is not None and math.isfinite(x)
