"""PatchCore: nearest-neighbour distance to a coreset of good-part patch features.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.

The bank is anomalib's size by default (10% of the training patches, greedy coreset,
:mod:`flawscope.models.coreset`). Searching ~60,000 bank vectors exhaustively would cost about 40
times the backbone on a CPU, so by default the search is an inverted-file index
(:mod:`flawscope.search.ivf`) run next to the graph: the exported graph ends at the features and
training-time prediction and the torch-free runtime search them with the same index rebuilt
from the same saved arrays. ``search="exact"`` keeps the search inside the ONNX graph (one
MatMul and one ReduceMin), which pays for banks of a few thousand patches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flawscope.data.tiling import available_memory
from flawscope.errors import InputError
from flawscope.features.backbones import load_backbone
from flawscope.features.embedder import Embedder
from flawscope.models.anomaly import AnomalyModel
from flawscope.models.base import Progress
from flawscope.models.coreset import greedy_coreset
from flawscope.models.registry import register
from flawscope.search.ivf import IvfArrays, IvfIndex, train_ivf

log = logging.getLogger(__name__)


class NearestNeighbourHead(nn.Module):
    """``(B, C, H/8, W/8)`` features to ``(B, H/8, W/8)``: distance of each patch to its nearest bank entry.

    The distance is ``|q|^2 + min_m (|m|^2 - 2 q.m)``, and ``|m|^2`` rides in the matrix product
    as an extra row of the bank against a constant 1 appended to each query, so the search is one
    MatMul and one ReduceMin: the ``(B, hw, M)`` distance matrix is written once and read once,
    which is what bounds the search on a CPU. ``|q|^2`` is added after the minimum.

    With a projection (``search_dims``), queries and bank are first centred and projected onto the
    bank's leading principal axes, and the distance is measured there: an approximation that
    costs ``k / C`` of the exact search's multiplications.
    """

    bank_aug: torch.Tensor
    centre: torch.Tensor
    projection: torch.Tensor

    def __init__(
        self,
        bank: torch.Tensor,
        centre: torch.Tensor | None = None,
        projection: torch.Tensor | None = None,
    ):
        super().__init__()
        self.projected = projection is not None
        if projection is not None:
            assert centre is not None
            self.register_buffer("centre", centre)  # (C,)
            self.register_buffer("projection", projection)  # (C, k)
            bank = (bank - centre) @ projection
        augmented = torch.cat([-2.0 * bank.T, (bank * bank).sum(1)[None, :]], dim=0)  # (k + 1, M)
        self.register_buffer("bank_aug", augmented.contiguous())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` embedder features to ``(B, h, w)`` nearest-neighbour distances."""
        b, _, h, w = features.shape
        queries = features.flatten(2).transpose(1, 2)  # (B, hw, C)
        if self.projected:
            queries = (queries - self.centre) @ self.projection  # (B, hw, k)
        augmented = torch.cat([queries, torch.ones_like(queries[:, :, :1])], dim=-1)  # (B, hw, k + 1)
        partial = (augmented @ self.bank_aug).min(dim=-1).values  # (B, hw)
        nearest = (partial + (queries * queries).sum(-1)).clamp_min(0.0).sqrt()
        return nearest.reshape(b, h, w)


