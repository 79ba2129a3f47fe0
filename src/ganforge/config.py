"""Configuration: a tree of dataclasses loaded from TOML presets, files and `--set key=value` overrides.

The resolved config is validated once, written to the run directory as `config.toml`, and stored in
every checkpoint, so a checkpoint alone rebuilds its networks.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError
from .registry import close_spelling, did_you_mean, unknown_name


def setting(default: Any, doc: str) -> Any:
    """A config field and its one-line meaning, which `ganforge settings` prints beside its value."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class DataConfig:
    name: str = setting("mnist5k", "a registered dataset (mnist5k, mnist, fashion-mnist, cifar10, celeba, "
                                   "stacked-mnist5k, stacked-mnist, or your own: --plugin), or folder:PATH (an image "
                                   "folder, .zip or .npz)")
    root: str = setting("data", "where torchvision datasets are expected (and downloaded to)")
    download: bool = setting(False, "only then may a torchvision dataset be fetched")
    img_size: int = setting(28, "images are resized once, antialiased, to img_size x img_size")
    channels: int = setting(1, "1 or 3; converted as needed")
    max_images: int = setting(0, "> 0: train on this many images, a fixed class-balanced subset (small-data "
                                 "experiments)")
    background: str = setting("white", "white | black: what shows through transparent pixels of a folder's images")
    fit: str = setting("crop", "crop | pad: a folder's non-square images are centre-cropped, or padded with "
                               "data.background")
    mirror: bool = setting(False, "also train on every image flipped left-right (centred faces, animals, objects; "
                                  "not digits or text; the run notes images that lean one way); copies and sample "
                                  "--nearest then count the mirror images as training images")


@dataclass
class ModelConfig:
    g: str = setting("dcgan", "registered generator: dcgan | mlp | resnet, or your own (--plugin)")
    d: str = setting("dcgan", "registered discriminator: dcgan | mlp | resnet | convd, or your "
                                   "own (--plugin)")
    z_dim: int = setting(100, "size of the noise vector z")
    g_width: int = setting(64, "dcgan: channels of G's last hidden layer (doubling towards the input); resnet: "
                               "of every block")
    g_upsample: str = setting("transposed", "dcgan G: how a layer doubles the size: transposed (a stride-2 4x4 "
                                            "transposed conv, DCGAN's) | nearest (nearest-neighbour upsampling, "
                                            "then a 3x3 conv: no checkerboard artefacts, Odena et al. 2016)")
    d_width: int = setting(64, "dcgan: channels of D's first layer (doubling towards the head); resnet: of every "
                               "block; convd: filters per layer")
    g_hidden: list[int] = setting([256, 512, 1024], "mlp: widths of G's hidden layers")
    d_hidden: list[int] = setting([512, 256], "mlp: widths of D's hidden layers")
    g_act: str = setting("relu", "G's hidden activation: relu | lrelu")
    d_act: str = setting("lrelu", "D's hidden activation: relu | lrelu")
    lrelu_slope: float = setting(0.2, "negative slope of lrelu")
    g_norm: str = setting("bn", "G's normalisation: bn (batch norm) | none")
    d_norm: str = setting("bn", "D's normalisation: bn (batch norm) | none")
    g_norm_first: bool = setting(True, "batch norm on G's first hidden layer too")
    d_norm_first: bool = setting(False, "batch norm on D's first layer (the DCGAN paper has none)")
    bn_momentum: float = setting(0.1, "PyTorch convention: running = (1 - m) * running + m * batch")
    bn_eps: float = setting(1e-5, "batch norm's epsilon (a common copy of R5, BatchNorm1d(n, 0.8), sets it to 0.8)")
    init: str = setting("dcgan", "first weights: dcgan (normal, std 0.02) | xavier | torch (PyTorch's own)")
    d_spectral_norm: bool = setting(False, "spectral normalisation of every D weight layer (Miyato et al. 2018)")
    d_mbstd: bool = setting(False, "minibatch standard deviation feature before D's last layer (Karras et al.)")
    d_dropout: float = setting(0.0, "dropout in D while it trains: this share of its activations zeroed at random "
                                    "after each hidden layer (resnet: each block), as Keras GAN tutorials do (0.3 in "
                                    "TensorFlow's DCGAN); 0 disables")
    d_mbdisc: int = setting(0, "minibatch discrimination kernels before D's head (Salimans et al. 2016); 0 "
                               "disables")
    d_mbdisc_dim: int = setting(5, "dimension of each minibatch discrimination kernel")
    pac: int = setting(1, "PacGAN: D judges this many samples at once, stacked along channels (Lin et al. 2018)")
    n_classes: int = setting(0, "> 0: class-conditional G and D on the dataset's labels (0 = unconditional)")
    g_cond: str = setting("concat", "how G takes the label: concat (embedding joined to z) | cbn (conditional "
                                    "batch norm)")
    d_cond: str = setting("concat", "how D takes it: concat (label map as an extra input channel) | projection | "
                                    "acgan")
    embed_dim: int = setting(0, "g_cond=concat: size of the label embedding; 0 = n_classes")
    label_dropout: float = setting(0.0, "share of labels, reals' and fakes' alike, replaced in training by an "
                                        "extra 'no label' class, so that G and D also learn the images as an "
                                        "unconditional GAN does (few images a class); samples always name a "
                                        "class; 0 disables")


