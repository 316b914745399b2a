"""Clean-label poison crafting: feature collision, convex / bullseye polytope, defence-aware.

Every attack keeps each poison inside an l_inf ball of radius ``eps`` around its base (the
*budget*; per-data-set defaults in ``default_eps`` were chosen so that the clean-label judge,
``core.judge``, calls >= 90% of default poisons the base class), works on float images in [0, 1]
(NCHW tensors inside, NHWC float32 arrays out), crafts every poison of a call in one batch, never
changes the model (inputs get the gradients, not the weights), records a trajectory of poison
features for the dashboard's animation, and returns poisons rounded to 8-bit pixels (what a data
set can hold) without leaving the budget.

- ``fc`` (default): feature collision, min ||f(x) - f(t)||^2 over the budget ball, by projected
  Adam with a cosine-decayed step and optional random restarts, as the poisoning benchmark's
  implementations do: the strongest collision the budget allows.
- ``fc-frogs``: Poison Frogs' own solver (Shafahi et al. 2018), forward-backward splitting on
  ||f(x) - f(t)||^2 + beta ||x - b||^2 with per-poison step sizes (a rejected step halves a
  poison's step, an accepted one grows it 5%) and the optional watermark. ``beta0`` is on the
  paper's 0-255 pixel scale: beta = beta0 * (feature_dim / input_dim)^2 * 255^2 on [0, 1] pixels.
- ``fc-adaptive``: ``fc`` that knows the LGM defence: it adds w * d_B(f(x)), the Mahalanobis
  distance of the poison's feature to its claimed (base) class Gaussian, trading collision for a
  likelihood the filter accepts.
- ``cp`` / ``bp``: convex polytope (Zhu et al. 2019) and bullseye polytope (Aghakhani et al. 2021).
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



@dataclass(frozen=True)
class AttackSpec:
    """What the CLI, the experiments and the pages need to know about an attack."""

    name: str
    label: str  # the name a person reads
    needs_head: str | None  # "lgm": only against a model with that head
    summary: str


ATTACKS: dict[str, AttackSpec] = {a.name: a for a in (
    AttackSpec("fc", "Feature collision", None,
               "pull each poison's feature onto the target's, inside the pixel budget (projected Adam)"),
    AttackSpec("fc-adaptive", "Defence-aware feature collision", "lgm",
               "feature collision that also keeps the poison likely under its claimed class's Gaussian"),
    AttackSpec("fc-frogs", "Poison Frogs (original solver)", None,
               "Shafahi et al.'s forward-backward splitting with a proximity weight beta"),
    AttackSpec("cp", "Convex polytope", None, "poisons whose features surround the target's (Zhu et al.)"),
    AttackSpec("bp", "Bullseye polytope", None, "poisons whose mean feature is the target's (Aghakhani et al.)"),
)}


def applicable(attack: str, head: str) -> str | None:
    """Why ``attack`` cannot run against a model with ``head``, or None when it can."""
    spec = ATTACKS.get(attack)
    if spec is None:
        return f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}"
    if spec.needs_head and spec.needs_head != head:
        return f"{spec.label} needs an {spec.needs_head.upper()} model (it targets the class Gaussian)"
    return None


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
    """A private eval-mode copy whose weights need no gradient, so the shared model is never touched
    (not even its ``requires_grad`` flags). Speed: the first build measured ~10% faster input
    gradients; bench/bench_craft.py's interleaved steps now measure no difference (BENCHMARKS.md)."""
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def _as_batch(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return to_input(images).to(device)


def _collision_setup(model: Classifier, bases: np.ndarray, target: np.ndarray, base_labels: np.ndarray):
    """(frozen model, bases, target, labels, the target's feature per base) on the model's device."""
    model = _frozen(model)
    device = next(model.parameters()).device
    b, t = _as_batch(bases, device), _as_batch(target, device)
    labels = torch.as_tensor(np.asarray(base_labels), dtype=torch.long, device=device)
    with torch.no_grad():
        ft = model.features(t).expand(len(b), -1) if len(t) == 1 else model.features(t)
    return model, b, t, labels, ft


def _project(x: torch.Tensor, anchor: torch.Tensor, eps: float | None) -> torch.Tensor:
    if eps is not None:
        x = torch.max(torch.min(x, anchor + eps), anchor - eps)
    return x.clamp_(0.0, 1.0)


def budget_levels(eps: float) -> int:
    """The most 8-bit grey levels a pixel may change within ``eps``: what the saved poisons realise."""
    return int(np.floor(eps * 255 + 1e-6))


def quantise(x: torch.Tensor, anchor: torch.Tensor, eps: float | None) -> torch.Tensor:
    """Round poisons to 8-bit pixels (what an image file holds) without leaving the budget: the
    rounded change from an 8-bit base is clipped to floor(255 eps) levels."""
    q = torch.round(x * 255)
    if eps is not None:
        a = torch.round(anchor * 255)
        lim = float(budget_levels(eps))
        q = torch.max(torch.min(q, a + lim), a - lim)
    return q.clamp_(0, 255) / 255


def paper_beta(beta0: float, feat_dim: int, input_dim: int) -> float:
    """Poison Frogs' proximal weight on [0, 1] pixels for a ``beta0`` on the paper's 0-255 scale:
    beta0 * (feature_dim / input_dim)^2 * 255^2."""
    return beta0 * (feat_dim / input_dim) ** 2 * 255.0 ** 2


def _check(iters: int, record_every: int, opacity: float, eps: float | None) -> None:
    """Reject absurd settings with a message a dashboard user can act on."""
    if not 1 <= iters <= 100_000:
        raise ValueError("iters must be in 1..100000")
    if not 1 <= record_every <= 100_000:
        raise ValueError("record_every must be >= 1")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError("opacity must be in [0, 1]")
    if eps is not None and not 0.0 < eps <= 1.0:
        raise ValueError("eps must be in (0, 1]")


def poison_frogs(model: Classifier, bases: np.ndarray, target: np.ndarray, base_labels: np.ndarray,
                 target_label: int, *, iters: int = 1000, beta0: float = 0.25, opacity: float = 0.0,
                 eps: float | None = None, step: float = 0.01, record_every: int = 10,
                 min_step_frac: float = 1e-4) -> Poisons:
    """Poison Frogs' forward-backward splitting, one poison per base against ``target``, batched:
    the reference solver. ``beta0`` is on the paper's 0-255 scale (see ``paper_beta``); ``step``
    sets each poison's first step so that it moves pixels by ``step`` in RMS."""
    _check(iters, record_every, opacity, eps)
    if beta0 < 0 or step <= 0:
        raise ValueError("beta0 must be >= 0 and step > 0")
    t0 = time.perf_counter()
    model, b, t, labels, ft = _collision_setup(model, bases, target, base_labels)
    anchor = (1 - opacity) * b + opacity * t  # watermarked base: the image the poison must resemble
    input_dim = b[0].numel()
    beta = paper_beta(beta0, ft.shape[1], input_dim)

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-poison (full objective, gradient of the smooth part, features)."""
        x = x.detach().requires_grad_(True)
        f = model.features(x)
        smooth = (f - ft).pow(2).sum(1)
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
    params = {"attack": "fc-frogs", "iters": iters, "iterations_run": done, "beta0": beta0, "beta": beta,
              "opacity": opacity, "eps": eps, "step": step, "record_every": record_every}
    x = quantise(x, b, eps)
    with torch.no_grad():
        rec_iters.append(done)
        rec_feats.append(model.features(x).cpu())
        rec_obj.append(obj.cpu())
    return Poisons(poisons=to_images(x), bases=to_images(b), target=to_images(t[:1]),
                   base_labels=labels.cpu().numpy(), target_label=int(target_label),
                   traj_iters=np.asarray(rec_iters), traj_features=torch.stack(rec_feats).numpy(),
                   traj_objective=torch.stack(rec_obj).numpy(), target_feature=ft[0].cpu().numpy(),
                   params=params, time_s=time.perf_counter() - t0)


def feature_collision(model: Classifier, bases: np.ndarray, target: np.ndarray, base_labels: np.ndarray,
                      target_label: int, *, eps: float, iters: int = 300, lr: float = 0.1, restarts: int = 1,
                      adaptive_weight: float = 0.0, record_every: int = 10, patience: int | None = None,
                      seed: int = 0) -> Poisons:
    """Feature collision inside the l_inf ball of radius ``eps``: projected Adam on
    ||f(b + delta) - f(t)||^2 (+ ``adaptive_weight`` * d_B for the defence-aware attack).

    Adam's step starts at ``lr * eps`` per pixel and decays on a cosine to zero; restart 0 starts at
    the base, later restarts at a random point of the ball (seeded), and each poison keeps its best
    iterate over all restarts. ``patience``: a restart stops once no poison's best has improved by
    0.1% for that many iterations (the step has shrunk to nothing useful).
    """
    _check(iters, record_every, 0.0, eps)
    if not 1 <= restarts <= 100 or lr <= 0 or adaptive_weight < 0:
        raise ValueError("restarts must be in 1..100, lr > 0, adaptive_weight >= 0")
    if adaptive_weight and model.config.head != "lgm":
        raise ValueError(applicable("fc-adaptive", model.config.head))
    t0 = time.perf_counter()
    model, b, t, labels, ft = _collision_setup(model, bases, target, base_labels)
    gen = torch.Generator().manual_seed(seed)

    def loss_of(f: torch.Tensor) -> torch.Tensor:
        loss = (f - ft).pow(2).sum(1)
        if adaptive_weight:
            loss = loss + adaptive_weight * model.head.mahalanobis(f).gather(1, labels[:, None]).squeeze(1)
        return loss

    with torch.no_grad():
        f0 = model.features(b)
    best_x, best_loss, best_f = b.clone(), loss_of(f0), f0
    rec_iters, rec_feats, rec_obj = [0], [f0.cpu()], [best_loss.cpu()]
    shape = (-1,) + (1,) * (b.ndim - 1)
    total = 0
    for restart in range(restarts):
        start = torch.zeros_like(b) if restart == 0 else (torch.rand(b.shape, generator=gen) * 2 - 1).to(b.device) * eps
        delta = ((b + start).clamp(0, 1) - b).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=lr * eps)
        stale, last_best = 0, best_loss.clone()
        for it in range(1, iters + 1):
            for group in opt.param_groups:
                group["lr"] = lr * eps * 0.5 * (1 + np.cos(np.pi * (it - 1) / iters))
            f = model.features(b + delta)
            loss = loss_of(f)
            with torch.no_grad():  # the iterate just evaluated is feasible: keep it if it is a poison's best
                better = loss < best_loss
                best_x = torch.where(better.view(shape), b + delta, best_x)
                best_f = torch.where(better[:, None], f, best_f)
                best_loss = torch.where(better, loss, best_loss)
            (delta.grad,) = torch.autograd.grad(loss.sum(), delta)
            opt.step()
            with torch.no_grad():  # project onto the budget ball and the valid pixel range
                delta.clamp_(-eps, eps)
                delta.copy_((b + delta).clamp(0, 1) - b)
            total += 1
            if total % record_every == 0:
                rec_iters.append(total)
                rec_feats.append(best_f.detach().cpu())
                rec_obj.append(best_loss.detach().cpu())
            if patience:
                if bool((best_loss < last_best * 0.999).any()):
                    stale, last_best = 0, best_loss.clone()
                else:
                    stale += 1
                    if stale >= patience:
                        break
    x = quantise(best_x.detach(), b, eps)
    with torch.no_grad():
        fq = model.features(x)
        rec_iters.append(total)
        rec_feats.append(fq.cpu())
        rec_obj.append(loss_of(fq).cpu())
    params = {"attack": "fc-adaptive" if adaptive_weight else "fc", "iters": iters, "iterations_run": total,
              "eps": eps, "lr": lr, "restarts": restarts, "adaptive_weight": adaptive_weight,
              "patience": patience, "seed": seed, "record_every": record_every}
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
        # no clamp here: the projection below keeps b + delta in [0, 1], and clamp's zero gradient at
        # its bounds froze every pixel that touched 0 or 1 (most of an MNIST digit's background)
        f = model.features(b + delta)
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
    poisons = quantise((b + delta).detach(), b, eps)
    with torch.no_grad():
        fq = model.features(poisons)
        rec_iters.append(iters)
        rec_feats.append(fq.cpu())
        rec_obj.append(torch.full((k,), (0.5 * (centre(fq) - ft).pow(2).sum() / scale).item()))
    params = {"attack": "cp" if mode == "convex" else "bp", "iters": iters, "eps": eps, "lr": lr,
              "record_every": record_every, "coefficients": coeffs.cpu().tolist()}
    return Poisons(poisons=to_images(poisons), bases=to_images(b), target=to_images(t),
                   base_labels=np.asarray(base_labels, dtype=np.int64), target_label=int(target_label),
                   traj_iters=np.asarray(rec_iters), traj_features=torch.stack(rec_feats).numpy(),
                   traj_objective=torch.stack(rec_obj).numpy(), target_feature=ft.cpu().numpy(),
                   params=params, time_s=time.perf_counter() - t0)


# Default l_inf budgets, at which >= 90% of default poisons stay clean-label in the budget sweep
# (bench/bench_budget.py, 50 pairs, BENCHMARKS.md: MNIST 0.1 -> 98.8-99.2%; 0.15 -> 95% would also
# pass, 0.2 -> 77-84% would not; Fashion-MNIST, 10 pairs: 0.05 -> 92-94%, 0.1 -> 84-86% would not,
# its textured images make the judge call a perturbed shirt a "Shirt" sooner); CIFAR-10's is the
# poisoning benchmark's, kept although the judge passes only 83-85% there (94% at 4/255, 50 pairs):
# by eye its poisons are their bases, and the judge's network is fooled by the same feature shift.
CLEAN_EPS = {"mnist": 0.1, "fashion-mnist": 0.05, "cifar10": 8 / 255}


def default_eps(dataset: str) -> float:
    """The data set's clean-label l_inf budget (pixels in [0, 1])."""
    return CLEAN_EPS[dataset]


def attack_knobs(attack: str, dataset: str, iters: int, *, eps: float | None = None, beta0: float = 0.25,
                 opacity: float = 0.0, adaptive_weight: float = 1.0, restarts: int = 1, seed: int = 0,
                 record_every: int | None = None) -> dict:
    """The keyword arguments ``craft`` takes for ``attack``, picked from one flat set of settings, so
    the CLI, the experiments and the pages agree on what each attack uses and on its defaults.
    ``eps=None`` means the data set's clean-label budget; every attack has one."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    knobs: dict = {"iters": iters, "record_every": record_every or max(1, iters // 100),
                   "eps": default_eps(dataset) if eps is None else eps}
    if attack in ("fc", "fc-adaptive"):  # patience: stop once the collision has stopped improving
        knobs.update(restarts=restarts, seed=seed, patience=max(20, iters // 10))
        if attack == "fc-adaptive":
            knobs["adaptive_weight"] = adaptive_weight
    elif attack == "fc-frogs":
        knobs.update(beta0=beta0, opacity=opacity)
    return knobs


def craft(model: Classifier, attack: str, bases: np.ndarray, target: np.ndarray, base_labels: np.ndarray,
          target_label: int, **knobs) -> Poisons:
    """One entry point for every attack (the CLI, experiments and the dashboard call this)."""
    why = applicable(attack, model.config.head)
    if why:
        raise ValueError(why)
    if attack == "fc":
        return feature_collision(model, bases, target, base_labels, target_label, **knobs)
    if attack == "fc-adaptive":
        knobs.setdefault("adaptive_weight", 1.0)
        return feature_collision(model, bases, target, base_labels, target_label, **knobs)
    if attack == "fc-frogs":
        return poison_frogs(model, bases, target, base_labels, target_label, **knobs)
    return polytope(model, bases, target, base_labels, target_label,
                    mode="convex" if attack == "cp" else "bullseye", **knobs)
