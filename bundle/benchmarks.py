"""Measurements behind ``scripts/benchmark.py``: each runs in a fresh process so peak RSS is its own."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import torch

DECODE_MODELS = ("dec_m", "slice2d", "autoencoderkl3d")
SYNTHESIS_MODELS = ("caldm", "caldm_conditional", "ldm3d", "medical_diffusion")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(model: str | None = None, size: tuple[int, int, int] | None = None, root: str | None = None):
    """The bundle's inference config (plus a baseline overlay), so benchmarks use the shipped widths at every size."""
    from monai.bundle import ConfigParser

    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = [os.path.join(root, "configs", "inference.json")]
    if model == "caldm_conditional":
        files.append(os.path.join(root, "configs", "inference_conditional.json"))
    elif model not in (None, "caldm"):
        files.append(os.path.join(root, "configs", "baselines", f"inference_{model}.json"))
    p = ConfigParser()
    p.read_config(files)
    p["bundle_root"] = root
    p["device"] = "$torch.device('cpu')"
    if size is not None:
        p["image_size"] = list(size)
    return p


def _nonzero_adaptors(nhae) -> None:
    for a in nhae.dec_m.adaptors:  # trained adaptors are non-zero; cost does not depend on values
        torch.nn.init.normal_(a.conv.weight, std=0.01)


