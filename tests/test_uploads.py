"""Uploads: every kind of bad input gets a clear UploadError; good ones convert correctly."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.uploads import MAX_BYTES, UploadError, image_from_bytes


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_colour_to_mnist_and_gray_to_cifar():
    rgb = Image.new("RGB", (50, 40), (255, 0, 0))
    out = image_from_bytes(_png(rgb), (28, 28), 1)
    assert out.shape == (28, 28, 1) and out.dtype == np.uint8
    gray = Image.new("L", (10, 10), 200)
    out = image_from_bytes(_png(gray), (32, 32), 3)
    assert out.shape == (32, 32, 3) and np.all(out == 200)


def test_alpha_16bit_and_animation():
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))  # fully transparent white -> black
    assert image_from_bytes(_png(rgba), (28, 28), 1).max() == 0
    deep = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert image_from_bytes(_png(deep), (28, 28), 1).min() == 255
    frames = [Image.new("L", (8, 8), v) for v in (10, 240)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert image_from_bytes(buf.getvalue(), (28, 28), 1).max() <= 12


@pytest.mark.parametrize("data,msg", [
    (b"", "empty"),
    (b"not an image at all", "not an image"),
    (b"\x00" * (MAX_BYTES + 1), "limit"),
    (_png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 30), dtype=np.uint8)))[:400],
     "corrupt"),
])
def test_bad_uploads(data, msg):
    with pytest.raises(UploadError, match=msg):
        image_from_bytes(data, (28, 28), 1)


def test_pixel_bomb_is_refused():
    big = _png(Image.new("1", (5000, 5000)))  # small file, 25 megapixels
    with pytest.raises(UploadError, match="megapixels|not an image"):
        image_from_bytes(big, (28, 28), 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_bytes_never_crash(data):
    try:
        out = image_from_bytes(data, (28, 28), 1)
        assert out.shape == (28, 28, 1)
    except UploadError:
        pass


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.sampled_from(["L", "RGB", "RGBA", "P", "LA", "I;16"]),
       st.sampled_from([1, 3]))
def test_fuzz_valid_images_convert(w, h, mode, channels):
    img = Image.new(mode, (w, h))
    out = image_from_bytes(_png(img), (32, 32), channels)
    assert out.shape == (32, 32, channels) and out.dtype == np.uint8


def test_benchmark_export_round_trips_through_a_restricted_unpickler(tmp_path):
    """The poisoning benchmark's three pickles, read back without trusting pickle; a file naming any
    other class is refused before it runs."""
    import pickle

    from core.export import read_benchmark, write_benchmark

    rng = np.random.default_rng(0)
    poisons = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    folder = write_benchmark(tmp_path / "bp", poisons, 4, np.array([7, 8, 9]), target, 2, {"source": "test"})
    back = read_benchmark(folder)
    assert np.array_equal(back["poisons"], poisons) and back["labels"] == [4, 4, 4]
    assert back["base_indices"] == [7, 8, 9] and back["target_label"] == 2
    assert np.array_equal(back["target"], target[0])
    grey = write_benchmark(tmp_path / "mnist", poisons[..., :1], 1, np.array([0, 1, 2]), target[..., :1], 0)
    assert read_benchmark(grey)["poisons"].shape == (3, 32, 32, 1)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (folder / "target.pickle").write_bytes(pickle.dumps((Evil(), 1)))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_benchmark(folder)
    # a forged size would allocate gigabytes when the image is rebuilt: refused before that
    import struct

    real = pickle.dumps((Image.new("RGB", (8, 8)), 1), protocol=3)  # protocol 3: no frames to keep consistent
    small, huge = b"K\x08K\x08\x86", b"J" + struct.pack("<i", 100000) + b"J" + struct.pack("<i", 100000) + b"\x86"
    assert real.count(small) == 1
    (folder / "target.pickle").write_bytes(real.replace(small, huge))
    with pytest.raises(pickle.UnpicklingError, match="refusing a RGB image"):
        read_benchmark(folder)
    (folder / "target.pickle").write_bytes(pickle.dumps(["not", "a", "tuple"]))
    with pytest.raises(ValueError, match="layout"):
        read_benchmark(folder)
