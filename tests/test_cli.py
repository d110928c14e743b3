"""The training and evaluation CLIs, end to end on synthetic data with a real MLflow store."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from recsys import contract

import export.__main__ as export_cli
from export.registry import ExportError
from export.repository import read_config
from training import evaluate, train
from training.pipeline import LEARNED

REGISTERED = ("popularity", *LEARNED, "ensemble")  # every model the default training registers


@pytest.fixture(scope="module")
def trained_state(tmp_path_factory: pytest.TempPathFactory, synthetic_dirs: dict[str, Path]) -> Path:
    state = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        summary = train.main(
            [
                "--data",
                str(synthetic_dirs["ml-100k"]),
                "--state-dir",
                str(state),
                "--max-epochs",
                "3",
                "--device",
                "cpu",
                "--no-progress",
                "--gate-margin",
                "-1",
                "--set",
                "sae.hidden=[16]",
                "--set",
                "rbm.hidden=8",
            ]
        )
    assert summary["split"] == "u1"
    registry = summary["registry"]
    # Three epochs on toy data cannot beat popularity; the gate is off here (tests/test_gates.py covers it).
    for name in REGISTERED:
        assert registry[name]["version"] == 1 and registry[name]["champion"]
    assert (state / "mlflow.db").is_file() and (state / "checkpoints" / "sae.pt").is_file()
    return state


def test_evaluate_reads_champions_back_from_the_registry(
    trained_state: Path, synthetic_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "eval.json"
    report = evaluate.main(
        ["--data", str(synthetic_dirs["ml-100k"]), "--state-dir", str(trained_state), "--out", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    models = report["models"]
    assert set(models) == set(REGISTERED)
    for name, row in models.items():
        for k in (5, 10, 20):
            assert 0.0 <= row[f"ndcg@{k}"] <= 1.0, name
        assert 0.0 <= row["cold_start"]["ndcg@10"] <= 1.0
    assert models["sae"]["rmse"] is not None and models["two_tower"]["rmse"] is None


def test_saved_run_has_weights_config_id_maps_and_curve(trained_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure(trained_state)
    for name in REGISTERED:
        folder = tracking.download(name, "1")
        assert json.loads((folder / "model.json").read_text())["model"] == name
        maps = json.loads((folder / "id_maps.json").read_text())
        assert len(maps["items"]) == 150 and len(maps["users"]) == 120
    assert list((trained_state / "mlartifacts").rglob("sae.png"))
    members = json.loads((tracking.download("ensemble", "1") / "members.json").read_text())
    assert set(members) == {"popularity", *LEARNED}


def test_bad_arguments_say_what_to_fix(synthetic_dirs: dict[str, Path]) -> None:
    with pytest.raises(SystemExit, match=r"MODEL\.KEY=VALUE"):
        train.main(["--data", str(synthetic_dirs["ml-100k"]), "--set", "hidden=3", "--no-track"])
    with pytest.raises(SystemExit, match="unknown"):
        train.main(["--data", str(synthetic_dirs["ml-100k"]), "--models", "svd", "--no-track"])


def test_export_reads_champions_and_writes_repository_and_bundle(
    trained_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo, bundle = tmp_path / "repo", tmp_path / "bundle"
    args = [
        "--state-dir",
        str(trained_state),
        "--out",
        str(repo),
        "--bundle",
        str(bundle),
        "--variants",
        "onnx_fp32,torchscript_fp32",
        "--top-n",
        "20",
    ]
    rows = export_cli.main(args)
    # The one-graph two-tower model ("two_tower") is exported beside its two halves, and the full
    # rung (TorchScript only) when the registered fusion weights the two-tower and a catalogue scorer.
    expected = {
        f"{g}_{v}" for g in contract.ROLES for v in ("onnx_fp32", "torchscript_fp32") if g != contract.FULL_RUNG
    }
    ensemble = json.loads((bundle / "1" / "fusion.json").read_text())
    if len(contract.full_rung_members(ensemble["weights"])) > 1 and ensemble["weights"].get("two_tower", 0) > 0:
        expected.add(contract.model_name(contract.FULL_RUNG, "torchscript_fp32"))
    assert {r["repository_model"] for r in rows} == expected
    assert all(read_config(repo / r["repository_model"]).name == r["repository_model"] for r in rows)
    manifest = json.loads((bundle / "1" / "manifest.json").read_text())
    assert manifest["registry_versions"] == dict.fromkeys(REGISTERED, 1)
    catalog = json.loads((bundle / "1" / "catalog.json").read_text())
    assert len(catalog["items"]) == 150 and catalog["items"][0]["title"].startswith("Synthetic Movie")
    assert export_cli.main(args) and (bundle / "2" / "manifest.json").is_file()  # versioned with the models


def test_export_without_registered_models_says_to_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["--state-dir", str(tmp_path), "--out", str(tmp_path / "r"), "--bundle", str(tmp_path / "b")]
    with pytest.raises(ExportError, match="make train"):
        export_cli.main(args)
    # `python -m export` turns it into one line and exit status 2 (a user error), not a traceback.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        export_cli.cli(args)
    err = capsys.readouterr().err  # MLflow may log its store's creation first: the error is the last line
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("export: no registered ensemble") and "make train" in err
    assert not (tmp_path / "r").exists()


def test_export_takes_the_members_the_ensemble_pins(
    trained_state: Path, synthetic_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members' own champion aliases move independently; the served set must be the fitted one."""
    import mlflow

    from training.tracking import CHAMPION, configure, registry_name

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    configure(trained_state)
    client = mlflow.MlflowClient()
    # A second SAE version that becomes its own champion without a new ensemble.
    first = client.get_model_version(registry_name("sae"), "1")
    assert first.source is not None
    second = client.create_model_version(
        registry_name("sae"), source=first.source, run_id=first.run_id, tags=first.tags
    )
    client.set_registered_model_alias(registry_name("sae"), CHAMPION, second.version)
    try:
        rows = export_cli.main(
            [
                "--state-dir",
                str(trained_state),
                "--out",
                str(tmp_path / "r"),
                "--bundle",
                str(tmp_path / "b"),
                "--variants",
                "onnx_fp32",
                "--top-n",
                "20",
            ]
        )
        manifest = json.loads((tmp_path / "b" / "1" / "manifest.json").read_text())
        assert manifest["registry_versions"]["sae"] == 1 and rows
    finally:
        client.set_registered_model_alias(registry_name("sae"), CHAMPION, "1")
        client.delete_model_version(registry_name("sae"), second.version)


