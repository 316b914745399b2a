"""Poisons as files a teacher can put on a slide or a researcher can load: a PNG contact sheet, an
``.npz`` of the 8-bit images, and the poisoning benchmark's own three pickles (``write_benchmark`` /
``read_benchmark``). Figures are exported by the browser (Plotly's camera button)."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HEADER = 18  # pixels of caption above each column


def _as_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 as it is; [0, 1] floats rounded to the 8-bit pixels an image file holds."""
    arr = np.asarray(images)
    return arr if arr.dtype == np.uint8 else (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)


def to_display(img: np.ndarray) -> np.ndarray:
    """One HWC image (uint8 or [0, 1] float) as uint8, grayscale as 2-D: what PIL and ``st.image`` show."""
    arr = _as_uint8(img)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def amplified_change(poison: np.ndarray, base: np.ndarray) -> np.ndarray:
    """poison - base scaled so the largest change is full contrast; grey is no change."""
    diff = to_display(poison).astype(np.float32) - to_display(base).astype(np.float32)
    return np.clip(127.5 + 127.5 * diff / max(1.0, float(np.abs(diff).max())), 0, 255).astype(np.uint8)


def largest_change(poison: np.ndarray, base: np.ndarray) -> int:
    """The largest change of any pixel, in 8-bit levels (what the pixel budget bounds)."""
    return int(np.abs(to_display(poison).astype(np.int16) - to_display(base).astype(np.int16)).max())


def contact_sheet(target: np.ndarray, bases: np.ndarray, poisons: np.ndarray, cell: int = 96,
                  captions: tuple[str, str, str, str] = ("base", "poison", "change (amplified)", "target")) -> bytes:
    """A PNG with one row per poison: its base, the poison, the amplified change, and the target.

    Pixels are enlarged by nearest-neighbour (``cell`` pixels a side) so every changed pixel stays
    visible on a projector; nothing is smoothed or re-scaled in value except the change column.
    """
    if len(bases) != len(poisons) or len(poisons) == 0:
        raise ValueError("need one base per poison, and at least one poison")
    pad = 6
    width, height = 4 * (cell + pad) + pad, HEADER + len(poisons) * (cell + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(captions):
        draw.text((pad + c * (cell + pad), 3), text, fill="black")
    for r, (b, p) in enumerate(zip(bases, poisons)):
        for c, img in enumerate((to_display(b), to_display(p), amplified_change(p, b), to_display(target))):
            tile = Image.fromarray(img).convert("RGB").resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (pad + c * (cell + pad), HEADER + pad + r * (cell + pad)))
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def poisons_npz(target: np.ndarray, bases: np.ndarray, poisons: np.ndarray,
                **meta: int | float | str | np.ndarray) -> bytes:
    """The images as uint8 NHWC arrays (``target``, ``bases``, ``poisons``) plus metadata (labels,
    the bases' and target's indices, the attack), loadable with ``np.load`` and no pickle; a
    red-team round reads it back (``core.rounds.Submission.from_npz``)."""
    out = io.BytesIO()
    arrays = {k: np.asarray(v) for k, v in meta.items()}
    np.savez_compressed(out, target=_as_uint8(target), bases=_as_uint8(bases), poisons=_as_uint8(poisons), **arrays)
    return out.getvalue()


# --- the poisoning benchmark's submission format (aks2203/poisoning-benchmark, how_to.md) ---------------

BENCHMARK_FILES = ("poisons.pickle", "base_indices.pickle", "target.pickle")


