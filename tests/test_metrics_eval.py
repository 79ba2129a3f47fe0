"""Evaluation end to end: the shipped classifier, cached real statistics, protocols, the Inception path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.cli import main
from ganforge.config import DataConfig, load_config
from ganforge.data import load_dataset
from ganforge.errors import UserError
from ganforge.metrics import EvalContext, ImageSet, evaluate
from ganforge.metrics.classifier import WEIGHTS_SHA256, classify, file_sha256, load_classifier, weights_path
from ganforge.metrics.core import METRIC_VALUES, OFFLINE_DEFAULT, evaluate_run, real_image_set
from ganforge.metrics.train_digits import heldout_split
from ganforge.trainer import train

from .conftest import fill_disk_after, tiny_overrides

PROTOCOL_FIELDS = {"metric", "value", "n_fake", "n_real", "reference", "reference_fingerprint", "extractor",
                   "extractor_sha256", "resize", "seed", "kimg", "ganforge_version"}


@pytest.fixture(autouse=True)
def stats_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="mnist5k"))


def test_classifier_weights_match_recorded_sha_and_are_small():
    path = Path(weights_path())
    assert file_sha256(str(path)) == WEIGHTS_SHA256
    info = json.loads((path.parent / "digits.json").read_text())
    assert info["sha256"] == WEIGHTS_SHA256 and info["n_heldout"] == 1000
    assert path.stat().st_size < 2 * 1024 * 1024


def test_retraining_the_classifier_does_not_replace_the_shipped_one_by_default(capsys):
    from ganforge.metrics import train_digits

    path = Path(weights_path())
    with pytest.raises(SystemExit) as info:
        train_digits.main(["--epochs", "1"])  # refused before any training
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "exists; give --out DIR for a new classifier, or --force" in err and err.count("\n") == 1  # one line
    assert file_sha256(str(path)) == WEIGHTS_SHA256


def test_retraining_the_classifier_writes_weights_whose_record_tells_the_truth(tmp_path, capsys):
    """One epoch into a folder of its own: the weights load into the metrics' net, digits.json holds their
    SHA-256 and the held-out accuracy they score on the fixed split, and the shipped classifier is untouched."""
    from safetensors.torch import load_file

    from ganforge.metrics import train_digits
    from ganforge.metrics.classifier import DigitNet

    out = tmp_path / "classifier"
    train_digits.main(["--epochs", "1", "--out", str(out)])
    info = json.loads((out / "digits.json").read_text())
    weights = out / "digits.safetensors"
    assert info["sha256"] == file_sha256(str(weights)) != WEIGHTS_SHA256
    assert (info["n_train"], info["n_heldout"], info["epochs"]) == (4000, 1000, 1)
    net = DigitNet()
    net.load_state_dict(load_file(weights))  # strict: every layer of the metrics' net, no other
    data = load_dataset(DataConfig(name="mnist5k"))
    _, held = heldout_split(data.labels)
    assert abs(train_digits.accuracy(net, data.images[held], data.labels[held]) - info["heldout_accuracy"]) < 1e-6
    assert info["heldout_accuracy"] > 0.5  # one epoch learns the digits well past chance (0.1)
    assert f"held-out accuracy {info['heldout_accuracy']:.4f} on 1000 digits" in capsys.readouterr().out
    assert file_sha256(weights_path()) == WEIGHTS_SHA256


def test_retraining_into_an_unusable_folder_is_refused_before_training(tmp_path, capsys):
    from ganforge.metrics import train_digits

    a_file = tmp_path / "weights"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit) as info:
        train_digits.main(["--epochs", "1", "--out", str(a_file)])
    assert info.value.code == 2 and f"--out {a_file} is a file; give a folder" in capsys.readouterr().err
    assert a_file.read_text() == "not a folder"


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    from ganforge.metrics import classifier

    fake = tmp_path / "digits.safetensors"
    fake.write_bytes(Path(weights_path()).read_bytes()[:-1] + b"x")
    monkeypatch.setattr(classifier, "weights_path", lambda: str(fake))
    classifier.load_classifier.cache_clear()
    try:
        with pytest.raises(UserError, match="SHA-256"):
            classifier.load_classifier()
    finally:
        classifier.load_classifier.cache_clear()


def test_classifier_is_accurate_on_its_held_out_digits(digits):
    _, held = heldout_split(digits.labels)
    assert len(held) == 1000
    counts = torch.bincount(digits.labels[held], minlength=10)
    expected = torch.bincount(digits.labels, minlength=10) / 5
    assert (counts - expected).abs().max() <= 1  # stratified
    _, probs = classify(load_classifier(), digits.images[held])
    accuracy = (probs.argmax(1) == digits.labels[held]).float().mean().item()
    assert accuracy >= 0.97


def test_classifier_accepts_32px_and_rgb(digits):
    net = load_classifier()
    x = digits.images[:200]
    _, p28 = classify(net, x)
    x32 = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
    _, p32 = classify(net, x32.expand(-1, 3, -1, -1))
    agreement = (p28.argmax(1) == p32.argmax(1)).float().mean().item()
    assert agreement > 0.95


def test_is_of_real_digits_near_ceiling_and_of_constant_images_is_one(digits):
    _, held = heldout_split(digits.labels)
    real = ImageSet(digits.images[held], "mnist5k", "heldout")
    records = evaluate(EvalContext(real, None), ["is_digits"])
    assert records[0]["value"] > 8.5
    constant = ImageSet(torch.full((500, 1, 28, 28), -1.0), "constant", "all")
    records = evaluate(EvalContext(constant, None), ["is_digits"])
    assert abs(records[0]["value"] - 1.0) < 1e-6
    # beside a generated set, the real ceiling carries its own spread over the splits, not the generated one's
    fake, real_ref = records[0], evaluate(EvalContext(constant, real), ["is_digits"])[1]
    assert real_ref["metric"] == "is_digits_real" and abs(real_ref["value"] - evaluate(
        EvalContext(real, None), ["is_digits"])[0]["value"]) < 1e-9
    assert abs(fake["std"]) < 1e-6 and real_ref["std"] > 1e-3


def test_fd_digits_of_reals_against_themselves_is_zero_and_grows_with_noise(digits, stats_cache):
    full = real_image_set(DataConfig(name="mnist5k"), digits)
    idx = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:1500]
    real = ImageSet(full.images[idx], "mnist5k", "subset1500", cache_key=full.cache_key + "-subset1500")
    fds = []
    for sigma in (0.0, 0.1, 0.3, 0.6):
        noisy = (real.images + sigma * torch.randn(real.images.shape, generator=torch.Generator().manual_seed(0)))
        ctx = EvalContext(ImageSet(noisy.clamp(-1, 1), "noisy", str(sigma)), real)
        fds.append(evaluate(ctx, ["fd_digits"])[0]["value"])
    assert abs(fds[0]) < 1e-6
    assert all(b > a for a, b in zip(fds, fds[1:], strict=False)), fds
    assert len(list(stats_cache.rglob("*.npz"))) == 1  # real statistics cached once, reused


def test_a_damaged_feature_cache_is_recomputed(digits, stats_cache):
    full = real_image_set(DataConfig(name="mnist5k"), digits)
    real = ImageSet(full.images[:300], "mnist5k", "first300", cache_key=full.cache_key + "-first300")
    fake = ImageSet(full.images[300:600], "mnist5k", "next300")
    first = evaluate(EvalContext(fake, real), ["fd_digits"])[0]["value"]
    (cache,) = stats_cache.rglob("*.npz")
    data = bytearray(cache.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside the stored features: only the CRC tells
    cache.write_bytes(bytes(data))
    again = evaluate(EvalContext(fake, real), ["fd_digits"])[0]["value"]
    assert abs(again - first) < 1e-9
    assert cache.read_bytes() != bytes(data)  # replaced by a sound copy


def test_a_changed_folder_replaces_its_cached_features(image_folder, stats_cache):
    from PIL import Image

    def features(img_size: int) -> None:
        real = real_image_set(DataConfig(name=f"folder:{image_folder}", img_size=img_size))
        evaluate(EvalContext(ImageSet(real.images[:10], "fake", "first10"), real), ["fd_digits"])

    features(16)
    features(28)  # the same folder read at another size: kept beside it
    other = stats_cache / "stats" / "folder-0123456789-0123456789ab-train-16px-1ch-x-n5.npz"
    other.write_bytes(b"")  # another folder's
    before = {p.name for p in stats_cache.rglob("*.npz")}
    first = next(image_folder.rglob("*.png"))
    Image.new("L", (16, 16), 255).save(first.with_name("added.png"))
    features(16)
    after = {p.name for p in stats_cache.rglob("*.npz")}
    assert len(after) == len(before) == 3 and other.name in after
    (old_16,) = [n for n in before - after]
    assert "-16px-" in old_16 and [n for n in after - before if "-16px-" in n]  # the 16 px entry is the new one
    assert [n for n in before & after if "-28px-" in n]


def test_a_changed_folders_inception_entries_replace_those_from_before(tmp_path):
    from ganforge.metrics.core import drop_stale_folder_entries

    def entry(content: str, n: int = 32, size: int = 16, tail: str = "features-2048") -> Path:
        path = tmp_path / f"folder-0123456789-{content}-train-{size}px-1ch-inception-v3-compat-6726825d4a3b-n{n}-" \
                          f"inception-v3-compat-{tail}.pt"
        path.write_bytes(b"x")
        return path

    old, old_stats, other_size = entry("aaaaaaaaaaaa"), entry("aaaaaaaaaaaa", tail="stat-fid-2048"), \
        entry("aaaaaaaaaaaa", size=28)
    other_folder = tmp_path / old.name.replace("0123456789", "9876543210")
    other_folder.write_bytes(b"x")
    new = entry("bbbbbbbbbbbb", n=33)
    drop_stale_folder_entries(new)
    assert not old.exists() and old_stats.exists()  # the same reading of the folder's earlier images, this tail
    assert other_size.exists() and other_folder.exists() and new.exists()
    drop_stale_folder_entries(entry("bbbbbbbbbbbb", n=33, tail="stat-fid-2048"))
    assert not old_stats.exists()


def test_a_full_cache_disk_still_gives_the_metric(digits, stats_cache, monkeypatch):
    full = real_image_set(DataConfig(name="mnist5k"), digits)
    real = ImageSet(full.images[:300], "mnist5k", "first300", cache_key=full.cache_key + "-first300")
    fake = ImageSet(full.images[300:600], "mnist5k", "next300")
    fill_disk_after(monkeypatch, room=1000)
    value = evaluate(EvalContext(fake, real), ["fd_digits"])[0]["value"]
    monkeypatch.undo()
    assert [p for p in stats_cache.rglob("*") if p.is_file()] == []  # nothing cached, nothing torn left
    monkeypatch.setenv("GANFORGE_CACHE", str(stats_cache))
    assert abs(evaluate(EvalContext(fake, real), ["fd_digits"])[0]["value"] - value) < 1e-9
    assert len(list(stats_cache.rglob("*.npz"))) == 1


def test_all_offline_metrics_have_their_protocol(digits):
    real = real_image_set(DataConfig(name="mnist5k"), digits)
    fake = ImageSet(digits.images[:600], "subset", "first600")
    records = evaluate(EvalContext(fake, real, seed=3), ["fd_digits", "kid_digits", "is_digits", "pr", "dc",
                                                         "classes", "fd_digits"], kimg=1.5)  # each once
    with pytest.raises(UserError, match="no metric to evaluate"):
        evaluate(EvalContext(fake, real), " , ")
    names = [r["metric"] for r in records]
    assert names == ["fd_digits", "kid_digits", "is_digits", "is_digits_real", "precision", "recall", "density",
                     "coverage", "classes_covered", "classes_kl", "classes_confidence"]
    assert names == [v for m in OFFLINE_DEFAULT for v in METRIC_VALUES[m]]  # what eval.best_metric may name
    for r in records:
        assert PROTOCOL_FIELDS <= set(r), r["metric"]
        assert r["n_fake"] == 600 and r["n_real"] == 5000 and r["reference"] == "mnist5k/train"
        assert r["extractor_sha256"] == WEIGHTS_SHA256 and r["seed"] == 3 and r["kimg"] == 1.5
    kid = records[1]
    assert kid["subsets"] == 100 and kid["subset_size"] == 600  # the subsets' size drawn: no more than the fakes
    by_name = {r["metric"]: r["value"] for r in records}
    assert by_name["precision"] > 0.9  # real digits are inside the real manifold
    # the first 600 digits are all zeros and ones (the file is sorted by class)
    assert by_name["classes_covered"] <= 3 and by_name["coverage"] < 0.5


def test_modes_counts_stacked_triples():
    stacked = load_dataset(DataConfig(name="stacked-mnist5k", channels=3))
    fake = ImageSet(stacked.images[:2000], "stacked", "first2000")
    results = evaluate(EvalContext(fake, None), ["modes"])
    assert [r["metric"] for r in results] == list(METRIC_VALUES["modes"])
    records = {r["metric"]: r["value"] for r in results}
    # 2,000 draws over 1,000 equally likely triples cover about 865 of them
    assert 780 <= records["modes"] <= 950
    assert records["modes_kl"] < 1.0
    collapsed = ImageSet(stacked.images[:1].expand(500, -1, -1, -1), "one", "x")
    results = evaluate(EvalContext(collapsed, None), ["modes"])
    records = {r["metric"]: r["value"] for r in results}
    assert records["modes"] == 1 and abs(records["modes_kl"] - np.log(1000)) < 1e-9
    assert all(abs(kl - np.log(10)) < 1e-9 for kl in results[0]["channel_kl"])
    assert 0.5 < results[0]["mean_confidence"] <= 1.0
    # one triple drawn 500 times: each channel draws a single digit every time
    assert all(sorted(shares)[-1] == 1.0 and sum(shares) == 1.0 for shares in results[0]["channel_digits"])


def test_the_classes_note_names_the_least_and_the_most_drawn_digit():
    from ganforge.metrics.core import classes_note

    counts = [100, 42, 100, 100, 100, 100, 100, 158, 100, 100]
    note = classes_note([{"metric": "classes_kl", "value": 0.0123, "counts": counts}])
    assert note == "classes_kl 0.012: fewest and most drawn digits 1s 4.2%, 7s 15.8% (10% each is even)"
    assert classes_note([{"metric": "classes_covered", "value": 10, "counts": counts}]) is None
    assert classes_note([{"metric": "classes_kl", "value": 0.0}]) is None  # a record from before counts were kept


def test_the_modes_note_splits_the_kl_into_channel_balance_and_dependence():
    from ganforge.metrics.core import modes_note

    shares = [[0.04] + [0.1] * 8 + [0.16], [0.1] * 10, [0.1] * 10]
    kl = {"metric": "modes_kl", "value": 0.15, "n_fake": 26000, "channel_kl": [0.1, 0.01, 0.02],
          "channel_digits": shares, "mean_confidence": 0.8}
    note = modes_note([{**kl, "metric": "modes", "value": 999}, kl])
    # 0.15 = (0.1 + 0.01 + 0.02) + 0.02; chance part (1000 - 1 - 27) / 52,000
    assert "0.150 = 0.130 from uneven digits" in note and "(0.100, 0.010, 0.020)" in note
    assert "0.020 from dependence" in note and "about 0.019 of that by chance at n = 26,000" in note
    assert "channel 0: 0s 4.0%, 9s 16.0%" in note and "confidence 0.800" in note
    # below ~5 draws a cell the chi-square figure means nothing (972 / 4,000 would be 0.243)
    few = modes_note([{**kl, "n_fake": 2000}])
    assert "by chance at" not in few and "at n = 2,000, far under the protocol's 26,000" in few
    older = {k: v for k, v in kl.items() if k not in ("channel_digits", "mean_confidence")}
    assert "fewest" not in modes_note([older]) and "0.130 from uneven digits" in modes_note([older])
    assert modes_note([{**kl, "metric": "fd_digits"}]) is None
    assert modes_note([{k: v for k, v in kl.items() if k != "channel_kl"}]) is None


def test_every_registered_metric_lists_the_values_it_reports():
    from ganforge.metrics import METRICS
    from ganforge.metrics.core import BEST_DIRECTION

    assert set(METRIC_VALUES) == set(METRICS.names())
    reported = {v for values in METRIC_VALUES.values() for v in values}
    # the real data's IS, and copying measures, whose ideal is the held-out data's value, not an extreme
    unranked = {"is_digits_real", "authenticity", "nn_ratio"}
    assert set(BEST_DIRECTION) <= reported and reported - set(BEST_DIRECTION) == unranked


def test_copies_tells_copied_training_digits_from_held_out_ones():
    data = load_dataset(DataConfig(name="mnist5k"))
    images = data.batch(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:600])  # all classes
    train = ImageSet(images[:500], "mnist5k", "random500")
    noisy_copies = (images[:100] + 0.01 * torch.randn(100, *images.shape[1:],
                                                      generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    scores = {}
    shifted = torch.roll(images[:100], 2, dims=3)  # moved 2 px right: on plain pixels, stranger than new digits
    for name, fake in (("copies", noisy_copies), ("shifted", shifted), ("held out", images[500:600])):
        records = evaluate(EvalContext(ImageSet(fake, "test", name), train), ["copies"])
        assert [r["metric"] for r in records] == list(METRIC_VALUES["copies"])
        assert records[0]["extractor"].startswith("pixels") and records[0]["n_real"] == 500
        assert records[0]["max_shift"] == 2
        scores[name] = {r["metric"]: r["value"] for r in records}
    assert scores["copies"]["authenticity"] == 0.0 and scores["copies"]["nn_ratio"] < 0.1
    assert scores["shifted"]["authenticity"] < 0.05 and scores["shifted"]["nn_ratio"] < 0.1
    assert 0.3 < scores["held out"]["authenticity"] < 0.9  # 0.59 for 1,000 against 4,000
    assert abs(scores["held out"]["nn_ratio"] - 1) < 0.2
    other_size = ImageSet(torch.zeros(4, 1, 32, 32), "test", "32px")
    with pytest.raises(UserError, match="pixel by pixel"):
        evaluate(EvalContext(other_size, train), ["copies"])


def test_copies_of_a_mirrored_data_set_count_mirrored_copies():
    data_cfg = DataConfig(name="mnist5k", max_images=200, mirror=True)
    train = real_image_set(data_cfg)
    assert train.mirrored and not real_image_set(DataConfig(name="mnist5k", max_images=200)).mirrored
    mirrored = train.images[:50].flip(-1)
    scores = {}
    for name, reference in (("upright", ImageSet(train.images, "mnist5k", "subset200")), ("mirrored", train)):
        records = evaluate(EvalContext(ImageSet(mirrored, "test", "mirrored copies"), reference), ["copies"])
        assert records[0].get("mirror") is (True if reference.mirrored else None)
        scores[name] = {r["metric"]: r["value"] for r in records}
    assert scores["mirrored"]["authenticity"] == 0.0 and scores["mirrored"]["nn_ratio"] < 0.01
    assert scores["upright"]["authenticity"] > 0.4 and scores["upright"]["nn_ratio"] > 0.8  # new digits to it


def test_swd_is_near_its_floor_for_new_draws_of_the_data_and_grows_with_noise_blur_and_collapse():
    data = load_dataset(DataConfig(name="mnist5k", img_size=32))
    images = data.batch(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:400])
    real, new = ImageSet(images[:200], "mnist5k", "random200"), images[200:]
    noise = torch.randn(new.shape, generator=torch.Generator().manual_seed(1))
    fakes = {"new digits": new, "noise 0.1": (new + 0.1 * noise).clamp(-1, 1),
             "noise 0.3": (new + 0.3 * noise).clamp(-1, 1),
             "blurred": torch.nn.functional.avg_pool2d(new, 3, 1, 1),
             "one digit": new[:1].expand_as(new).contiguous()}
    scores = {}
    for name, fake in fakes.items():
        (record,) = evaluate(EvalContext(ImageSet(fake, "test", name), real, seed=3), ["swd"])
        assert PROTOCOL_FIELDS <= set(record) and record["extractor_sha256"] is None
        assert record["n_fake"] == record["n_real"] == 200 and list(record["per_level"]) == ["32", "16"]
        assert abs(record["value"] - np.mean(list(record["per_level"].values()))) < 1e-9
        scores[name] = record["value"]
    assert scores["new digits"] < 25  # 18 here, 4.3 for 2,500 against 2,500: fewer patches, more chance
    assert scores["new digits"] < scores["noise 0.1"] < scores["noise 0.3"]
    assert scores["blurred"] > 2 * scores["new digits"] and scores["one digit"] > 5 * scores["new digits"]
    # the same seed draws the same patches and directions; another seed other ones
    again = evaluate(EvalContext(ImageSet(new, "test", "again"), real, seed=3), ["swd"])[0]["value"]
    other = evaluate(EvalContext(ImageSet(new, "test", "again"), real, seed=4), ["swd"])[0]["value"]
    assert again == scores["new digits"] and other != again


def test_swd_cuts_the_larger_set_to_the_smaller_and_refuses_what_it_cannot_compare(monkeypatch):
    import ganforge.metrics.core as core

    gen = torch.Generator().manual_seed(0)
    real = ImageSet(torch.rand(30, 3, 16, 16, generator=gen) * 2 - 1, "real", "train")
    fake = ImageSet(torch.rand(50, 3, 16, 16, generator=gen), "fake", "gen")
    (record,) = evaluate(EvalContext(fake, real), ["swd"])
    assert record["n_fake"] == record["n_real"] == 30 and record["fake_subset"] == "30 of 50, seed 0"
    monkeypatch.setattr(core, "SWD_BATCH", 7)  # the pyramids a few images at a time: the same patches
    assert abs(evaluate(EvalContext(fake, real), ["swd"])[0]["value"] - record["value"]) < 1e-6 * record["value"]
    assert "real_subset" not in record and list(record["per_level"]) == ["16"]
    with pytest.raises(UserError, match="at least 16x16"):
        evaluate(EvalContext(ImageSet(torch.zeros(4, 1, 12, 12), "f", "g"), ImageSet(torch.zeros(4, 1, 12, 12),
                                                                                      "r", "t")), ["swd"])
    with pytest.raises(UserError, match="patches of equal images"):
        evaluate(EvalContext(ImageSet(torch.zeros(4, 1, 32, 32), "f", "g"), real), ["swd"])
    with pytest.raises(UserError, match="pass --real"):
        evaluate(EvalContext(ImageSet(torch.zeros(4, 3, 16, 16), "f", "g"), None), ["swd"])
    with pytest.raises(UserError, match="at least 2 generated images, got 1"):
        evaluate(EvalContext(ImageSet(torch.zeros(1, 3, 16, 16), "f", "g"), real), ["swd"])


def test_modes_on_a_large_fixed_set_follows_the_26000_protocol(monkeypatch):
    import ganforge.metrics.core as core
    from ganforge.metrics.classifier import classify

    def classify_each_distinct_digit_once(net, images):
        # the 78,000 channels repeat the 5,000 bundled digits: the same answers for a tenth of the time
        distinct, inverse = torch.unique(images.flatten(1), dim=0, return_inverse=True)
        assert distinct.shape[0] <= 5_000
        feats, probs = classify(net, distinct.view(-1, *images.shape[1:]))
        return feats[inverse], probs[inverse]

    monkeypatch.setattr(core, "classify", classify_each_distinct_digit_once)
    stacked = load_dataset(DataConfig(name="stacked-mnist5k", channels=3))
    fake = ImageSet(stacked.images[:30_000], "stacked", "first30000")
    records = evaluate(EvalContext(fake, None), ["modes"])
    assert all(r["n_fake"] == 26_000 for r in records)
    by_name = {r["metric"]: r["value"] for r in records}
    assert by_name["modes"] == 1000 and by_name["modes_kl"] < 0.05  # real triples: near the sampling floor


def test_modes_refuses_grey_images(digits):
    with pytest.raises(UserError, match="3-channel"):
        evaluate(EvalContext(ImageSet(digits.images[:10], "x", "y"), None), ["modes"])


# --------------------------------------------------------------------------- the Inception path


def _register_stand_in() -> str:
    """A fixed random projection that plays Inception-v3's part for torch-fidelity in tests."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    name = "ganforge-test-stand-in"
    if name in FEATURE_EXTRACTORS_REGISTRY:
        return name

    class StandIn(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            gen = torch.Generator().manual_seed(0)
            self.proj = torch.nn.Parameter(torch.randn(3 * 8 * 8, 64, generator=gen) / 8, requires_grad=False)
            self.head = torch.nn.Parameter(torch.randn(64, 1008, generator=gen) / 8, requires_grad=False)

        @staticmethod
        def get_provided_features_list():
            return "2048", "logits_unbiased"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased"}.get(metric, "2048")

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

        def forward(self, x):
            x = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 8).flatten(1)
            feats = x @ self.proj
            out = {"2048": feats, "logits_unbiased": feats @ self.head}
            return tuple(out[f] for f in self.features_list)

    torch_fidelity.register_feature_extractor(name, StandIn)
    return name


