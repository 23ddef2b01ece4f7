"""study.task: the procedural image-to-video task and the space-to-depth codec."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from study.task import (
    CAMERA_SPEED,
    DEFAULT_VIDEO,
    OBJECT_SPEED,
    SeedSplit,
    VideoSpec,
    clip_motion,
    decode,
    direction_from_color,
    encode,
    is_heldout,
    make_batch,
    make_clip,
    render,
    scene,
    split_seeds,
)

SEEDS = (0, 1, 2, 7, 123)


def test_default_video_gives_the_small_latent():
    assert DEFAULT_VIDEO.latent_shape == (48, 4, 8, 8)
    assert DEFAULT_VIDEO.tokens() == 256  # 4 frames of 8 x 8 latent cells
    clip = make_clip(0, 0.5)
    assert clip.shape == (3, DEFAULT_VIDEO.frames, DEFAULT_VIDEO.height, DEFAULT_VIDEO.width)
    assert encode(clip, DEFAULT_VIDEO.factor).shape == DEFAULT_VIDEO.latent_shape
    with pytest.raises(ValueError, match="divisible by factor"):
        VideoSpec(frames=4, height=50, width=48, factor=4)
    with pytest.raises(ValueError, match="frames must be a positive int"):
        VideoSpec(frames=0)


def test_same_seed_same_clip_different_seeds_differ():
    for seed in SEEDS:
        a, b = make_clip(seed, 0.6), make_clip(seed, 0.6)
        assert a.dtype == torch.float32
        assert torch.equal(a, b)
        assert a.min() >= -1 and a.max() <= 1
    clips = [make_clip(s, 0.6) for s in SEEDS]
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            assert (clips[i] - clips[j]).abs().mean() > 0.05


def test_batch_matches_clips():
    batch = make_batch([3, 4, 5], [0.0, 0.5, 1.0], frames=3, height=32, width=40)
    assert batch.shape == (3, 3, 3, 32, 40)
    for i, (s, m) in enumerate(zip([3, 4, 5], [0.0, 0.5, 1.0], strict=True)):
        assert torch.equal(batch[i], make_clip(s, m, 3, 32, 40))
    assert torch.equal(make_batch([3, 4], 0.25)[1], make_clip(4, 0.25))
    assert torch.equal(
        make_batch(torch.tensor([3, 4]), torch.tensor([0.0, 0.5]))[1], make_clip(4, 0.5)
    )
    with pytest.raises(ValueError, match="one value per seed"):
        make_batch([1, 2], [0.5])
    with pytest.raises(ValueError, match="at least one clip"):
        make_batch([], 0.5)


def test_motion_zero_is_static():
    for seed in SEEDS:
        clip = make_clip(seed, 0.0)
        for t in range(1, clip.shape[1]):
            assert torch.equal(clip[:, t], clip[:, 0])


def test_frame_differences_grow_with_motion():
    motions = (0.0, 0.25, 0.5, 1.0)
    for seed in SEEDS:
        diffs = []
        for m in motions:
            clip = make_clip(seed, m)
            diffs.append((clip[:, 1:] - clip[:, :-1]).abs().mean().item())
        assert diffs[0] == 0.0
        assert all(a < b for a, b in itertools.pairwise(diffs)), diffs


def _background_shift(f0: np.ndarray, f1: np.ndarray, step: float = 0.125, reach: float = 6.0):
    """The sub-pixel translation (dy, dx) maximising the cross-correlation of two periodic
    (3, H, W) images, by evaluating the cross-power spectrum on a grid of shifts."""
    _, h, w = f0.shape
    c = (np.fft.fft2(f1) * np.conj(np.fft.fft2(f0))).sum(axis=0)  # (H, W)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    shifts = np.arange(-reach, reach + step / 2, step)
    best, arg = -np.inf, None
    for sy in shifts:
        ramp_y = np.exp(2j * np.pi * fy * sy)
        for sx in shifts:
            score = (c * ramp_y * np.exp(2j * np.pi * fx * sx)).sum().real
            if score > best:
                best, arg = score, (sy, sx)
    return arg


def test_camera_displacement_follows_motion_and_direction():
    for seed in SEEDS[:3]:
        sc = dataclasses.replace(scene(seed), objects=())  # the background alone
        mags = []
        for m in (0.0, 0.3, 0.6, 1.0):
            video = render(sc, m, 2, 48, 48)
            dy, dx = _background_shift(video[:, 0], video[:, 1])
            speed = m * CAMERA_SPEED
            want = (speed * math.sin(sc.camera_direction), speed * math.cos(sc.camera_direction))
            assert abs(dy - want[0]) <= 0.125 and abs(dx - want[1]) <= 0.125, (seed, m, dy, dx)
            mags.append(math.hypot(dy, dx))
        assert mags[0] == 0.0 and all(a < b for a, b in itertools.pairwise(mags))


def test_object_moves_at_its_speed_in_its_direction():
    sc = scene(5)
    ob = dataclasses.replace(sc.objects[0], y=0.5, x=0.5, radius=0.15)
    # on a flat background every pixel the object touches differs from the background;
    # the centroid of those pixels tracks the centre to a fraction of a pixel
    flat = dataclasses.replace(sc, waves=(), objects=())
    for m in (0.0, 0.5, 1.0):
        with_ob = render(dataclasses.replace(flat, objects=(ob,)), m, 2, 48, 48)
        bg = render(flat, m, 2, 48, 48)
        cents = []
        for t in range(2):
            ys, xs = np.nonzero(np.abs(with_ob[:, t] - bg[:, t]).sum(axis=0) > 0)
            cents.append((ys.mean(), xs.mean()))
        speed = m * OBJECT_SPEED
        assert cents[1][0] - cents[0][0] == pytest.approx(speed * math.sin(ob.direction), abs=0.3)
        assert cents[1][1] - cents[0][1] == pytest.approx(speed * math.cos(ob.direction), abs=0.3)


def test_directions_are_visible_in_the_first_frame():
    for seed in SEEDS:
        sc = scene(seed)
        bg = render(dataclasses.replace(sc, objects=()), 0.0, 1, 48, 48)
        mean = bg[:, 0].mean(axis=(1, 2))
        assert _angle_diff(direction_from_color(mean), sc.camera_direction) < 1e-9
        for ob in sc.objects:
            alone = dataclasses.replace(sc, objects=(ob,))
            frame = render(alone, 0.0, 1, 48, 48)[:, 0]
            pixel = frame[:, round(ob.y * 48) % 48, round(ob.x * 48) % 48]
            assert _angle_diff(direction_from_color(pixel), ob.direction) < 1e-9


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


def test_bad_arguments():
    with pytest.raises(ValueError, match="motion must be in"):
        make_clip(0, 1.5)
    with pytest.raises(ValueError, match="motion must be in"):
        make_clip(0, math.nan)
    with pytest.raises(TypeError, match="motion"):
        make_clip(0, "fast")
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        make_clip(-1, 0.5)
    with pytest.raises(ValueError, match="height must be a positive int"):
        make_clip(0, 0.5, 4, 0, 48)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_codec_is_exactly_invertible(factor):
    video = make_batch([0, 1], [0.3, 0.9], frames=3, height=32, width=48)
    lat = encode(video, factor)
    assert lat.shape == (2, 3 * factor**2, 3, 32 // factor, 48 // factor)
    assert torch.equal(decode(lat, factor), video)
    assert torch.equal(decode(encode(video[0], factor), factor), video[0])  # unbatched
    z = torch.randn_like(lat)
    assert torch.equal(encode(decode(z, factor), factor), z)


def test_codec_channel_order():
    f = 4
    video = torch.randn(3, 2, 8, 12)
    lat = encode(video, f)
    c, t, y, x, i, j = 2, 1, 1, 2, 3, 1
    assert lat[c * f * f + i * f + j, t, y, x] == video[c, t, y * f + i, x * f + j]


def test_codec_errors():
    with pytest.raises(ValueError, match="divisible by factor"):
        encode(torch.zeros(3, 2, 10, 12), 4)
    with pytest.raises(ValueError, match="divisible by factor"):
        decode(torch.zeros(40, 2, 3, 3), 4)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\) or \(C, T, H, W\)"):
        encode(torch.zeros(3, 8, 8), 2)
    with pytest.raises(ValueError, match="factor must be a positive int"):
        encode(torch.zeros(3, 1, 8, 8), 0)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        decode(np.zeros((12, 1, 2, 2)), 2)


def test_heldout_split_is_disjoint():
    split = split_seeds(200, 50)
    assert len(split.train) == 200 and len(split.heldout) == 50
    assert not set(split.train) & set(split.heldout)
    assert not any(is_heldout(s) for s in split.train)
    assert all(is_heldout(s) for s in split.heldout)
    later = split_seeds(10, 10, start=1000)
    assert not set(later.train) & set(split.heldout) and not set(later.heldout) & set(split.train)
    assert SeedSplit.from_dict(split.to_dict()) == split
    with pytest.raises(ValueError, match="n_train"):
        split_seeds(-1, 3)


def test_clip_motion_is_deterministic_and_in_range():
    ms = [clip_motion(s) for s in range(100)]
    assert ms == [clip_motion(s) for s in range(100)]
    assert all(0.0 <= m <= 1.0 for m in ms)
    assert len(set(ms)) == 100