@dataclass
class LossConfig:
    name: str = setting("ns", "registered loss: ns | minimax | lsgan | wgan | wgan-gp | hinge | rpgan, or "
                                   "your own (--plugin)")
    d_reduction: str = setting("sum", "D loss = real + fake (sum) or (real + fake) / 2 (mean)")
    n_critic: int = setting(1, "D steps (each on a fresh real batch) per G step")
    critic_burst: int = setting(0, "WGAN's schedule: this many D steps, not n_critic, in the G steps the next "
                                   "two settings pick (0 = never)")
    critic_burst_first: int = setting(0, "critic_burst: in the first this many G steps")
    critic_burst_every: int = setting(0, "critic_burst: and in every G step whose count is a multiple of this "
                                         "(0 = none later)")
    gp_weight: float = setting(10.0, "wgan-gp: weight of the gradient penalty")
    clip: float = setting(0.01, "wgan: D weights are clamped to [-clip, clip]")
    r1_gamma: float = setting(0.0, "R1 penalty gamma/2 * ||grad D(x)||^2 on reals; 0 disables")
    r2_gamma: float = setting(0.0, "R2 penalty gamma/2 * ||grad D(G(z))||^2 on fakes (with R1 and rpgan: "
                                   "R3GAN's loss); 0 disables")
    r1_every: int = setting(1, "lazy R1 and R2: every k-th D step, scaled by k")
    label_smoothing: float = setting(0.0, "one-sided: D's real target is 1 - label_smoothing (ns, minimax)")
    instance_noise: float = setting(0.0, "std of Gaussian noise on D's inputs at the start of training")
    instance_noise_kimg: float = setting(0.0, "instance_noise falls linearly to 0 over this many kimg")
    lecam: float = setting(0.0, "LeCam regularisation weight on D (Tseng et al. 2021; 0.3 in their CIFAR-10 "
                                "runs); 0 disables")
    bcr: float = setting(0.0, "balanced consistency regularisation weight on D (Zhao et al. 2021; 10 in their "
                              "runs): D's logits on reals and fakes held to its logits on the same images under "
                              "bcr_policy; 0 disables")
    bcr_policy: str = setting("translation", "bcr: the DiffAugment ops that make the second view, e.g. "
                                             "\"translation,cutout\"")
    topk: float = setting(1.0, "top-k training: G's loss keeps this share of each fake batch, the ones D rates "
                               "most real")
    topk_kimg: float = setting(0.0, "topk is reached from 1 (all) linearly over this many kimg; 0 = from the start")
    ac_weight: float = setting(1.0, "model.d_cond=acgan: weight of the auxiliary classifier's cross-entropy")
    mode_seeking: float = setting(0.0, "mode seeking (Mao et al. 2019, MSGAN; 1 in their runs): G's loss adds this "
                                       "weight / (mean|G(z1) - G(z2)| / mean|z1 - z2|) over pairs of fakes of one "
                                       "class, so that other noise draws other images; 0 disables")


@dataclass
class OptimConfig:
    name: str = setting("adam", "adam | rmsprop (the WGAN paper's, whose critic Adam's momentum destabilised)")
    g_lr: float = setting(2e-4, "G's learning rate")
    d_lr: float = setting(2e-4, "D's learning rate (TTUR: set it apart from G's)")
    g_betas: list[float] = setting([0.5, 0.999], "Adam's betas for G")
    d_betas: list[float] = setting([0.5, 0.999], "Adam's betas for D")
    eps: float = setting(1e-8, "the optimizers' epsilon")
    lr_decay: str = setting("none", "none | linear | cosine: both learning rates fall from their value at "
                                    "lr_decay_start_kimg to 0 at lr_decay_end_kimg")
    lr_decay_start_kimg: float = setting(0.0, "where lr_decay starts (constant before)")
    lr_decay_end_kimg: float = setting(0.0, "where lr_decay reaches 0; 0 = train.kimg (pin it to extend a run by "
                                            "resuming)")


@dataclass
class TrainConfig:
    kimg: float = setting(50.0, "length of the run in thousands of real images shown to D")
    minutes: float = setting(0.0, "also end the run once it has trained this many minutes (counted over resumes), "
                                  "at the step that crosses it, as it ends at train.kimg; 0: no time limit")
    batch_size: int = setting(64, "real images per D step (and fakes per G step)")
    seed: int = setting(0, "seeds the weights, noise, data order and augmentation: the same seed repeats a run")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N | mps")
    step_order: str = setting("d_first", "each iteration: d_first (D's step, then G's) | g_first (G's first, as R5) | "
                                         "simultaneous (both losses from one D pass, both nets updated at once, as R2)")
    reuse_fake: bool = setting(False, "the second step of an iteration reuses the first step's fake batch")
    ema_kimg: float = setting(0.0, "half-life of the EMA of G in kimg; 0 disables G_ema")
    tick_kimg: float = setting(5.0, "log, grid and checkpoint every tick")
    ckpt_ticks: int = setting(1, "checkpoint every N ticks (and always at the end)")
    keep_ckpts: int = setting(3, "checkpoints kept on disk")
    grid_size: int = setting(64, "fixed-noise images per grid")
    collapse_warn: float = setting(0.25, "past 5 kimg, warn when grid samples spread less than this share of "
                                         "reals; 0 = off")
    duplicate_warn: float = setting(0.5, "past 10 kimg, warn when more than this share of grid samples have a "
                                         "near-copy; 0 = off")
    jump_warn: float = setting(2.5, "warn when 5% of grid samples move this many times as far in a tick as "
                                    "in the 5 before; 0 = off")
    d_win_warn: float = setting(0.99, "past 5 kimg (ns, minimax, rpgan), warn when mean D(real) > this and D(fake) "
                                      "< 1 - this; 0 = off")
    channels_last: bool = setting(True, "conv nets in the channels_last memory format (faster on CPUs and GPUs)")
    sync_bn: bool = setting(False, "SyncBatchNorm across processes (CUDA only)")
    amp: str = setting("none", "none | bf16 (autocast) | fp16 (autocast + GradScaler, CUDA only)")
    matmul_precision: str = setting("high", "float32 matmuls: highest | high (TF32 on CUDA) | medium (bf16 inside)")
    compile: bool = setting(False, "torch.compile G and D")
    cuda_graph: bool = setting(False, "CUDA only: capture each kind of training iteration as a CUDA graph and "
                                      "replay it, one launch instead of hundreds of small kernels")
    deterministic: bool = setting(False, "repeat a run bit for bit on a GPU too: deterministic CUDA kernels, no cuDNN "
                                         "autotuning (slower); CPU runs repeat without it")
    diffaugment: str = setting("", "DiffAugment policy for everything D sees, e.g. \"color,translation,cutout\"; "
                                 "also shift, and ADA's scale and rotate (with train.ada_target)")
    ada_target: float = setting(0.0, "> 0 (StyleGAN2-ADA: 0.6): each image gets the DiffAugment policy with a "
                                     "probability p, adapted so that the mean sign of D's logits on reals stays "
                                     "near this")
    ada_kimg: float = setting(10.0, "how fast p adapts: from 0 to 1 in this many kimg at the most")
    threads: int = setting(0, "torch CPU threads; 0 keeps torch's choice")
    tensorboard: bool = setting(False, "also log each tick's stats and grid to RUN/tensorboard (needs the "
                                       "tensorboard package)")


