"""The GPU benchmark's arithmetic and the paper-scale command's plan (nothing is timed or
trained here: `benchmarks/gpu.sh --quick` is the smoke run)."""

import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))

import gpu_bench  # noqa: E402
import paper_scale  # noqa: E402

from keras_topo import (
    cli,  # noqa: E402
    training_recipe,  # noqa: E402
)


class _Clock:
    """A fake `perf_counter`: `advance` moves it; nothing sleeps."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def test_per_step_seconds_cancels_the_per_call_setup(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(gpu_bench.time, "perf_counter", clock)
    calls = []

    def call(count):  # 0.7 s of setup per call, then 0.013 s per step
        calls.append(count)
        clock.advance(0.7 + 0.013 * count)

    seconds, exact = gpu_bench.per_step_seconds(call, lambda: clock.advance(0.002), 5, 3)
    assert seconds == pytest.approx(0.013) and exact
    assert calls == [5, 10] * 3  # alternating lengths


def test_per_step_seconds_gives_an_upper_bound_when_noise_hides_the_steps(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(gpu_bench.time, "perf_counter", clock)
    setups = iter([2.0, 0.5])  # the short call is slowed down more than the long one's steps

    def call(count):
        clock.advance(next(setups) + 0.1 * count)

    seconds, exact = gpu_bench.per_step_seconds(call, lambda: None, steps=4, repeats=1)
    assert not exact and seconds == pytest.approx((0.5 + 0.8) / 8)


def test_budget_starts_the_first_configuration_then_only_what_fits(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(gpu_bench.time, "perf_counter", clock)
    budget = gpu_bench._Budget(100)
    clock.advance(150)  # slow imports: the first configuration still starts
    assert budget.fits()
    budget = gpu_bench._Budget(100)
    budget.timed(lambda: clock.advance(40))
    assert budget.fits()  # 40 spent + 40 expected <= 100
    budget.timed(lambda: clock.advance(30))
    assert not budget.fits()  # 70 spent + 40 expected > 100


def test_paper_run_seconds_counts_the_recipes_steps_and_evaluations():
    epochs = training_recipe.EPOCHS["cifar10"]
    steps = epochs * math.ceil(45_000 / 256)
    evaluated = epochs * 5_000 + 2 * 10_000
    expected = steps * 0.02 + evaluated / 8_000
    assert gpu_bench.paper_run_seconds(0.02, 8_000, 256) == pytest.approx(expected)
    assert gpu_bench.paper_run_seconds(0.02, 8_000, 128, epochs=3) == pytest.approx(
        3 * 352 * 0.02 + (3 * 5_000 + 20_000) / 8_000
    )


def _rows():
    return [
        {"section": "native", "precision": "float32", "model": "plain", "step_s": 0.05},
        {"section": "jax", "precision": "float32", "model": "plain", "jit_compile": True,
         "step_s": 0.04},
        {"section": "jax", "precision": "float32", "model": "topographic", "jit_compile": True,
         "step_s": 0.1, "eval_images_per_s": 5_000.0},
        {"section": "jax", "precision": "mixed_bfloat16", "model": "plain", "jit_compile": True,
         "skipped": "section budget (1 s) spent"},
    ]  # fmt: skip


def test_summarise_adds_throughput_ratios_and_the_paper_run():
    rows = gpu_bench.summarise(_rows(), batch=256)
    native, plain, topographic, skipped = rows
    assert plain["images_per_s"] == pytest.approx(256 / 0.04)
    assert plain["vs_native_plain"] == pytest.approx(0.05 / 0.04)
    assert topographic["vs_native_plain"] == pytest.approx(0.5)
    # The plain model is evaluated at its topographic twin's rate.
    assert plain["paper_run_s"] == pytest.approx(gpu_bench.paper_run_seconds(0.04, 5_000, 256))
    assert "paper_run_s" not in native and "images_per_s" not in skipped
    args = gpu_bench.parse_args(["--quick"])
    table = gpu_bench.markdown(rows, args)
    assert "| jax | True | float32 | topographic | 2,560 | 100.0 | 0.50 | 5,000 |" in table
    assert "section budget (1 s) spent" in table


def test_quick_sets_toy_defaults_that_given_flags_override():
    args = gpu_bench.parse_args(["--quick", "--batch", "16"])
    assert (args.batch, args.width, args.steps) == (16, 0.125, 2)
    args = gpu_bench.parse_args(["--budget", "jax=600"])
    assert args.batch == training_recipe.BATCH_SIZE and args.width == 1.0
    assert args.budget == {**gpu_bench.BUDGETS_S, "jax": 600.0}


def test_bad_budget_and_precision_are_refused():
    with pytest.raises(SystemExit, match="SECTION=SECONDS"):
        gpu_bench.parse_args(["--budget", "gpu=10"])
    with pytest.raises(SystemExit):
        gpu_bench.parse_args(["--precisions", "float32,float8"])


def _plan(*argv):
    parser_args = ["--runs-dir", "runs", "--data-dir", "data", *argv]
    args = paper_scale.parse_args(parser_args)
    return args, paper_scale.sweep_commands(args)


def test_sweep_commands_are_the_clis_and_cover_every_arm_and_seed():
    arms = ["baseline", "activation:1", "activation:10", "spatial:1"]
    args, commands = _plan("--arms", *arms, "--seeds", "0", "1", "--precision", "mixed_bfloat16")
    assert len(commands) == 2 * 4
    chosen = set()
    for command in commands:
        parsed = cli._parser().parse_args(command)  # the real CLI accepts each command
        assert (parsed.dataset, parsed.reduction, parsed.width_multiplier) == ("cifar10", "sum", 1)
        assert parsed.epochs is None and parsed.precision == "mixed_bfloat16"
        organisation = parsed.organisations[0]
        key = (organisation, parsed.objective, tuple(parsed.lambdas), tuple(parsed.seeds))
        chosen.add(key if organisation == "grid" else (organisation, tuple(parsed.seeds)))
    assert chosen == {
        *(("baseline", (seed,)) for seed in (0, 1)),
        *(
            ("grid", objective, (weight,), (seed,))
            for seed in (0, 1)
            for objective, weight in (("activation", 1.0), ("activation", 10.0), ("spatial", 1.0))
        ),
    }
    assert [c[c.index("--seeds") + 1] for c in commands] == ["0"] * 4 + ["1"] * 4  # seed first


def test_study_plan_is_the_clis_study_command_with_its_spec_counts():
    from keras_topo.experiments import study

    args, _ = _plan("--study", "paper")
    commands, runs, epochs, evaluations, dataset = paper_scale.plan(args)
    assert cli._parser().parse_args(commands[0]).spec == "paper"
    spec = study.SPECS["paper"]
    assert runs == {"plain": 5, "topographic": 20} and len(spec.seeds) == 5
    assert (epochs, dataset) == (100, "cifar10")
    assert evaluations == len(spec.methods) * len(spec.fractions)
    with pytest.raises(SystemExit):
        paper_scale.parse_args(["--runs-dir", "runs", "--study", "no-such-spec"])


def test_prune_command_skips_runs_already_pruned(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run.mkdir()
    (runs[0] / "pruning-l2-mask.json").write_text("{}")
    assert paper_scale.prune_command(runs, "l2", "0,0.5") == [
        "prune", "--run", str(runs[1]), "--fractions", "0,0.5", "--criterion", "l2",
    ]  # fmt: skip
    (runs[1] / "pruning-l2-mask.json").write_text("{}")
    assert paper_scale.prune_command(runs, "l2", "0,0.5") is None


def test_expected_seconds_from_the_bench_figures():
    bench = {"args": {"batch": 256, "width": 1.0, "quick": False}, "rows": _rows()}
    runs = {"plain": 2, "topographic": 3}
    seconds = paper_scale.expected_seconds(bench, "jax", "float32", runs, None, 4)
    plain = gpu_bench.paper_run_seconds(0.04, 5_000, 256) + 4 * 10_000 / 5_000
    topographic = gpu_bench.paper_run_seconds(0.1, 5_000, 256) + 4 * 10_000 / 5_000
    assert seconds == pytest.approx(2 * plain + 3 * topographic)
    with pytest.raises(ValueError, match="no plain torch float32 step"):
        paper_scale.expected_seconds(bench, "torch", "float32", runs, None, 4)
    rows = [row for row in _rows() if row["model"] == "plain"]
    with pytest.raises(ValueError, match="no topographic jax float32 step"):
        paper_scale.expected_seconds({**bench, "rows": rows}, "jax", "float32", runs, None, 4)
    with pytest.raises(ValueError, match="no plain jax mixed_bfloat16 step"):  # skipped
        paper_scale.expected_seconds(bench, "jax", "mixed_bfloat16", runs, None, 4)


@pytest.mark.parametrize("arm", ["grid:1", "activation", "activation:-1", "spatial:x"])
def test_bad_arm_is_refused(arm):
    with pytest.raises(SystemExit):
        paper_scale.parse_args(["--runs-dir", "runs", "--arms", arm])


def test_bench_json_round_trip_feeds_the_plan(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rows = gpu_bench.summarise(_rows(), batch=256)
    bench_args = {"batch": 256, "width": 1.0, "quick": False}
    path.write_text(json.dumps({"args": bench_args, "rows": rows}))
    args, _ = _plan("--backend", "jax", "--bench", str(path), "--seeds", "0")
    paper_scale.print_plan(args, *paper_scale.plan(args))
    out = capsys.readouterr().out
    prune = 20 * 10_000 / 5_000  # the default fractions 0:1:0.05, criterion l2
    plain = gpu_bench.paper_run_seconds(0.04, 5_000, 256) + prune
    topographic = gpu_bench.paper_run_seconds(0.1, 5_000, 256) + prune
    assert f": {(plain + topographic) / 3600:.1f} h" in out
    assert "keras-topo sweep --dataset cifar10" in out