def test_inception_path_with_stand_in_extractor_writes_protocol(tmp_path, digits):
    name = _register_stand_in()
    real = real_image_set(DataConfig(name="mnist5k"), digits)
    fake = ImageSet(digits.images[:300], "subset", "first300")
    ctx = EvalContext(fake, ImageSet(real.images[:400], "mnist5k", "train"), inception_extractor=name)
    records = evaluate(ctx, ["fid", "kid", "is", "pr_inception"], kimg=2.0)
    from ganforge.metrics.core import append_metrics_json

    append_metrics_json(records, tmp_path / "metrics.json", {"checkpoint": None, "kimg": 2.0})
    saved = json.loads((tmp_path / "metrics.json").read_text())[0]["results"]
    assert [r["metric"] for r in saved] == ["fid", "kid", "is", "precision_inception", "recall_inception"]
    assert [r["metric"] for r in saved] == [v for m in ["fid", "kid", "is", "pr_inception"] for v in METRIC_VALUES[m]]
    for r in saved:
        assert PROTOCOL_FIELDS <= set(r)
        assert "no antialiasing" in r["resize"] and r["n_fake"] == 300 and r["n_real"] == 400
        assert np.isfinite(r["value"])
    assert saved[0]["value"] > 0
    assert saved[1]["subsets"] == 100 and saved[1]["subset_size"] == 300