@dataclass
class EvalConfig:
    every_kimg: float = setting(0.0, "evaluate at the first tick past every N kimg (and at the end); 0 disables")
    metrics: list[str] = setting(["fd_digits"], "metrics of those evaluations (`ganforge eval --help` names them)")
    n: int = setting(2000, "generated images per evaluation during training")
    best_metric: str = setting("", "metric whose best value keeps checkpoints/best.pt; \"\" = the first one")
    patience_kimg: float = setting(0.0, "early stopping: end the run at an evaluation that finds best_metric no "
                                        "better for this many kimg; 0: never")
    inception_weights: str = setting("", "the FID Inception file for fid/kid/is/pr_inception; \"\" = torch's hub "
                                         "cache")


@dataclass
class Config:
    preset: str = setting("custom", "the preset this config builds on (or a label of its own)")
    description: str = setting("", "one line on what the config is for")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


_SECTION_TYPES = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


# ---------------------------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    files = resources.files("ganforge").joinpath("presets")
    return sorted(p.name[: -len(".toml")] for p in files.iterdir() if p.name.endswith(".toml"))


def _read_toml_text(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where} is not valid TOML: {e}") from e


def preset_dict(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise UserError(unknown_name("preset", name, preset_names()))
    text = resources.files("ganforge").joinpath("presets", f"{name}.toml").read_text(encoding="utf-8")
    raw = _read_toml_text(text, f"preset {name}")
    raw.setdefault("preset", name)
    return raw


# --------------------------------------------------------------------------------------------- building


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_value(text: str) -> Any:
    """TOML, else a bare string, so that `data.name=folder:imgs` needs no shell-quoted TOML quotes."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.kimg=50` -> (["train", "kimg"], 50.0); values parse as TOML, else as a bare string, and a
    bracketed list's items each so (`eval.metrics=[fd_digits,classes]`)."""
    if "=" not in item:
        raise UserError(f"override {item!r} must look like section.key=value, e.g. train.kimg=10")
    key, text = item.split("=", 1)
    key, text = key.strip(), text.strip()
    value = _parse_value(text)
    if isinstance(value, str) and value.startswith("[") and value.endswith("]") and "[" not in value[1:-1]:
        value = [_parse_value(part.strip()) for part in value[1:-1].split(",") if part.strip()]
    return key.split("."), value


def _coerce(section: str, name: str, value: Any, default: Any) -> Any:
    where = f"{section}.{name}" if section else name
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a numpy scalar or 0-d tensor from the Python API (np.arange, a tensor's mean)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise UserError(f"{where} must be a whole number, got {value!r}")
        if isinstance(value, float) and abs(value) >= 2**53:  # 1e30: no setting's range, and said as typed
            raise UserError(f"{where} must be a whole number below 2**53, got {value:g}")
        return int(value)
    if isinstance(default, str):
        if isinstance(value, bool):  # `--set train.amp=true` or `amp = true`: the word, checked as a choice later
            return "true" if value else "false"
        if isinstance(value, int | float):  # a folder named 2024, a label 7
            return str(value)
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if isinstance(value, str):  # `--set eval.metrics=fd_digits,pr` spells the list without its brackets
            value = [_parse_value(part.strip()) for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):  # a tuple from the Python API reads as the list it spells
            example = "[" + ", ".join(str(v) for v in default) + "]" if default else "[a, b]"
            raise UserError(f"{where} must be a list like {example}, got {value!r}")
        kind = type(default[0]) if default else None
        return [_coerce(section, name, v, kind()) if kind else v for v in value]
    return value


def section_not_table(section: str, value: Any) -> str:
    return (f"[{section}] must be a table of settings (a [{section}] line, then key = value lines), "
            f"got {section} = {value!r}")


def _build_section(cls: type, section: str, raw: dict[str, Any]) -> Any:
    if not isinstance(raw, dict):
        raise UserError(section_not_table(section, raw))
    defaults = cls()
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in valid:
            hint = _where_it_belongs(key, section, valid)
            raise UserError(f"unknown config key {section}.{key}{hint}; valid keys in [{section}]: {', '.join(valid)} "
                            f"(`ganforge settings {section}` says what each means)")
        kwargs[key] = _coerce(section, key, value, getattr(defaults, key))
    return cls(**kwargs)


def _sections_with(key: str) -> list[str]:
    return [name for name, cls in _SECTION_TYPES.items() if key in {f.name for f in dataclasses.fields(cls)}]


def _where_it_belongs(key: str, section: str, valid: list[str]) -> str:
    """For an unknown key: the section(s) that have it (train.g_lr -> optim.g_lr), else a close spelling."""
    homes = [f"{name}.{key}" for name in _sections_with(key)]
    return did_you_mean(homes or [f"{section}.{close}" for close in close_spelling(key, valid)])


def from_dict(raw: dict[str, Any], stored: bool = False) -> Config:
    """The Config of a TOML tree, checked. `stored=True` is for a config a run saved (a checkpoint's, a run's
    config.toml) to rebuild its networks: only what building them needs is checked, so a run made before a
    rule was tightened still loads."""
    valid = ["preset", "description", *_SECTION_TYPES]
    for key in raw:
        if key not in valid:
            homes = _sections_with(key)
            if homes and not isinstance(raw[key], dict):  # a setting written above every [section] header
                raise UserError(f"{key} is a setting of [{' or '.join(homes)}], not a section: put it under that "
                                f"header (or --set {homes[0]}.{key}=...)")
            raise UserError(f"unknown config section {key!r}{did_you_mean(close_spelling(key, valid))}; valid "
                            f"sections: {', '.join(valid)}")
    sections = {name: _build_section(cls, name, raw.get(name, {})) for name, cls in _SECTION_TYPES.items()}
    cfg = Config(
        preset=str(raw.get("preset", "custom")),
        description=str(raw.get("description", "")),
        **sections,
    )
    (validate_networks if stored else validate)(cfg)
    return cfg


def check_attributes(cfg: Config) -> None:
    """A Config edited in Python holds only real settings: `cfg.train.kimgs = 50` sets an attribute that no
    run reads (dataclasses take any name), so it is refused rather than trained without."""
    for section, obj in [("", cfg), *((name, getattr(cfg, name)) for name in _SECTION_TYPES)]:
        if not dataclasses.is_dataclass(obj):
            continue  # a section given as a dict is checked key by key when it is built
        valid = [f.name for f in dataclasses.fields(obj)]
        for key in vars(obj):
            if key not in valid:
                where = f"cfg.{section}.{key}" if section else f"cfg.{key}"
                hint = _where_it_belongs(key, section, valid) if section else did_you_mean(
                    close_spelling(key, valid))
                raise UserError(f"{where} is not a setting, so no run would read it{hint}; valid settings in "
                                f"{'[' + section + ']' if section else 'a Config'}: {', '.join(valid)}")


Overrides = Sequence[str] | Mapping[str, Any] | str
"""["train.kimg=20", ...] as --set takes them, one such string, or {"train.kimg": 20} with Python values."""


def override_items(overrides: Overrides | None) -> list[tuple[str, list[str], Any]]:
    """Each override as (as given, its key split at the dots, its value), whichever form `overrides` takes."""
    if isinstance(overrides, str):
        overrides = [overrides]  # a lone string would otherwise be read character by character
    if isinstance(overrides, Mapping):
        items = [(str(key), str(key).split("."), value) for key, value in overrides.items()]
    else:
        strings = [] if overrides is None else list(overrides) if isinstance(overrides, Iterable) else [overrides]
        wrong = [item for item in strings if not isinstance(item, str)]
        if wrong:
            raise TypeError(f"overrides are 'section.key=value' strings (a list, or one) or a dict of Python values, "
                            f"got {type(wrong[0]).__name__} {wrong[0]!r}")
        items = [(item, *parse_override(item)) for item in strings]
    return items


def apply_overrides(raw: dict[str, Any], overrides: Overrides | None) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for item, path, value in override_items(overrides):
        if len(path) != 2 or path[0] not in _SECTION_TYPES:
            guesses = []
            if len(path) == 1:  # the section left out: kimg=3
                guesses = [f"{home}.{path[0]}" for home in _sections_with(path[0])]
            elif len(path) == 2:  # a misspelt section: trian.kimg=3
                guesses = [f"{close}.{path[1]}" for close in close_spelling(path[0], _SECTION_TYPES)]
            raise UserError(f"override {item!r} must name section.key with a section among "
                            f"{', '.join(_SECTION_TYPES)}{did_you_mean(guesses)}")
        section = out.setdefault(path[0], {})
        if not isinstance(section, dict):  # a config file's `train = 5`
            raise UserError(section_not_table(path[0], section))
        section[path[1]] = value
    return out


def _check_paths_beside(from_file: dict[str, Any], raw: dict[str, Any], config_path: Path) -> None:
    """Relative paths in a config file are read from the working directory, as on the command line. When one
    that no override replaced is missing there but exists next to the file, say so rather than leave the user
    with a missing folder."""

    def value_in(tree: dict[str, Any], section: str, key: str) -> Any:
        return tree[section].get(key) if isinstance(tree.get(section), dict) else None

    for section, key, prefix in (("data", "name", "folder:"), ("data", "root", ""), ("eval", "inception_weights", "")):
        value = value_in(from_file, section, key)
        if not isinstance(value, str) or not value.startswith(prefix) or value != value_in(raw, section, key):
            continue
        rel = Path(value[len(prefix):]).expanduser()
        beside = config_path.parent / rel
        if value[len(prefix):] and not rel.is_absolute() and not rel.exists() and beside.exists() \
                and config_path.parent != Path("."):
            raise UserError(f"config file {config_path} sets {section}.{key} = {value!r}, and relative paths are read "
                            f"from the working directory ({Path.cwd()}), where there is no {rel}; {beside} is next to "
                            f"the file: use {prefix}{beside} (or an absolute path) in the file, or run from "
                            f"{config_path.parent}")


def load_config(
    preset: str | None = None,
    path: str | Path | None = None,
    overrides: Overrides | None = None,
    stored: bool = False,
) -> Config:
    """Defaults <- preset <- TOML file <- overrides, validated once. A file whose top-level `preset` names
    a preset builds on that preset. `stored`: the file is a run's config.toml, read to rebuild its networks
    (see from_dict)."""
    if preset is not None and not isinstance(preset, str):
        raise TypeError(f"preset is a preset's name, as ganforge presets lists them (\"default\"), got "
                        f"{type(preset).__name__} {preset!r}")
    from_file: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {p} does not exist" if not p.exists() else f"config file {p} is not a file")
        try:
            text = p.read_text(encoding="utf-8-sig")  # Windows editors start a file with a byte-order mark
        except UnicodeDecodeError:
            raise UserError(f"config file {p} is not UTF-8 text; a config is a TOML file") from None
        except OSError as e:
            raise UserError(f"config file {p} cannot be read: {e.strerror}") from None
        from_file = _read_toml_text(text, f"config file {p}")
        named = from_file.get("preset")
        # a file that names a preset builds on it, as --preset would (a run's resolved config.toml names its
        # preset too and spells out every setting, so it loads the same either way)
        if isinstance(named, str) and named in preset_names():
            if preset is not None and preset != named:
                raise UserError(f"config file {p} builds on preset {named!r} but --preset {preset} was given; "
                                "drop one of them")
            preset = named
        elif isinstance(named, str) and close_spelling(named, preset_names()):
            # a misspelt preset would otherwise build quietly on the built-in defaults under that name
            raise UserError(f"config file {p} names preset {named!r}, which is not a preset"
                            f"{did_you_mean(close_spelling(named, preset_names()))}; `ganforge presets` lists them "
                            "(a name that is no preset labels a config that builds on the built-in defaults)")
    if preset is None and path is None:
        preset = "default"
    raw = _merge(preset_dict(preset) if preset is not None else {}, from_file)
    raw = apply_overrides(raw, overrides)
    if path is not None:
        _check_paths_beside(from_file, raw, Path(path))
    return from_dict(raw, stored=stored)


# ------------------------------------------------------------------------------------------- validation


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


MAX_SEED = 2**32  # numpy's seed range; torch's streams take seed and seed + 1
MAX_LR = 1.0
OPTIMIZERS = ("adam", "rmsprop")  # optim.name; built by step.make_optimizer
MAX_GRID_SIZE = 1024  # a 32 x 32 grid: every tick draws, saves and (for the collapse checks) compares it


MAX_SIZE = 10**12  # far above any net that fits in memory (that is checked when it is built), far below int64


def validate_networks(cfg: Config) -> None:
    """The checks that building G and D needs: all a stored config (a checkpoint's) has to pass, so that a
    run trained under looser rules for data, loss or training settings still samples and evaluates."""
    from . import models

    d, m = cfg.data, cfg.model
    _check(d.channels in (1, 3), f"data.channels must be 1 or 3, got {d.channels}")
    _check(8 <= d.img_size <= 1024, f"data.img_size must be between 8 and 1024, got {d.img_size}")
    models.GENERATORS.get(m.g)
    models.DISCRIMINATORS.get(m.d)
    _check(m.z_dim >= 1, f"model.z_dim must be positive, got {m.z_dim}")
    _check(m.g_width >= 1 and m.d_width >= 1, "model.g_width and model.d_width must be positive")
    _check(all(h >= 1 for h in m.g_hidden + m.d_hidden), "model.g_hidden and model.d_hidden must be positive")
    for name in ("g_act", "d_act"):
        _check(getattr(m, name) in ("relu", "lrelu"), f"model.{name} must be relu or lrelu")
    for name in ("g_norm", "d_norm"):
        _check(getattr(m, name) in ("bn", "none"), f"model.{name} must be bn or none")
    _check(m.g_upsample in ("transposed", "nearest"), f"model.g_upsample must be transposed or nearest, got "
           f"{m.g_upsample!r}")
    _check(0.0 <= m.lrelu_slope < 1.0, f"model.lrelu_slope must be in [0, 1), got {m.lrelu_slope}")
    _check(0.0 <= m.bn_momentum <= 1.0, f"model.bn_momentum must be in [0, 1], got {m.bn_momentum}")
    _check(m.bn_eps > 0, f"model.bn_eps must be positive, got {m.bn_eps}")
    _check(m.init in ("dcgan", "xavier", "torch"), f"model.init must be dcgan, xavier or torch, got {m.init!r}")
    _check(m.pac >= 1, f"model.pac must be >= 1, got {m.pac}")
    _check(0.0 <= m.d_dropout < 1.0, f"model.d_dropout is the share of D's activations dropped, in [0, 1), got "
           f"{m.d_dropout}")
    _check(m.d_mbdisc >= 0 and m.d_mbdisc_dim >= 1, "model.d_mbdisc must be >= 0 and model.d_mbdisc_dim >= 1")
    _check(m.n_classes >= 0 and m.embed_dim >= 0, "model.n_classes and model.embed_dim must be >= 0")
    _check(m.g_cond in ("concat", "cbn"), f"model.g_cond must be concat or cbn, got {m.g_cond!r}")
    _check(m.d_cond in ("concat", "projection", "acgan"),
           f"model.d_cond must be concat, projection or acgan, got {m.d_cond!r}")
    _check(m.n_classes == 0 or m.pac == 1, "model.pac > 1 does not combine with a conditional model (n_classes > 0)")
    _check(0.0 <= m.label_dropout < 1.0, f"model.label_dropout is a share of labels, in [0, 1), got {m.label_dropout}")
    _check(m.label_dropout == 0 or m.n_classes > 0,
           "model.label_dropout drops a conditional model's labels; set model.n_classes, or leave it at 0")
    _check(m.label_dropout == 0 or m.d_cond != "acgan",
           "model.label_dropout does not combine with model.d_cond=acgan, whose classifier has no 'no label' class "
           "to learn; use model.d_cond=concat or projection, or leave model.label_dropout at 0")
    _check(m.n_classes == 0 or m.g_cond != "cbn" or m.g_norm == "bn",
           "model.g_cond=cbn needs batch norm in G (model.g_norm=bn)")
    for key, value in flatten({"model": cfg.to_dict()["model"]}).items():  # a size torch's 64-bit shapes cannot hold
        for number in value if isinstance(value, list) else [value]:
            if isinstance(number, int) and number >= MAX_SIZE:
                raise UserError(f"{key} = {number:g} is too large for a network's size; give a number below "
                                f"{MAX_SIZE:.0e}")


MAX_THREADS = 1024  # CPU threads: more than any machine has, within what torch takes
MAX_CRITIC_STEPS = 1000  # D steps per G step: more would leave a run stuck in its first G step


def validate(cfg: Config) -> None:
    """Every check on a config a run will train with."""
    from . import data as data_module
    from . import losses
    from .augment import parse_policy

    d, m, lo, o, t = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.train
    for key, value in flatten(cfg.to_dict()).items():  # config.toml is UTF-8: a path in another encoding is not
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode()
                except UnicodeEncodeError:
                    shown = text.encode(errors="surrogateescape").decode(errors="backslashreplace")
                    raise UserError(f"{key} = {shown} holds a name that is not UTF-8; rename that file or folder "
                                    "in UTF-8, the encoding of the config.toml that records it") from None
    validate_networks(cfg)
    data_module.check_dataset_name(d.name)
    _check(d.max_images >= 0, f"data.max_images must be 0 (all images) or a positive count, got {d.max_images}")
    _check(d.background in ("white", "black"), f"data.background must be white or black, got {d.background!r}")
    _check(d.fit in ("crop", "pad"), f"data.fit must be crop or pad, got {d.fit!r}")
    _check(lo.ac_weight >= 0, f"loss.ac_weight must be >= 0, got {lo.ac_weight}")
    _check(t.batch_size % m.pac == 0, f"train.batch_size {t.batch_size} must be a multiple of model.pac {m.pac}")
    losses.LOSSES.get(lo.name)
    _check(lo.d_reduction in ("sum", "mean"), f"loss.d_reduction must be sum or mean, got {lo.d_reduction!r}")
    _check(1 <= lo.n_critic <= MAX_CRITIC_STEPS, f"loss.n_critic must be from 1 to {MAX_CRITIC_STEPS} D steps per G "
           f"step (WGAN trains with 5), got {lo.n_critic}")
    _check(lo.gp_weight >= 0 and lo.clip > 0, "loss.gp_weight must be >= 0 and loss.clip positive")
    _check(0 <= lo.label_smoothing < 1, f"loss.label_smoothing must be in [0, 1), got {lo.label_smoothing}")
    _check(lo.instance_noise >= 0 and lo.instance_noise_kimg >= 0, "loss.instance_noise(_kimg) must be >= 0")
    _check(lo.instance_noise == 0 or lo.instance_noise_kimg > 0,
           "loss.instance_noise fades to 0 over loss.instance_noise_kimg, which is 0, so no noise would be added; "
           "set both, e.g. loss.instance_noise=0.1 loss.instance_noise_kimg=10")
    _check(0 < lo.topk <= 1, f"loss.topk is the share of each fake batch G learns from, in (0, 1], got {lo.topk} "
           "(the paper's floor: 0.5)")
    _check(lo.lecam >= 0, f"loss.lecam must be >= 0 (0 disables), got {lo.lecam}")
    _check(lo.bcr >= 0, f"loss.bcr must be >= 0 (0 disables), got {lo.bcr}")
    _check(lo.mode_seeking >= 0, f"loss.mode_seeking must be >= 0 (0 disables), got {lo.mode_seeking}")
    _check(parse_policy(lo.bcr_policy, "loss.bcr_policy") != [] or lo.bcr == 0,
           "loss.bcr compares D's logits on two views of each image, and loss.bcr_policy names no augmentation; "
           "set one, e.g. loss.bcr_policy=translation")
    _check(lo.topk_kimg >= 0, f"loss.topk_kimg must be >= 0, got {lo.topk_kimg}")
    _check(lo.r1_gamma >= 0 and lo.r2_gamma >= 0 and lo.r1_every >= 1,
           "loss.r1_gamma and loss.r2_gamma must be >= 0 and loss.r1_every >= 1")
    if losses.LOSSES.get(lo.name)().relativistic:
        _check(lo.topk == 1, f"loss.topk drops fakes from G's loss, and {lo.name} pairs each fake with a real; "
               "use one or the other")
        _check(lo.d_reduction == "sum", f"loss.d_reduction=mean halves a D loss of a real and a fake term; "
               f"{lo.name}'s has one term, so leave it at sum")
    _check(
        lo.n_critic == 1 or (t.step_order != "simultaneous" and not t.reuse_fake),
        "loss.n_critic > 1 needs train.step_order d_first or g_first and train.reuse_fake = false",
    )
    _check(min(lo.critic_burst, lo.critic_burst_first, lo.critic_burst_every) >= 0,
           "loss.critic_burst, loss.critic_burst_first and loss.critic_burst_every must be >= 0")
    _check(lo.critic_burst <= MAX_CRITIC_STEPS, f"loss.critic_burst must be at most {MAX_CRITIC_STEPS} D steps per G "
           f"step (WGAN bursts 100), got {lo.critic_burst}")
    bursts_when = lo.critic_burst_first > 0 or lo.critic_burst_every > 0
    _check(lo.critic_burst == 0 or bursts_when,
           f"loss.critic_burst = {lo.critic_burst} needs the G steps that get it: set loss.critic_burst_first "
           "and/or loss.critic_burst_every (the WGAN paper: burst 100 for the first 25 G steps and every 500th)")
    _check(
        lo.critic_burst == 0 or (t.step_order != "simultaneous" and not t.reuse_fake),
        "loss.critic_burst needs train.step_order d_first or g_first and train.reuse_fake = false",
    )
    _check(o.name in OPTIMIZERS, f"optim.name must be {' or '.join(OPTIMIZERS)}, got {o.name!r}")
    _check(o.g_lr > 0 and o.d_lr > 0, "optim.g_lr and optim.d_lr must be positive")
    _check(o.eps >= 0, f"optim.eps must be >= 0, got {o.eps:g}")
    for name in ("g_lr", "d_lr"):
        lr = getattr(o, name)
        # Adam and RMSprop move every weight by about lr per step: above 1 the nets only blow up (losses of 1e11, no
        # error), so a sign slip in the exponent is caught here rather than after a wasted run
        if lr > MAX_LR:
            mantissa, exponent = f"{lr:e}".split("e")
            flipped = f" (check the exponent's sign: {float(mantissa):g}e-{int(exponent)})" if lr >= 100 else ""
            raise UserError(f"optim.{name} = {lr:g} is above {MAX_LR:g}, where the optimizer's steps swamp the "
                            f"weights; GANs train at 1e-5 to 1e-2{flipped}")
    _check(o.lr_decay in ("none", "linear", "cosine"),
           f"optim.lr_decay must be none, linear or cosine, got {o.lr_decay!r}")
    for name in ("g_betas", "d_betas"):
        betas = getattr(o, name)
        _check(
            len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas),
            f"optim.{name} must be two numbers in [0, 1), got {betas}",
        )
    _check(t.kimg > 0, f"train.kimg must be positive, got {t.kimg}")
    _check(0 <= t.seed < MAX_SEED, f"train.seed must be a whole number from 0 to {MAX_SEED - 1}, got {t.seed}")
    decay_end = o.lr_decay_end_kimg or t.kimg
    _check(o.lr_decay_end_kimg == 0 or o.lr_decay_end_kimg >= t.kimg,
           f"optim.lr_decay_end_kimg = {o.lr_decay_end_kimg:g} would train at learning rate 0 after it; "
           f"set it to at least train.kimg = {t.kimg:g}, or 0 for train.kimg")
    _check(o.lr_decay != "none" or (o.lr_decay_start_kimg == 0 and o.lr_decay_end_kimg == 0),
           "optim.lr_decay_start_kimg / optim.lr_decay_end_kimg shape a learning-rate decay, and optim.lr_decay "
           "is none; set optim.lr_decay=linear or cosine")
    _check(0 <= o.lr_decay_start_kimg < decay_end,
           f"optim.lr_decay_start_kimg must be in [0, {decay_end:g}) (where the decay ends), "
           f"got {o.lr_decay_start_kimg:g}")
    _check(t.batch_size >= 1, f"train.batch_size must be positive, got {t.batch_size}")
    _check(
        t.step_order in ("d_first", "g_first", "simultaneous"),
        f"train.step_order must be d_first, g_first or simultaneous, got {t.step_order!r}",
    )
    _check(t.minutes >= 0, f"train.minutes must be >= 0 (0: no time limit), got {t.minutes:g}")
    _check(t.ema_kimg >= 0, f"train.ema_kimg must be >= 0, got {t.ema_kimg}")
    _check(t.tick_kimg > 0, f"train.tick_kimg must be positive, got {t.tick_kimg}")
    _check(t.ckpt_ticks >= 1, f"train.ckpt_ticks must be >= 1, got {t.ckpt_ticks}")
    _check(t.keep_ckpts >= 1, f"train.keep_ckpts must be >= 1, got {t.keep_ckpts}")
    _check(1 <= t.grid_size <= MAX_GRID_SIZE,
           f"train.grid_size must be between 1 and {MAX_GRID_SIZE}, got {t.grid_size}")
    _check(0.0 <= t.collapse_warn <= 1.0, f"train.collapse_warn must be in [0, 1], got {t.collapse_warn}")
    _check(t.jump_warn == 0.0 or t.jump_warn > 1.0,
           f"train.jump_warn must be above 1 (a move that many times the usual; 0 turns the check off), got "
           f"{t.jump_warn}")
    _check(t.d_win_warn == 0.0 or 0.5 < t.d_win_warn < 1.0,
           f"train.d_win_warn must be between 0.5 and 1 (0 turns the check off), got {t.d_win_warn}")
    _check(0.0 <= t.duplicate_warn <= 1.0,
           f"train.duplicate_warn must be in [0, 1] (0 turns the check off), got {t.duplicate_warn}")
    _check(t.amp in ("none", "bf16", "fp16"), f"train.amp must be none, bf16 or fp16, got {t.amp!r}")
    _check(t.matmul_precision in ("highest", "high", "medium"),
           f"train.matmul_precision must be highest, high or medium, got {t.matmul_precision!r}")
    _check(
        not (t.amp == "fp16" and t.step_order == "simultaneous"),
        "train.amp=fp16 does not combine with train.step_order=simultaneous; use bf16",
    )
    _check(not (t.cuda_graph and t.compile), "train.cuda_graph and train.compile do not combine; pick one")
    _check(not (t.cuda_graph and t.amp == "fp16"),
           "train.cuda_graph does not combine with train.amp=fp16, whose GradScaler reads a value back from the GPU "
           "every step; use train.amp=bf16")
    parse_policy(t.diffaugment)
    _check(0 <= t.ada_target < 1, f"train.ada_target must be 0 (off) or between 0 and 1, got {t.ada_target}")
    _check(t.ada_target == 0 or t.diffaugment.strip() != "",
           "train.ada_target adapts how often train.diffaugment applies; set a policy, e.g. "
           "train.diffaugment=translation,cutout")
    _check(t.ada_kimg > 0, f"train.ada_kimg must be positive, got {t.ada_kimg}")
    _check(0 <= t.threads <= MAX_THREADS, f"train.threads must be from 0 (torch's choice) to {MAX_THREADS}, got "
           f"{t.threads}")
    e = cfg.eval
    _check(e.every_kimg >= 0, f"eval.every_kimg must be >= 0, got {e.every_kimg}")
    _check(e.n >= 10, f"eval.n must be at least 10, got {e.n}")
    _check(e.patience_kimg >= 0, f"eval.patience_kimg must be >= 0 (0: no early stopping), got {e.patience_kimg:g}")
    _check(e.every_kimg > 0 or not e.patience_kimg,
           f"eval.patience_kimg = {e.patience_kimg:g} ends a run whose eval.best_metric stops improving, judged by "
           "evaluations during training; set eval.every_kimg too")
    _check(e.every_kimg > 0 or not e.best_metric,
           f"eval.best_metric = {e.best_metric!r} keeps the best checkpoint among evaluations during training; "
           "set eval.every_kimg too")
    from .metrics import METRICS

    for name in e.metrics:  # a misspelt name is caught now, not when eval.every_kimg is set later
        METRICS.get(name)
    if e.every_kimg > 0:
        _check(bool(e.metrics), "eval.metrics must name at least one metric")
        from .metrics.core import BEST_DIRECTION, DIGIT_DATASETS, METRIC_VALUES

        class_metrics = sorted({"class_acc", "fd_digits_per_class"} & set(e.metrics))
        _check(m.n_classes > 0 or not class_metrics,
               f"eval.metrics {' and '.join(class_metrics)} {'need' if len(class_metrics) > 1 else 'needs'} a "
               "conditional model (model.n_classes > 0); set model.n_classes, or drop "
               f"{'them' if len(class_metrics) > 1 else 'it'}")
        # what would otherwise stop the run at its first evaluation, after the training before it
        _check("modes" not in e.metrics or cfg.data.channels == 3,
               "eval.metrics modes counts the digit triples of 3-channel Stacked MNIST samples; train on "
               "data.name=stacked-mnist5k or stacked-mnist, or drop modes")
        _check("class_acc" not in e.metrics or m.n_classes <= 10,
               f"eval.metrics class_acc reads digits 0-9, but model.n_classes is {m.n_classes}; drop class_acc")
        # a folder's class names are read with its images; the named datasets' labels are known now
        _check("class_acc" not in e.metrics or d.name in DIGIT_DATASETS or d.name.startswith("folder:"),
               f"eval.metrics class_acc asks the digit classifier whether each sample shows the digit G was asked "
               f"for, but {d.name}'s classes are not digits; drop class_acc (fd_digits_per_class compares each "
               "class with its own real images)")
        reported = [v for name in e.metrics for v in METRIC_VALUES[name] if v in BEST_DIRECTION]
        owner = next((name for name, values in METRIC_VALUES.items()
                      if e.best_metric in values and e.best_metric in BEST_DIRECTION), None)
        _check(
            e.best_metric == "" or e.best_metric in reported,
            f"eval.best_metric {e.best_metric!r} is not among the values eval.metrics report "
            f"({', '.join(reported)})" + (f"; add {owner} to eval.metrics" if owner else ""),
        )
        # what the trainer follows when best_metric is "": the first value the metrics report
        tracked = e.best_metric or (*METRIC_VALUES.get(e.metrics[0], ()), "")[0]
        _check(not e.patience_kimg or tracked in BEST_DIRECTION,
               f"eval.patience_kimg follows eval.best_metric, and {tracked!r} (the first value eval.metrics report) "
               f"has no better direction; set eval.best_metric to one of {', '.join(reported) or 'fd_digits'}")
    _check(
        t.device == "auto" or t.device in ("cpu", "mps") or t.device.startswith("cuda"),
        f"train.device must be auto, cpu, cuda, cuda:N or mps, got {t.device!r}",
    )


# ----------------------------------------------------------------------------------------- TOML output


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dump_toml(raw: dict[str, Any]) -> str:
    """TOML for a dict of scalars and one level of tables (what Config holds)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for key, table in raw.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def setting_docs() -> dict[str, str]:
    """Every setting's key (`train.kimg`; `preset` and `description` at the top) and its one-line meaning."""
    docs = {f.name: f.metadata["doc"] for f in dataclasses.fields(Config) if f.name not in _SECTION_TYPES}
    for section, cls in _SECTION_TYPES.items():
        docs.update({f"{section}.{f.name}": f.metadata["doc"] for f in dataclasses.fields(cls)})
    return docs


def describe(cfg: Config, word: str = "", changed: bool = False) -> str:
    """cfg as TOML with each setting's meaning beside it, ready to edit and load with --config. `word` keeps
    the settings whose key or meaning holds it (any case), or a section's when it names one; `changed` those
    that differ from the built-in defaults (what a preset sets). The `preset` line stays, so that a file of
    a few lines builds on the same preset. Raises UserError when no setting is left."""
    values, defaults, docs = flatten(cfg.to_dict()), flatten(Config().to_dict()), setting_docs()
    needle = word.lower()

    def wanted(key: str) -> bool:
        if needle in _SECTION_TYPES:
            return key.startswith(f"{needle}.")
        return needle in f"{key} {docs[key]}".lower()

    keep = [key for key in values if key != "preset" and (not word or wanted(key))
            and (not changed or values[key] != defaults[key])]
    if not keep:
        what = " and ".join(filter(None, [f"mentions {word!r}" if word else "",
                                          "differs from the built-in defaults" if changed else ""]))
        raise UserError(f"no setting {what}; `ganforge settings` lists them all")
    lines: list[str] = []
    for section in ["", *_SECTION_TYPES]:
        keys = [key for key in ["preset", *keep] if key.rpartition(".")[0] == section]
        if not keys:
            continue
        if section:
            lines += ["", f"[{section}]"]
        assigned = [f"{key.rpartition('.')[2]} = {toml_value(values[key])}" for key in keys]
        width = min(max(len(a) for a in assigned), 40)  # comments in a column, unless one value is long
        lines += [f"{a:<{width}}  # {docs[key]}" for a, key in zip(assigned, keys, strict=True)]
    return "\n".join(lines) + "\n"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict with its tables flattened to dotted keys: {"preset": ..., "train.kimg": ..., ...}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


RUN_LENGTH = ("train.kimg", "train.minutes")  # where a run stops, not how it trains


def settings_changes(saved: Config, cfg: Config) -> dict[str, list[Any]]:
    """The settings of `cfg` that differ from `saved`, as {key: [saved value, new value]}, leaving out the
    run's length (a resume that goes on further changes nothing in how it trains)."""
    old, new = flatten(saved.to_dict()), flatten(cfg.to_dict())
    return {key: [old.get(key), value] for key, value in new.items()
            if key not in RUN_LENGTH and old.get(key) != value}


def describe_changes(changes: dict[str, list[Any]]) -> str:
    """{"optim.g_lr": [0.0003, 0.0001]} as "optim.g_lr 0.0003 -> 0.0001"."""
    return ", ".join(f"{key} {_shown(was)} -> {_shown(now)}" for key, (was, now) in changes.items())


def _shown(value: Any) -> str:
    return "(none)" if value is None else toml_value(value)


def resumes_changed(stats: Iterable[dict[str, Any]]) -> list[tuple[float, dict[str, list[Any]]]]:
    """The resumes that changed settings, from a run's stats.jsonl records: (kimg it resumed at, {key: [was,
    now]}). A hand-edited record's entries that are not such pairs are passed over, as other unreadable
    records are."""
    found = []
    for s in stats:
        r = s.get("resumed")
        if isinstance(r, dict) and isinstance(r.get("kimg"), int | float) and isinstance(r.get("changed"), dict):
            pairs = {str(k): v for k, v in r["changed"].items() if isinstance(v, list) and len(v) == 2}
            if pairs:
                found.append((float(r["kimg"]), pairs))
    return found


def describe_resumes(resumes: list[tuple[float, dict[str, list[Any]]]]) -> str:
    """resumes_changed's list as "at 2 kimg optim.g_lr 0.0003 -> 0.0001; at 5 kimg ..."."""
    return "; ".join(f"at {kimg:g} kimg {describe_changes(changed)}" for kimg, changed in resumes)
