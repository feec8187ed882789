"""Experiment tracking of bundle training (MONAI's MLFlowHandler in train.json): a run lands in the local store under
output_dir with its parameters, per-epoch metrics and the model; any URI by override; off by override."""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")

from medrobust.tracking import default_uri, tracking_client  # noqa: E402


def _train(run_workflow, npz, tmp_path, **overrides):
    return run_workflow(["train.json"], dataset_dir=str(npz), ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "out"),
                        spatial_size=[16, 16], batch_size=16, **overrides)  # fmt: skip


@pytest.mark.slow  # ~8 CPU-s: mlflow import, store creation, 2 epochs
def test_training_run_lands_in_the_local_store(run_workflow, synthetic_npz, tmp_path):
    _train(run_workflow, synthetic_npz, tmp_path, epochs=2)
    client = tracking_client(default_uri(tmp_path / "out"))  # sqlite:///<output_dir>/mlflow.db
    (run,) = client.search_runs([client.get_experiment_by_name("lesion_classification").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("train_")
    assert run.data.params["epochs"] == "2" and run.data.params["world_size"] == "1" and run.data.params["defense"] == "none"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")] == [1, 2]  # per epoch (validation)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 6  # per iteration: 48 images / 16, 2 epochs
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]
    assert list((tmp_path / "out" / "mlruns").rglob("model.pt"))  # artifacts next to the database


@pytest.mark.slow
def test_tracking_uri_override_and_off(run_workflow, synthetic_npz, tmp_path):
    uri = default_uri(tmp_path / "elsewhere")
    _train(run_workflow, synthetic_npz, tmp_path, epochs=1, tracking_uri=uri, experiment_name="mine")
    client = tracking_client(uri)
    assert len(client.search_runs([client.get_experiment_by_name("mine").experiment_id])) == 1
    _train(run_workflow, synthetic_npz, tmp_path / "off", epochs=1, track=False)
    assert (tmp_path / "off" / "models" / "model.pt").is_file() and not (tmp_path / "off" / "out" / "mlflow.db").exists()
    assert not (tmp_path / "out" / "mlflow.db").exists()  # the overridden URI was used instead of the default
