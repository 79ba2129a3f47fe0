"""Inception metrics (FID, KID, IS, precision/recall) through torch-fidelity, never downloading weights.

torch-fidelity's `inception-v3-compat` extractor reproduces the TensorFlow FID reference: images go in as
uint8 RGB and are resized to 299x299 with TensorFlow 1.x's bilinear resize (no antialiasing), so numbers
are comparable with published FIDs computed the same way.
"""

from __future__ import annotations

import glob
import os
import pickle
import urllib.error
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..report import to_uint8
from .classifier import file_sha256
from .core import KID_SUBSET_SIZE, KID_SUBSETS, METRICS, EvalContext, Result

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_RESIZE = "299x299 TensorFlow-1.x-compatible bilinear, no antialiasing (torch-fidelity); grey repeated to RGB"
_FIDELITY_KEYS = {"fid": "fid", "kid": "kid", "is": "isc", "pr_inception": "prc"}


class _Uint8RGB(torch.utils.data.Dataset):
    """Images in [-1, 1] as the uint8 RGB tensors torch-fidelity expects."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        x = to_uint8(self.images[i])
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


# shapes that tell the FID Inception-v3 (1008-way head, TF-ported layer names) from other files
_INCEPTION_SHAPES = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "fc.weight": (1008, 2048)}


def check_inception_weights(path: Path, shown: str | None = None) -> None:
    """Refuse a file that is not the FID Inception state dict, before torch-fidelity unpickles it. `shown`:
    how messages name the file (default: its path).

    torch-fidelity loads the file with weights_only=False; once it has loaded here with weights_only=True,
    its pickle holds tensors and containers only, so that second load runs no code."""
    fix = f"it should be {INCEPTION_FILE} from {INCEPTION_URL}"
    path, name = Path(path), shown or str(path)
    with open(path, "rb") as f:  # an unreadable file stays an OSError that names it
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "global" not in str(e).lower():  # torch names a class or function it will not load
                raise UserError(f"Inception weights {name} cannot be read as PyTorch weights (corrupt or another "
                                f"format); {fix}") from e
            raise UserError(f"Inception weights {name} hold Python objects besides tensors, which ganforge does "
                            f"not unpickle (that can run code); if you trust the file, save its state dict again "
                            f"with torch.save(torch.load(PATH, weights_only=False), NEW_PATH), else {fix}") from e
        except Exception as e:  # torch raises zip, EOF, OS and runtime errors alike for damaged bytes
            raise UserError(f"Inception weights {name} cannot be read as PyTorch weights (corrupt or another "
                            f"format); {fix}") from e
    if not isinstance(state, dict):
        raise UserError(f"Inception weights {name} hold a {type(state).__name__}, not a state dict; {fix}")
    for key, shape in _INCEPTION_SHAPES.items():
        found = state.get(key)
        if not isinstance(found, torch.Tensor) or tuple(found.shape) != shape:
            got = "missing" if found is None else f"shaped {list(getattr(found, 'shape', []))}"
            raise UserError(f"Inception weights {name} are not the FID Inception-v3 ({key} is {got}, expected "
                            f"{list(shape)}); {fix}")


def default_weights_path() -> Path:
    """Where torch-fidelity (torch's hub cache) keeps the weights, and where ganforge looks for them."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def download_inception_weights(dest: Path | str | None = None, url: str = INCEPTION_URL,
                               progress: bool = True) -> tuple[Path, bool]:
    """Fetch the FID Inception weights to `dest` (torch's hub cache by default) and check them; returns the
    path and whether anything was downloaded. The download goes to a temp file beside `dest`, which replaces
    `dest` only once checked: an interrupted or wrong download leaves nothing there."""
    path = Path(dest).expanduser() if dest else default_weights_path()
    if path.is_dir() or str(dest or "").endswith(("/", os.sep)):
        path = path / INCEPTION_FILE
    if path.is_file():
        try:
            check_inception_weights(path)
            return path, False
        except UserError as e:
            if path.name != INCEPTION_FILE:  # another file, not damaged weights: not ours to replace
                raise UserError(f"{path} exists and is not the FID Inception weights; choose another --out, or "
                                "remove that file to download them there") from e
            # damaged weights: fetched again below
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        in_the_way = next((p for p in path.parents if p.is_file()), None)
        reason = f"{in_the_way} is a file where a folder is needed" if in_the_way else e.strerror or e
        raise UserError(f"cannot write the Inception weights to {path.parent}: {reason}; pass --out PATH "
                        "in a writable folder") from e
    partial = path.with_name(path.name + ".download")
    try:
        torch.hub.download_url_to_file(url, str(partial), progress=progress)
        check_inception_weights(partial, shown=f"downloaded from {url}")
        os.replace(partial, path)
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"could not download {url}: {' '.join(str(reason).split())}; check the network, or fetch "
                        f"that file by other means and pass --inception-weights PATH (or put it at {path})") from e
    except OSError as e:  # writing: a read-only folder, a full disk
        raise UserError(f"cannot write the Inception weights to {path}: {e.strerror or e}; pass --out PATH in a "
                        "writable folder with room for them") from e
    finally:
        partial.unlink(missing_ok=True)
        for leftover in partial.parent.glob(partial.name + ".*.partial"):  # torch's own temp file, on some failures
            leftover.unlink(missing_ok=True)
    return path, True


