"""What a person looks at: sample grids, the progress GIF, loss curves and model summaries."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import replace_atomically
from .errors import UserError

_GRID = re.compile(r"fakes(\d{6})(?:\.(\d{3}))?\.png$")


def grid_nimg(path: Path) -> int:
    """Images seen when a fixed-noise grid samples/fakesKKKKKK[.RRR].png was drawn; -1 for other names. The
    sort key of a run's grids: by name, fakes000012.500.png would precede fakes000012.png."""
    match = _GRID.search(path.name)
    return int(match[1]) * 1000 + int(match[2] or 0) if match else -1


def fixed_noise_grids(folder: Path | str) -> list[Path]:
    """A run's fixed-noise grids (its samples/ folder), in training order."""
    return sorted((p for p in Path(folder).glob("fakes*.png") if grid_nimg(p) >= 0), key=grid_nimg)


def grid_nrow(n: int) -> int:
    """Images per row for a near-square grid of n images."""
    return max(1, math.ceil(math.sqrt(n)))


def class_grid_nrow(per_class: int, n_classes: int) -> int:
    """Row length of a grid laid out class by class, `per_class` images of each of `n_classes`: one row per
    class while the grid is at most 3 times as wide as tall (or tall as wide), else the squarest of a class
    over several rows (a divisor of per_class: 2 classes of 50 in rows of 10, not two rows of 50) or several
    classes to a row (a multiple of it: 10 classes of 1 in rows of 3, not a column of 10)."""
    if per_class <= 3 * n_classes and n_classes <= 3 * per_class:
        return per_class
    widths = [d for d in range(1, per_class + 1) if per_class % d == 0]
    widths += [per_class * m for m in range(2, n_classes + 1)]
    return min(widths, key=lambda w: abs(math.log(w * w / (n_classes * per_class))))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 [0, 255] on the CPU."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


GRID_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}  # suffix -> Pillow format


def grid_image(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Images in [-1, 1] [N, C, H, W] -> one uint8 [3, H', W'] grid, as torchvision's save_image lays it out."""
    from torchvision.utils import make_grid

    images = images.detach().float().cpu().contiguous()
    grid = make_grid(images, nrow=nrow or grid_nrow(images.shape[0]), padding=2, normalize=True, value_range=(-1, 1))
    return grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def save_grid(images: torch.Tensor, path: Path | str, nrow: int | None = None) -> torch.Tensor:
    """Images in [-1, 1] [N, C, H, W] -> one grid image, PNG unless the suffix names JPEG or WebP; returns
    the grid's pixels (grid_image)."""
    from PIL import Image

    grid = grid_image(images, nrow)
    fmt = GRID_FORMATS.get(Path(path).suffix.lower(), "png")
    with replace_atomically(path) as f:  # a --force over an old grid keeps it if the disk fills
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(f, format=fmt)
    return grid


def save_walk_gif(images: torch.Tensor, steps: int, path: Path | str, nrow: int | None = None,
                  ms_per_frame: int = 80) -> int:
    """Latent walks [rows * steps, C, H, W] (G.interpolate's, row by row) as a looping animation: frame t is a
    grid of every walk's t-th image, and the frames run there and back, so the loop has no jump. Returns the
    number of frames."""
    from PIL import Image

    walks = images.view(-1, steps, *images.shape[1:])
    grids = [Image.fromarray(grid_image(walks[:, t], nrow).permute(1, 2, 0).numpy()).convert(
        "P", palette=Image.Palette.ADAPTIVE) for t in range(steps)]
    frames = grids + grids[-2:0:-1]
    with replace_atomically(path) as f:
        frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)
    return len(frames)