def test_inception_features_of_the_real_set_are_cached_and_a_damaged_entry_computed_again(digits, monkeypatch,
                                                                                         stats_cache, tmp_path):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    name = _register_stand_in()
    extractor = FEATURE_EXTRACTORS_REGISTRY[name]
    seen = []
    forward = extractor.forward
    monkeypatch.setattr(extractor, "forward", lambda self, x: (seen.append(len(x)), forward(self, x))[1])
    real = ImageSet(digits.images[:400], "mnist5k", "train", cache_key="mnist5k-train-32px-1ch")
    fake = ImageSet(digits.images[1000:1300], "subset", "some300")

    def scores() -> list[float]:
        seen.clear()
        ctx = EvalContext(fake, real, inception_extractor=name)
        return [r["value"] for r in evaluate(ctx, ["fid", "kid", "pr_inception"])]

    first = scores()
    assert sum(seen) == 700  # both sets
    entries = sorted((stats_cache / "stats" / "inception").glob(f"mnist5k-train-32px-1ch-{name}-builtin-n400-*.pt"))
    assert entries, "nothing cached"
    assert scores() == first and sum(seen) == 300  # the fakes alone: the real features come from the cache
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # cut off, as by a full disk
    assert scores() == first and sum(seen) == 700
    assert scores() == first and sum(seen) == 300  # written whole again
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("in the cache's way")
    assert scores() == first and sum(seen) == 700  # no cache to keep them in: computed each time, same values


