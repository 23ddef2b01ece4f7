"""The command line: help, the zoo table, errors as one line, the reference comparison."""

from __future__ import annotations

import json

import pytest
import torch

import attention_zoo as az
from mobileattn.cli import build_parser, main
from study.tables import markdown_table, text_table


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.format_help(), name


def test_zoo_table_lists_every_variant(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in az.VARIANTS:
        assert name in out
    assert "grid=<required>" in out


def test_zoo_json(capsys):
    assert main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(az.VARIANTS)
    assert all("reference" in r["impls"] for r in rows)


def test_bad_flag_value_is_one_line_error(capsys, tmp_path):
    assert main(["run", "--budget", "fast", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--budget: budget must be milliseconds" in err and "Traceback" not in err


def test_implementation_comparison_rows():
    from bench.peers import PEERS
    from bench.zoo_cpu import compare_implementations

    res = compare_implementations(
        grids=((2, 2, 3),), heads=2, head_dim=8, repeats=1, progress=False
    )
    got = {(r["variant"], r["impl"]) for r in res["rows"]}
    want = {(n, i) for n in az.VARIANTS for i in ("fast", "reference")}
    want |= {(n, p) for n, peers in PEERS.items() for p in peers}
    assert got == want
    for r in res["rows"]:
        assert r["N"] == 12 and r["median_ms"] > 0 and r["flops"] > 0
        assert r["ci_low_ms"] <= r["median_ms"] <= r["ci_high_ms"]
        assert r["fraction_of_gemm"] == pytest.approx(r["gflops"] / res["gemm"]["gflops"])
        floor_s = r["flops"] / (res["gemm"]["gflops"] * 1e9) + r["bytes"] / (res["copy_gbps"] * 1e9)
        assert r["of_serial_floor"] == pytest.approx(r["median_ms"] / 1e3 / floor_s)
        assert r["of_serial_floor"] < r["of_gemm_floor"]
        assert r["peer"] == (r["impl"] not in ("fast", "reference"))
    assert res["gemm"]["gflops"] > 0


def test_floor_multiples_are_per_round_ratios_against_the_gemm_of_the_same_rounds():
    """The GEMM probe is timed in every round beside the candidates; a row's multiple of
    the GEMM floor is the median over rounds of t_r x (that round's GEMM rate) / flops,
    with an interval that holds it, so a machine that speeds up mid-run moves both."""
    import statistics

    from bench.machine import gemm_flops
    from bench.zoo_cpu import GEMM_PROBE_N, compare_implementations

    res = compare_implementations(
        grids=((2, 2, 3), (1, 2, 2)), heads=2, head_dim=8, repeats=3, variants=["relu_linear"],
        peers=False, progress=False,
    )  # fmt: skip
    assert [g["grid"] for g in res["gemm_by_grid"]] == [[2, 2, 3], [1, 2, 2]]
    for r in res["rows"]:
        (g,) = (g for g in res["gemm_by_grid"] if g["grid"] == r["grid"])
        assert len(g["times_ms"]) == len(r["times_ms"]) == 3
        rate = gemm_flops(GEMM_PROBE_N) / statistics.median(g["times_ms"]) / 1e6
        assert g["gflops"] == pytest.approx(rate)
        assert r["gemm_gflops"] == g["gflops"]
        pairs = zip(r["times_ms"], g["times_ms"], strict=True)
        want = statistics.median(
            t * gemm_flops(GEMM_PROBE_N) / (tg * r["flops"]) for t, tg in pairs
        )
        assert r["of_gemm_floor"] == pytest.approx(want)
        lo, hi = r["of_gemm_floor_ci"]
        assert lo <= r["of_gemm_floor"] <= hi
        assert 0 < r["of_serial_floor"] < r["of_gemm_floor"]


def test_zoo_cpu_command_writes_its_table(tmp_path, capsys):
    """python -m bench.zoo_cpu: its options are checked, and --out gets the printed rows."""
    from bench.zoo_cpu import main as zoo_main

    for argv, msg in (
        (["--grids", "2x3"], "--grids must be TxHxW"),
        (["--variants", "nope"], "unknown attention variant"),
        (["--repeats", "0"], "--repeats must be >= 1"),
    ):
        with pytest.raises(SystemExit):
            zoo_main(argv)
        assert msg in capsys.readouterr().err
    out = tmp_path / "zoo.json"
    assert zoo_main(["--grids", "1x2x3", "--variants", "relu_linear", "--repeats", "1",
                     "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    printed = captured.out
    assert "zoo implementations" not in captured.err  # --no-progress hides the bar
    doc = json.loads(out.read_text())
    assert {(r["variant"], r["impl"]) for r in doc["rows"]} == {
        ("relu_linear", "fast"),
        ("relu_linear", "reference"),
        ("relu_linear", "sana_lite_la"),
    }
    assert all(r["N"] == 6 for r in doc["rows"]) and len(doc["load_average_before"]) == 3
    assert printed.count("| 6 | relu_linear |") == 3


def test_zoo_cpu_bounds_are_the_two_gemms_of_each_linear_variant(capsys):
    """--bounds adds one 'gemms_alone' row per linear variant (none for softmax), marked
    as a bound and not a peer, with the variant's own FLOP count; and what it times are the
    GEMMs of the padded-state form: its numerator over its denominator plus eps is the
    variant's output (float64 here, so the comparison is tight)."""
    from attention_zoo._common import padded_width
    from bench.zoo_cpu import BOUND_IMPL, compare_implementations, linear_gemms
    from bench.zoo_cpu import main as zoo_main

    res = compare_implementations(
        grids=((2, 2, 3),), heads=2, head_dim=8, repeats=1, peers=False, progress=False,
        variants=["relu_linear", "performer", "softmax"], bounds=True,
    )  # fmt: skip
    rows = {(r["variant"], r["impl"]): r for r in res["rows"]}
    assert set(rows) == {(v, i) for v in ("relu_linear", "performer", "softmax")
                         for i in ("fast", "reference")} | {
        ("relu_linear", BOUND_IMPL), ("performer", BOUND_IMPL)}  # fmt: skip
    for v in ("relu_linear", "performer"):
        b = rows[v, BOUND_IMPL]
        assert b["bound"] and not b["peer"] and b["flops"] == rows[v, "fast"]["flops"]
        assert b["median_ms"] > 0 and b["of_gemm_floor"] > 0
    assert not any(r["bound"] for (_, i), r in rows.items() if i != BOUND_IMPL)

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 12, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    for name, var in az.VARIANTS.items():
        if var.kind != "linear":
            continue
        out = linear_gemms(var, q, k, v)()
        dv = v.shape[-1]
        assert out.shape[-1] == padded_width(dv + 1) > dv + 1, name  # the fast path's width
        assert (out[..., dv + 1 :] == 0).all(), name  # padding columns stay zero
        eps = var.defaults["eps"]
        got = out[..., :dv] / (out[..., dv : dv + 1] + eps)
        torch.testing.assert_close(got, var.reference(q, k, v), rtol=1e-10, atol=1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")  # fmt: skip

    assert zoo_main(["--grids", "1x2x3", "--variants", "relu_linear", "--repeats", "1",
                     "--bounds", "--no-progress"]) == 0  # fmt: skip
    assert "| 6 | relu_linear | gemms_alone (bound) |" in capsys.readouterr().out


def test_zoo_cpu_torch_forms_time_the_pytorch_form_beside_the_kernel(capsys):
    """--torch-forms adds one 'fast_torch' row per variant whose fast path has a PyTorch
    form (the linear ones, whose "fast" runs the native kernel; not softmax), neither peer
    nor bound, with the variant's own FLOP count."""
    from bench.zoo_cpu import TORCH_FORM, compare_implementations
    from bench.zoo_cpu import main as zoo_main

    res = compare_implementations(
        grids=((2, 2, 3),), heads=2, head_dim=8, repeats=1, peers=False, progress=False,
        variants=["relu_linear", "cosformer", "softmax"], torch_forms=True,
    )  # fmt: skip
    rows = {(r["variant"], r["impl"]): r for r in res["rows"]}
    assert set(rows) == {(v, i) for v in ("relu_linear", "cosformer", "softmax")
                         for i in ("fast", "reference")} | {
        ("relu_linear", TORCH_FORM), ("cosformer", TORCH_FORM)}  # fmt: skip
    for v in ("relu_linear", "cosformer"):
        r = rows[v, TORCH_FORM]
        assert not r["peer"] and not r["bound"] and r["flops"] == rows[v, "fast"]["flops"]
    assert zoo_main(["--grids", "1x2x3", "--variants", "relu_linear", "--repeats", "1",
                     "--torch-forms", "--no-progress"]) == 0  # fmt: skip
    assert "| 6 | relu_linear | fast_torch |" in capsys.readouterr().out


def test_tables_align():
    t = text_table(["a", "num"], [["x", "1.5"], ["long", "10"]])
    lines = t.splitlines()
    assert lines[2].endswith(" 1.5") and lines[3].endswith("  10")
    m = markdown_table(["a", "num"], [["x", "1.5"]])
    assert m.splitlines()[1] == "|---|---:|"


def test_bench_then_search_from_files(tmp_path, capsys):
    lat = tmp_path / "lat.json"
    args = [
        "bench",
        "--preset",
        "tiny",
        "--grid",
        "2x3x4",
        "--variants",
        "softmax,relu_linear",
        "--patterns",
        "softmax;L,S",
        "--repeats",
        "1",
        "--model-repeats",
        "1",
        "--no-progress",
        "--out",
        str(lat),
    ]
    assert main([*args, "--gemm-probe", "64"]) == 0
    table = json.loads(lat.read_text())
    assert [r["variant"] for r in table["blocks"]["variants"]] == ["softmax", "relu_linear"]
    assert len(table["models"]["models"]) == 2
    # each model's fraction of a GEMM timed in its own rounds, in the JSON and the table
    assert table["models"]["gemm"]["n"] == 64
    printed = capsys.readouterr().out
    assert "of GEMM" in printed and "(64 x 64) fp32 GEMM through torch-cpu's matmul" in printed
    for r in table["models"]["models"]:
        lo, hi = r["fraction_of_gemm_ci"]
        assert 0 < lo <= r["fraction_of_gemm"] <= hi
        assert f"{100 * r['fraction_of_gemm']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]" in printed
    quality = tmp_path / "q.json"
    quality.write_text(
        json.dumps(
            {
                "steps": 2,
                "base": {"attention": ["softmax", "softmax"], "mse": 0.1},
                "entries": [
                    {"block": 0, "variant": "relu_linear", "delta_mse": 0.5},
                    {"block": 1, "variant": "relu_linear", "delta_mse": 0.1},
                ],
            }
        )
    )
    out = tmp_path / "s.json"
    assert (
        main(
            [
                "search",
                "--latency",
                str(lat),
                "--quality",
                str(quality),
                "--budget",
                "1000ms",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["best"]["config"] == ["softmax", "softmax"]  # a generous budget: no loss
    assert res["best"]["steps"] == 2 and res["steps"] == [2]
    assert main(["search", "--latency", str(lat), "--quality", str(tmp_path / "nope.json")]) == 2
    assert "--quality: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--preset", "huge"], "--preset must be one of"),
        (["bench", "--grid", "3x23"], "--grid must be TxHxW with three positive ints"),
        (["bench", "--preset", "tiny", "--backend", "tpu"], "backend must be one of"),
        (["bench", "--preset", "tiny", "--patterns", "L,S,S"], "one variant per block"),
        (["quality", "--variants", "flash"], "unknown attention variant 'flash'"),
        (["train-teacher", "--steps", "0"], "--steps must be >= 1"),
        (["train-teacher", "--out", "x.pt"], "--out must end in .safetensors"),
    ],
)
def test_command_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, label",
    [
        (["run"], "quick default"),
        (["run", "--full"], "full sweep"),
        (["run", "--teachers", "3"], "quick default with --teachers 3"),
        (["run", "--config", "c.json", "--no-export"], "config c.json with --no-export"),
        (["run", "--target", "torch-cpu"], "quick default with --target torch-cpu"),
    ],
)
def test_run_says_what_it_runs(argv, label):
    from mobileattn.commands.run import run_label

    assert run_label(build_parser().parse_args(argv)) == label
