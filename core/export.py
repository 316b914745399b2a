"""Poisons as files a teacher can put on a slide or a researcher can load: a PNG contact sheet and
an ``.npz`` of the 8-bit images. Figures are exported by the browser (Plotly's camera button)."""

from __future__ import annotations

import io

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


def poisons_npz(target: np.ndarray, bases: np.ndarray, poisons: np.ndarray, **meta: int | float | str) -> bytes:
    """The images as uint8 NHWC arrays (``target``, ``bases``, ``poisons``) plus scalar metadata
    (labels, budget, seed), loadable with ``np.load`` and no pickle."""
    out = io.BytesIO()
    arrays = {k: np.asarray(v) for k, v in meta.items()}
    np.savez_compressed(out, target=_as_uint8(target), bases=_as_uint8(bases), poisons=_as_uint8(poisons), **arrays)
    return out.getvalue()