def write_benchmark(folder: str | Path, poisons: np.ndarray, base_label: int, base_indices: np.ndarray,
                    target: np.ndarray, target_label: int, provenance: dict | None = None) -> Path:
    """Write ``poisons.pickle`` (a list of (PIL image, label) tuples), ``base_indices.pickle`` (the
    bases' indices, so the benchmark removes the clean bases) and ``target.pickle`` ((PIL image,
    label)), as the benchmark's ``benchmark_test.py`` reads them; ``provenance.json`` beside them says
    where the indices point. Built from uint8 arrays and ints only.

    The indices are the data source's: on torchvision's CIFAR-10 files they are the benchmark's; on
    this project's class-sorted JPEG pack they are not (the pack's order differs), which the
    provenance file records."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    imgs = [Image.fromarray(to_display(p)) for p in _as_uint8(poisons)]
    labels = int(base_label)
    files = {"poisons.pickle": [(img, labels) for img in imgs],
             "base_indices.pickle": [int(i) for i in np.asarray(base_indices).ravel()],
             "target.pickle": (Image.fromarray(to_display(_as_uint8(target)[0] if target.ndim == 4 else _as_uint8(target))),
                               int(target_label))}
    for name, obj in files.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=4))
    (folder / "provenance.json").write_text(json.dumps(provenance or {}, indent=2, default=str) + "\n")
    return folder


MAX_BENCHMARK_SIDE = 512  # pixels: CIFAR-10 and TinyImageNet images are 32 and 64 a side


class _CheckedImage(Image.Image):
    """PIL's image as an unpickled file may build it: the size is checked before any pixel memory
    is allocated (a forged size would otherwise ask for gigabytes)."""

    def __setstate__(self, state):  # noqa: D105 - pickle protocol
        try:
            _info, mode, size = state[0], state[1], state[2]
            w, h = (int(v) for v in size)
        except (TypeError, ValueError, IndexError):
            raise pickle.UnpicklingError("a benchmark image's state is malformed") from None
        if mode not in ("L", "RGB") or not (0 < w <= MAX_BENCHMARK_SIDE and 0 < h <= MAX_BENCHMARK_SIDE):
            raise pickle.UnpicklingError(f"refusing a {mode} image of {w}x{h} in a benchmark file")
        super().__setstate__(state)


class _BenchmarkUnpickler(pickle.Unpickler):
    """Only what the benchmark's files hold: PIL images (of a checked size), tuples, lists and ints.
    Any other class or function named in the file is refused before it runs."""

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle protocol
        if (module, name) == ("PIL.Image", "Image"):  # PIL pickles an image as its class + (mode, size, bytes)
            return _CheckedImage
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a benchmark file")


def read_benchmark(folder: str | Path) -> dict:
    """Read the three files back without trusting pickle: {"poisons": uint8 NHWC, "labels",
    "base_indices", "target": uint8 HWC, "target_label"}."""
    folder = Path(folder)
    out = {}
    for name in BENCHMARK_FILES:
        out[name] = _BenchmarkUnpickler(io.BytesIO((folder / name).read_bytes())).load()
    ok = (isinstance(out["poisons.pickle"], list) and out["poisons.pickle"]
          and all(isinstance(t, tuple) and len(t) == 2 and isinstance(t[0], Image.Image) and isinstance(t[1], int)
                  for t in out["poisons.pickle"])
          and isinstance(out["base_indices.pickle"], list) and all(isinstance(i, int) for i in out["base_indices.pickle"])
          and isinstance(out["target.pickle"], tuple) and len(out["target.pickle"]) >= 2
          and isinstance(out["target.pickle"][0], Image.Image) and isinstance(out["target.pickle"][1], int))
    if not ok:
        raise ValueError(f"{folder}: not the benchmark's layout (a list of (image, label), a list of indices, "
                         "(image, label))")
    poisons = [np.asarray(img) for img, _ in out["poisons.pickle"]]
    return {"poisons": np.stack([p if p.ndim == 3 else p[..., None] for p in poisons]),
            "labels": [int(lab) for _, lab in out["poisons.pickle"]],
            "base_indices": [int(i) for i in out["base_indices.pickle"]],
            "target": np.asarray(out["target.pickle"][0]), "target_label": int(out["target.pickle"][1])}
