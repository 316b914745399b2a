"""Clean-label poison crafting: feature collision, convex / bullseye polytope, defence-aware.

All attacks work on float images in [0, 1] (NCHW tensors inside, NHWC float32 arrays out), craft
every poison of a call in one batched tensor, never change the model (inputs get the gradients,
not the weights), and record a trajectory of poison features for the dashboard's animation.

Feature collision (Shafahi et al. 2018) solves

    p = argmin_x ||f(x) - f(t)||^2 + beta ||x - b||^2  [+ w * d_B(f(x))  for the adaptive attack]

by forward-backward splitting: a gradient step on the smooth (feature) part, then the proximal
step of the beta term, x = (x_hat + lr * beta * b) / (1 + lr * beta), then clipping to [0, 1] and
the optional l_inf ball around the base. Every poison has its own step size: a step that does not
lower that poison's objective is rejected and its step size halved (accepted steps grow it by 5%),
so each objective falls monotonically. Crafting stops when every step size has collapsed or at
``iters``. beta follows the paper's scaling, beta = beta0 * (feature_dim / input_dim)^2.

The adaptive attack knows the LGM defence and adds w * d_B(f(x)), the Mahalanobis distance of
the poison's feature to its claimed (base) class Gaussian: the feature optimum moves from f(t)
towards mu_B, trading collision for a likelihood the filter accepts.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .models import Classifier, to_images, to_input

ATTACKS = ("fc", "fc-adaptive", "cp", "bp")


@dataclass
class Poisons:
    """Crafted poisons with what produced them; plain arrays, saved as one ``.npz``."""

    poisons: np.ndarray  # float32 [N, H, W, C] in [0, 1]
    bases: np.ndarray  # float32 [N, H, W, C]: the clean base images
    target: np.ndarray  # float32 [1, H, W, C]
    base_labels: np.ndarray  # int64 [N]: the label the poisons carry (clean-label: the base's)
    target_label: int
    traj_iters: np.ndarray  # int [T]
    traj_features: np.ndarray  # float32 [T, N, d]
    traj_objective: np.ndarray  # float32 [T, N]
    target_feature: np.ndarray  # float32 [d]
    params: dict = field(default_factory=dict)
    time_s: float = 0.0

    @property
    def final_feature_distance(self) -> np.ndarray:
        """||f(p) - f(t)|| per poison at the end of crafting."""
        return np.linalg.norm(self.traj_features[-1] - self.target_feature[None], axis=1)

    def perturbation(self) -> dict:
        delta = (self.poisons - self.bases).reshape(len(self.poisons), -1)
        return {"l2": np.linalg.norm(delta, axis=1).tolist(), "linf": np.abs(delta).max(axis=1).tolist()}

    def summary(self) -> dict:
        pert = self.perturbation()
        return {"attack": self.params.get("attack"), "n_poisons": int(len(self.poisons)),
                "time_s": round(self.time_s, 3), "iterations": int(self.traj_iters[-1]),
                "feature_distance": self.final_feature_distance.tolist(),
                "mean_feature_distance": float(self.final_feature_distance.mean()),
                "l2": pert["l2"], "linf": pert["linf"], "target_label": int(self.target_label),
                "base_labels": self.base_labels.tolist()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)}
        np.savez_compressed(path, **arrays, target_label=self.target_label, time_s=self.time_s,
                            params=json.dumps(self.params))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Poisons":
        with np.load(path, allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files if k not in ("target_label", "time_s", "params")}
            return cls(**fields, target_label=int(z["target_label"]), time_s=float(z["time_s"]),
                       params=json.loads(str(z["params"])))


def _frozen(model: Classifier) -> Classifier:
    """A private eval-mode copy whose weights need no gradient: ~10% faster input gradients, and
    the shared model is never touched (not even its ``requires_grad`` flags)."""
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def _as_batch(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return to_input(images).to(device)


def _project(x: torch.Tensor, anchor: torch.Tensor, eps: float | None) -> torch.Tensor:
    if eps is not None:
        x = torch.max(torch.min(x, anchor + eps), anchor - eps)
    return x.clamp_(0.0, 1.0)


def paper_beta(beta0: float, feat_dim: int, input_dim: int) -> float:
    """Poison Frogs' dimension scaling of the proximal weight."""
    return beta0 * (feat_dim / input_dim) ** 2


def _check(iters: int, record_every: int, opacity: float, eps: float | None) -> None:
    if not 1 <= iters <= 100_000:
        raise ValueError("iters must be in 1..100000")
    if not 1 <= record_every <= 100_000:
        raise ValueError("record_every must be >= 1")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError("opacity must be in [0, 1]")
    if eps is not None and not 0.0 < eps <= 1.0:
        raise ValueError("eps must be in (0, 1]")


