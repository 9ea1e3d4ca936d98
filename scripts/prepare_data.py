"""Prepare data for the bundle.

    python scripts/prepare_data.py phantoms --out data/phantoms --num 24 --size 128,128,128 --seed 0
    python scripts/prepare_data.py octa500 --src OCTA_6mm/OCT --out data/octa500 --size 128,128,128 \
[--categories table.csv]
    python scripts/prepare_data.py volumes --src MY_SCANS --out data/mine --size 128,128,128 [--axes DHW]
    python scripts/prepare_data.py preview --image data/phantoms/images/oct_0000.nii.gz --out preview.png
    python scripts/prepare_data.py fundus --out data/fundus --num 1200 --size 128 --seed 0
    python scripts/prepare_data.py aptos --src APTOS/train_images --csv APTOS/train.csv --out data/aptos --size 128
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fire  # noqa: E402

from bundle.data.prepare import prepare_octa500, prepare_phantoms, prepare_volumes, write_preview  # noqa: E402
from bundle.data.prepare_fundus import prepare_aptos, prepare_fundus  # noqa: E402


def phantoms(out, num=24, size="128,128,128", seed=0, test_fraction=0.33, pathology="random"):
    """Generate OCT phantoms, their labels and datalist.json in OUT (reruns skip finished cases)."""
    dl = prepare_phantoms(out, num, size, seed, test_fraction, pathology)
    print(f"wrote {len(dl['training'])} training + {len(dl['test'])} test phantoms to {out}/datalist.json")


def octa500(src, out, size="128,128,128", categories=None, test_fraction=1 / 3, seed=0, fov_mm=(6.0, 2.0, 6.0)):
    """Convert OCTA-500 B-scan folders in SRC to NIfTI volumes and datalist.json in OUT."""
    dl = prepare_octa500(src, out, size, categories, test_fraction, seed, fov_mm)
    print(f"wrote {len(dl['training'])} training + {len(dl['test'])} test volumes to {out}/datalist.json")


def volumes(src, out, size="128,128,128", axes="DHW", test_fraction=1 / 3, seed=0):
    """Convert your own OCT volumes in SRC (NIfTI, NRRD, MHA, DICOM series folders; MONAI LoadImage) \
to NIfTI + datalist.json."""
    dl = prepare_volumes(src, out, size, axes, test_fraction, seed)
    print(f"wrote {len(dl['training'])} training + {len(dl['test'])} test volumes to {out}/datalist.json")


def preview(image, out):
    """Write the en-face / B-scan / inter-slice preview PNG of IMAGE to OUT."""
    print(write_preview(image, out))


def fundus(out, num=1200, size=128, seed=0, test_fraction=0.2):
    """Generate fundus phantoms (RGB PNG), every mask, and datalist.json (grades) in OUT."""
    dl = prepare_fundus(out, num, size, seed, test_fraction)
    print(f"wrote {len(dl['training'])} training + {len(dl['test'])} test fundus images to {out}/datalist.json")


def aptos(src, csv, out, size=128, test_fraction=0.2, seed=0):
    """Convert APTOS-2019 photographs (SRC/<id_code>.png, CSV with diagnosis) to square PNGs in OUT."""
    dl = prepare_aptos(src, csv, out, size, test_fraction, seed)
    print(f"wrote {len(dl['training'])} training + {len(dl['test'])} test images to {out}/datalist.json")


def main():
    try:
        fire.Fire({"phantoms": phantoms, "octa500": octa500, "volumes": volumes, "preview": preview, "fundus": fundus,
                   "aptos": aptos})
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