def test_missing_inception_weights_name_the_file(digits, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    fake = ImageSet(digits.images[:20], "x", "y")
    with pytest.raises(UserError, match="weights-inception-2015-12-05-6726825d.pth"):
        evaluate(EvalContext(fake, ImageSet(digits.images[20:40], "r", "s")), ["fid"])


def test_knn_metrics_use_a_seeded_real_subset_of_a_large_set(digits, monkeypatch):
    from ganforge.metrics import core, formulas

    monkeypatch.setattr(core, "KNN_MAX_REAL", 60)
    fake, real = ImageSet(digits.images[:40], "x", "y"), ImageSet(digits.images[100:300], "r", "s")
    by_seed = {}
    for seed in (0, 0, 1):
        ctx = EvalContext(fake, real, seed=seed)
        records = {r["metric"]: r for r in evaluate(ctx, ["pr", "dc", "copies"])}
        assert records["precision"]["n_real"] == 60 and records["coverage"]["n_real"] == 60
        subset = f"60 of 200, seed {seed}"
        assert records["precision"]["real_subset"] == records["authenticity"]["real_subset"] == subset
        values = (records["precision"]["value"], records["recall"]["value"], records["coverage"]["value"])
        assert by_seed.setdefault(seed, values) == values  # the same seed, the same subset
        pick = np.sort(np.random.default_rng(seed).choice(200, 60, replace=False))
        expected = formulas.precision_recall(ctx.real_digits[0][pick], ctx.fake_digits[0], k=3)
        assert abs(records["precision"]["value"] - expected[0]) < 1e-12
        assert abs(records["recall"]["value"] - expected[1]) < 1e-12
        authentic, _ = formulas.authenticity(real.images[torch.from_numpy(pick)], fake.images, max_shift=2)
        assert abs(records["authenticity"]["value"] - authentic) < 1e-12
    assert by_seed[0] != by_seed[1]
    small = {r["metric"]: r for r in evaluate(EvalContext(fake, ImageSet(digits.images[:50], "r", "s")), ["pr"])}
    assert small["precision"]["n_real"] == 50 and "real_subset" not in small["precision"]  # under the cap: all


def test_knn_metrics_need_more_images_than_neighbours(digits):
    real = ImageSet(digits.images[100:200], "r", "s")
    with pytest.raises(UserError, match="needs at least 4 generated images, got 3"):
        evaluate(EvalContext(ImageSet(digits.images[:3], "x", "y"), real), ["pr"])
    with pytest.raises(UserError, match="needs at least 6 real images, got 5"):
        evaluate(EvalContext(ImageSet(digits.images[:30], "x", "y"), ImageSet(digits.images[:5], "r", "s")), ["dc"])


class _RunsCode:
    """Unpickling this would create a file: a stand-in for a weights file that carries code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _inception_like(**shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    base = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "fc.weight": (1008, 2048)}
    return {key: torch.zeros(shape) for key, shape in {**base, **shapes}.items()}


def test_bad_inception_weights_are_refused_before_torch_fidelity_unpickles_them(tmp_path, digits):
    from ganforge.metrics.inception import inception_weights

    files = {
        "text": b"not weights at all\n",
        "list": [torch.zeros(2)],
        "foreign": {"conv.weight": torch.zeros(3)},
        "head1000": _inception_like(**{"fc.weight": (1000, 2048)}),
        "code": {"w": _RunsCode(tmp_path / "ran")},
    }
    expected = {"text": "cannot be read as PyTorch weights", "list": "hold a list, not a state dict",
                "foreign": "Conv2d_1a_3x3.conv.weight is missing", "head1000": r"is shaped \[1000, 2048\]",
                "code": "hold Python objects besides tensors"}
    for name, content in files.items():
        path = tmp_path / f"{name}.pth"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        with pytest.raises(UserError, match=expected[name]):
            inception_weights(str(path))
    assert not (tmp_path / "ran").exists()  # the pickled call never ran

    whole = tmp_path / "whole.pth"
    torch.save(_inception_like(), whole)
    assert inception_weights(str(whole)) == whole  # the right shapes pass this check ...
    from ganforge.metrics.inception import INCEPTION_FILE

    with pytest.raises(UserError, match=f"is a folder without {INCEPTION_FILE} in it; give the weights file"):
        inception_weights(str(tmp_path))
    with pytest.raises(UserError, match=f"gone.pth does not exist; give the file {INCEPTION_FILE}"):
        inception_weights(str(tmp_path / "gone.pth"))
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / INCEPTION_FILE).write_bytes(whole.read_bytes())
    assert inception_weights(str(tmp_path / "hub")) == tmp_path / "hub" / INCEPTION_FILE  # the folder holding it
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[:5000])
    with pytest.raises(UserError, match="cannot be read as PyTorch weights"):
        inception_weights(str(truncated))
    fake, real = ImageSet(digits.images[:20], "x", "y"), ImageSet(digits.images[20:40], "r", "s")
    with pytest.raises(UserError, match="do not fit the FID Inception-v3"):  # ... torch-fidelity finds the rest
        evaluate(EvalContext(fake, real, inception_weights=str(whole)), ["fid"])


def test_download_inception_fetches_checks_and_places_the_weights(tmp_path, monkeypatch, capsys):
    from ganforge.metrics.inception import INCEPTION_FILE, inception_weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    mirror = tmp_path / "mirror.pth"
    torch.save(_inception_like(), mirror)
    with pytest.raises(UserError, match="run `ganforge download inception`"):  # what the metrics say without it
        inception_weights(None)
    assert main(["download", "inception", "--url", mirror.as_uri()]) == 0
    cached = tmp_path / "hub" / "checkpoints" / INCEPTION_FILE
    assert cached.read_bytes() == mirror.read_bytes() and inception_weights(None) == cached
    assert f"wrote {cached}" in capsys.readouterr().out
    mirror.write_bytes(b"<html>moved</html>")  # a mirror's error page
    assert main(["download", "inception", "--url", mirror.as_uri()]) == 0  # there and whole: not fetched again
    assert "already there" in capsys.readouterr().out and inception_weights(None) == cached

    cached.write_bytes(b"damaged")  # a damaged copy is fetched again, and a wrong file at the URL refused
    assert main(["download", "inception", "--url", mirror.as_uri()]) == 2
    err = capsys.readouterr().err
    assert f"Inception weights downloaded from {mirror.as_uri()} cannot be read as PyTorch weights" in err
    assert cached.read_bytes() == b"damaged" and sorted(p.name for p in cached.parent.iterdir()) == [INCEPTION_FILE]
    torch.save(_inception_like(), mirror)
    assert main(["download", "inception", "--url", mirror.as_uri()]) == 0
    assert cached.read_bytes() == mirror.read_bytes()

    folder = tmp_path / "weights"  # --out: a file, or a folder given with its slash
    assert main(["download", "inception", "--url", mirror.as_uri(), "--out", f"{folder}/"]) == 0
    assert (folder / INCEPTION_FILE).is_file()
    assert f"--inception-weights {folder / INCEPTION_FILE}" in capsys.readouterr().out
    gone = tmp_path / "gone.pth"
    assert main(["download", "inception", "--url", gone.as_uri(), "--out", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not download {gone.as_uri()}: ") and len(err.strip().splitlines()) == 1
    assert not any(p.name.startswith("w.pth") for p in tmp_path.iterdir())  # no partial file left

    notes = tmp_path / "notes.txt"  # a file of the user's under another name is not replaced
    notes.write_text("mine")
    assert main(["download", "inception", "--url", mirror.as_uri(), "--out", str(notes)]) == 2
    assert f"error: {notes} exists and is not the FID Inception weights; choose another --out" in \
        capsys.readouterr().err
    assert notes.read_text() == "mine"
    assert main(["download", "inception", "--url", mirror.as_uri(), "--out", str(notes / "w.pth")]) == 2
    assert f"{notes} is a file where a folder is needed; pass --out PATH" in capsys.readouterr().err


def test_eval_cli_refuses_bad_inception_weights_in_one_line(tmp_path, image_folder, capsys):
    weights = tmp_path / "inception.pth"
    torch.save({"w": _RunsCode(tmp_path / "ran")}, weights)
    code = main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{image_folder}",
                 "--metrics", "fid", "--inception-weights", str(weights)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "besides tensors" in err and not (tmp_path / "ran").exists()


def test_training_finds_its_inception_weights_before_the_first_step(tmp_path, image_folder, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no cached weights
    out = tmp_path / "runs"
    tick_fid = tiny_overrides(image_folder, **{"eval.every_kimg": 0.032, "eval.metrics": "[fid]", "eval.n": 16})
    args = ["train", "--out", str(out), *[a for item in tick_fid for a in ("--set", item)]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--set eval.inception_weights=PATH" in err and not out.exists()  # no run, nor its folder, half-begun
    weights = tmp_path / "inception.pth"
    torch.save(_inception_like(), weights)  # shaped right, but not the whole net: torch-fidelity finds that
    assert main([*args, "--set", f"eval.inception_weights={weights}"]) == 2
    assert f"Inception weights {weights} do not fit" in capsys.readouterr().err  # the configured file was used
    # and `ganforge eval` of a run reads the run's own setting
    no_ticks = tiny_overrides(image_folder, **{"eval.inception_weights": f'"{weights}"'})
    assert main(["train", "--out", str(out), *[a for item in no_ticks for a in ("--set", item)]]) == 0
    run_dir = next(p for p in out.iterdir() if (p / "checkpoints").is_dir())
    assert main(["eval", str(run_dir), "--n", "16", "--metrics", "fid"]) == 2
    assert f"Inception weights {weights} do not fit" in capsys.readouterr().err


def test_eval_cli_on_two_folders(tmp_path, image_folder, capsys):
    out = tmp_path / "results" / "m.json"  # its folder is made
    code = main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{image_folder}",
                 "--metrics", "fd_digits,classes", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "fd_digits" in text
    assert "note: fd_digits, classes read images through ganforge's MNIST digit classifier" in text
    # a folder of a few dozen images: the Frechet distance is mostly sampling bias, and eval says so
    results = json.loads(out.read_text())[0]["results"]
    assert f"note: fd_digits from {results[0]['n_fake']} images is biased upward by sampling alone" in text
    assert abs(results[0]["value"]) < 1e-6
    assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{image_folder}",
                 "--metrics", "kid_digits"]) == 0
    assert "biased upward" not in capsys.readouterr().out


def test_eval_mirror_counts_mirrored_copies_of_the_real_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(12):  # faint noise (each image its own) and a bright bar on the left: not symmetric
        img = rng.integers(0, 60, size=(16, 16), dtype=np.uint8)
        img[3:13, 1:4] = 230
        for folder, picture in (("real", img), ("fake", img[:, ::-1])):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(np.ascontiguousarray(picture), mode="L").save(tmp_path / folder / f"{i:02d}.png")
    argv = ["eval", "--real", f"folder:{tmp_path / 'real'}", "--fake", f"folder:{tmp_path / 'fake'}",
            "--metrics", "copies"]
    scores = {}
    for flags in ([], ["--mirror"]):
        out = tmp_path / f"m{len(flags)}.json"
        assert main([*argv, *flags, "--out", str(out)]) == 0
        records = json.loads(out.read_text())[0]["results"]
        assert records[0].get("mirror") is (True if flags else None)
        scores[bool(flags)] = records[0]["value"]
    capsys.readouterr()
    assert scores[True] == 0.0 and scores[False] == 1.0  # mirrored: copies; upright, the bars 12 px apart
    assert main(["eval", str(tmp_path / "run"), "--mirror"]) == 2
    assert "--mirror is for --real/--fake; a run's copies take its mirror images" in capsys.readouterr().err


def test_the_small_sample_note_names_each_frechet_distance_and_its_unbiased_kin():
    from ganforge.metrics.core import small_sample_note

    def record(metric, n_fake, n_real=5000):
        return {"metric": metric, "n_fake": n_fake, "n_real": n_real}

    assert small_sample_note([record("fd_digits", 1000), record("kid_digits", 10)]) is None
    assert small_sample_note([record("modes", 26000, 0)]) is None
    note = small_sample_note([record("fd_digits", 999)])
    assert note.startswith("fd_digits from 999 images is biased upward") and note.endswith("read kid_digits, "
                                                                                            "unbiased at any n")
    note = small_sample_note([record("fid", 5000, 200), record("fd_digits", 300)])
    assert note.startswith("fid and fd_digits from 200 images are biased") and "read kid or kid_digits" in note
    assert small_sample_note([record("swd", 240, 240)]) is None  # swd's own note says what its floor does

    from ganforge.metrics.core import swd_note

    assert swd_note([record("swd", 1000, 1000), record("fd_digits", 10)]) is None
    assert swd_note([record("swd", 240, 240)]).startswith("swd compared 240 images a set")


def test_eval_reads_samples_from_an_npz_like_the_sample_command_writes(tmp_path, image_folder, capsys):
    data = load_dataset(DataConfig(name=f"folder:{image_folder}", img_size=16))
    uint8 = data.images.add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [N, H, W, 1]
    np.savez(tmp_path / "samples.npz", uint8, labels=data.labels.numpy())
    np.savez(tmp_path / "grey.npz", uint8[..., 0])  # [N, H, W] is read as one channel
    np.savez(tmp_path / "nchw.npz", uint8.transpose(0, 3, 1, 2))  # [N, C, H, W], as PyTorch code keeps images
    np.savez(tmp_path / "int64.npz", uint8.astype(np.int64))  # pixels 0-255 in a wider integer type
    np.savez(tmp_path / "named.npz", images=uint8, mean=np.zeros(3))  # the one array of images, under any name
    for fake in ("samples.npz", "grey.npz", "nchw.npz", "int64.npz", "named.npz"):
        out = tmp_path / f"{fake}.json"
        assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{tmp_path / fake}",
                     "--img-size", "16", "--metrics", "fd_digits", "--out", str(out)]) == 0
        assert abs(json.loads(out.read_text())[0]["results"][0]["value"]) < 1e-6  # the same images
    from ganforge.data import load_raw

    raw = load_raw(DataConfig(name=f"folder:{tmp_path / 'samples.npz'}"))
    assert torch.equal(raw.labels, data.labels) and raw.classes == ["0", "1"]
    np.savez(tmp_path / "guided.npz", uint8, data.labels.numpy())  # labels as arr_1, as guided-diffusion saves them
    assert torch.equal(load_raw(DataConfig(name=f"folder:{tmp_path / 'guided.npz'}")).labels, data.labels)
    np.savez(tmp_path / "stats.npz", uint8, np.zeros(5))  # an arr_1 of another length is no labels
    assert load_raw(DataConfig(name=f"folder:{tmp_path / 'stats.npz'}")).classes == []
    capsys.readouterr()
    np.savez(tmp_path / "floats.npz", uint8[..., 0].astype(np.float32) / 255)
    np.savez(tmp_path / "pair.npz", real=uint8, fake=uint8)
    np.savez(tmp_path / "vectors.npz", features=np.zeros((32, 8)))
    np.savez(tmp_path / "wide.npz", uint8.astype(np.int64) * 4)  # not 0-255: no guess at the range
    np.savez(tmp_path / "two.npz", np.concatenate([uint8, uint8], axis=3))
    for name, message in (("floats.npz", "arr_0 is float32 [32, 16, 16]; ganforge reads pixels 0-255 (uint8)"),
                          ("floats.npz", "np.uint8(np.clip(x * 255, 0, 255).round()) for [0, 1]"),
                          ("wide.npz", "arr_0 is int64 [32, 16, 16, 1]; ganforge reads pixels 0-255"),
                          ("two.npz", "arr_0 is uint8 [32, 16, 16, 2]; expected uint8 images [N, H, W, C]"),
                          ("pair.npz", "holds several arrays that could be images (it has: real [32, 16, 16, 1], "
                                       "fake [32, 16, 16, 1]); save the images as arr_0"),
                          ("vectors.npz", "holds no array of images [N, H, W, C] (it has: features [32, 8])")):
        assert main(["eval", "--real", "mnist5k", "--fake", f"folder:{tmp_path / name}"]) == 2
        assert message in capsys.readouterr().err
    assert main(["eval", "--real", "mnist5k", "--fake", str(tmp_path / "samples.npz")]) == 2
    assert f"for the file {tmp_path / 'samples.npz'} give folder:" in capsys.readouterr().err


def test_a_folders_cached_features_follow_its_images(tmp_path, image_folder):
    from PIL import Image

    cfg = DataConfig(name=f"folder:{image_folder}", img_size=16)
    fake = ImageSet(load_dataset(cfg).images, "fake", "all")
    before = evaluate(EvalContext(fake, real_image_set(cfg)), ["fd_digits"])[0]["value"]
    Image.new("L", (16, 16), 255).save(image_folder / "class0" / "000.png")  # same path and count, new image
    after = evaluate(EvalContext(fake, real_image_set(cfg)), ["fd_digits"])[0]["value"]
    assert abs(before) < 1e-6 and after > 1e-3  # the real features were computed again, not read from the cache


def test_the_reference_fingerprint_tells_apart_what_the_reference_name_does_not(image_folder):
    """One name and split, other pixels: a changed folder, another size or channel count. compare reads the
    fingerprint to keep such values apart."""

    def protocol(**data: object) -> dict:
        fake = ImageSet(torch.zeros(4, 1, 16, 16), "fake", "all")
        real = real_image_set(DataConfig(name=f"folder:{image_folder}", **{"img_size": 16, **data}))
        return evaluate(EvalContext(fake, real), ["classes"])[0]

    first = protocol()
    assert first["reference"] == f"folder:{image_folder}/train"
    assert protocol()["reference_fingerprint"] == first["reference_fingerprint"] is not None  # same pixels
    for changed in (protocol(img_size=8), protocol(channels=3)):
        assert changed["reference"] == first["reference"]
        assert changed["reference_fingerprint"] != first["reference_fingerprint"]
    Image.new("L", (16, 16), 255).save(image_folder / "class0" / "000.png")
    assert protocol()["reference_fingerprint"] != first["reference_fingerprint"]


def test_a_run_on_a_subset_is_scored_against_it_or_against_all_of_its_data_set(tmp_path, image_folder, capsys):
    cfg = load_config(overrides=tiny_overrides(image_folder, **{"data.max_images": 8}))
    run_dir = train(cfg, out=tmp_path / "runs", log=lambda msg: None)
    own = evaluate_run(run_dir, ["fd_digits"], n=16)[0]
    assert own["n_real"] == 8 and own["reference"] == f"folder:{image_folder}/train, 8 of 32"
    # metric names as --metrics spells them: a string is one name or a comma-separated list
    assert evaluate_run(run_dir, "fd_digits", n=16, write=False) == [own]
    assert [r["metric"] for r in evaluate_run(run_dir, "fd_digits, classes", n=16, write=False)][:2] == [
        "fd_digits", "classes_covered"]
    for n, said in ((0, "n must be at least 2 images to evaluate, got 0"),
                    (1e4, "n must be a whole number, got 10000.0")):
        with pytest.raises(UserError) as info:
            evaluate_run(run_dir, "fd_digits", n=n, write=False)
        assert str(info.value) == said
    assert main(["eval", str(run_dir), "--n", "16", "--metrics", "fd_digits", "--real", f"folder:{image_folder}"]) == 0
    saved = json.loads((run_dir / "metrics.json").read_text())[-1]["results"][0]
    assert saved["n_real"] == 32 and saved["reference"] == f"folder:{image_folder}/train"
    assert abs(saved["value"] - own["value"]) > 1e-6  # the same samples against other reals
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--real", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--fake", f"folder:{image_folder}"]) == 2
    assert "--real alone names another reference set" in capsys.readouterr().err


def test_digit_metrics_on_images_that_are_not_digits_get_a_note():
    from ganforge.metrics.core import digit_metrics_note

    assert digit_metrics_note("mnist5k", ["fd_digits", "pr"]) is None
    assert digit_metrics_note("stacked-mnist5k", ["modes"]) is None
    stacked = digit_metrics_note("stacked-mnist5k", ["modes", "fd_digits"])
    assert stacked.startswith("fd_digits read") and "three digits, averaged" in stacked and "use modes" in stacked
    assert digit_metrics_note("cifar10", ["fid", "kid"]) is None  # Inception features: made for such images
    assert digit_metrics_note("folder:/data/faces", ["copies"]) is None  # pixels: the same on any images
    note = digit_metrics_note("cifar10", ["fid", "fd_digits", "copies", "pr"])
    assert note.startswith("fd_digits, pr read images") and "cifar10's images are not digits" in note
    assert "may not be digits" in digit_metrics_note("folder:/data/faces", ["fd_digits"])
    assert "needs no download, swd" in digit_metrics_note("folder:/data/faces", ["fd_digits"])
    assert digit_metrics_note("folder:/data/faces", ["swd", "copies"]) is None  # both read pixels


def test_eval_cli_n_takes_a_seeded_subset_of_the_fake_set(tmp_path, image_folder):
    outs = []
    for name in ("a.json", "b.json"):
        out = tmp_path / name
        assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{image_folder}",
                     "--metrics", "fd_digits", "--n", "10", "--out", str(out)]) == 0
        outs.append(json.loads(out.read_text())[0]["results"][0])
    assert outs[0]["n_fake"] == 10 and outs[0]["n_real"] == 32
    assert outs[0]["value"] > 1e-3 and abs(outs[0]["value"] - outs[1]["value"]) < 1e-9  # a subset, the same one
    assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{image_folder}", "--n", "1"]) == 2


def test_eval_cli_of_two_image_sets_adds_swd_where_they_may_not_be_digits(tmp_path, image_folder, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{image_folder}", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert [r["metric"] for r in json.loads(out.read_text())[0]["results"]][-1] == "swd"
    assert "note: fd_digits, kid_digits" in printed and "swd" not in printed.split("note: fd_digits")[1].split(
        "read images")[0]  # the note names the digit metrics, not the one that reads pixels
    assert main(["eval", "--real", "mnist5k", "--fake", f"folder:{image_folder}", "--metrics", "fd_digits"]) == 0
    assert main(["eval", "--real", "mnist5k", "--fake", f"folder:{image_folder}", "--out", str(out)]) == 0
    assert "swd" not in [r["metric"] for r in json.loads(out.read_text())[-1]["results"]]  # digits: as before
    capsys.readouterr()
    assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{image_folder}", "--metrics",
                 "fd_digits,nope"]) == 2
    assert "note:" not in capsys.readouterr().out  # an unknown metric is refused before any note


def test_eval_cli_says_that_modes_keeps_its_protocol_count(tmp_path, image_folder, tiny_cfg, monkeypatch, capsys):
    import ganforge.metrics

    run = train(tiny_cfg(), out=tmp_path / "runs", log=lambda msg: None)
    assert main(["eval", str(run), "--metrics", "modes", "--n", "10"]) == 2  # grey: nothing for modes to score
    captured = capsys.readouterr()
    assert "needs 3-channel Stacked MNIST samples" in captured.err and "note:" not in captured.out
    with monkeypatch.context() as patch:
        patch.setattr(ganforge.metrics, "evaluate_run", lambda *args, **kwargs: [])
        assert main(["eval", str(run), "--metrics", "modes", "--n", "10"]) == 0
    assert "note: modes always scores the protocol's 26,000 samples of a generator; --n 10" in capsys.readouterr().out
    assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{image_folder}", "--channels", "3",
                 "--metrics", "modes", "--n", "10"]) == 0
    assert "note: modes always" not in capsys.readouterr().out  # a fixed set: --n picks the subset modes scores


def test_eval_cli_errors(tmp_path, capsys):
    assert main(["eval", "--real", "folder:/nope"]) == 2
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert main(["eval", "--real", "mnist5k", "--fake", "mnist5k", "--metrics", "fdd"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'fdd'" in err
    # images that are not digits get a note about the digit metrics, but not before the error of a misspelt one
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    assert main(["eval", "--real", f"folder:{folder}", "--fake", f"folder:{folder}", "--metrics", "fdd"]) == 2
    out, err = capsys.readouterr()
    assert "unknown metric 'fdd'" in err and "note:" not in out


def _append_many(path: str, tag: int, count: int) -> None:
    from ganforge.metrics.core import append_metrics_json

    for i in range(count):
        append_metrics_json([{"metric": "m", "value": float(i)}], Path(path), {"writer": tag})


def test_concurrent_appends_to_metrics_json_lose_nothing(tmp_path):
    """A training run's tick evaluation and a `ganforge eval` of the same run may append at once."""
    import multiprocessing

    path = tmp_path / "metrics.json"
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_append_many, args=(str(path), tag, 25)) for tag in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    history = json.loads(path.read_text())
    assert sorted((e["writer"], e["results"][0]["value"]) for e in history) == \
        sorted((tag, float(i)) for tag in range(3) for i in range(25))