def save_images(images: torch.Tensor, folder: Path | str, start: int = 0) -> list[Path]:
    """One PNG per image: folder/000000.png, ..."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_uint8(images)):
        array = img.permute(1, 2, 0).numpy()
        path = folder / f"{start + i:06d}.png"
        _write_new_png(Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array), path)
        paths.append(path)
    return paths


def _write_new_png(image: Any, path: Path) -> None:
    """Write a PNG to a new path, removing what was written when that fails (a full disk leaves no torn
    file). A temp file and a rename per image cost about 20% more (3,000 32x32 PNGs: 0.90 s against 0.74 s)."""
    try:
        with open(path, "wb") as f:
            image.save(f, format="PNG")
    except BaseException as e:
        path.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def class_folder_names(classes: list[str], n_classes: int) -> list[str]:
    """A subfolder name per class: its name ("/" made "-", as in Fashion-MNIST's "T-shirt/top"), or its number
    when the model has no names, or two names would share a folder. Numbers are zero-padded so that the folder
    loader, which sorts the subfolders, gives them back in class order."""
    names = [c.replace("/", "-").replace("\\", "-").strip() for c in classes[:n_classes]]
    if len(names) == n_classes and len(set(names)) == n_classes and all(n and n not in (".", "..") for n in names):
        return names
    width = len(str(n_classes - 1))
    return [f"{c:0{width}d}" for c in range(n_classes)]


def images_in_sample_folder(folder: Path | str, names: list[str] | None = None) -> int:
    """How many samples save_sample_folder has written to folder (with class `names`: to its class folders)."""
    folder = Path(folder)
    return sum(next_image_index(folder / name) for name in names) if names else next_image_index(folder)


def next_image_index(folder: Path | str) -> int:
    """One past the highest NNNNNN.png in folder (0 for a missing or empty one), so that save_images adds to
    a folder without replacing what is there."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    taken = {int(p.stem): p for p in folder.glob("*.png") if p.stem.isdigit()}
    if not taken:
        return 0
    last = max(taken)
    # a process killed mid-write (kill -9, the OOM killer) leaves its last PNG torn: that one is written again
    return last if _torn_png(taken[last]) else last + 1


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # every complete PNG ends with this empty IEND chunk


def _torn_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < len(PNG_END):
                return True
            f.seek(-len(PNG_END), os.SEEK_END)
            return f.read() != PNG_END
    except OSError:
        return False


SPARE_BYTES = 2**30  # a file that fits only by filling the disk to the last byte is refused too


def check_disk_space(path: Path, needed: int, what: str, cure: str, files: int = 0) -> None:
    """Refuse before writing what would fill path's disk: a mistyped count of samples would otherwise stream
    until the disk is full, for everything else on it too. The temp file sits beside path, on the same disk.
    `needed`: bytes, at least; `files`: files to be made, each taking a file entry (inode) and a block."""
    import shutil

    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path(".")).resolve()
    free = shutil.disk_usage(folder).free
    if files and hasattr(os, "statvfs"):
        fs = os.statvfs(folder)
        needed = max(needed, files * fs.f_frsize)
        if fs.f_files and files > fs.f_favail:  # a file system with no fixed count reports 0 entries in all
            raise UserError(f"{what} need {files:,} files and the disk under {folder} has room for "
                            f"{fs.f_favail:,} more; {cure}")
    if needed + SPARE_BYTES > free:
        raise UserError(f"{what} take {needed / 2**30:,.1f} GiB and the disk under {folder} has "
                        f"{free / 2**30:,.1f} GiB free ({SPARE_BYTES // 2**30} GiB of it kept spare); {cure}")


def save_npz_stream(G: nn.Module, n: int, path: Path | str, seed: int = 0, batch_size: int = 1000,
                    labels: torch.Tensor | None = None, truncation: float | None = None) -> None:
    """n samples of G as uint8 [n, H, W, C] under the key arr_0 of an .npz, generated and written one batch at
    a time (memory stays at one batch), to a temp file that replaces `path` only when complete. A conditional
    G draws the given labels [n], which are stored too, under the key labels, with G.classes under classes.
    `truncation`: G.sample's."""
    import zipfile

    import numpy as np

    path = Path(path)
    shape = (n, G.img_size, G.img_size, G.channels)
    check_disk_space(path, math.prod(shape) + (8 * n if labels is not None else 0), f"{n:,} samples as an .npz",
                     "lower --n")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    with replace_atomically(path) as file, zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED,
                                                            allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            batches = G.sample_batches(n, seed=seed, batch_size=batch_size, labels=labels, truncation=truncation)
            for fake in _progress(batches, n):
                f.write(to_uint8(fake).permute(0, 2, 3, 1).contiguous().numpy().tobytes())  # -> [B, H, W, C]
        if labels is not None:
            with zf.open("labels.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, labels.cpu().numpy().astype(np.int64))
            classes = list(getattr(G, "classes", []))
            if classes:  # the name of each label, so the file alone says what was asked for
                with zf.open("classes.npy", "w") as f:
                    np.lib.format.write_array(f, np.array(classes, dtype=str))


def nearest_training_grid(samples: torch.Tensor, train: torch.Tensor, k: int,
                          mirror: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample followed by its k nearest training images by Euclidean distance over the pixels (the
    smallest over shifts of the sample by up to COPIES_MAX_SHIFT pixels, as the copies metric measures it),
    nearest first: the images of a grid of k + 1 columns, one sample per row ([n * (k + 1), C, H, W]), and
    the distances [n, k]. The figure papers show to argue that a GAN does not copy its training set. With
    mirror (a run with data.mirror), the mirror images count as training images too, and a neighbour nearer
    mirrored is shown mirrored."""
    from .metrics.core import COPIES_MAX_SHIFT
    from .metrics.formulas import k_nearest, paired_distances

    samples, train = samples.cpu().float(), train.cpu().float()
    dists, index = k_nearest(samples, train, k, max_shift=COPIES_MAX_SHIFT, mirror=mirror)
    neighbours = train[index]  # [n, k, C, H, W]
    if mirror:  # each neighbour in the orientation nearer its sample
        pairs = samples[:, None].expand_as(neighbours)
        upright = paired_distances(pairs, neighbours, COPIES_MAX_SHIFT)
        flipped = paired_distances(pairs.flip(-1), neighbours, COPIES_MAX_SHIFT) < upright
        neighbours = torch.where(flipped[..., None, None, None], neighbours.flip(-1), neighbours)
    rows = torch.cat([samples[:, None], neighbours], dim=1)  # [n, k + 1, C, H, W]
    return rows.flatten(0, 1), dists


def _progress(batches: Iterator[torch.Tensor], n: int) -> Iterator[torch.Tensor]:
    """The batches, with a progress bar on a terminal's stderr (none in a log file or a test)."""
    from tqdm import tqdm

    with tqdm(total=n, unit="img", unit_scale=True, disable=None, leave=False) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))


