"""Batch preparation of the synthesis workflow for MONAI's ``SupervisedEvaluator``."""

from __future__ import annotations

import torch

from ..data.labels import LABEL_KEYS


def prepare_synthesis_batch(batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False,
                            **kwargs) -> tuple[torch.Tensor, None, tuple, dict]:
    """``SupervisedEvaluator`` ``prepare_batch``: the reference image as the inputs, no target, and the
    requests' seeds (and label sets, when the requests carry them) as the inferer's keyword arguments
    (``inferer(image, network, seeds=..., labels=...)``).

    The reference image stays on the CPU: the stages place their own tensors and the decoded volume
    is assembled on the CPU (only the networks' working tensors go to ``device``)."""
    seeds = batchdata.get("seed")
    kwargs = {"seeds": None if seeds is None else torch.as_tensor(seeds).view(-1).tolist()}
    if "label" not in batchdata:
        return batchdata["image"], None, (), kwargs
    # label-guided requests (configs/inference_conditional.json): the layer map is also the evaluator's target,
    # so that postprocessing sees it (the evaluator's output "label" would otherwise be None)
    kwargs["labels"] = {k: batchdata[k] for k in LABEL_KEYS if k in batchdata}
    return batchdata["image"], batchdata["label"], (), kwargs


def run_requests(evaluator, dataset, output_dir, rank: int | None = None) -> int:
    """Run the synthesis evaluator over ``dataset``, or say that there is nothing left to do (every requested
    volume is already in ``output_dir``; ignite refuses an empty loader). Returns the number of requests run."""
    import logging

    n = len(dataset)
    if n:
        evaluator.run()
    else:
        who = "" if rank is None else f"rank {rank}: "
        logging.getLogger("synthesis").info(f"{who}all requested volumes are already in {output_dir}")
    return n
