"""Reconstruction of held-out volumes by the NHAE decoder variants (PSNR, SSIM, slice jitter).

    python scripts/evaluate_reconstruction.py --weights models/model.pt --datalist data/phantoms/datalist.json \
[--num 11] [--json]
        [--ae3d_weights models/baselines/autoencoderkl3d.pt] [--out_png docs/figures/nhae_reconstruction.png] \
[--save_dir DIR]

``--save_dir`` also writes every reconstruction as NIfTI (``DIR/<method>/recon_<case>.nii.gz``, the
same uint8 encoding as synthesis) so that ``scripts/evaluate.py oct --fake DIR/<method>`` measures
the autoencoder's own distance to the real volumes: the floor any diffusion model decoded by it sits on.

``--ae3d_weights`` adds the holistic baseline (MONAI AutoencoderKL 3D, whole volume at once, same
latent size; ``autoencoderkl3d_def`` of ``configs/inference.json``, trained by
``configs/stages/baselines/autoencoderkl3d.json``).

``--weights`` is read through ``--prefix`` (default ``nhae``: the NHAE part of ``models/model.pt``);
pass ``--prefix ''`` for a plain NHAE state dict such as ``models/stages/nhae_nhae.pt``.
"""

import json as jsonlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402
import torch  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402

from bundle.inferers import SlidingSliceDecoder  # noqa: E402
from bundle.metrics import evaluate_reconstruction  # noqa: E402
from bundle.networks import load_weights  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(weights="models/model.pt", datalist="data/phantoms/datalist.json", num=11, split="test", json=False,
         out_png=None, ae3d_weights=None, save_dir=None, prefix="nhae"):
    """Encode each held-out volume (thumbnail -> E_3D -> f_sr) and decode it with plain Dec2D and with Dec_M."""
    p = ConfigParser()
    p.read_config([os.path.join(ROOT, "configs", c) for c in ("inference.json", "train.json")])
    p["datalist"] = datalist
    net = load_weights(p.get_parsed_content("nhae_def"), weights, prefix=prefix or None).eval()
    from monai.data import load_decathlon_datalist

    items = load_decathlon_datalist(datalist, True, split)[: int(num)]
    if not items:
        raise ValueError(f"{datalist} has no '{split}' volumes")
    tf = p.get_parsed_content("val_volume_transforms")
    vols = [tf(dict(i))["image"].as_tensor()[None] for i in items]

    def via(mode, path):
        dec = SlidingSliceDecoder(mode, chunk_size=16)
        if path == "thumbnail":  # x -> E_3D -> f_sr -> decoder (the NHAE reconstruction)
            return lambda v: dec(net.f_sr(net.encode_volume(v)[0])[0], net.dec_m)[None]
        # x_i -> Enc2D -> decoder (what the refiner feeds)
        return lambda v: dec(net.encode_slices(v)[0], net.dec_m)[None]

    methods = {"NHAE + Dec2D": via("slice2d", "thumbnail"), "NHAE + Dec_M (stack)": via("stack", "thumbnail"),
               "Enc2D slices + Dec2D": via("slice2d", "slices"), "Enc2D slices + Dec_M (stack)": via("stack", "slices")}
    if ae3d_weights:
        ae3d = load_weights(p.get_parsed_content("autoencoderkl3d_def"), ae3d_weights,
                            "train it with configs/stages/baselines/autoencoderkl3d.json (docs/README.md)").eval()
        methods["MONAI AutoencoderKL 3D (holistic)"] = ae3d.reconstruct
    with torch.no_grad():
        measured = _saving(methods, vols, items, save_dir, p.get_parsed_content("spacing")) if save_dir else methods
        res = evaluate_reconstruction(measured, vols)
        if out_png:
            from bundle.io import save_png
            from bundle.preview import preview_grid, volume_preview

            v = vols[0]
            rows = [volume_preview(v[0, 0].numpy())] + [volume_preview(m(v)[0, 0].clamp(-1, 1).numpy())
                                                         for m in methods.values()]
            save_png(preview_grid(rows), out_png)
    res["_info"] = {"weights": weights, "ae3d_weights": ae3d_weights, "datalist": datalist, "split": split,
                    "volumes": len(vols)}
    if json:
        print(jsonlib.dumps(res))
    else:
        print("| method | PSNR (dB) | SSIM | slice jitter |\n|---|---|---|---|")
        for name, r in res.items():
            if name.startswith("_"):
                continue
            cells = [f"{r[k][0]:.4f} +- {r[k][1]:.4f}" if k in r else "-" for k in ("psnr", "ssim", "jitter")]
            print(f"| {name} | " + " | ".join(cells) + " |")


def _saving(methods, vols, items, save_dir, spacing):
    """``methods`` wrapped so that each reconstruction is also written as NIfTI the moment the metrics compute it."""
    import re
    from pathlib import Path

    from bundle.io import check_output_dir, spacing_affine
    from bundle.transforms.synthesis import write_volume

    cases = {id(v): os.path.basename(item["image"]).split(".")[0] for item, v in zip(items, vols)}

    def wrap(method, out):
        def run(v):
            rec = method(v)
            write_volume(rec[0].clamp(-1, 1), out, f"recon_{cases[id(v)]}", spacing_affine(spacing))
            return rec
        return run

    return {name: wrap(m, check_output_dir(Path(save_dir) / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")))
            for name, m in methods.items()}


if __name__ == "__main__":
    fire.Fire(main)