def test_default_metrics_follow_the_run():
    from ganforge.config import load_config
    from ganforge.metrics.core import OFFLINE_DEFAULT, default_metrics

    assert default_metrics(load_config(preset="stacked-dcgan")) == ["modes"]
    assert default_metrics(load_config(preset="mnist-dcgan")) == OFFLINE_DEFAULT
    conditional = default_metrics(load_config(preset="mnist-cgan"))
    assert conditional[: len(OFFLINE_DEFAULT)] == OFFLINE_DEFAULT and {"class_acc", "fd_digits_per_class"} <= set(
        conditional)
    # images that may not be digits also get swd, which reads any images, where its pyramid fits
    for data in ("cifar10", "fashion-mnist", "folder:/data/faces"):
        assert default_metrics(load_config(preset="default", overrides=[f"data.name={data}"])) == [
            *OFFLINE_DEFAULT, "swd"]
    assert default_metrics(load_config(preset="default", overrides=["data.name=cifar10", "data.img_size=12"])) == \
        OFFLINE_DEFAULT
    assert "swd" in default_metrics(load_config(preset="mnist-cgan", overrides=["data.name=fashion-mnist"]))


def test_stacked_digits_in_grey_are_refused_with_the_cure_that_applies(tmp_path, image_folder, capsys):
    """stacked-mnist5k's loader says set data.channels=3, which is no flag of eval: eval names its own."""
    assert main(["eval", "--real", "stacked-mnist5k", "--fake", f"folder:{image_folder}", "--channels", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: stacked-mnist5k has three channels, a digit in each, and --channels 1 asks for grey; compare in "
        "colour: --channels 3, or leave --channels out")
    run_dir = train(load_config(overrides=tiny_overrides(image_folder, **{"train.kimg": 0.016})),
                    out=tmp_path / "runs", log=lambda msg: None)
    assert main(["eval", str(run_dir), "--real", "stacked-mnist5k", "--n", "20", "--metrics", "fd_digits"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --real stacked-mnist5k has three channels, a digit in each, and this run's images are grey "
        "(data.channels=1): score it against a grey set such as mnist5k")


def test_eval_of_two_image_sets_compares_them_as_they_are(tmp_path, image_folder, capsys):
    """Without --img-size and --channels, two colour folders are compared in colour at the fakes' size (a
    FID of colour images measured on grey 28x28 copies would disagree with every paper)."""
    from ganforge.data import source_format

    colour = tmp_path / "colour"
    colour.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(colour / f"{i}.png")
    np.savez(tmp_path / "s.npz", rng.integers(0, 255, (5, 12, 12, 3), dtype=np.uint8))
    assert source_format(f"folder:{colour}") == (True, 20)  # cropped to the short side
    assert source_format(f"folder:{colour}", fit="pad") == (True, 24)
    assert source_format(f"folder:{image_folder}") == (False, 16)
    assert source_format(f"folder:{tmp_path / 's.npz'}") == (True, 12)
    np.savez(tmp_path / "nchw.npz", rng.integers(0, 255, (5, 3, 10, 10), dtype=np.uint8))
    assert source_format(f"folder:{tmp_path / 'nchw.npz'}") == (True, 10)
    assert source_format("cifar10") == (True, 32) and source_format("mnist5k") == (False, 28)
    assert source_format(f"folder:{tmp_path / 'nowhere'}") == (False, 0)
    out = tmp_path / "m.json"
    assert main(["eval", "--real", f"folder:{colour}", "--fake", f"folder:{colour}", "--metrics", "fd_digits",
                 "--out", str(out)]) == 0
    assert "comparing at 20x20 in colour, as the images are" in capsys.readouterr().out
    saved = json.loads(out.read_text())[-1]
    assert (saved["img_size"], saved["channels"]) == (20, 3)
    assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{colour}", "--metrics", "fd_digits",
                 "--channels", "1", "--out", str(out)]) == 0
    assert "comparing at 20x20, as the images are" in capsys.readouterr().out
    assert (json.loads(out.read_text())[-1]["img_size"], json.loads(out.read_text())[-1]["channels"]) == (20, 1)
    assert main(["eval", "--real", f"folder:{colour}", "--fake", f"folder:{colour}", "--img-size", "16",
                 "--channels", "3", "--metrics", "fd_digits"]) == 0
    assert "comparing" not in capsys.readouterr().out  # both chosen: nothing to say
    for argv, message in ((["--channels", "2"], "--channels must be 1 or 3, got 2"),
                          (["--img-size", "4"], "--img-size must be between 8 and 1024, got 4")):
        assert main(["eval", "--real", f"folder:{colour}", "--fake", f"folder:{colour}", *argv]) == 2
        assert message in capsys.readouterr().err
    (colour / "broken.png").write_bytes(b"not a png")
    assert main(["eval", "--real", f"folder:{image_folder}", "--fake", f"folder:{colour}"]) == 2
    said = capsys.readouterr()  # the error alone: the size chosen and the not-digits note come with results
    assert said.out == "" and said.err.count("\n") == 1 and "broken.png" in said.err
    assert main(["eval", "--real", "mnist5k", "--fake", str(colour)]) == 2
    assert f"for the folder {colour} give folder:{colour}" in capsys.readouterr().err


