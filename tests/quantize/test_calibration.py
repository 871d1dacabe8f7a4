"""Calibration: streaming observers, range rules, frame sources and TIDL pre-processing."""
import numpy as np
import pytest
from tidlc.backends.tidl.quantize.observers import BINS, RangeObserver

from tidlc.diagnostics import TidlcError
from tidlc.preprocess import (
    FrameSource,
    InputSpec,
    Preprocess,
    synthetic_frames,
)

cv2 = pytest.importorskip("cv2")


def test_histogram_grows_by_exact_merges_and_keeps_every_element():
    obs = RangeObserver()
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 10_000).astype(np.float32)
    obs.update(a)
    assert obs.radius == 1.0
    b = rng.uniform(-7.5, 7.5, 10_000).astype(np.float32)
    obs.update(b)
    assert obs.radius == 8.0 and obs.counts.size == 2 * BINS + 1  # memory does not grow with frames
    assert obs.counts.sum() == 20_000 and obs.count == 20_000
    pos, neg = obs.halves()
    both = np.concatenate([a, b])
    # the merged histogram equals one built over [-8, 8] directly
    width = 8.0 / BINS
    want_pos = np.bincount(np.minimum((both[both >= 0] / width).astype(int), BINS - 1), minlength=BINS)
    np.testing.assert_array_equal(pos, want_pos)
    assert neg.sum() == (both < 0).sum()
    assert obs.lo == pytest.approx(b.min()) and obs.hi == pytest.approx(max(a.max(), b.max()))


def test_range_rules_clip_outliers_differently():
    obs = RangeObserver()
    rng = np.random.default_rng(1)
    for _ in range(10):
        x = rng.normal(0, 1, 20_000).astype(np.float32)
        x[0] = 40.0  # one outlier per frame
        obs.update(x)
    lo, hi = obs.range("minmax")
    assert hi == 40.0 and lo < -3
    _, hist_hi = obs.range("histogram", percentile=0.01)
    assert 3.0 < hist_hi < 6.0  # 10 outliers of 200 000 values: dropped by the 0.01 % tail
    _, mse_hi = obs.range("mse", levels=128)
    _, kl_hi = obs.range("entropy", levels=128)
    # squared error weighs the 10 far outliers heavily; KL looks at the distribution's shape
    assert 2.0 < mse_hi <= 40.0 and 2.0 < kl_hi < 20.0
    clean = RangeObserver()
    clean.update(rng.normal(0, 1, 200_000).astype(np.float32))
    assert 2.0 < clean.range("mse", levels=128)[1] < clean.range("minmax")[1]
    unsigned = RangeObserver()
    unsigned.update(np.abs(rng.normal(0, 1, 1000)).astype(np.float32))
    assert unsigned.range("histogram")[0] >= 0.0  # a non-negative tensor stays unsigned


def test_all_zero_tensor():
    obs = RangeObserver()
    obs.update(np.zeros(100, np.float32))
    assert obs.range("histogram") == (0.0, 0.0) and obs.range("mse") == (0.0, 0.0)


def _image(path, value):
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :, 0], img[:, :, 1], img[:, :, 2] = value, value + 10, value + 20  # B, G, R
    cv2.imwrite(str(path), img)
    return img


def test_tidl_preprocessing_resize_crop_order_mean_scale():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :, 0], img[:, :, 2] = 10, 200  # blue 10, red 200
    pre = Preprocess(mean=(100, 0, 0), scale=(0.5, 1, 2), resize=(30, 20), crop=(16, 16), channel_order="rgb")
    x = pre.apply(img, (1, 3, 16, 16), "NCHW")
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(200 - 100) * 0.5, 0, 10 * 2])  # R, G, B planes
    bgr = Preprocess(channel_order="bgr").apply(img, (1, 3, 40, 60), "NCHW")
    np.testing.assert_allclose(bgr[0, :, 0, 0], [10, 0, 200])
    nhwc = Preprocess().apply(img, (1, 20, 30, 3), "NHWC")  # no resize/crop: straight to the input size
    assert nhwc.shape == (1, 20, 30, 3)
    attrs = pre.graph_attrs()
    assert attrs["preprocess.resize"] == [30, 20] and attrs["preprocess.mean"] == [100.0, 0.0, 0.0]
    with pytest.raises(TidlcError, match="--crop"):
        Preprocess(resize=(30, 20), crop=(10, 10)).apply(img, (1, 3, 16, 16), "NCHW")


def test_frame_sources(tmp_path):
    spec = [InputSpec("data", (1, 3, 8, 8), "NCHW")]
    for i in range(3):
        _image(tmp_path / f"img{i}.png", 10 * i)
    np.save(tmp_path / "z.npy", np.ones((1, 3, 8, 8), np.float32))
    (tmp_path / "notes.txt").write_text("not a frame")
    folder = FrameSource(str(tmp_path), spec)
    assert len(folder) == 4  # 3 images + 1 .npy, sorted by name
    got = list(folder)
    assert got[3]["data"].sum() == 3 * 64 and got[0]["data"].shape == (1, 3, 8, 8)
    listing = tmp_path / "list.txt"
    listing.write_text("# calibration\nimg1.png 7\nimg2.png 3\n\n")
    frames = list(FrameSource(str(listing), spec, limit=1))
    assert len(frames) == 1 and frames[0]["data"][0, 2, 0, 0] == 10.0  # rgb: B of img1 is the third plane
    stack = tmp_path / "stack.npy"
    np.save(stack, np.arange(5 * 192, dtype=np.float32).reshape(5, 1, 3, 8, 8))
    source = FrameSource(str(stack), spec, limit=4)
    assert len(source) == 4 and [f["data"][0, 0, 0, 0] for f in source] == [0, 192, 384, 576]
    with pytest.raises(TidlcError, match="no such file 'missing.png'"):
        bad = tmp_path / "bad.txt"
        bad.write_text("missing.png 1\n")
        FrameSource(str(bad), spec)
    with pytest.raises(TidlcError, match="no such file or folder"):
        FrameSource(str(tmp_path / "nope"), spec)


