"""What the quality harness's numbers mean: a swap to a block's own variant changes nothing,
measurements use held-out clips only, and a cached number computed with other settings or
by other code is never reused."""

from __future__ import annotations

import json

import pytest
import torch

from hybrid_dit import PRESETS, HybridDiT
from study import cache as cache_mod
from study.cache import Cache, code_version
from study.dataset import TaskSpec, load_task
from study.distill import distill_block, record_activations, swap_table, swapped_model
from study.evaluate import evaluate_sampler
from study.task import VideoSpec, is_heldout, split_seeds

VIDEO = VideoSpec(frames=2, height=12, width=16, factor=4)
CFG = PRESETS["small"].replace(hidden=32, depth=2, heads=2, head_dim=16, attention="softmax")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = HybridDiT(CFG).eval()
    data = load_task(TaskSpec(video=VIDEO, n_train=8, n_heldout=3, eval_ts=(0.5,)))
    return model, data, record_activations(model, data, batches=2, batch=2)


def test_swapping_a_block_to_its_own_variant_and_distilling_changes_nothing(setup):
    model, data, acts = setup
    before = evaluate_sampler(model, data, 2)
    for i in range(CFG.depth):
        same = swapped_model(model, model.cfg.attention)  # block i keeps its variant
        fit = distill_block(same, i, acts, steps=20, seed=i)
        assert fit["block_mse_before"] == 0.0  # the block reproduces itself exactly
        after = evaluate_sampler(same, data, 2)
        assert abs(after["mse"] - before["mse"]) < 1e-6
        assert abs(after["loss"] - before["loss"]) < 1e-6
        for k, v in model.state_dict().items():  # not a single weight moved
            assert torch.equal(same.state_dict()[k], v), k


def test_swaps_are_measured_on_heldout_clips_only(setup):
    _, data, _ = setup
    spec = data.spec
    split = split_seeds(spec.n_train, spec.n_heldout)
    assert all(is_heldout(s) for s in split.heldout)
    assert not any(is_heldout(s) for s in split.train)
    assert not set(split.train) & set(split.heldout)
    # the held-out tensors are the held-out seeds' clips, not training ones
    from study.task import clip_motion, encode, make_batch

    clips = make_batch(list(split.heldout), [clip_motion(s) for s in split.heldout], 2, 12, 16)
    assert torch.equal(encode(clips, 4), data.test_x)
    assert not any(torch.equal(data.test_x[0], x) for x in data.train_x)


def test_the_fresh_training_stream_never_renders_a_heldout_clip(monkeypatch):
    import study.training as training

    rendered = []
    real = training.make_batch

    def spy(seeds, *args, **kwargs):
        rendered.extend(seeds)
        return real(seeds, *args, **kwargs)

    monkeypatch.setattr(training, "make_batch", spy)
    stream = training.ClipStream(VIDEO, start=3)
    for _ in range(3):
        x0, motion = stream.batch(5)
        assert x0.shape[0] == motion.shape[0] == 5
    assert len(rendered) == len(set(rendered)) == 15  # a fresh clip every time
    assert not any(is_heldout(s) for s in rendered)


def test_cache_keys_hold_every_hyperparameter(setup, tmp_path):
    """Changing a distillation setting (steps, learning rate, activation batches) or the
    sampling steps measures anew: the keys the swap table passes to the cache differ."""
    model, data, acts = setup
    keys = []

    def measure(stage, key, fn):
        keys.append((stage, json.dumps(key, sort_keys=True, default=str)))
        return fn(), False

    common = dict(blocks=[0], measure=measure, progress=False)
    swap_table(model, data, ["relu_linear"], acts, steps=1, distill_steps=2, **common)
    swap_table(model, data, ["relu_linear"], acts, steps=1, distill_steps=3, **common)
    swap_table(
        model, data, ["relu_linear"], acts, steps=1, distill_steps=2, distill_lr=5e-4, **common
    )
    other_acts = record_activations(model, data, batches=1, batch=2)
    swap_table(model, data, ["relu_linear"], other_acts, steps=1, distill_steps=2, **common)
    swap_table(model, data, ["relu_linear"], acts, steps=2, distill_steps=2, **common)
    swaps = [k for stage, k in keys if stage == "quality-swap"]
    assert len(swaps) == 5 and len(set(swaps)) == 5


def test_a_cache_entry_of_other_code_is_never_reused(tmp_path, monkeypatch):
    """The study puts the hash of the code a stage depends on into every key: the same
    measurement computed by edited code is measured again, not reused."""
    import study.driver as driver

    calls = []
    study = driver.Study.__new__(driver.Study)  # only measure() is exercised
    study.cache = Cache(tmp_path)

    def fn():
        calls.append(1)
        return {"value": len(calls)}

    key = {"what": "x"}
    assert study.measure("quality-swap", key, fn) == ({"value": 1}, False)
    assert study.measure("quality-swap", key, fn) == ({"value": 1}, True)
    monkeypatch.setattr(driver, "code_version", lambda paths: "edited-code")
    assert study.measure("quality-swap", key, fn) == ({"value": 2}, False)
    monkeypatch.setattr(driver, "code_version", lambda paths: "code-a")
    assert study.measure("blocks", key, fn)[1] is False
    assert study.measure("blocks", key, fn)[1] is True
    monkeypatch.setattr(driver, "code_version", lambda paths: "code-b")
    assert study.measure("blocks", key, fn)[1] is False  # latency stages are keyed too


def test_code_version_changes_when_the_code_does(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(cache_mod, "ROOT", tmp_path)
    monkeypatch.setattr(cache_mod, "_CODE_CACHE", {})
    v1 = code_version(("pkg",))
    (pkg / "a.py").write_text("x = 2\n")
    monkeypatch.setattr(cache_mod, "_CODE_CACHE", {})
    assert code_version(("pkg",)) != v1
    with pytest.raises(FileNotFoundError, match="no such package or file"):
        code_version(("missing",))