def principal_axes(bank: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre ``(C,)`` and the ``dims`` leading principal axes ``(C, dims)`` of an ``(M, C)`` bank."""
    centre = bank.double().mean(0)
    centred = bank.double() - centre
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return centre.float(), vectors[:, -dims:].flip(1).float().contiguous()


SEARCHES = ("ivf", "exact")
POOLINGS = ("per_level", "fused")
# faiss' k-means wants at least this many training points per centroid.
_POINTS_PER_LIST = 39


@register("patchcore")
class PatchCore(AnomalyModel):
    """PatchCore with a greedy coreset memory bank (see the module docstring).

    Hyperparameters (besides :class:`~flawscope.models.base.ModelConfig`):
        coreset_ratio: fraction of the (valid, non-padding) training patches to keep.
        max_bank: upper bound on the bank size (None: no bound beyond the ratio).
        max_candidates: patches kept for the coreset selection, drawn at random while the
            features stream in when there are more (bounds fit time and memory).
        search: ``"ivf"`` (inverted-file index next to the graph, approximate) or ``"exact"``
            (inside the graph).
        nlist: IVF lists (clipped so each holds about 39 bank vectors or more).
        nprobe: IVF lists scanned per query; more is closer to exact and slower (measured in
            benchmarks/RESULTS.md).
        search_dims: with ``search="exact"``, search in this many principal dimensions of the
            bank instead of all channels (approximate, cheaper); None searches all.
        pooling: ``"per_level"`` averages each backbone level over its ``aggregate`` x
            ``aggregate`` neighbourhood on its own grid before the levels are joined (PatchCore's
            "locally aware patch features" as its authors and anomalib compute them);
            ``"fused"`` pools the joined stride-8 map (the other models' embedder).
    """

    default_score_area: ClassVar[int] = 2560

    @classmethod
    def default_params(cls) -> dict[str, Any]:  # noqa: D102
        return {
            "coreset_ratio": 0.1,
            "max_bank": None,
            "max_candidates": 1_000_000,
            "search": "ivf",
            "nlist": 1024,
            "nprobe": 8,
            "search_dims": None,
            "pooling": "per_level",
        }

    @classmethod
    def saved_params(cls, params: dict[str, Any]) -> dict[str, Any]:  # noqa: D102
        # Bundles saved before "pooling" existed pooled the fused map.
        return {"pooling": "fused"} | params

    def check_params(self) -> None:  # noqa: D102
        ratio = self.params["coreset_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise InputError("coreset_ratio", f"must be in (0, 1], got {ratio!r}")
        for name in ("max_bank", "max_candidates", "nlist", "nprobe", "search_dims"):
            value = self.params[name]
            if value is None and name in ("max_bank", "search_dims"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(name, f"must be a whole number >= 1, got {value!r}")
        if self.params["pooling"] not in POOLINGS:
            raise InputError("pooling", f"must be one of {POOLINGS}, got {self.params['pooling']!r}")
        if self.params["search"] not in SEARCHES:
            raise InputError("search", f"must be one of {SEARCHES}, got {self.params['search']!r}")
        if self.params["search"] == "ivf" and self.params["search_dims"] is not None:
            raise InputError(
                "search_dims", "applies to search='exact' only; the IVF search uses every channel"
            )

    def _embedder(self) -> Embedder:
        if getattr(self, "embedder_", None) is None:
            per_level = self.params["pooling"] == "per_level"
            self.embedder_ = Embedder(load_backbone(self.config.backbone), self.config.aggregate, per_level)
        return self.embedder_

    def _check_memory(self, per_image: float, channels: int, n_images: int) -> None:
        """Refuse up front a fit whose candidates and bank would not fit in memory, with the estimate."""
        patches = per_image * n_images
        candidates = min(patches, self.params["max_candidates"])
        # Candidates, their random projection for the coreset (64 dims) and its copy ordered into
        # parts, the k-d tree's coordinates and work arrays, and the bank: float32 throughout.
        need = (
            candidates * (channels + 2 * 64 + 48) * 4 + patches * self.params["coreset_ratio"] * channels * 4
        )
        have = available_memory()
        if have is not None and need > 0.8 * have:
            raise InputError(
                "max_candidates",
                f"PatchCore needs about {need / 2**30:.1f} GiB to fit {n_images} images "
                f"({patches:,.0f} patches, {candidates:,.0f} candidates of {channels} channels) but "
                f"{have / 2**30:.1f} GiB are available: lower max_candidates or coreset_ratio",
            )

    def _fit_features(
        self, batches: Iterator[tuple[torch.Tensor, np.ndarray]], n_images: int, progress: Progress | None
    ) -> None:
        generator = torch.Generator().manual_seed(self.config.seed)
        chunks: list[torch.Tensor] = []
        seen = 0
        rate: float | None = None
        for features, valid in batches:
            flat = features.permute(0, 2, 3, 1)[torch.from_numpy(valid)]
            if rate is None:  # the first batch tells how many patches the whole fit will hold
                per_image = float(valid.sum()) / max(len(valid), 1)
                self._check_memory(per_image, flat.shape[1], n_images)
                rate = min(1.0, self.params["max_candidates"] / max(per_image * n_images, 1.0))
            seen += flat.shape[0]
            if rate < 1.0:  # a uniform sample, drawn while streaming so memory stays bounded
                flat = flat[torch.rand(flat.shape[0], generator=generator) < rate]
            chunks.append(flat.contiguous())
        patches = torch.cat(chunks)
        del chunks
        size = max(1, min(round(seen * self.params["coreset_ratio"]), patches.shape[0]))
        if self.params["max_bank"] is not None:
            size = min(size, self.params["max_bank"])
        index = greedy_coreset(
            patches,
            size,
            seed=self.config.seed,
            progress=(lambda done, total: progress("coreset", done, total)) if progress else None,
        )
        self.memory_bank_ = patches[index].contiguous()
        del patches
        dims = self.params["search_dims"]
        self.search_axes_: tuple[torch.Tensor, torch.Tensor] | None = None
        if dims is not None and dims < self.memory_bank_.shape[1]:
            self.search_axes_ = principal_axes(self.memory_bank_, dims)
        self.ivf_: IvfArrays | None = None
        if self.params["search"] == "ivf":
            bank = self.memory_bank_.numpy()
            lists = max(1, min(self.params["nlist"], len(bank) // _POINTS_PER_LIST))
            self.ivf_ = train_ivf(bank, lists, seed=self.config.seed, threads=torch.get_num_threads())
            if progress:
                progress("ivf", 1, 1)
        self.head_: nn.Module | None = None
        self.index_: IvfIndex | None = None
        log.info("PatchCore bank: %d of %d patches", size, seen)

    def head(self) -> nn.Module:
        """The exact search as a torch module (in the graph for ``search="exact"``, else the reference)."""
        if getattr(self, "head_", None) is None:
            centre, projection = self.search_axes_ or (None, None)
            self.head_ = NearestNeighbourHead(self.memory_bank_, centre, projection).eval()
        assert self.head_ is not None
        return self.head_

    def host_search(self) -> IvfIndex | None:
        """The IVF index searched next to the graph (None with ``search="exact"``)."""
        if getattr(self, "ivf_", None) is None:
            return None
        if getattr(self, "index_", None) is None:
            assert self.ivf_ is not None
            self.index_ = IvfIndex(self.ivf_, self.params["nprobe"])
        return self.index_

    def raw_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:  # noqa: D102
        index = self.host_search()
        if index is None:
            return super().raw_outputs(batch)
        features = self._runner()(batch)
        return {"patch_scores": index.search_grid(np.ascontiguousarray(features.numpy(), dtype=np.float32))}

    def state_tensors(self) -> dict[str, torch.Tensor]:  # noqa: D102
        tensors = {"memory_bank": self.memory_bank_}
        if self.search_axes_ is not None:
            tensors["search_centre"], tensors["search_projection"] = self.search_axes_
        if self.ivf_ is not None:
            tensors["ivf_centroids"] = torch.from_numpy(self.ivf_.centroids)
            tensors["ivf_assign"] = torch.from_numpy(self.ivf_.assign)
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: D102
        self.memory_bank_ = tensors["memory_bank"].float().contiguous()
        self.search_axes_ = None
        if "search_projection" in tensors:
            self.search_axes_ = (tensors["search_centre"].float(), tensors["search_projection"].float())
        self.ivf_ = None
        if self.params["search"] == "ivf":
            if "ivf_centroids" not in tensors:
                raise InputError(
                    "model.safetensors", "a PatchCore with search='ivf' needs its saved IVF lists"
                )
            self.ivf_ = IvfArrays(
                self.memory_bank_.numpy(),
                tensors["ivf_centroids"].float().numpy(),
                tensors["ivf_assign"].long().numpy(),
            )
        self.head_ = None
        self.index_ = None
