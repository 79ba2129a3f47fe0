"""Complete training state on disk: atomic writes, keep-last-N after success, safe loads, clear errors."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import random
import re
import shlex
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import UserError

FORMAT = "ganforge-checkpoint"
FORMAT_VERSION = 1
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
# A checkpoint set aside from the rotation (the run before a jump the health check warned of)
_KEPT_NAME = re.compile(r"^kept-(\d{9})\.pt$")
RESOLVE_TRIES = 3  # a run that trains keeps moving its latest checkpoint on: looked up again if it went


LOCK_FILE = ".lock"


@contextlib.contextmanager
def _flock(lock_path: Path, wait: bool) -> Iterator[None]:
    """An exclusive advisory lock on lock_path (a file, made if missing, or a folder itself); without `wait`,
    BlockingIOError when another process holds it. The OS drops the lock when the process ends, even by
    kill -9. Where fcntl is missing (Windows) no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    flags = os.O_RDONLY if lock_path.is_dir() else os.O_WRONLY | os.O_CREAT | os.O_APPEND
    fd = os.open(lock_path, flags, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)  # closing drops the lock


def folder_lock(folder: Path | str) -> contextlib.AbstractContextManager[None]:
    """Waits for an exclusive lock on a folder itself, leaving no lock file in it."""
    return _flock(Path(folder), wait=True)


@contextlib.contextmanager
def run_lock(run_dir: Path | str) -> Iterator[None]:
    """Holds an exclusive lock on a run directory while one process trains it, so that a second `train
    --resume` of the same run is refused instead of interleaving its checkpoints and stats."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_flock(Path(run_dir) / LOCK_FILE, wait=False))
        except BlockingIOError:
            raise UserError(f"run {run_dir} is being trained by another process; let it finish or stop it "
                            "(Ctrl-C saves a checkpoint) before resuming") from None
        yield


def being_trained(run_dir: Path | str) -> bool:
    """Whether a process holds the run's training lock now (a run that never locked has no lock file)."""
    lock = Path(run_dir) / LOCK_FILE
    if not lock.is_file():
        return False
    try:
        with _flock(lock, wait=False):
            return False
    except BlockingIOError:
        return True
    except OSError:  # a lock file this user cannot open: say nothing rather than guess
        return False


def file_lock(path: Path | str) -> contextlib.AbstractContextManager[None]:
    """Waits for an exclusive lock on `path` + ".lock", for read-modify-write of a file that two processes
    may update at once (a training run's tick evaluation and a `ganforge eval` of the same run)."""
    path = Path(path)
    return _flock(path.with_name(f".{path.name}.lock"), wait=True)


def ckpt_name(nimg: int) -> str:
    return f"ckpt-{nimg:09d}.pt"


def kept_name(nimg: int) -> str:
    return f"kept-{nimg:09d}.pt"