def test_a_run_is_not_evaluated_at_another_size(tmp_path, tiny_cfg, capsys):
    run = train(tiny_cfg(), out=tmp_path / "runs", log=lambda msg: None)
    assert main(["eval", str(run), "--img-size", "32"]) == 2
    assert "--img-size and --channels are for --real/--fake" in capsys.readouterr().err
    assert main(["eval", str(run), "--data-root", str(tmp_path)]) == 2  # a folder run has no data root
    assert "--data-root says where a torchvision data set" in capsys.readouterr().err
    assert main(["eval", str(run), "--real", "mnist", "--data-root", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err
    assert f"MNIST not found under {tmp_path / 'elsewhere' / 'MNIST' / 'raw'}" in err
    assert "tell eval where it is with --data-root DIR" in err and "--set data.root" not in err  # eval's cure


def test_a_run_on_a_torchvision_set_is_evaluated_where_its_files_are_now(tmp_path, tiny_cfg, capsys):
    from .test_data import write_idx

    write_idx(tmp_path / "before", "MNIST", n=40)
    run = train(tiny_cfg(**{"data.name": '"mnist"', "data.root": f'"{tmp_path / "before"}"'}),
                out=tmp_path / "runs", log=lambda msg: None)
    (tmp_path / "before").rename(tmp_path / "after")
    assert main(["eval", str(run), "--n", "20", "--metrics", "fd_digits"]) == 2
    assert "tell eval where it is with --data-root DIR" in capsys.readouterr().err
    assert main(["eval", str(run), "--n", "20", "--metrics", "fd_digits", "--data-root", str(tmp_path / "after")]) == 0
    assert "fd_digits" in capsys.readouterr().out


def test_eval_no_ema_scores_g_itself_and_marks_the_results(tmp_path, tiny_cfg, capsys):
    from ganforge.compare import best_runs, compare_runs, protocol_notes
    from ganforge.html_report import REPORT_NAME

    run = train(tiny_cfg(**{"train.ema_kimg": 0.01}), out=tmp_path / "runs", log=lambda msg: None)
    ema = evaluate_run(run, ["fd_digits"], n=16)[0]
    raw = evaluate_run(run, ["fd_digits"], n=16, ema=False)[0]
    assert "generator" not in ema and raw["generator"] == "G (not G_ema)"
    assert abs(raw["value"] - ema["value"]) > 1e-6  # other weights, other samples
    assert main(["eval", str(run), "--n", "16", "--metrics", "fd_digits", "--no-ema"]) == 0
    saved = json.loads((run / "metrics.json").read_text())[-1]["results"][0]
    assert saved["generator"] == "G (not G_ema)" and abs(saved["value"] - raw["value"]) < 1e-9
    page = (run / REPORT_NAME).read_text()  # G's result is a row of its own: G_ema's stays in view
    assert "<td class=l>fd_digits (G, not G_ema)</td>" in page and "<td class=l>fd_digits</td>" in page
    other = train(tiny_cfg(**{"train.ema_kimg": 0.01, "train.seed": 1}), out=tmp_path / "runs", log=lambda msg: None)
    evaluate_run(other, ["fd_digits"], n=16)
    views = compare_runs([run, other])
    assert abs(views[0].latest["fd_digits"]["value"] - ema["value"]) < 1e-9
    assert "fd_digits (G, not G_ema)" in views[0].latest and "fd_digits (G, not G_ema)" not in views[1].latest
    assert best_runs(views, "fd_digits") and not protocol_notes(views)  # G_ema against G_ema: ranked
    assert main(["eval", "--real", "mnist5k", "--fake", "mnist5k", "--no-ema"]) == 2
    assert "--fake images are evaluated as they are" in capsys.readouterr().err
    plain = train(tiny_cfg(**{"train.ema_kimg": 0}), out=tmp_path / "runs", log=lambda msg: None)
    assert main(["eval", str(plain), "--n", "16", "--metrics", "fd_digits", "--no-ema"]) == 0
    assert "holds no average of G" in capsys.readouterr().out
    assert "generator" not in json.loads((plain / "metrics.json").read_text())[-1]["results"][0]


def test_eval_truncation_scores_truncated_samples_and_keeps_them_apart(tmp_path, tiny_cfg, capsys):
    from ganforge.compare import best_runs, compare_runs, eval_flags, protocol_notes
    from ganforge.html_report import REPORT_NAME

    run = train(tiny_cfg(), out=tmp_path / "runs", log=lambda msg: None)
    plain = evaluate_run(run, ["fd_digits"], n=16)[0]
    cut = evaluate_run(run, ["fd_digits"], n=16, truncation=0.5)[0]
    assert "truncation" not in plain and cut["truncation"] == 0.5
    assert abs(cut["value"] - plain["value"]) > 1e-6  # other samples
    assert main(["eval", str(run), "--n", "16", "--metrics", "fd_digits", "--truncation", "0.5"]) == 0
    assert "note: samples drawn with z truncated to [-0.5, 0.5]" in capsys.readouterr().out
    saved = json.loads((run / "metrics.json").read_text())[-1]["results"][0]
    assert saved["truncation"] == 0.5 and abs(saved["value"] - cut["value"]) < 1e-9
    page = (run / REPORT_NAME).read_text()  # a row of its own beside the untruncated value
    assert "<td class=l>fd_digits (truncation 0.5)</td>" in page and "<td class=l>fd_digits</td>" in page
    other = train(tiny_cfg(**{"train.seed": 1}), out=tmp_path / "runs", log=lambda msg: None)
    evaluate_run(other, ["fd_digits"], n=16, truncation=0.5)
    evaluate_run(other, ["fd_digits"], n=24)
    views = compare_runs([run, other])
    assert abs(views[0].latest["fd_digits"]["value"] - plain["value"]) < 1e-9  # the newest untruncated one
    assert best_runs(views, "fd_digits (truncation 0.5)")  # measured alike: ranked
    notes = protocol_notes(views)  # n differs for the untruncated values only
    assert len(notes) == 1 and notes[0].startswith("fd_digits: n_fake differs") and "--truncation" not in notes[0]
    assert eval_flags({"metric": "fd_digits", "generator": "G (not G_ema)", "truncation": 0.5}) == \
        " --no-ema --truncation 0.5"
    evaluate_run(other, ["fd_digits"], n=24, truncation=0.5)
    plain_note, note = protocol_notes(compare_runs([run, other]))  # one note per marking, each with its command
    assert plain_note.startswith("fd_digits: n_fake differs") and "--truncation" not in plain_note
    assert note.startswith("fd_digits (truncation 0.5): n_fake differs") and "--truncation 0.5` on each" in note
    for argv, needle in ((["--truncation", "0.5", "--real", "mnist5k", "--fake", "mnist5k"],
                          "--fake images are evaluated as they are"),):
        assert main(["eval", *argv]) == 2
        assert needle in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(run), "--truncation", "0"])
    assert "argument --truncation: a threshold above 0" in capsys.readouterr().err
    with pytest.raises(UserError, match="truncation must be a finite number above 0"):
        evaluate_run(run, ["fd_digits"], n=16, truncation=float("nan"))


