"""Table 2 in miniature: segmentation on Real, 200 % Syn, Real + 100 / 200 % Syn and low-resolution Real, over
several training seeds, plus the label fidelity of the synthetic pairs (bundle.segmentation.experiment).

    python scripts/segmentation_table2.py --data_dir data/table2/seg --pairs out/table2/pairs --out runs/table2 \
        --seeds 0,1,2 --jobs 2 --output_file docs/benchmarks/table2.json
"""

import os
import sys

import fire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bundle.segmentation.experiment import markdown, run_table2  # noqa: E402


def main(data_dir: str, pairs: str, out: str = "runs/table2", seeds="0,1,2", tasks="layers,av", jobs: int = 2,
         layer_iterations="20,10", av_iterations="50,20", output_file: str | None = None,
         rows: str | None = None) -> None:
    """Run (or resume) every segmentation run and print the table; ITERATIONS = epoch_length,max_epochs;
    ROWS: some of the table's rows, separated by ';' (default: all)."""
    def ints(v):
        return tuple(int(x) for x in (v.split(",") if isinstance(v, str) else v))

    tasks = tuple(tasks.split(",") if isinstance(tasks, str) else tasks)
    table = run_table2(ROOT, data_dir, pairs, out, ints(seeds), tasks, jobs, ints(layer_iterations),
                       ints(av_iterations), output_file, *([tuple(rows.split(";"))] if rows else []))
    print(markdown(table))


if __name__ == "__main__":
    fire.Fire(main)