def inception_weights(given: str | None, option: str = "--inception-weights") -> Path:
    """The weights file given (by `option`, named in errors), else torch's hub cache where torch-fidelity
    would have put it; checked."""
    if given:
        path = Path(given).expanduser()
        if path.is_dir() and (path / INCEPTION_FILE).is_file():  # the folder that holds it
            path = path / INCEPTION_FILE
        elif path.is_dir():
            raise UserError(f"{option} {path} is a folder without {INCEPTION_FILE} in it; give the weights file")
        elif not path.is_file():
            raise UserError(f"{option} {path} does not exist; give the file {INCEPTION_FILE} (`ganforge download "
                            "inception` fetches it)")
        check_inception_weights(path)
        return path
    cached = default_weights_path()
    if cached.is_file():
        check_inception_weights(cached)
        return cached
    how = f"{option} PATH" if option.startswith("--") else f"--set {option}=PATH"
    raise UserError(f"the Inception metrics need {INCEPTION_FILE}: run `ganforge download inception` (it fetches "
                    f"{INCEPTION_URL} to {cached}), or pass {how}")


def _real_cache_name(ctx: EvalContext, weights_sha256: str | None) -> str | None:
    """The name the real set's Inception features are cached under: its key (dataset, split, size, channels;
    a folder's content too), the extractor and its weights, and n. None: a set never cached."""
    if ctx.real.cache_key is None:
        return None
    weights = weights_sha256[:12] if weights_sha256 else "builtin"
    return f"{ctx.real.cache_key}-{ctx.inception_extractor}-{weights}-n{len(ctx.real)}"


def _usable_cache(name: str | None) -> Path | None:
    """The folder torch-fidelity caches the real features in, with damaged entries removed; None when there is
    nothing to cache or the folder cannot be written (the features are then computed again next time)."""
    from ..checkpoint import damaged_zip_member
    from .core import cache_dir

    if name is None:
        return None
    root = cache_dir() / "inception"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            return None
        for entry in root.glob(f"{glob.escape(name)}-*.pt"):
            # torch-fidelity loads an entry unchecked: a cut-off or bit-flipped one is computed again instead
            if not zipfile.is_zipfile(entry) or damaged_zip_member(entry) is not None:
                entry.unlink()
    except OSError:  # a file in the cache's way, a read-only or vanished folder
        return None
    return root


def _calculate(ctx: EvalContext, weights: Path | str | None, n_min: int, wanted: set[str],
               cache_name: str | None = None) -> dict[str, Any]:
    """torch-fidelity's one pass over the fake and real images for the wanted metrics; the real images'
    features (and FID statistics) come from its file cache under `cache_name` when given and usable."""
    root = _usable_cache(cache_name)
    cache = {"cache": False} if root is None else \
        {"cache": True, "cache_root": str(root), "input2_cache_name": cache_name}
    try:
        values = _calculate_with(ctx, weights, n_min, wanted, cache)
    except OSError:
        if root is None:
            raise
        # the cache filled the disk or went read-only mid-write: the features were computed, not kept
        return _calculate_with(ctx, weights, n_min, wanted, {"cache": False})
    if root is not None:
        from .core import drop_stale_folder_entries

        for entry in root.glob(f"{glob.escape(cache_name)}-*.pt"):
            drop_stale_folder_entries(entry)
    return values