def test_eval_ckpt_all_scores_every_kept_checkpoint_and_names_the_best(tmp_path, tiny_cfg, capsys, monkeypatch):
    from ganforge import checkpoint as ckpt_io
    from ganforge.compare import compare_runs

    run = train(tiny_cfg(**{"train.kimg": 0.048, "train.tick_kimg": 0.016, "train.keep_ckpts": 3}),
                out=tmp_path / "runs", log=lambda msg: None)
    kept = ckpt_io.list_checkpoints(run)
    assert len(kept) == 3
    capsys.readouterr()
    assert main(["eval", str(run), "--ckpt", "all", "--n", "16", "--metrics", "fd_digits"]) == 0
    out = capsys.readouterr().out
    history = json.loads((run / "metrics.json").read_text())
    assert [entry["checkpoint"] for entry in history] == [str(p) for p in kept]  # oldest first
    values = {Path(e["checkpoint"]).name: e["results"][0]["value"] for e in history}
    lowest = min(values, key=values.get)
    assert f"  {'fd_digits':<20} {values[lowest]:12.5g}  {lowest}\n" in out
    assert [k for k, _ in compare_runs([run])[0].curves["fd_digits"]] == [0.016, 0.032, 0.048]
    assert out.count("note: fd_digits from 16 images is biased upward") == 1  # once, not per checkpoint
    assert main(["sample", str(run), "--ckpt", "all", "--out", str(tmp_path / "g.png")]) == 2
    assert "--ckpt all is for ganforge eval" in capsys.readouterr().err
    # a checkpoint that a training run rotates out between listing and scoring is skipped
    listed = [run / ckpt_io.CKPT_DIR / ckpt_io.ckpt_name(8), *kept[-1:]]
    monkeypatch.setattr(ckpt_io, "list_checkpoints", lambda run_dir: listed)
    assert main(["eval", str(run), "--ckpt", "all", "--n", "16", "--metrics", "fd_digits"]) == 0
    skipped = f"{ckpt_io.ckpt_name(8)} was removed by the training run since it was listed; skipped"
    assert skipped in capsys.readouterr().out