def decode_worker(size: tuple[int, int, int], model: str, mode: str, chunk_size: int, seed: int = 0) -> dict:
    """Decode random latents of a (D, H, W) volume once; returns seconds and peak RSS of this process."""
    from .inferers import SlidingSliceDecoder

    torch.manual_seed(seed)
    D, H, W = size
    p = _config()
    c = p["latent_channels"]
    baseline = _rss_mb()
    with torch.no_grad():
        if model == "autoencoderkl3d":
            ae = p.get_parsed_content("autoencoderkl3d_def").eval()
            z = torch.randn(1, c, D // 8, H // 8, W // 8)
            t0 = time.perf_counter()
            out = ae.decode(z)
        else:
            net = p.get_parsed_content("nhae_def").eval()
            _nonzero_adaptors(net)
            z = torch.randn(c, D, H // 8, W // 8)
            dec = SlidingSliceDecoder("slice2d" if model == "slice2d" else mode, chunk_size=chunk_size)
            t0 = time.perf_counter()
            out = dec(z, net.dec_m)
        seconds = time.perf_counter() - t0
    return {"benchmark": "decode", "model": model,
            "mode": mode if model == "dec_m" else "whole" if model == "autoencoderkl3d" else "slice2d",
            "size": [D, H, W], "chunk_size": chunk_size, "seconds": round(seconds, 3),
            "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(baseline, 1), "output_shape": list(out.shape),
            "threads": torch.get_num_threads()}


def synthesis_networks(model: str, size: tuple[int, int, int], steps: int = 200, root: str | None = None) -> tuple:
    """(inferer, network) of MODEL for volumes of ``size`` with ``steps`` DDIM steps per stage, built from the
    bundle's inference configs with random weights: memory and time do not depend on the weight values."""
    if model not in SYNTHESIS_MODELS:
        raise ValueError(f"model must be one of {SYNTHESIS_MODELS}, got {model!r}")
    p = _config(model, size, root)
    p["ddim_steps"] = int(steps)
    for k in ("global_sampler#progress", "slice_refiner#progress", "decoder#progress"):
        p[k] = False
    net = p.get_parsed_content("network_def")
    nhae = net.nhae if model.startswith("caldm") else net.autoencoder
    if hasattr(nhae, "dec_m"):
        _nonzero_adaptors(nhae)
        nhae.scale_factor.fill_(1.0)
    if model.startswith("caldm"):  # the default inference draws speckle; cost does not depend on the fitted values
        net.speckle.fitted.fill_(True)
        net.speckle.sigma.fill_(0.5)
    return p.get_parsed_content("inferer"), net.eval()


def layered_labels(size: tuple[int, int, int], seed: int = 0) -> dict:
    """A cheap label set of ``size`` for benchmarks: 12 flat-ish boundaries and random vessel masks (the cost
    of label-guided sampling does not depend on the labels; the phantom generator's own peak would mix in)."""
    D, H, W = size
    g = torch.Generator().manual_seed(seed)
    z = torch.arange(H)[None, :, None]
    label = torch.zeros(size, dtype=torch.uint8)
    for s, top in enumerate(torch.linspace(0.3, 0.8, 12)):
        wobble = (torch.rand(D, 1, W, generator=g) * 2).round()
        label += (z >= (top * H + wobble)).to(torch.uint8)
    masks = [(torch.rand(D, W, generator=g) < 0.08).to(torch.uint8) for _ in range(2)]
    return {"label": label, "artery": masks[0], "vein": masks[1] * (1 - masks[0])}


def synthesis_worker(model: str, size: tuple[int, int, int], steps: int, seed: int = 0) -> dict:
    """One full inference (STEPS DDIM steps per diffusion stage) of a (D, H, W) volume; seconds and peak RSS.
    ``caldm_conditional`` includes encoding a label set (``layered_labels``) into the stages' conditions."""
    torch.manual_seed(seed)
    inferer, network = synthesis_networks(model, size, steps)
    labels = layered_labels(size, seed) if model == "caldm_conditional" else None
    baseline = _rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        conditions = None if labels is None else inferer.conditioner(labels["label"], labels["artery"], labels["vein"])
        out = inferer.sample(network, seed=seed, conditions=conditions)
    seconds = time.perf_counter() - t0
    return {"benchmark": "synthesis", "model": model, "size": list(size), "ddim_steps": int(steps),
            "seconds": round(seconds, 2), "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(baseline, 1),
            "output_shape": list(out.shape), "threads": torch.get_num_threads()}


def workflow_worker(size: tuple[int, int, int], steps: int, output_dir: str, overlays: str = "",
                    overrides: str = "{}") -> dict:
    """The whole inference workflow (``configs/inference.json`` + ``overlays``, comma-separated names under
    configs/) for one (D, H, W) volume with the shipped weights: sampling, decoding, speckle, writing
    the file and its preview. Seconds and peak RSS of this process (the memory-vs-D table)."""
    from monai.bundle import ConfigWorkflow

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = [os.path.join(root, "configs", f) for f in ["inference.json"] + [o for o in overlays.split(",") if o]]
    wf = ConfigWorkflow(config_file=files, workflow_type="inference", bundle_root=root, output_dir=output_dir,
                        image_size=list(size), ddim_steps=int(steps), num_samples=1, seed=0, skip_existing=False,
                        **json.loads(overrides))
    baseline = _rss_mb()
    t0 = time.perf_counter()
    wf.initialize()
    wf.run()
    seconds = time.perf_counter() - t0
    return {"benchmark": "workflow", "size": list(size), "ddim_steps": int(steps), "overlays": overlays,
            "overrides": json.loads(overrides), "seconds": round(seconds, 2), "peak_rss_mb": round(_rss_mb(), 1),
            "baseline_rss_mb": round(baseline, 1), "threads": torch.get_num_threads()}


def drgan_worker(size: int, mode: str, batch_size: int = 1, repeats: int = 2, overlay: str | None = None) -> dict:
    """DR-GAN at ``size`` x ``size`` with the shipped widths (or an overlay's), random weights: seconds per
    image of inference (``mode="infer"``, generator only) or of one training iteration (``"train"``: both
    discriminator and generator steps with the grader's perceptual term), after one warm-up; peak RSS."""
    from monai.bundle import ConfigParser
    from types import SimpleNamespace

    from .engines.drgan import DRGANIteration

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = ConfigParser()
    p.read_config([os.path.join(root, "configs", f) for f in ["inference_drgan.json"] + ([overlay] if overlay else [])])
    p["drgan_size"] = int(size)
    torch.manual_seed(0)
    g, d = p.get_parsed_content("drgan_generator_def"), p.get_parsed_content("drgan_discriminator_def")
    grader = p.get_parsed_content("drgan_grader_def")
    grader.fit_grade_gaussians(torch.randn(10, grader.feature_size), torch.arange(10) % 5)
    masks = (torch.rand(batch_size, 9, size, size) > 0.9).float()
    batch = {"image": torch.rand(batch_size, 3, size, size) * 2 - 1, "mask": masks,
             "grade": torch.arange(batch_size) % 5}
    if mode == "train":
        it = DRGANIteration(d, torch.optim.Adam(d.parameters(), 1e-4), grader)
        eng = SimpleNamespace(network=g, optimizer=torch.optim.Adam(g.parameters(), 1e-4),
                              state=SimpleNamespace(device="cpu"))
        step = lambda: it(eng, batch)  # noqa: E731
    elif mode == "infer":
        g.eval()
        code = grader.sample_code(batch["grade"])

        def step():
            with torch.no_grad():
                g(masks, code)
    else:
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    baseline = _rss_mb()
    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    seconds = (time.perf_counter() - t0) / repeats / batch_size
    return {"benchmark": "drgan", "mode": mode, "size": int(size), "batch_size": int(batch_size),
            "seconds_per_image": round(seconds, 3), "peak_rss_mb": round(_rss_mb(), 1),
            "baseline_rss_mb": round(baseline, 1), "threads": torch.get_num_threads(), "overlay": overlay,
            "generator_params_m": round(sum(q.numel() for q in g.parameters()) / 1e6, 2)}


def run_in_fresh_process(args: list[str], memory_limit_gb: float | None = None, timeout: float | None = None) -> dict:
    """Run ``python -m bundle.benchmarks ARGS`` and parse its last JSON line; report OOM / failure as such."""
    def _limit():
        if memory_limit_gb:
            lim = int(memory_limit_gb * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        proc = subprocess.run([sys.executable, "-m", "bundle.benchmarks", *args], cwd=root, capture_output=True,
                              text=True, preexec_fn=_limit, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_s": timeout}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return dict(json.loads(lines[-1]), status="ok")
    err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
    oom = "memory" in proc.stderr.lower() or "alloc" in proc.stderr.lower() or proc.returncode in (-9, 137)
    return {"status": "out_of_memory" if oom else "failed", "error": err[-300:], "memory_limit_gb": memory_limit_gb}


if __name__ == "__main__":
    # worker entries: python -m bundle.benchmarks decode D,H,W MODEL MODE CHUNK
    #                 python -m bundle.benchmarks synthesis D,H,W MODEL STEPS
    kind, size = sys.argv[1:3]
    if kind == "drgan":  # python -m bundle.benchmarks drgan SIZE MODE BATCH [OVERLAY]
        print(json.dumps(drgan_worker(int(size), sys.argv[3], int(sys.argv[4]),
                                      overlay=sys.argv[5] if len(sys.argv) > 5 else None)))
        raise SystemExit(0)
    dims = tuple(int(s) for s in size.split(","))
    if kind == "decode":
        print(json.dumps(decode_worker(dims, sys.argv[3], sys.argv[4], int(sys.argv[5]))))
    elif kind == "workflow":  # python -m bundle.benchmarks workflow D,H,W STEPS OUTPUT_DIR [OVERLAYS [OVERRIDES_JSON]]
        print(json.dumps(workflow_worker(dims, int(sys.argv[3]), sys.argv[4], *sys.argv[5:7])))
    elif kind == "synthesis":
        print(json.dumps(synthesis_worker(sys.argv[3], dims, int(sys.argv[4]))))
    else:
        raise SystemExit(f"unknown worker {kind}")
