"""Load this bundle in MONAI Label 0.8.5 the way a MONAI Label app does, and run one inference and one training request.

MONAI Label is not a dependency of the bundle (it would pull a GPU torch); run this in a separate venv
(commands in docs/benchmarks/monailabel.md):

    python scripts/monailabel_check.py infer --bundle . [--ddim_steps 5]
    python scripts/monailabel_check.py train --bundle . --datalist data/phantoms/datalist.json [--max_epochs 1]
"""

import json
import os
import tempfile
import time

import fire
import nibabel as nib
import numpy as np


def infer(bundle=".", ddim_steps=5, seed=7):
    """``BundleInferTask`` on a 128^3 reference volume with a shifted origin: prints the result's shape, dtype \
and affine."""
    from monailabel.tasks.infer.bundle import BundleInferTask

    bundle = os.path.abspath(bundle)
    task = BundleInferTask(bundle, conf={}, load_strict=True)
    print("valid:", task.is_valid(), "options:", task._config)
    tmp = tempfile.mkdtemp()
    affine = np.diag([6 / 128, 2 / 128, 6 / 128, 1.0])
    affine[:3, 3] = (1.0, 2.0, 3.0)
    ref = os.path.join(tmp, "reference.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((128, 128, 128), np.uint8), affine), ref)
    t0 = time.time()
    result, _ = task({"image": ref, "device": "cpu", "ddim_steps": int(ddim_steps), "seed": int(seed),
                      "output_dir": tmp})
    img = nib.load(result)
    arr = np.asarray(img.dataobj)
    print(json.dumps({"seconds": round(time.time() - t0, 1), "shape": list(img.shape),
                      "dtype": str(img.get_data_dtype()), "affine_equal": bool(np.allclose(img.affine, affine)),
                      "min": int(arr.min()), "max": int(arr.max())}))


def train(bundle=".", datalist="data/phantoms/datalist.json", max_epochs=1, num=2):
    """``BundleTrainTask`` on ``num`` volumes of a datalist (MONAI Label's own request format, single process)."""
    from monai.data import load_decathlon_datalist
    from monailabel.tasks.train.bundle import BundleTrainTask

    bundle = os.path.abspath(bundle)
    task = BundleTrainTask(bundle, conf={})
    print("valid:", task.is_valid(), "options:", task.config())
    items = load_decathlon_datalist(os.path.abspath(datalist), True, "training")[: int(num)]

    class Store:  # the part of a MONAI Label datastore that BundleTrainTask uses
        def datalist(self):
            return [{"image": i["image"], "label": i.get("label", i["image"])} for i in items]

    t0 = time.time()
    request = {**task.config(), "model": "retinal_oct_synthesis", "max_epochs": int(max_epochs), "device": "cpu",
               "multi_gpu": False, "val_split": 0.5, "pretrained": True}
    task(request, Store())
    print(json.dumps({"seconds": round(time.time() - t0, 1), "trained_on": len(items)}))


if __name__ == "__main__":
    fire.Fire({"infer": infer, "train": train})
