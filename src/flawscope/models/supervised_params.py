"""The supervised models' hyperparameters: their meaning, defaults, checks and reading from older bundles.

Hyperparameters of :class:`~flawscope.models.supervised.SupervisedModel` (besides
:class:`~flawscope.models.base.ModelConfig`):

    width: decoder channels.
    context: 3x3 convolutions and a coarse context branch (else pointwise).
    epochs, train_batch, lr, weight_decay, patience, seg_weight, smooth, good_weight: see
        :class:`~flawscope.models.training.TrainConfig` (``good_weight``: 32 for the
        segmenter, chosen on validation images; 1 for the others).
    ensemble: trained heads from seeds ``seed``, ``seed + 1``, ..., their logits averaged
        inside the head (:mod:`flawscope.models.ensemble`); 1: a single head. 3 for the
        segmenter (chosen with its ``good_weight`` on validation images: averaging lowers
        the few good parts that one head scores high), 1 for the others.
    synthetic: probability that a good training image gets a synthetic feature anomaly.
    views: augmented views cached per training image (albumentations, :data:`augment`).
    augment: albumentations transforms and their arguments (``None``: the defaults).
    rare_below: classes with fewer training images get synthetic pasted defects up to this.
    validation: share of the training groups held out for early stopping and temperature.
    anomaly: adds a good-parts anomaly head on the same features (a station): ``"padim"`` (a
        Gaussian per grid position) or ``"patchcore"`` (distance to the nearest of a coreset of
        ``anomaly_bank`` good patches, searched exactly in the graph; position-free); None: none.
        Both give the same ``patch_scores``, which the fused score and the verdict read alike
        (:mod:`flawscope.models.station`).
    anomaly_bank: with ``anomaly="patchcore"``, the patches its coreset keeps (a whole number
        >= 1); the graph's search costs about ``anomaly_bank`` x (channels + 1) multiply-adds per
        grid cell. Read by no other head.
    threads: torch threads while training (``None``: 1 on a busy machine, else all cores).
    device: ``"cpu"`` (the default), or ``"cuda"`` / ``"cuda:N"``: the feature extraction and
        the heads' training run on that GPU (:mod:`flawscope.models.device`); the fitted model,
        its export and every prediction are on the CPU either way. Not with ``finetune`` or a
        box detector (they train on the CPU only).
    finetune: ``"none"`` (frozen ImageNet trunk), ``"last"`` (its stride-16 blocks) or
        ``"full"`` (every trunk weight), trained on the image labels before the head
        (classifier and box_detector; :mod:`flawscope.models.finetune`); the tuned weights are saved.
    finetune_epochs: most fine-tuning epochs (the best validation accuracy is kept).
    finetune_lr: the trunk's fine-tuning learning rate.
    finetune_patience: stop fine-tuning after this many epochs without a better validation
        accuracy (0, the default: run every epoch, since stopping inside the one-cycle
        schedule stops at its high learning rate; the best epoch is kept either way).
    finetune_augment: ``"fixed"`` (the default: fine-tuning draws from the ``views``
        augmented views made once per training image and the clean one) or ``"fresh"`` (a new
        albumentations draw of every training image every fine-tuning epoch; classifier only).
    finetune_ema: decay per step of an exponential moving average of the weights being
        fine-tuned (the trunk's and the temporary head's), which each fine-tuning epoch's
        validation judges and which is kept (:mod:`flawscope.models.weight_average`); 0 or
        ``None`` (the default 0, and bundles from before it): off. Classifier only.
    score: what the thresholds judge: ``"class"``, the image head's ``1 - P(good)``;
        ``"map"`` (segmenting models), the defect-probability map inside the image, its
        peak or (``score_area`` > 0) the mean of its ``score_area`` highest pixels on the
        canvas, so a defect must cover that area to score high; ``"auto"`` (segmenting
        models) chooses among the image head and the map at several areas on the
        validation images (:mod:`flawscope.models.score_choice`); ``"fused"`` (segmenting
        models with an anomaly head) sums the head's defect log-odds, the anomaly map's
        peak and the defect map's peak, each standardised on the validation good parts;
        ``"auto"`` then has it among its candidates.
    fused_peaks: where a fused score takes its two maps' peaks: ``"inner"`` (the default), the
        cells whose centre lies inside the image less the band of one cell along the seam with
        the mirrored padding; ``"image"``, all cells inside the image; ``"canvas"``, the whole
        canvas, padding included (bundles from before this choice). Chosen on magnetic_tile's
        validation folds, where several of the good parts that scored highest had a map's peak
        in the padding or on that seam (benchmarks/RESULTS.md, issue 13).
    fused_defect: how a fused score reads the defect map's peak: ``"log_odds"`` (the default),
        the peak's log-odds of a defect, ``log(p / (1 - p))`` from the segmentation logits, or
        ``"probability"``, the peak probability ``p`` (bundles from before this choice). The
        probability is bounded and skewed: near 1 it saturates (a confident false alarm and a
        confident defect look alike) and near 0 it compresses the faint, partly seen defects
        that the sum must add up, which log-odds spread as the head's own evidence already does.
        Chosen on magnetic_tile's validation folds (benchmarks/RESULTS.md, issue 13).
    finetune_head: after fine-tuning, ``"retrain"`` a head on the tuned features, ``"keep"``
        the head trained with the trunk, or keep the ``"best"`` of both on the validation
        images (the default; :mod:`flawscope.models.tuned_head`).
    soft_labels: the image loss (the fine-tuning's and the head's) learns each image's labelled
        defect probability (``Targets.probabilities``, e.g. ELPV's 0, 1/3, 2/3, 1) instead of
        its class (False, the default); classifier with good and one defect class only.
        Early stopping, the epoch and head choices and the temperature still judge the classes.
    fine_level: the trained heads also read the backbone's stride-4 map (False, the default:
        the fused stride-8 and stride-16 maps only). The map is rearranged space-to-depth onto
        the stride-8 grid (pixel-unshuffle: each cell gets its 2 x 2 stride-4 cells' channels,
        96 for EfficientNet-Lite0) and appended to the features after the neighbourhood pooling,
        which would blur the sub-cell detail away (:class:`~flawscope.features.embedder.Embedder`);
        the head's first 1 x 1 convolution then acts as a learnt 2 x 2 stride-2 convolution of the
        stride-4 map. For defects smaller than a stride-8 cell (magnetic_tile's blowholes and
        cracks). The anomaly head (PaDiM or PatchCore) keeps reading the other channels only, so
        its evidence is unchanged; the feature bank holds the extra channels (a new bank: cached
        banks are keyed by it). Not with a fine-tuned trunk (``finetune`` must be ``"none"``).
    tta: test-time views whose outputs are averaged inside the graph
        (:mod:`flawscope.models.views`): ``"none"``, ``"flips"`` (4 views) or ``"d4"`` (8, the
        quarter turns too; square canvas). Fitting does not use them (validation choices
        see the image as given); every prediction costs that many trunk passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flawscope.errors import InputError
from flawscope.models.device import check_device
from flawscope.models.finetune import FINETUNE_AUGMENT, FINETUNE_MODES, FinetuneConfig
from flawscope.models.station import ANOMALY_HEADS
from flawscope.models.training import TrainConfig
from flawscope.models.tuned_head import HEAD_CHOICES
from flawscope.models.views import check_canvas, view_set

# What the thresholds judge (``score``; also saved, by index, with the weights).
SCORES = ("class", "map", "fused")
# Where a fused score takes its maps' peaks (``fused_peaks``).
FUSED_PEAKS = ("image", "inner", "canvas")
# Cells a fused score's peaks keep from the padding for each ``fused_peaks`` (None: none left out).
FUSED_PEAKS_MARGIN: dict[str, int | None] = {"image": 0, "inner": 1, "canvas": None}
# How a fused score reads the defect map's peak (``fused_defect``).
FUSED_DEFECT = ("probability", "log_odds")


def default_params(own: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter's default, with the model's ``own`` defaults (keys of these) over them."""
    shared: dict[str, Any] = {
        "width": 32,
        "context": True,
        "epochs": 20,
        "train_batch": 16,
        "lr": 2e-3,
        "weight_decay": 1e-4,
        "patience": 5,
        "seg_weight": 1.0,
        "smooth": 1,
        "good_weight": 1.0,
        "ensemble": 1,
        "synthetic": 0.0,
        "views": 1,
        "augment": None,
        "rare_below": 0,
        "validation": 0.15,
        "anomaly": None,
        "anomaly_bank": 512,
        "threads": None,
        "device": "cpu",
        "score": "class",
        "finetune": "none",
        "finetune_epochs": 6,
        "finetune_lr": 3e-4,
        "finetune_patience": 0,
        "finetune_augment": "fixed",
        "finetune_ema": 0.0,
        "tta": "none",
        "finetune_head": "best",
        "fused_peaks": "inner",
        "soft_labels": False,
        "fused_defect": "log_odds",
        "fine_level": False,
    }
    unknown = set(own) - set(shared)
    if unknown:  # a misspelt default would otherwise add a hyperparameter nobody reads
        raise KeyError(f"own defaults of unknown hyperparameters: {sorted(unknown)}")
    return shared | dict(own)