def feature_collision(model: Classifier, bases: np.ndarray, target: np.ndarray, base_labels: np.ndarray,
                      target_label: int, *, iters: int = 1000, beta0: float = 0.25, opacity: float = 0.0,
                      eps: float | None = None, step: float = 0.01, adaptive_weight: float = 0.0,
                      record_every: int = 10, min_step_frac: float = 1e-4) -> Poisons:
    """Craft one poison per base against ``target`` (one image, or one per base), batched.

    ``step`` sets each poison's first step size so that step moves pixels by ``step`` in RMS.
    ``adaptive_weight`` > 0 makes it the defence-aware attack (needs an LGM model).
    """
    _check(iters, record_every, opacity, eps)
    if adaptive_weight and model.config.head != "lgm":
        raise ValueError("the defence-aware attack needs an LGM model (it targets the class Gaussian)")
    if adaptive_weight < 0 or beta0 < 0 or step <= 0:
        raise ValueError("adaptive_weight and beta0 must be >= 0, step > 0")
    model = _frozen(model)
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    b = _as_batch(bases, device)
    t = _as_batch(target, device)
    labels = torch.as_tensor(np.asarray(base_labels), dtype=torch.long, device=device)
    n = len(b)
    with torch.no_grad():
        ft = model.features(t).expand(n, -1) if len(t) == 1 else model.features(t)
    anchor = (1 - opacity) * b + opacity * t  # watermarked base: the image the poison must resemble
    input_dim = b[0].numel()
    beta = paper_beta(beta0, ft.shape[1], input_dim)

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-poison (full objective, gradient of the smooth part, features)."""
        x = x.detach().requires_grad_(True)
        f = model.features(x)
        smooth = (f - ft).pow(2).sum(1)
        if adaptive_weight:
            smooth = smooth + adaptive_weight * model.head.mahalanobis(f).gather(1, labels[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(smooth.sum(), x)
        full = smooth.detach() + beta * (x.detach() - anchor).pow(2).flatten(1).sum(1)
        return full, grad, f.detach()

    x = _project(anchor.clone(), b, eps)
    obj, grad, feats = objective(x)
    rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    lr = step / rms  # per-poison step size
    lr0 = lr.clone()
    shape = (-1,) + (1,) * (b.ndim - 1)
    rec_iters, rec_feats, rec_obj = [0], [feats.cpu()], [obj.cpu()]
    done = 0
    for it in range(1, iters + 1):
        x_hat = x - lr.view(shape) * grad
        cand = _project((x_hat + (lr * beta).view(shape) * anchor) / (1 + lr * beta).view(shape), b, eps)
        cand_obj, cand_grad, cand_feats = objective(cand)
        better = cand_obj < obj
        keep = better.view(shape)
        x = torch.where(keep, cand, x)
        grad = torch.where(keep, cand_grad, grad)
        feats = torch.where(better[:, None], cand_feats, feats)
        obj = torch.where(better, cand_obj, obj)
        lr = torch.where(better, lr * 1.05, lr * 0.5)
        done = it
        if it % record_every == 0:
            rec_iters.append(it)
            rec_feats.append(feats.cpu())
            rec_obj.append(obj.cpu())
        if bool((lr < min_step_frac * lr0).all()):
            break
    if rec_iters[-1] != done:
        rec_iters.append(done)
        rec_feats.append(feats.cpu())
        rec_obj.append(obj.cpu())
    params = {"attack": "fc-adaptive" if adaptive_weight else "fc", "iters": iters, "beta0": beta0,
              "beta": beta, "opacity": opacity, "eps": eps, "step": step, "adaptive_weight": adaptive_weight,
              "record_every": record_every}
    return Poisons(poisons=to_images(x), bases=to_images(b), target=to_images(t[:1]),
                   base_labels=labels.cpu().numpy(), target_label=int(target_label),
                   traj_iters=np.asarray(rec_iters), traj_features=torch.stack(rec_feats).numpy(),
                   traj_objective=torch.stack(rec_obj).numpy(), target_feature=ft[0].cpu().numpy(),
                   params=params, time_s=time.perf_counter() - t0)


def _project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of a vector onto the probability simplex (Duchi et al. 2008)."""
    u, _ = torch.sort(v, descending=True)
    css = u.cumsum(0) - 1
    k = torch.arange(1, len(v) + 1, device=v.device, dtype=v.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    return (v - css[rho] / (rho + 1)).clamp_min(0)


def polytope(model: Classifier, bases: np.ndarray, target: np.ndarray, base_labels: np.ndarray,
             target_label: int, *, mode: str = "bullseye", iters: int = 1000, eps: float = 8 / 255,
             lr: float = 0.01, record_every: int = 10) -> Poisons:
    """Convex Polytope (Zhu et al. 2019) or Bullseye Polytope (Aghakhani et al. 2021).

    k poisons whose feature combination sum_i c_i f(p_i) reaches f(t): convex weights c on the
    simplex (optimised alongside) for ``mode='convex'``, the plain mean for ``mode='bullseye'``.
    Poisons are optimised with Adam and kept in the l_inf ball of radius ``eps`` around their bases.
    """
    _check(iters, record_every, 0.0, eps)
    if mode not in ("convex", "bullseye"):
        raise ValueError("mode must be 'convex' or 'bullseye'")
    model = _frozen(model)
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    b = _as_batch(bases, device)
    t = _as_batch(target, device)[:1]
    k = len(b)
    with torch.no_grad():
        ft = model.features(t)[0]
    scale = ft.pow(2).sum().clamp_min(1e-12)
    delta = torch.zeros_like(b, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    coeffs = torch.full((k,), 1.0 / k, device=device)

    def centre(f: torch.Tensor) -> torch.Tensor:
        return coeffs @ f

    rec_iters, rec_feats, rec_obj = [], [], []
    for it in range(iters + 1):
        f = model.features((b + delta).clamp(0, 1))
        loss = 0.5 * (centre(f) - ft).pow(2).sum() / scale
        if it % record_every == 0 or it == iters:
            rec_iters.append(it)
            rec_feats.append(f.detach().cpu())
            rec_obj.append(torch.full((k,), loss.item()))
        if it == iters:
            break
        (delta.grad,) = torch.autograd.grad(loss, delta)  # gradients for the poisons only, never the model
        opt.step()
        with torch.no_grad():
            delta.copy_(_project(b + delta, b, eps) - b)
            if mode == "convex":  # projected gradient steps on the coefficients, step 1/L
                fd = model.features(b + delta)
                gram = fd @ fd.T
                step_c = 1.0 / gram.norm(p=2).clamp_min(1e-12)
                for _ in range(5):
                    coeffs = _project_simplex(coeffs - step_c * (gram @ coeffs - fd @ ft))
    poisons = (b + delta).detach()
    params = {"attack": "cp" if mode == "convex" else "bp", "iters": iters, "eps": eps, "lr": lr,
              "record_every": record_every, "coefficients": coeffs.cpu().tolist()}
    return Poisons(poisons=to_images(poisons), bases=to_images(b), target=to_images(t),
                   base_labels=np.asarray(base_labels, dtype=np.int64), target_label=int(target_label),
                   traj_iters=np.asarray(rec_iters), traj_features=torch.stack(rec_feats).numpy(),
                   traj_objective=torch.stack(rec_obj).numpy(), target_feature=ft.cpu().numpy(),
                   params=params, time_s=time.perf_counter() - t0)


def default_eps(dataset: str) -> float:
    """The polytope attacks' l_inf budget: the benchmarks' 8/255 on CIFAR-10, the usual 0.3 on MNIST."""
    return 8 / 255 if dataset == "cifar10" else 0.3


def attack_knobs(attack: str, dataset: str, iters: int, *, beta0: float = 0.25, opacity: float = 0.0,
                 eps: float | None = None, adaptive_weight: float = 1.0, record_every: int | None = None) -> dict:
    """The keyword arguments ``craft`` takes for ``attack``, picked from one flat set of settings, so
    the CLI, the experiments and the pages agree on what each attack uses and on its defaults."""
    knobs: dict = {"iters": iters, "record_every": record_every or max(1, iters // 100)}
    if attack in ("fc", "fc-adaptive"):
        knobs.update(beta0=beta0, opacity=opacity, eps=eps)
        if attack == "fc-adaptive":
            knobs["adaptive_weight"] = adaptive_weight
    elif attack in ("cp", "bp"):
        knobs["eps"] = eps if eps is not None else default_eps(dataset)
    else:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    return knobs


def craft(model: Classifier, attack: str, bases: np.ndarray, target: np.ndarray, base_labels: np.ndarray,
          target_label: int, **knobs) -> Poisons:
    """One entry point for every attack (the CLI, experiments and the dashboard call this)."""
    if attack == "fc":
        return feature_collision(model, bases, target, base_labels, target_label, **knobs)
    if attack == "fc-adaptive":
        knobs.setdefault("adaptive_weight", 1.0)
        return feature_collision(model, bases, target, base_labels, target_label, **knobs)
    if attack in ("cp", "bp"):
        return polytope(model, bases, target, base_labels, target_label,
                        mode="convex" if attack == "cp" else "bullseye", **knobs)
    raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