def test_images_fill_a_batch(tmp_path):
    """A batch-10 input (Caffe's AlexNet deploy file): 10 consecutive images are one frame, slot by
    slot; a remainder is left out; fewer than 10 is an error naming --input-shape."""
    spec = [InputSpec("data", (3, 3, 8, 8), "NCHW")]
    for i in range(7):
        _image(tmp_path / f"img{i}.png", 10 * i)
    source = FrameSource(str(tmp_path), spec)
    frames = list(source)
    assert len(source) == len(frames) == 2 and frames[0]["data"].shape == (3, 3, 8, 8)
    assert [f["data"][k, 2, 0, 0] for f in frames for k in range(3)] == [0, 10, 20, 30, 40, 50]  # B planes
    assert len(FrameSource(str(tmp_path), spec, limit=1)) == 1
    with pytest.raises(TidlcError, match=r"do not fill one frame.*batch of 3") as info:
        FrameSource(str(tmp_path / "img0.png"), spec)
    assert "--input-shape data=1,3,8,8" in info.value.hint
    np.save(tmp_path / "z.npy", np.ones((3, 3, 8, 8), np.float32))
    with pytest.raises(TidlcError, match="images and .npy files mixed"):
        FrameSource(str(tmp_path), spec)


def test_npy_files_for_a_batch_count_one_frame_each(tmp_path):
    """A .npy holds the whole batched input: one frame per file, for the frames limit too."""
    from tidlc import limits
    spec = [InputSpec("data", (3, 3, 8, 8), "NCHW")]
    for i in range(3):
        np.save(tmp_path / f"f{i}.npy", np.full((3, 3, 8, 8), i, np.float32))
    frames = list(FrameSource(str(tmp_path), spec))
    assert [f["data"].shape for f in frames] == [(3, 3, 8, 8)] * 3 and frames[2]["data"][0, 0, 0, 0] == 2
    (tmp_path / "list.txt").write_text("f0.npy\nf1.npy\nf2.npy\nf0.npy\n")
    limits.set_limits(limits.Limits(frames=2))
    for source in (tmp_path, tmp_path / "list.txt"):
        with pytest.raises(TidlcError, match="frames"):
            FrameSource(str(source), spec)


def test_a_list_one_frame_over_the_limit_is_refused(tmp_path):
    """A list file naming exactly the frames limit + 1 files was read whole (the count was checked
    only when a further line came); a list at the limit is fine."""
    from tidlc import limits
    spec = [InputSpec("data", (1, 3, 8, 8), "NCHW")]
    np.save(tmp_path / "f.npy", np.zeros((1, 3, 8, 8), np.float32))
    limits.set_limits(limits.Limits(frames=2))
    (tmp_path / "list.txt").write_text("f.npy\n" * 2)
    assert len(FrameSource(str(tmp_path / "list.txt"), spec)) == 2
    (tmp_path / "list.txt").write_text("f.npy\n" * 3)
    with pytest.raises(TidlcError, match="3 is over the frames limit of 2"):
        FrameSource(str(tmp_path / "list.txt"), spec)


def test_synthetic_frames_fill_a_batch():
    """Each slot of a batch > 1 gets its own image; batch 1 is what it was (same seed, same bytes)."""
    one = next(synthetic_frames([InputSpec("x", (1, 3, 16, 16), "NCHW")], 1))["x"]
    four = next(synthetic_frames([InputSpec("x", (4, 3, 16, 16), "NCHW")], 1))["x"]
    assert four.shape == (4, 3, 16, 16)
    np.testing.assert_array_equal(four[:1], one)
    assert not np.array_equal(four[0], four[1])


def test_synthetic_frames_are_smooth_and_seeded():
    spec = [InputSpec("x", (1, 3, 16, 16), "NCHW")]
    a = list(synthetic_frames(spec, 2))
    b = list(synthetic_frames(spec, 2))
    np.testing.assert_array_equal(a[1]["x"], b[1]["x"])
    assert -1.0 <= a[0]["x"].min() and a[0]["x"].max() <= 1.0


def test_histogram_kernel_equals_its_numpy_twin():
    from tidlc.backends.tidl.quantize import observers
    if observers._accumulate is None:
        pytest.skip("the Cython kernel is not built")
    rng = np.random.default_rng(3)
    x = np.concatenate([np.clip(rng.normal(0, 2, 100_000), -8, 8), [-8.0, 8.0, -1e-9, 0.0, 7.999999, -7.999999]]).astype(np.float32)
    k = np.float32(BINS / 8.0)
    counts = np.zeros(2 * BINS + 1, np.int64)
    observers._accumulate(x, counts, k, BINS)
    np.testing.assert_array_equal(counts, observers.histogram_numpy(x, k))