def checkpoint_nimg(path: Path) -> int:
    """Images seen at a run's checkpoint ckpt-NNNNNNNNN.pt or kept-NNNNNNNNN.pt, from its name; -1 for other
    names."""
    match = _NAME.match(Path(path).name) or _KEPT_NAME.match(Path(path).name)
    return int(match[1]) if match else -1


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoints set aside from the rotation, oldest first."""
    folder = Path(run_dir) / CKPT_DIR
    return sorted(p for p in folder.iterdir() if _KEPT_NAME.match(p.name)) if folder.is_dir() else []


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (temp files of an interrupted write are ignored)."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replace_atomically(path: Path | str, mode: str = "wb") -> Iterator[Any]:
    """A temp file beside `path` to write; once written, flush + fsync + os.replace, so `path` is either the
    old file or the complete new one whenever the process dies or the disk fills. A failed write leaves no
    temp file behind, and its OSError names `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None or Path(e.filename) == tmp:  # say which file, by the name the user gave
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")  # replace_atomically's temp files


def _process_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (True where that cannot be told)."""
    if os.name == "nt":  # os.kill would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, say
        return True
    return True


def remove_orphan_temp_files(run_dir: Path | str, folders: tuple[str, ...] = ("", CKPT_DIR, "samples")) -> int:
    """Remove the temp files of atomic writes that a process killed mid-write (kill -9, a lost node) left in a
    run directory and its checkpoints and samples folders: a half checkpoint can take as much space as a whole
    one. A file whose process still runs here is kept. Returns the bytes freed."""
    folders_there = [folder for folder in (Path(run_dir) / name for name in folders) if folder.is_dir()]
    return _remove_orphans(temp for folder in folders_there for temp in folder.glob(".*.tmp-*"))


def remove_orphan_temps_of(path: Path | str) -> int:
    """Remove the temp files that killed processes left while writing `path` atomically (a large .npz of
    samples leaves one as large as itself). Returns the bytes freed."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    return _remove_orphans(path.parent.glob(glob.escape(f".{path.name}.tmp-") + "*"))


def _remove_orphans(temps: Iterable[Path]) -> int:
    """Remove the temp files (replace_atomically's names) among `temps` whose process no longer runs here."""
    freed = 0
    for temp in temps:
        match = _TEMP_NAME.match(temp.name)
        if match is None or not temp.is_file() or _process_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            size = temp.stat().st_size
            temp.unlink()
            freed += size
    return freed


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save, atomically. Serialised in memory first: torch's zip writer turns a failed write (a full
    disk) into an opaque RuntimeError, where a plain file write raises the OSError that says what happened."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with replace_atomically(Path(path), "wb") as f:
        f.write(buffer.getbuffer())


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy src to dst atomically (used for checkpoints/best.pt)."""
    import shutil

    with open(src, "rb") as fin, replace_atomically(Path(dst), "wb") as fout:
        shutil.copyfileobj(fin, fout)


def atomic_write_text(text: str, path: Path) -> None:
    """UTF-8 whatever the locale; a path name that is not UTF-8 (held as surrogates) is written back as its
    own bytes."""
    with replace_atomically(Path(path), "wb") as f:
        f.write(text.encode(errors="surrogateescape"))


def save_checkpoint(state: dict[str, Any], run_dir: Path, keep: int) -> Path:
    """Write ckpt-<nimg>.pt atomically; only once it is on disk, remove all but the newest `keep`."""
    folder = Path(run_dir) / CKPT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ckpt_name(int(state["nimg"]))
    atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


CHECKPOINTS_NAMED = 4
RUNS_NAMED = 5


def last_names(names: list[str], limit: int) -> str:
    """'a, b, c', or '9, the last: e, f, g' when there are more than `limit`."""
    shown = ", ".join(names[-limit:])
    return shown if len(names) <= limit else f"{len(names)}, the last: {shown}"


def _checkpoints_beside(path: Path) -> str:
    """'; FOLDER holds a.pt, b.pt': the checkpoints in the folder a mistyped checkpoint path points into."""
    return _checkpoints_in(path.parent)


def _checkpoints_in(folder: Path) -> str:
    """'; FOLDER holds a.pt, b.pt', or '' when it holds none."""
    try:
        found = sorted(p.name for p in folder.iterdir() if p.suffix == ".pt" and p.is_file())
    except OSError:  # no such folder, or not one
        return ""
    return f"; {folder} holds {last_names(found, CHECKPOINTS_NAMED)}" if found else ""


def runs_beside(path: Path) -> str:
    """'; did you mean runs/0001-default?' or '; runs in runs: 0000-a, 0001-b': the run directories in the
    folder a mistyped run path points into."""
    import difflib

    try:
        found = sorted(p.name for p in path.parent.iterdir() if (p / "config.toml").is_file())
    except OSError:  # no such folder, or not one
        return ""
    numbered = [name for name in found if name.startswith(f"{path.name}-")]  # runs/0003 for runs/0003-default
    close = numbered or difflib.get_close_matches(path.name, found, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {path.parent / close[0]}?"
    return f"; runs in {path.parent}: {last_names(found, RUNS_NAMED)}" if found else ""


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True (a generator file with safetensors); a truncated, corrupt or foreign file
    becomes a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist{_checkpoints_beside(path)}")
    if is_generator_file(path):  # `ganforge export`'s G alone
        return load_generator_file(path)
    try:
        # read through one open file: a training run that removes its older checkpoints meanwhile does not
        # pull it away between the checks and the load
        f = path.open("rb")
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist{_checkpoints_beside(path)}") from None
    except PermissionError:
        raise UserError(f"cannot read checkpoint {path}: permission denied") from None
    with f:
        damaged = damaged_zip_member(f)
        if damaged:
            raise UserError(f"checkpoint {path} is corrupt: its part {damaged} fails its CRC check (damaged on disk "
                            "or in transfer); use an earlier checkpoint or copy it again")
        try:
            f.seek(0)
            ckpt = torch.load(f, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001  (any failure to parse untrusted bytes means a bad file)
            raise UserError(_unloadable(f, path, e)) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a ganforge checkpoint (it has no '{FORMAT}' format marker)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"checkpoint {path} was written by a newer ganforge; upgrade ganforge to load it")
    return ckpt


def damaged_zip_member(path: Path | BinaryIO) -> str | None:
    """The first zip member whose bytes fail their CRC-32; torch.load does not check them, so a flipped bit
    would load as a silently wrong weight."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None  # not a readable zip: torch.load's failure explains it


def _unloadable(f: BinaryIO, path: Path, error: Exception) -> str:
    """Why torch.load refused the file f (at path), in one line (torch's own text suggests weights_only=False)."""
    f.seek(0)
    if not zipfile.is_zipfile(f):
        run = path.parent
        if (run / "config.toml").is_file() and (run / "checkpoints").is_dir():  # a run's config.toml or stats.jsonl
            return (f"{path} is a file of run {run}, not a checkpoint; give the run directory {run} (its latest "
                    f"checkpoint) or a checkpoint in {run / 'checkpoints'}")
        return (f"checkpoint {path} is truncated or corrupt: it is not a complete PyTorch zip archive "
                "(was it copied whole, or is it another kind of file?)")
    if _is_export_program(f):
        return (f"{path} is a torch.export program (as `ganforge export --out NAME.pt2` writes), for PyTorch code "
                "without ganforge: load it with torch.export.load; ganforge takes a run directory, a checkpoint or "
                "a .safetensors export")
    named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if named:
        return (f"{path} is not a ganforge checkpoint: it holds pickled Python objects ({named.group(1)}), "
                "which ganforge does not load because unpickling them can run code")
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return f"checkpoint {path} is truncated or corrupt and cannot be loaded ({first[:200]})"


def _is_export_program(f: BinaryIO) -> bool:
    """Whether the zip archive f is torch.export's: it names its format "pt2" (as torch 2.14 writes it) or holds
    a serialized_exported_program.json (as torch 2.4 does)."""
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            names = archive.namelist()
            if "serialized_exported_program.json" in names:
                return True
            marker = next((name for name in names if name.endswith("/archive_format")), None)
            return marker is not None and archive.read(marker).strip() == b"pt2"
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def load_resolved(run_or_ckpt: Path | str, which: str = "latest",
                  map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]]:
    """resolve_checkpoint, then load_checkpoint: the checkpoint's path and contents. A run's latest (or best)
    checkpoint that a run training there removes before it is opened is looked up again."""
    for attempt in range(1, RESOLVE_TRIES + 1):
        path = resolve_checkpoint(run_or_ckpt, which)
        try:
            return path, load_checkpoint(path, map_location)
        except UserError:
            moved_on = not path.exists() and Path(run_or_ckpt).is_dir() and which in ("latest", "best")
            if not moved_on or attempt == RESOLVE_TRIES:
                raise
    raise AssertionError("each try returns or raises")


def resolve_checkpoint(run_or_ckpt: Path | str, which: str = "latest") -> Path:
    """A run directory plus latest|best|PATH, or a checkpoint file -> the checkpoint file."""
    target = Path(run_or_ckpt)
    if which == "all":
        raise UserError("--ckpt all is for ganforge eval, which scores every checkpoint; give latest, best or a "
                        "checkpoint path")
    if which != "latest" and target.is_file():  # one file holds one generator: nothing for --ckpt to pick
        raise UserError(f"{target} is a file holding one generator, and --ckpt {which} picks among a run "
                        "directory's checkpoints; give the run directory with --ckpt, or the file alone")
    if which not in ("latest", "best"):
        path = Path(which)
        if path.is_dir():
            inside = _checkpoints_in(path) or _checkpoints_in(path / CKPT_DIR)
            raise UserError(f"--ckpt {which} is a folder; give latest, best or a checkpoint file{inside}")
        if path.exists() or len(path.parts) > 1:
            return path
        # a bare name: one of the run's own checkpoints (ckpt-000042000 or ckpt-000042000.pt), else a word
        folder = target if target.name == CKPT_DIR else target / CKPT_DIR
        own = folder / (which if path.suffix == ".pt" else f"{which}.pt")
        if target.is_dir() and own.is_file():
            return own
        kept = _checkpoints_beside(own) if target.is_dir() else ""
        raise UserError(f"checkpoint {which!r} is neither latest, best, a checkpoint file nor one of the run's "
                        f"checkpoints{kept}")
    if target.is_file():
        return target
    if not target.exists():
        beside = _checkpoints_beside(target) if target.suffix == ".pt" else runs_beside(target)
        raise UserError(f"{target} does not exist; give a run directory or a checkpoint file{beside}")
    if not target.is_dir():
        raise UserError(f"{target} is neither a run directory nor a checkpoint file")
    if target.name == CKPT_DIR and (target.parent / "config.toml").is_file():
        target = target.parent  # the run's checkpoints folder stands for the run
    if not (target / "config.toml").is_file() and not (target / CKPT_DIR).is_dir():
        runs = sorted(p.name for p in target.iterdir() if p.is_dir() and (p / "config.toml").is_file())
        if runs:
            shown = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
            raise UserError(f"{target} is a folder of runs ({shown}), not a run; give one of them, such as "
                            f"{target / runs[-1]}")
        raise UserError(f"{target} is not a run directory (it has no config.toml); give a directory made by "
                        "`ganforge train`, or a checkpoint file")
    if which == "best":
        best = target / CKPT_DIR / "best.pt"
        if not best.is_file():
            raise UserError(f"run {target} has no best checkpoint (a run keeps one when it evaluates while it "
                            "trains: --set eval.every_kimg=N); use --ckpt latest or a checkpoint path")
        return best
    found = list_checkpoints(target)
    if not found and being_trained(target):
        raise UserError(f"run {target} is training and has not written its first checkpoint yet (it does at "
                        "the end of its first tick); wait for it")
    if not found:
        command = shlex.join(["ganforge", "train", "--config", str(target / "config.toml"),
                              "--out", str(target.parent)])
        again = f"; train it afresh with `{command}`" if (target / "config.toml").is_file() else ""
        raise UserError(f"run {target} has no checkpoints in {target / CKPT_DIR} (it stopped before its first "
                        f"checkpoint, or they were removed){again}")
    return found[-1]


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, Any], what: str, path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(
            f"checkpoint {path} does not match the {what} built from its config "
            f"(was an architecture setting overridden?): {_state_mismatch(module.state_dict(), state)}"
        ) from e


def _state_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str:
    """The first differences between two state dicts, in a few words."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    resized = [f"{k} is {list(found[k].shape)} in the checkpoint, {list(expected[k].shape)} in the config"
               for k in expected if k in found and hasattr(found[k], "shape") and found[k].shape != expected[k].shape]
    parts = [f"{len(keys)} {one if len(keys) == 1 else many} (first: {keys[0]})"
             for one, many, keys in (("size mismatch", "size mismatches", resized),
                                     ("tensor missing", "tensors missing", missing),
                                     ("unexpected tensor", "unexpected tensors", unexpected)) if keys]
    return "; ".join(parts) or "the tensors differ"


# ---------------------------------------------------------------------------------------------- RNG


def rng_state(z_generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "z": z_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], z_generator: torch.Generator) -> None:
    """Restores rng_state's states. Each is read from the CPU, as torch takes them, whatever device the
    checkpoint was loaded onto (a resumed GPU run loads its checkpoint onto the GPU)."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    z_generator.set_state(state["z"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# A generator file: one set of G's weights and the config that builds G, in safetensors (no pickle, no D,
# no optimizer state). sample, eval and load_generator take it where they take a checkpoint; resume cannot.
GENERATOR_FORMAT = "ganforge-generator"
GENERATOR_SUFFIX = ".safetensors"


def is_generator_file(path: Path | str) -> bool:
    return Path(path).suffix.lower() == GENERATOR_SUFFIX


def _file_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over the metadata (but its own entry) and each tensor's name, dtype, shape and bytes:
    safetensors keeps no checksum, and a flipped bit would load as a silently wrong weight or setting."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(metadata):
        if key != "sha256":
            digest.update(f"{key}={metadata[key]}|".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def source_name(ckpt_path: Path) -> str:
    """RUN/checkpoints/ckpt-N.pt for a run's checkpoint, else the file's name: where the weights came from,
    without the folders above the run (a file to share need not say where its author keeps runs)."""
    if ckpt_path.parent.name == CKPT_DIR:
        run = ckpt_path.resolve().parent.parent.name
        return f"{run}/{CKPT_DIR}/{ckpt_path.name}"
    return ckpt_path.name


def generator_weights(ckpt: dict[str, Any], ema: bool = True) -> str:
    """Which of a checkpoint's generators `ema` picks: "G_ema" where asked for and the run kept one, else "G"."""
    return "G_ema" if ema and ckpt.get("G_ema") is not None else "G"


def save_generator_file(ckpt: dict[str, Any], source: Path, out: Path | str, ema: bool = True) -> str:
    """Write G_ema (G when `ema` is False or the run kept none) of a loaded checkpoint to `out` atomically;
    returns which of the two it wrote."""
    import json

    from safetensors.torch import save

    has_ema = ckpt.get("G_ema") is not None
    which = generator_weights(ckpt, ema)
    # safetensors wants contiguous tensors: channels_last weights are copied
    tensors = {name: t.detach().cpu().contiguous() for name, t in ckpt[which].items()}
    metadata = {
        "format": GENERATOR_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(ckpt["config"]),
        "nimg": str(int(ckpt["nimg"])),
        "weights": which,
        "run_kept_ema": json.dumps(has_ema),
        "source": source_name(source),
        "versions": json.dumps(ckpt.get("versions") or {}),
    }
    if ckpt.get("classes") is not None:
        metadata["classes"] = json.dumps([str(c) for c in ckpt["classes"]])
    if ckpt.get("plugins"):  # file names only, like "source": a file to share need not say where its author keeps code
        metadata["plugins"] = json.dumps([Path(p).name if p.endswith(".py") else p for p in ckpt["plugins"]])
    metadata["sha256"] = _file_digest(tensors, metadata)
    data = save(tensors, metadata=metadata)
    with replace_atomically(Path(out), "wb") as f:
        f.write(data)
    return which


def load_generator_file(path: Path) -> dict[str, Any]:
    """A generator file (an existing one: load_checkpoint checks) as a checkpoint-shaped dict (G, config, nimg,
    classes; no D, no G_ema), checked against its SHA-256."""
    import json

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except PermissionError as e:
        raise UserError(f"cannot read generator file {path}: permission denied") from e
    except (SafetensorError, ValueError, OSError) as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UserError(f"generator file {path} is truncated or corrupt and cannot be loaded ({first[:200]})") \
            from e
    if metadata.get("format") != GENERATOR_FORMAT:
        raise UserError(f"{path} is a safetensors file but not a ganforge generator (its metadata has no "
                        f"'{GENERATOR_FORMAT}' format marker); write one with `ganforge export RUN --out FILE`")
    if _file_digest(tensors, metadata) != metadata.get("sha256"):
        raise UserError(f"generator file {path} is corrupt: it fails its SHA-256 check (damaged on disk or in "
                        "transfer); export it again or copy it again")
    try:
        version = int(metadata.get("format_version", "0"))
        config = json.loads(metadata["config"])
        nimg = int(metadata["nimg"])
        classes = json.loads(metadata["classes"]) if "classes" in metadata else None
        kept_ema = bool(json.loads(metadata.get("run_kept_ema", "false")))
        versions = json.loads(metadata.get("versions", "{}"))
        plugins = json.loads(metadata.get("plugins", "[]"))
        if not isinstance(config, dict) or not (classes is None or isinstance(classes, list)):
            raise ValueError("config or classes of the wrong kind")
    except (KeyError, ValueError) as e:
        raise UserError(f"generator file {path} has damaged metadata ({e}); export it again") from e
    if version > FORMAT_VERSION:
        raise UserError(f"generator file {path} was written by a newer ganforge; upgrade ganforge to load it")
    return {"format": FORMAT, "format_version": version, "config": config, "G": tensors, "G_ema": None,
            "nimg": nimg, "classes": classes, "versions": versions, "plugins": plugins,
            "exported": {"weights": metadata.get("weights", "G"), "run_kept_ema": kept_ema,
                         "source": metadata.get("source", "")}}
