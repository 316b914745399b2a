"""Poison Lab dashboard entry point: ``streamlit run app.py``.

For now one page: what the lab ships (models and their measured accuracy) and a look at the
embedded data. Pages only arrange widgets over ``core``.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core.checkpoints import CheckpointError, list_checkpoints, read_meta
from core.data import DataUnavailable, load_demo

st.set_page_config(page_title="Poison Lab", layout="wide")


@st.cache_data
def shipped_models() -> list[dict]:
    rows = []
    for path in list_checkpoints():
        try:
            meta = read_meta(path)
        except CheckpointError as exc:
            rows.append({"checkpoint": path.name, "problem": str(exc)})
            continue
        rows.append({"checkpoint": path.name, "dataset": meta["config"]["dataset"],
                     "head": meta["config"]["head"], "feature dim": meta["config"]["feat_dim"],
                     "test accuracy": round(100 * meta.get("test_accuracy", float("nan")), 2),
                     "train time (s)": meta.get("train_time_s")})
    return rows


@st.cache_data
def demo_images(name: str, per_class: int = 8) -> tuple[np.ndarray, list[str]]:
    ds = load_demo(name)
    idx = np.concatenate([np.flatnonzero(ds.y_test == c)[:per_class] for c in range(len(ds.classes))])
    return ds.x_test[idx], [ds.classes[c] for c in ds.y_test[idx]]


st.title("Poison Lab")
st.write("Clean-label poisons look like an ordinary training image of one class but sit, inside the "
         "network, on top of a target image of another class. A network trained with a Gaussian-"
         "mixture (LGM) loss can notice how unlikely such a poison is under the class it claims.")

st.subheader("Shipped models")
rows = shipped_models()
if rows:
    st.dataframe(rows, hide_index=True, use_container_width=True)
else:
    st.warning("No checkpoints found in checkpoints/. Train one with `python -m core train ...`.")

st.subheader("Embedded data sample")
dataset = st.selectbox("Dataset", ["mnist", "cifar10"], format_func={"mnist": "MNIST", "cifar10": "CIFAR-10"}.get)
try:
    images, captions = demo_images(dataset)
    st.image([img if img.shape[-1] == 3 else img[..., 0] for img in images[:40]], caption=captions[:40], width=56)
except DataUnavailable as exc:
    st.error(str(exc))
