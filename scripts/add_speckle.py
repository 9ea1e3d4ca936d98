"""Draw the fitted speckle model (the ``speckle`` part of ``models/model.pt``) onto volumes synthesized without it.

    python scripts/add_speckle.py --input out/ldm3d --output out/ldm3d_speckle [--weights models/model.pt] [--seed 0]

Reads every ``*.nii.gz`` in INPUT (uint8 as the bundle writes them), adds speckle (file k of the sorted
list uses seed SEED + k) and writes the same names, spacing and a preview to OUTPUT, each atomically.
Used to give the Table 1 baselines, which decode without the cascade, the same texture step.
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402
import torch  # noqa: E402


def main(input, output, weights="models/model.pt", seed=0):
    from bundle.evaluation import volume_from_array
    from bundle.io import load_nifti
    from bundle.io import check_output_dir, spacing_affine
    from bundle.networks import SpeckleModel, load_weights
    from bundle.transforms.synthesis import write_volume

    files = sorted(glob.glob(os.path.join(input, "*.nii.gz")))
    if not files:
        raise SystemExit(f"error: {input} holds no .nii.gz volumes")
    model = load_weights(SpeckleModel(), weights, "fit it (docs/README.md, Training configuration)", prefix="speckle")
    out = check_output_dir(output)
    for k, f in enumerate(files):
        arr, spacing = load_nifti(f)
        vol = volume_from_array(arr, f)[None]
        name = os.path.basename(f)[: -len(".nii.gz")]
        write_volume(model(vol, torch.Generator().manual_seed(int(seed) + k)), out, name, spacing_affine(spacing))
    print(f"wrote {len(files)} volumes with speckle to {output}")


if __name__ == "__main__":
    fire.Fire(main)