def test_an_inception_score_of_fewer_images_than_splits_is_refused():
    images = torch.zeros(9, 1, 28, 28)
    with pytest.raises(UserError, match=r"is_digits scores 10 splits of the generated images, so it needs at least "
                                         r"10 generated images, got 9; raise --n"):
        evaluate(EvalContext(ImageSet(images, "fake", "all"), None), ["is_digits"])
    ten = ImageSet(torch.zeros(10, 1, 28, 28), "fake", "all")
    with pytest.raises(UserError, match="of the real images, so it needs at least 10 real images, got 9"):
        evaluate(EvalContext(ten, ImageSet(images, "real", "all")), ["is_digits"])
    assert abs(evaluate(EvalContext(ten, None), ["is_digits"])[0]["value"] - 1) < 1e-6  # 10 alike: IS 1


def test_distances_of_a_single_image_are_refused_not_a_numpy_error():
    one, two = ImageSet(torch.zeros(1, 1, 28, 28), "a", "all"), ImageSet(torch.rand(2, 1, 28, 28) * 2 - 1, "b", "all")
    for metric, why in (("fd_digits", "fits a covariance to each set"),
                        ("kid_digits", "compares pairs of different images within each set")):
        with pytest.raises(UserError, match=rf"^{metric} {why}, so it needs at least 2 generated images, got 1; "
                                            r"raise --n \(a --fake set: give more images\)$"):
            evaluate(EvalContext(one, two), [metric])
        with pytest.raises(UserError, match=r"at least 2 real images, got 1; use a larger reference set$"):
            evaluate(EvalContext(two, one), [metric])
        assert math.isfinite(evaluate(EvalContext(two, two), [metric])[0]["value"])


def test_best_checkpoints_follow_each_metrics_direction():
    from ganforge.metrics import best_checkpoints

    a, b, c = Path("ckpt-a.pt"), Path("ckpt-b.pt"), Path("ckpt-c.pt")

    def rec(metric: str, value: float) -> dict:
        return {"metric": metric, "value": value}

    results = [(a, [rec("fd_digits", 5.0), rec("recall", 0.2), rec("is_digits_real", 9.0)]),
               (b, None),  # rotated out while listed
               (c, [rec("fd_digits", float("nan")), rec("recall", 0.6), rec("is_digits_real", 9.5)])]
    best = best_checkpoints(results)
    assert best["fd_digits"] == (5.0, a)  # NaN never wins
    assert best["recall"] == (0.6, c)  # higher is better
    assert "is_digits_real" not in best  # the real set's score ranks no checkpoint
    assert best_checkpoints([(a, [rec("fd_digits", 3.0)]), (c, [rec("fd_digits", 3.0)])])["fd_digits"][1] == a


def test_modes_of_a_stacked_mnist_run_needs_no_mnist_files_at_hand(tmp_path, tiny_cfg, monkeypatch, capsys):
    """modes compares G's triples with the uniform distribution: the run's data set is not read, so a
    checkpoint on a machine without MNIST is scored; a metric that reads real digits still says where."""
    import shutil

    import ganforge.metrics.core

    from .test_data import write_idx

    monkeypatch.setattr(ganforge.metrics.core, "MODES_N", 1_000)  # the protocol's count, less the time

    write_idx(tmp_path / "data", "MNIST", n=40)
    run = train(tiny_cfg(**{"data.name": '"stacked-mnist"', "data.root": f'"{tmp_path / "data"}"',
                            "data.channels": 3, "data.img_size": 28}), out=tmp_path / "runs", log=lambda msg: None)
    shutil.rmtree(tmp_path / "data")
    assert main(["eval", str(run), "--n", "100"]) == 0  # a Stacked MNIST run's default: modes
    out = capsys.readouterr().out
    assert "modes_kl" in out and "uniform-1000" in out
    assert main(["eval", str(run), "--n", "20", "--metrics", "fd_digits"]) == 2
    assert "MNIST not found under" in capsys.readouterr().err


def test_modes_makes_neither_the_real_set_nor_n_fakes_it_does_not_score(tmp_path, monkeypatch):
    """modes draws its own samples and compares them with the uniform triples: at ticks and in eval, neither
    the copy of the training set nor the eval.n fakes that the feature metrics read is made for it."""
    import ganforge.metrics.core as core

    def refuse(*args, **kwargs):
        raise AssertionError("modes made a set that it does not score")

    monkeypatch.setattr(core, "MODES_N", 500)
    monkeypatch.setattr(core, "real_image_set", refuse)
    monkeypatch.setattr(core, "generated_labels", refuse)
    cfg = load_config(preset="stacked-dcgan-fast", overrides=[
        "model.z_dim=8", "model.g_width=8", "model.d_width=8", "train.batch_size=8", "train.kimg=0.064",
        "train.tick_kimg=0.032", "train.grid_size=4", 'train.device="cpu"', "eval.every_kimg=0.032",
        'eval.metrics=["modes"]', "eval.n=100"])
    run = train(cfg, out=tmp_path / "runs", log=lambda msg: None)
    ticks = [record for entry in json.loads((run / "metrics.json").read_text()) for record in entry["results"]]
    assert [r["n_fake"] for r in ticks if r["metric"] == "modes"] == [500, 500]
    records = evaluate_run(run, "modes", write=False)
    assert records[0]["metric"] == "modes" and records[0]["n_fake"] == 500 and records[0]["n_real"] == 0
    monkeypatch.undo()  # the feature metrics do read both
    assert evaluate_run(run, "fd_digits", n=100, write=False)[0]["n_real"] == 50_000