def save_sample_folder(G: nn.Module, n: int, folder: Path | str, seed: int = 0, batch_size: int = 1000,
                       labels: torch.Tensor | None = None, names: list[str] | None = None,
                       first: int = 0, truncation: float | None = None) -> list[Path]:
    """n samples of G as one PNG each, generated and written one batch at a time (memory stays at one batch):
    folder/NNNNNN.png, or with class `names` (one per label of a conditional G) folder/<name>/NNNNNN.png, as
    the folder loader reads classes back. Each folder is numbered on from its last image, replacing none.
    `first`: the noise starts at that image of the seed's stream (see G.sample_batches), so that samples added
    to a folder continue those there rather than repeat them. `truncation`: G.sample's."""
    folder = Path(folder)
    check_disk_space(folder / "000000.png", 0, f"{n:,} samples as PNGs", "lower --n", files=n)
    next_index: dict[Path, int] = {}
    paths: list[Path] = []
    drawn = 0
    batches = G.sample_batches(n, seed=seed, batch_size=batch_size, labels=labels, first=first, truncation=truncation)
    for images in _progress(batches, n):
        batch_labels = None if names is None or labels is None else labels[drawn : drawn + len(images)]
        drawn += len(images)
        groups = [(folder, images)] if batch_labels is None else [
            (folder / names[c], images[batch_labels.to(images.device) == c]) for c in batch_labels.unique().tolist()]
        for sub, group in groups:
            if sub not in next_index:
                next_index[sub] = next_image_index(sub)
            paths += save_images(group, sub, start=next_index[sub])
            next_index[sub] += len(group)
    return paths


MAX_GIF_FRAMES = 200  # a long run's thousands of ticks would make a GIF of hundreds of MB


def make_gif(frames: list[Path], path: Path | str, ms_per_frame: int = 100,
             max_frames: int = MAX_GIF_FRAMES) -> None:
    """The fixed-noise grids in training order, looping; past max_frames, that many spread evenly from the
    first grid to the last."""
    from PIL import Image

    if not frames:
        return
    if len(frames) > max_frames:
        step = (len(frames) - 1) / (max_frames - 1)
        frames = [frames[round(i * step)] for i in range(max_frames)]
    sizes = []
    for p in frames:
        with Image.open(p) as im:
            sizes.append(im.size)
    # a run resumed with another train.grid_size has grids of two sizes: the GIF takes the largest, and
    # smaller grids sit in its corner on black (GIF players would otherwise crop the larger ones)
    size = (max(w for w, _ in sizes), max(h for _, h in sizes))
    images = []
    for p in frames:
        with Image.open(p) as im:  # closed at once: a long run has more grids than a process may open
            frame = im.convert("RGB")
        if frame.size != size:
            canvas = Image.new("RGB", size)
            canvas.paste(frame, (0, 0))
            frame = canvas
        images.append(frame.convert("P", palette=Image.Palette.ADAPTIVE))
    with replace_atomically(path) as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