def _calculate_with(ctx: EvalContext, weights: Path | str | None, n_min: int, wanted: set[str],
                    cache: dict[str, Any]) -> dict[str, Any]:
    import torch_fidelity

    return torch_fidelity.calculate_metrics(
        input1=_Uint8RGB(ctx.fake.images),
        input2=_Uint8RGB(ctx.real.images),
        cuda=ctx.device.type == "cuda",
        feature_extractor=ctx.inception_extractor,
        feature_extractor_weights_path=str(weights) if weights else None,
        feature_layer_prc="2048",
        kid_subsets=KID_SUBSETS,
        kid_subset_size=min(KID_SUBSET_SIZE, n_min),
        verbose=False,
        samples_shuffle=False,
        save_cpu_ram=True,  # in-memory images: worker processes would only add start-up cost
        **{flag: True for flag in wanted},
        **cache,
    )


def _fidelity(ctx: EvalContext) -> dict[str, Any]:
    """One torch-fidelity pass for every Inception metric requested in this evaluation."""
    if "fidelity" in ctx.__dict__:
        return ctx.__dict__["fidelity"]
    if ctx.real is None:
        raise UserError("the Inception metrics need real images: evaluate a run, or pass --real")
    wanted = {_FIDELITY_KEYS[m] for m in getattr(ctx, "requested", _FIDELITY_KEYS) if m in _FIDELITY_KEYS}
    standard = ctx.inception_extractor == "inception-v3-compat"
    weights = inception_weights(ctx.inception_weights) if standard else ctx.inception_weights
    n_min = min(len(ctx.fake), len(ctx.real))
    weights_sha256 = file_sha256(str(weights)) if weights and Path(weights).is_file() else None
    try:
        values = _calculate(ctx, weights, n_min, wanted, _real_cache_name(ctx, weights_sha256))
    except RuntimeError as e:
        if "loading state_dict" not in str(e):
            raise
        raise UserError(f"Inception weights {weights} do not fit the FID Inception-v3 (missing or misshapen "
                        f"layers); it should be {INCEPTION_FILE} from {INCEPTION_URL}") from e
    protocol = {
        "n_fake": len(ctx.fake),
        "n_real": len(ctx.real),
        "reference": f"{ctx.real.name}/{ctx.real.split}",
        "reference_fingerprint": ctx.real.fingerprint,
        "extractor": f"torch-fidelity {ctx.inception_extractor}",
        "extractor_sha256": weights_sha256,
        "resize": INCEPTION_RESIZE,
    }
    ctx.__dict__["fidelity"] = {"values": values, "protocol": protocol}
    return ctx.__dict__["fidelity"]


def _check_pairs(ctx: EvalContext, metric: str, why: str) -> None:
    from .core import check_count

    check_count(metric, len(ctx.fake), "generated", 2, why)
    if ctx.real is not None:
        check_count(metric, len(ctx.real), "real", 2, why)


@METRICS.register("fid")
def fid(ctx: EvalContext) -> Result:
    """Frechet Inception Distance (Heusel et al. 2017) on Inception-v3 pool features (2048-d)."""
    _check_pairs(ctx, "fid", "fits a covariance to each set")
    out = _fidelity(ctx)
    return [("fid", out["values"]["frechet_inception_distance"], out["protocol"])]


@METRICS.register("kid")
def kid(ctx: EvalContext) -> Result:
    """Kernel Inception Distance (Binkowski et al. 2018): cubic polynomial kernel, 100 subsets."""
    _check_pairs(ctx, "kid", "compares pairs of different images within each set")
    out = _fidelity(ctx)
    protocol = {**out["protocol"], "subsets": KID_SUBSETS,
                "subset_size": min(KID_SUBSET_SIZE, len(ctx.fake), len(ctx.real)),
                "std": out["values"]["kernel_inception_distance_std"]}
    return [("kid", out["values"]["kernel_inception_distance_mean"], protocol)]


@METRICS.register("is")
def inception_score(ctx: EvalContext) -> Result:
    """Inception Score (Salimans et al. 2016) on the 1008-way logits, 10 splits."""
    from .core import check_is_splits

    check_is_splits("is", len(ctx.fake), "generated")
    out = _fidelity(ctx)
    protocol = {**out["protocol"], "splits": 10, "std": out["values"]["inception_score_std"]}
    return [("is", out["values"]["inception_score_mean"], protocol)]


@METRICS.register("pr_inception")
def pr_inception(ctx: EvalContext) -> Result:
    """Improved precision and recall (Kynkaanniemi et al. 2019), k = 3, on Inception pool features."""
    out = _fidelity(ctx)
    protocol = {**out["protocol"], "k": 3}
    return [("precision_inception", out["values"]["precision"], protocol),
            ("recall_inception", out["values"]["recall"], protocol)]
