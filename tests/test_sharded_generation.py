"""Sharded generation under torchrun (gloo, 2 CPU processes) and reruns that skip finished volumes."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bundle.data import shard_requests, synthesis_requests
from test_conditional import conditional  # noqa: F401  (module fixture: tiny label-guided weights and label sets)
from test_inference import models  # noqa: F401  (module fixture: tiny random weights in models/model.pt)
from tiny import ROOT, TINY


def _cmd(launcher, overlay, out, weights, tiny, **over):
    configs = [str(ROOT / "configs" / "inference.json"), str(tiny)]
    configs += [str(ROOT / "configs" / overlay)] if overlay else []
    args = ["--config_file", repr(configs), "--models_dir", str(weights), "--output_dir", str(out)]
    for k, v in over.items():
        args += [f"--{k}", str(v)]
    return launcher + ["-m", "monai.bundle", "run"] + args


def _run(cmd, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def _volumes(folder):
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def test_shards_are_round_robin_and_refuse_more_processes_than_volumes():
    reqs = synthesis_requests(5, seed=10)
    shards = [shard_requests(reqs, r, 2, 5) for r in range(2)]
    assert [s["seed"] for s in shards[0]] == [10, 12, 14] and [s["seed"] for s in shards[1]] == [11, 13]
    with pytest.raises(ValueError, match="smaller than the number of processes"):
        shard_requests(reqs[:1], 0, 2, 1)
    with pytest.raises(ValueError, match="not in a world"):
        shard_requests(reqs, 2, 2)


def test_torchrun_two_processes_write_the_single_process_volumes(models, tmp_path):  # noqa: F811
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = _cmd(torchrun, "multi_gpu_inference.json", tmp_path / "sharded", models, tiny, num_samples=3, seed=4)
    r = _run(cmd, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(_cmd([sys.executable], None, tmp_path / "single", models, tiny, num_samples=3, seed=4), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sharded, single = _volumes(tmp_path / "sharded"), _volumes(tmp_path / "single")
    assert sorted(sharded) == [f"synthetic_oct_seed{s}.nii.gz" for s in (4, 5, 6)] == sorted(single)
    for name in single:
        np.testing.assert_array_equal(sharded[name], single[name])
    # fewer volumes than processes: a clear error, nothing written
    r = _run(_cmd(torchrun, "multi_gpu_inference.json", tmp_path / "few", models, tiny, num_samples=1), tmp_path)
    assert r.returncode != 0 and "smaller than the number of processes" in r.stdout + r.stderr
    assert not list((tmp_path / "few").glob("*.nii.gz"))


def test_rerun_skips_finished_volumes(models, tmp_path):  # noqa: F811
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    r = _run(_cmd([sys.executable], None, out, models, tiny, num_samples=2, seed=0), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "synthetic_oct_seed1.nii.gz").unlink()  # as if the run had died before volume 1 was complete
    r = _run(_cmd([sys.executable], None, out, models, tiny, num_samples=3, seed=0), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote" in r.stdout + r.stderr
    assert (out / "synthetic_oct_seed0.nii.gz").stat().st_mtime_ns == stamp["synthetic_oct_seed0.nii.gz"]  # kept
    assert (out / "synthetic_oct_seed1.nii.gz").is_file() and (out / "synthetic_oct_seed2.nii.gz").is_file()
    r = _run(_cmd([sys.executable], None, out, models, tiny, num_samples=3, seed=0), tmp_path)
    assert r.returncode == 0 and "already in" in r.stdout + r.stderr
    assert synthesis_requests(3, 0, out) == [] and len(synthesis_requests(3, 0, out, ext="nrrd")) == 3


def test_torchrun_shards_label_guided_pairs_into_one_decathlon_folder(conditional, tmp_path):  # noqa: F811
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    outs = {}
    for name, launcher, overlays in (("sharded", torchrun, ["inference_conditional.json", "multi_gpu_inference.json"]),
                                     ("single", [sys.executable], ["inference_conditional.json"])):
        configs = [str(ROOT / "configs" / "inference.json"), str(tiny)] + [str(ROOT / "configs" / o) for o in overlays]
        cmd = launcher + ["-m", "monai.bundle", "run", "--config_file", repr(configs), "--models_dir",
                          str(conditional / "models"), "--dataset_dir", str(conditional / "labels"),
                          "--output_dir", str(tmp_path / name)]
        r = _run(cmd, tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[name] = _volumes(tmp_path / name / "imagesTr")
        index = json.loads((tmp_path / name / "dataset.json").read_text())
        assert index["numTraining"] == 3 and len(index["training"]) == 3
    assert sorted(outs["sharded"]) == sorted(outs["single"]) and len(outs["single"]) == 3
    for k in outs["single"]:
        np.testing.assert_array_equal(outs["sharded"][k], outs["single"][k])


def _rank_pid(rank):
    """pid of the torchrun worker with RANK=rank (read from /proc), or None."""
    import glob

    for env in glob.glob("/proc/[0-9]*/environ"):
        try:
            data = open(env, "rb").read().split(b"\0")
            cmd = open(env.replace("environ", "cmdline"), "rb").read()
        except OSError:
            continue
        if f"RANK={rank}".encode() in data and b"monai.bundle" in cmd and b"torch.distributed.run" not in cmd:
            return int(env.split("/")[2])
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_a_rank_that_dies_stops_the_others_clearly_and_a_rerun_completes(models, tmp_path):  # noqa: F811
    import signal
    import time

    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out = tmp_path / "out"
    cmd = _cmd(torchrun, "multi_gpu_inference.json", out, models, tiny, num_samples=40, seed=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(list(out.glob("synthetic_oct_seed*.nii.gz"))) < 2:
        time.sleep(0.05)
    pid = _rank_pid(1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # rank 1 dies mid-run
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "rank 0: stopped, another process of this run failed" in log and "run the same command again" in log
    done = sorted(out.glob("synthetic_oct_seed*.nii.gz"))
    assert 2 <= len(done) < 40
    for p in done:  # every file under its final name is complete
        assert np.asarray(nib.load(p).dataobj).shape == (16, 32, 32)
    assert not [p for p in out.iterdir() if not p.name.startswith(".") and ".tmp" in p.name]
    stamp = {p.name: p.stat().st_mtime_ns for p in done}
    r = _run(_cmd(torchrun, "multi_gpu_inference.json", out, models, tiny, num_samples=40, seed=0), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(out.glob("synthetic_oct_seed*.nii.gz"))) == 40
    assert all(p.stat().st_mtime_ns == stamp[p.name] for p in done), "finished volumes are skipped, not rewritten"