def format_duration(seconds: float) -> str:
    """12m05s, or 1h02m05s past an hour."""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def read_stats(path: Path | str) -> list[dict]:
    """The tick records of stats.jsonl; a line torn by a crash mid-append (or a full disk) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    stats = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("kimg"), int | float):
            stats.append(record)
    return stats


def plot_losses(stats: list[dict], path: Path | str, relativistic: bool = False) -> None:
    """D and G loss per tick, and mean D(real) / D(fake) per tick (with the grid's sample spread over that of
    real images, its share of samples with a near-copy and its move since the tick before, when logged),
    against kimg. `relativistic`: the stats are a relativistic loss's, whose D(real) is sigmoid(D(x) - D(G(z)))
    over the pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kimg = [s["kimg"] for s in stats]
    fig, (ax_loss, ax_prob) = plt.subplots(1, 2, figsize=(11, 4))
    dot = "." if len(kimg) < 2 else None  # one tick is a point, which a bare line would not draw
    ax_loss.plot(kimg, [s["d_loss"] for s in stats], marker=dot, label="D loss")
    ax_loss.plot(kimg, [s["g_loss"] for s in stats], marker=dot, label="G loss")
    ax_loss.set_xlabel("kimg")
    ax_loss.set_ylabel("loss (mean over tick)")
    ax_prob.plot(kimg, [s["d_real"] for s in stats], marker=dot, label="D(real)" + " over its fake" * relativistic)
    ax_prob.plot(kimg, [s["d_fake"] for s in stats], marker=dot, label="D(fake)" + " over its real" * relativistic)
    spread = [(k, s["diversity"]) for k, s in zip(kimg, stats, strict=True) if s.get("diversity") is not None]
    top = 1.0
    if spread:  # near 0 when G's samples are all alike
        ax_prob.plot(*zip(*spread, strict=True), "--", marker=dot, color="grey", label="sample spread / real")
        top = max(top, 1.05 * max(v for _, v in spread))
    copies = [(k, s["duplicates"]) for k, s in zip(kimg, stats, strict=True) if s.get("duplicates") is not None]
    if copies:  # near 1 when G draws a few modes
        ax_prob.plot(*zip(*copies, strict=True), ":", marker=dot, color="black", label="share with a near-copy")
    moves = [(k, s["change"]) for k, s in zip(kimg, stats, strict=True) if s.get("change") is not None]
    if moves:  # falls as G settles; a jump shows as a step up
        ax_prob.plot(*zip(*moves, strict=True), "-.", marker=dot, color="tab:brown", label="grid's move / real spread")
        top = max(top, 1.05 * max(v for _, v in moves))
    ax_prob.set_ylim(0, top)
    from .config import resumes_changed

    # where a resume changed settings: the curves may bend there for that reason
    for i, (at, _) in enumerate(resumes_changed(stats)):
        for ax in (ax_loss, ax_prob):
            ax.axvline(at, color="tab:red", linewidth=0.8, linestyle="-.",
                       label="settings changed at a resume" if i == 0 else None)
    ax_loss.legend()
    ax_prob.set_xlabel("kimg")
    ax_prob.set_ylabel(f"mean sigmoid({'D(x) - D(G(z))' if relativistic else 'D logit'}) | ratio | share")
    ax_prob.legend()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path | str, dpi: int = 100) -> None:
    """Lay out, write atomically in the format the suffix names (png, pdf, svg), and close a matplotlib
    figure, also when the write fails."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with replace_atomically(path) as f:
            fig.savefig(f, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=dpi)
    finally:
        plt.close(fig)


def model_summary(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], title: str) -> str:
    """Layer, output shape and parameter count of every leaf module, as in Keras' summary(). `example` is the
    input, or a tuple of inputs (images or z, and labels for a conditional model)."""
    rows: list[tuple[str, str, int]] = []
    hooks = []
    for name, module in model.named_modules():
        if list(module.children()):
            continue

        def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor, name: str = name) -> None:
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            rows.append((f"{name} ({type(mod).__name__})", str(list(out.shape)), params))

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(*example) if isinstance(example, tuple) else model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max([len(r[0]) for r in rows] + [24])
    lines = [title, f"{'layer':<{width}}  {'output shape':<20} {'params':>12}", "-" * (width + 35)]
    lines += [f"{name:<{width}}  {shape:<20} {params:>12,}" for name, shape, params in rows]
    shapes = [list(o.shape) for o in output] if isinstance(output, tuple) else list(output.shape)
    lines.append(f"{'(output)':<{width}}  {str(shapes):<20} {'':>12}")
    lines += ["-" * (width + 35), f"total parameters: {total:,} (trainable {trainable:,})"]
    return "\n".join(lines)


def network_summary(cfg: Any) -> str:
    """model_summary of the G and D a config builds, then a note per setting their layers do not read."""
    from .models import build_discriminator, build_generator, inert_settings

    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.zeros(2, cfg.model.z_dim)
    x = torch.zeros(2, cfg.data.channels, cfg.data.img_size, cfg.data.img_size)
    if cfg.model.n_classes:
        y = torch.zeros(2, dtype=torch.long)
        z, x = (z, y), (x, y)
    label = f", label y [B] of {cfg.model.n_classes} classes" if cfg.model.n_classes else ""
    parts = [model_summary(G, z, f"G: {cfg.model.g} (input z [B, {cfg.model.z_dim}]{label})"), "",
             model_summary(D, x, f"D: {cfg.model.d} (input [B, {cfg.data.channels}, {cfg.data.img_size}, "
                                 f"{cfg.data.img_size}]{label})")]
    parts += [f"note: {line}" for line in inert_settings(cfg)]
    return "\n".join(parts)