def test_export_refuses_an_ensemble_pinning_a_gated_out_member(
    trained_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from training.tracking import CHAMPION, GATE_TAG, configure, registry_name

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    configure(trained_state)
    client = mlflow.MlflowClient()
    name = registry_name("rbm")
    first = client.get_model_version(name, "1")
    assert first.source is not None
    # The pinned rbm v1 loses its champion alias to a newer version and is marked as failing its gate.
    second = client.create_model_version(name, source=first.source, run_id=first.run_id, tags=first.tags)
    client.set_registered_model_alias(name, CHAMPION, second.version)
    client.set_model_version_tag(name, "1", GATE_TAG, "failed")
    try:
        with pytest.raises(ExportError, match=r"recsys-rbm v1"):
            export_cli.main(
                [
                    "--state-dir",
                    str(trained_state),
                    "--out",
                    str(tmp_path / "r"),
                    "--bundle",
                    str(tmp_path / "b"),
                    "--variants",
                    "onnx_fp32",
                    "--top-n",
                    "20",
                ]
            )
        assert not (tmp_path / "r").exists()
    finally:
        client.set_model_version_tag(name, "1", GATE_TAG, "passed")
        client.set_registered_model_alias(name, CHAMPION, "1")
        client.delete_model_version(name, second.version)


def test_every_registered_model_is_a_pyfunc_with_the_top_k_signature(
    trained_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import pandas as pd

    from training import pyfunc, tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure(trained_state)
    for name in ("popularity", "sae", "rbm", "two_tower", "ensemble"):
        uri = tracking.model_uri(name)
        assert mlflow.models.get_model_info(uri).signature == pyfunc.SIGNATURE, name
        top = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"user_id": [1, 2]}), params={"k": 4})
        assert list(top.columns) == ["user_id", "rank", "item_id", "score"]
        assert top.groupby("user_id")["rank"].apply(list).to_dict() == {1: [1, 2, 3, 4], 2: [1, 2, 3, 4]}, name


def test_mlflow_models_predict_scores_a_registered_model(trained_state: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "input.json").write_text(
        json.dumps({"dataframe_split": {"columns": ["user_id"], "data": [[1], [2], [3]]}, "params": {"k": 5}})
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{trained_state / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(root), str(root / "protos")]),
    }
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "models", "predict", "-m", "models:/recsys-two-tower@champion"]
    command += ["-i", str(tmp_path / "input.json"), "-o", str(tmp_path / "out.json"), "--env-manager", "local"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert [(r["user_id"], r["rank"]) for r in rows] == [(u, k) for u in (1, 2, 3) for k in range(1, 6)]
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(rows) if a["user_id"] == b["user_id"])


def test_batch_score_writes_every_users_top_k_without_their_rated_items(
    trained_state: Path, synthetic_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from training import batch_score
    from training.data import load_movielens
    from training.data.splits import make_split

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "top10.parquet"
    args = ["--model", "recsys-ensemble", "--alias", "champion", "-k", "10", "--out", str(out)]
    summary = batch_score.main([*args, "--state-dir", str(trained_state)])
    top = pd.read_parquet(out)
    assert summary["users"] == 120 and summary["rows"] == len(top) == 120 * 10
    assert list(top.columns) == ["user_id", "rank", "item_id", "score"]
    assert (top.groupby("user_id")["rank"].apply(list) == [list(range(1, 11))] * 120).all()
    assert (top.groupby("user_id")["item_id"].nunique() == 10).all()
    # The ratings the training call knew: the u1 split's training part, read from the data itself.
    dataset = load_movielens(synthetic_dirs["ml-100k"])
    train = make_split(dataset, "u1").train
    rated = set(zip(dataset.user_ids.to_raw(train["user"]), dataset.item_ids.to_raw(train["item"]), strict=True))
    assert rated and not rated & set(zip(top["user_id"], top["item_id"], strict=True))


def test_batch_score_of_an_unregistered_model_says_to_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import batch_score

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as exited:
        batch_score.main(["--model", "sae", "--out", str(tmp_path / "x.parquet"), "--state-dir", str(tmp_path)])
    assert exited.value.code == 2 and "make train" in capsys.readouterr().err.splitlines()[-1]