def saved_params(params: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as a bundle's manifest gave them, in today's form."""

    # The manifest gives nested mappings back read-only; albumentations' arguments are copied.
    def thaw(value: Any) -> Any:
        return {k: thaw(v) for k, v in value.items()} if isinstance(value, Mapping) else value

    # Bundles from before finetune_head retrained the head after fine-tuning, those from
    # before good_weight trained with the balanced loss (1), and those from before ensemble
    # trained a single head; a fused score took its peaks over the whole canvas before fused_peaks
    # and read the defect map's peak as a probability before fused_defect; fine-tuning kept the
    # live weights (no moving average) before finetune_ema; heads read no stride-4 level before
    # fine_level.
    before = {"finetune_head": "retrain", "good_weight": 1.0, "ensemble": 1, "fused_peaks": "canvas",
              "fused_defect": "probability", "finetune_ema": 0.0, "fine_level": False}  # fmt: skip
    params = before | params
    return params | {"augment": thaw(params["augment"])} if "augment" in params else params


def check_params(
    p: Mapping[str, Any], name: str, *, segments: bool, tunable: bool, canvas: tuple[int, int]
) -> None:
    """Refuse hyperparameters model ``name`` cannot train with, before any training time is spent.

    Args:
        p: the hyperparameters.
        name: the registered model's name (in messages).
        segments: the model gives a defect map.
        tunable: the model may fine-tune the trunk.
        canvas: (height, width) of the network input.

    Raises:
        InputError: naming the hyperparameter.
    """
    for key in ("width", "epochs", "train_batch", "smooth", "ensemble"):
        if not isinstance(p[key], int) or p[key] < 1:
            raise InputError(key, f"must be a whole number >= 1, got {p[key]!r}")
    for key in ("views", "rare_below", "patience"):  # (not ``name``: the messages below need it)
        if not isinstance(p[key], int) or p[key] < 0:
            raise InputError(key, f"must be a whole number >= 0, got {p[key]!r}")
    if not 0.0 <= float(p["synthetic"]) <= 1.0:
        raise InputError("synthetic", f"must be in [0, 1], got {p['synthetic']!r}")
    if not isinstance(p["good_weight"], int | float) or not 0.0 < float(p["good_weight"]) <= 100.0:
        raise InputError("good_weight", f"must be a number in (0, 100], got {p['good_weight']!r}")
    if not 0.0 <= float(p["validation"]) < 0.9:
        raise InputError("validation", f"must be in [0, 0.9), got {p['validation']!r}")
    if p["anomaly"] not in (None, *ANOMALY_HEADS):
        raise InputError("anomaly", f"must be one of {list(ANOMALY_HEADS)} or None, got {p['anomaly']!r}")
    bank = p["anomaly_bank"]
    if isinstance(bank, bool) or not isinstance(bank, int) or bank < 1:
        raise InputError("anomaly_bank", f"must be a whole number >= 1, got {bank!r}")
    if p["score"] not in (*SCORES, "auto"):
        raise InputError("score", f"must be one of {[*SCORES, 'auto']}, got {p['score']!r}")
    if p["fused_peaks"] not in FUSED_PEAKS:
        raise InputError("fused_peaks", f"must be one of {list(FUSED_PEAKS)}, got {p['fused_peaks']!r}")
    if p["fused_defect"] not in FUSED_DEFECT:
        raise InputError("fused_defect", f"must be one of {list(FUSED_DEFECT)}, got {p['fused_defect']!r}")
    if p["score"] == "fused" and p["anomaly"] is None:
        raise InputError("score", "'fused' needs an anomaly head: anomaly='padim' or 'patchcore'")
    if p["score"] != "class" and not segments:
        raise InputError("score", f"'map' needs a defect map, which a {name} model does not give")
    if p["finetune"] not in FINETUNE_MODES:
        raise InputError("finetune", f"must be one of {list(FINETUNE_MODES)}, got {p['finetune']!r}")
    if p["finetune"] != "none" and not tunable:
        raise InputError(
            "finetune",
            f"fine-tuning is implemented for the classifier and box_detector, not a {name}",
        )
    if not isinstance(p["finetune_epochs"], int) or p["finetune_epochs"] < 1:
        raise InputError("finetune_epochs", f"must be a whole number >= 1, got {p['finetune_epochs']!r}")
    if not 0.0 < float(p["finetune_lr"]) < 1.0:
        raise InputError("finetune_lr", f"must be in (0, 1), got {p['finetune_lr']!r}")
    if not isinstance(p["finetune_patience"], int) or p["finetune_patience"] < 0:
        raise InputError("finetune_patience", f"must be a whole number >= 0, got {p['finetune_patience']!r}")
    if p["finetune_augment"] not in FINETUNE_AUGMENT:
        raise InputError(
            "finetune_augment", f"must be one of {list(FINETUNE_AUGMENT)}, got {p['finetune_augment']!r}"
        )
    ema = p["finetune_ema"]
    if ema is not None and (
        isinstance(ema, bool) or not isinstance(ema, int | float) or not 0.0 <= ema < 1.0
    ):
        raise InputError("finetune_ema", f"must be a number in [0, 1) (0 or None: off), got {ema!r}")
    if ema and name != "classifier":
        raise InputError("finetune_ema", f"is implemented for the classifier's fine-tuning, not a {name}")
    check_canvas(view_set(p["tta"]), *canvas)
    if p["finetune_head"] not in HEAD_CHOICES:
        raise InputError("finetune_head", f"must be one of {list(HEAD_CHOICES)}, got {p['finetune_head']!r}")
    if not isinstance(p["soft_labels"], bool):
        raise InputError("soft_labels", f"must be true or false, got {p['soft_labels']!r}")
    if p["soft_labels"] and name != "classifier":
        raise InputError("soft_labels", f"is implemented for the classifier, not a {name}")
    if not isinstance(p["fine_level"], bool):
        raise InputError("fine_level", f"must be true or false, got {p['fine_level']!r}")
    if p["fine_level"] and p["finetune"] != "none":
        raise InputError("fine_level", "reads the frozen trunk's stride-4 map: needs finetune='none'")
    if p["augment"] is not None and not isinstance(p["augment"], Mapping):
        raise InputError("augment", "must be a mapping of albumentations transform name to its arguments")
    check_device(p["device"])  # whether the GPU exists is asked when fitting: a bundle loads anywhere
    if p["device"] != "cpu" and (p["finetune"] != "none" or name == "box_detector"):
        what = "fine-tuning the trunk" if p["finetune"] != "none" else "the box head's training"
        raise InputError("device", f"{what} runs on the CPU only: use device='cpu' with it")


def train_config(p: Mapping[str, Any], seed: int, good_class: int | None) -> TrainConfig:
    """How the heads train, from the hyperparameters ``p`` (``good_class``: the good class's index)."""
    return TrainConfig(
        p["epochs"], p["train_batch"], float(p["lr"]), float(p["weight_decay"]), p["patience"],
        float(p["seg_weight"]), float(p["synthetic"]), True, seed, p["threads"], int(p["smooth"]),
        good_class, float(p["good_weight"]), str(p.get("device", "cpu")),
    )  # fmt: skip


def finetune_config(p: Mapping[str, Any], seed: int) -> FinetuneConfig:
    """How the trunk is fine-tuned, from the hyperparameters ``p``."""
    return FinetuneConfig(
        p["finetune"], p["finetune_epochs"], float(p["finetune_lr"]), p["finetune_patience"],
        seed=seed, threads=p["threads"], width=int(p["width"]), context=bool(p["context"]),
        augment=str(p["finetune_augment"]), ema=float(p["finetune_ema"] or 0.0),
    )  # fmt: skip
