"""Export into a model repository and serve it from the real embedded Triton over gRPC."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from recsys import contract
from tritonclient.grpc import model_config_pb2 as mc

from export.formats import VARIANTS, runner
from export.graphs import ItemScorerGraph, UserTowerGraph, full_rung_graph, graphs_for, signature
from export.parity import Parity, ParityError, check, graph_feeds, torch_runner
from export.pipeline import export_models, parity_users
from export.repository import read_config, versions
from server.triton import EmbeddedTriton, ModelLoadError, TritonNotFound, TritonStartError
from server.triton.launcher import Ports
from training.data.splits import make_split
from training.models.base import TrainingData
from training.pipeline import LEARNED, train_models


@pytest.fixture(scope="module")
def exported(tiny_data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> dict:
    dataset = tiny_data.dataset
    split = make_split(dataset, "u1")
    trained = train_models(tiny_data, list(LEARNED), max_epochs=4, progress=False, device="cpu", ensemble=False)
    repository = tmp_path_factory.mktemp("model_repository")
    rows = export_models(
        trained.models, dataset, split.train, split.test, repository, top_n=20, fused_two_tower=True, full_rung=True
    )
    graphs = {g: graph for n in LEARNED for g, graph in graphs_for(n, trained.models[n], 20, fused=True).items()}
    # Exported without an ensemble: every catalogue scorer is a member.
    graphs[contract.FULL_RUNG] = full_rung_graph(graphs, contract.full_rung_members(dict.fromkeys(LEARNED, 1.0)))
    task = parity_users(dataset, split.train, split.test, 12)
    return {
        "rows": rows,
        "repository": repository,
        "graphs": graphs,
        "models": trained.models,
        "task": task,
        "dataset": dataset,
        "split": split,
    }


@pytest.fixture(scope="module")
def triton(exported: dict[str, Any]) -> Iterator[EmbeddedTriton]:
    names = tuple(r["repository_model"] for r in exported["rows"])
    with EmbeddedTriton(exported["repository"], models=names, startup_timeout=120) as server:
        yield server


def _feeds(exported: dict, graph_name: str) -> dict[str, np.ndarray]:
    task = exported["task"]
    return graph_feeds(
        exported["graphs"], graph_name, task.history[task.users], task.users, exported["models"]["two_tower"].user_codes
    )


def test_every_variant_exported_with_a_parsable_config(exported: dict) -> None:
    rows = exported["rows"]
    kinds = {(r["model"], r["variant"]) for r in rows}
    # Every graph holds its weights in Linear layers (the RBM, EASE and the item scorer too), so
    # every variant, int8 included, applies to each.
    for graph in contract.ROLES:
        expected = {v for v in VARIANTS if graph != contract.FULL_RUNG or VARIANTS[v].format == "torchscript"}
        assert {v for g, v in kinds if g == graph} == expected, graph
    for row in rows:
        config = read_config(exported["repository"] / row["repository_model"])
        assert config.name == row["repository_model"]
        assert config.backend == VARIANTS[row["variant"]].backend
        assert config.max_batch_size > 0 and config.dynamic_batching is not None and config.model_warmup
        # Dynamic int8 TorchScript has CPU kernels only: pinned to the CPU even on a GPU machine.
        expected_kind = "KIND_CPU" if row["variant"] == "torchscript_int8" else "KIND_AUTO"
        assert mc.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == expected_kind
        if not VARIANTS[row["variant"]].quantized:
            assert row["parity_max_abs_err"] <= 1e-4
        assert abs(row["ndcg@10_delta"]) <= 0.03


@pytest.mark.slow  # starts the embedded Triton
def test_triton_serves_exactly_what_was_exported(exported: dict, triton: EmbeddedTriton) -> None:
    for row in exported["rows"]:
        name, variant = row["repository_model"], VARIANTS[row["variant"]]
        graph = exported["graphs"][row["model"]]
        feeds = _feeds(exported, row["model"])
        inputs = []
        for tensor, (tname, dtype, _) in zip(feeds.values(), signature(graph)[0], strict=True):
            infer_input = grpcclient.InferInput(tname, list(tensor.shape), dtype)
            infer_input.set_data_from_numpy(tensor)
            inputs.append(infer_input)
        result = triton.client.infer(name, inputs)
        served = [result.as_numpy(tname) for tname, _, _ in signature(graph)[1]]
        in_process = runner(variant, exported["repository"] / name / str(row["version"]) / variant.filename)(feeds)
        reference = torch_runner(graph)(feeds)
        for got, local, ref in zip(served, in_process, reference, strict=True):
            assert got.shape == ref.shape, name
            np.testing.assert_allclose(got, local, rtol=1e-6, atol=1e-6, err_msg=name)
            if not variant.quantized and ref.dtype.kind == "f":
                np.testing.assert_allclose(got, ref, atol=1e-4, err_msg=name)
        if not isinstance(graph, UserTowerGraph):  # top-N never holds a rated or excluded item
            blocked = feeds["EXCLUDE_IDX__1"] if isinstance(graph, ItemScorerGraph) else feeds["ITEM_IDX__0"]
            for top, row_blocked in zip(served[0], blocked, strict=True):
                assert not set(top.tolist()) & {int(i) for i in row_blocked if i >= 0}, name


def test_reexport_adds_a_version_and_prunes_old_ones(exported: dict, tmp_path: Path) -> None:
    repo, split = tmp_path / "repo", exported["split"]
    for expected in (1, 2, 3):
        rows = export_models(
            {"sae": exported["models"]["sae"]},
            exported["dataset"],
            split.train,
            split.test,
            repo,
            variants=["onnx_fp32"],
            keep_versions=2,
        )
        assert rows[0]["version"] == expected
    assert versions(repo / "sae_onnx_fp32") == [2, 3]
    assert read_config(repo / "sae_onnx_fp32").version_policy.latest.num_versions == 2


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_TRITON_HOME", str(tmp_path))
    with pytest.raises(TritonNotFound, match="make setup"):
        EmbeddedTriton(tmp_path, home=tmp_path / "nowhere")


@pytest.mark.slow  # starts the embedded Triton
def test_port_conflict_names_the_port(exported: dict) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TritonStartError, match=f"grpc port {port} .* already in use"):
            EmbeddedTriton(exported["repository"], ports=Ports(grpc=port)).start()


class _FirstStartsFail(EmbeddedTriton):
    """tritonserver behind a shell that ends the first ``failures`` starts as ``how`` says, then execs it:
    the rare abort of Triton 2.51 while it starts cannot be provoked on demand."""

    def __init__(self, repository: Path, marker_dir: Path, failures: int, how: str) -> None:
        super().__init__(repository, startup_timeout=60)
        self.marker_dir, self.failures, self.how = marker_dir, failures, how

    def _command(self, backends: Path) -> list[str]:
        count, mark = 'n=$(ls "$0" | wc -l)', 'touch "$0/start-$n"'
        script = f'{count}; if [ "$n" -lt {self.failures} ]; then {mark}; {self.how}; fi; exec "$@"'
        return ["sh", "-c", script, str(self.marker_dir), *super()._command(backends)]


@pytest.mark.slow  # starts the embedded Triton
def test_a_triton_that_aborts_while_starting_is_started_again(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "starts").mkdir()
    triton = _FirstStartsFail(tmp_path / "repo", tmp_path / "starts", failures=2, how='kill -ABRT "$$"')
    with triton:
        assert triton.client.is_server_live()
    assert len(list((tmp_path / "starts").iterdir())) == 2  # two aborted, the third came up


@pytest.mark.slow  # starts the embedded Triton
def test_a_triton_that_keeps_aborting_or_exits_with_a_status_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    for how, starts, code in (('kill -ABRT "$$"', 3, -6), ("exit 3", 1, 3)):
        starts_dir = tmp_path / f"starts{code}"
        starts_dir.mkdir()
        with pytest.raises(TritonStartError, match=f"exited with code {code} while starting"):
            _FirstStartsFail(tmp_path / "repo", starts_dir, failures=9, how=how).start()
        # An abort is tried START_ATTEMPTS times; an exit with a status would exit again: once.
        assert len(list(starts_dir.iterdir())) == starts


@pytest.mark.slow  # starts the embedded Triton
def test_a_broken_model_is_named_and_the_server_survives(tmp_path: Path, exported: dict) -> None:
    repo = tmp_path / "repo"
    good = next(r for r in exported["rows"] if r["repository_model"] == "sae_onnx_fp32")
    shutil.copytree(exported["repository"] / good["repository_model"], repo / "sae_onnx_fp32")
    broken = repo / "broken_model"
    shutil.copytree(repo / "sae_onnx_fp32", broken)
    config = (broken / "config.pbtxt").read_text().replace('name: "sae_onnx_fp32"', 'name: "broken_model"')
    (broken / "config.pbtxt").write_text(config)
    for version in versions(broken):
        (broken / str(version) / "model.onnx").write_bytes(b"not an onnx file")
    with EmbeddedTriton(repo, models=("sae_onnx_fp32",)) as server:
        with pytest.raises(ModelLoadError, match="'broken_model'"):
            server.load("broken_model")
        assert server.client.is_model_ready("sae_onnx_fp32")
        assert server.process is not None
        pid = server.process.pid
        server.restart()
        server.load("sae_onnx_fp32")
        assert server.is_ready() and server.process is not None and server.process.pid != pid
        process = server.process
    assert process.poll() is not None  # stopped with the context


@pytest.mark.slow  # starts the embedded Triton
def test_triton_dies_with_a_killed_parent(exported: dict, tmp_path: Path) -> None:
    """SIGKILL gives the parent no chance to clean up; PR_SET_PDEATHSIG must still stop Triton."""
    pid_file = tmp_path / "triton.pid"
    script = (
        f"import time; from pathlib import Path; from server.triton import EmbeddedTriton\n"
        f"t = EmbeddedTriton(Path({str(exported['repository'])!r})).start()\n"
        f"Path({str(pid_file)!r}).write_text(str(t.process.pid)); time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    triton_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{triton_pid}").exists():
        state = Path(f"/proc/{triton_pid}/stat").read_text().split()[2] if Path(f"/proc/{triton_pid}").exists() else "X"
        if state == "Z":
            break
        time.sleep(0.2)
    assert not Path(f"/proc/{triton_pid}").exists() or state == "Z", "tritonserver outlived its parent"


def test_a_parity_failure_leaves_the_repository_untouched(
    exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import export.pipeline as pipeline

    repo, split = tmp_path / "repo", exported["split"]
    export_models(
        {"sae": exported["models"]["sae"]}, exported["dataset"], split.train, split.test, repo, variants=["onnx_fp32"]
    )
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))

    def failing_check(name: str, variant: str, *args: Any) -> Parity:
        if variant == "torchscript_fp32":
            raise ParityError(f"{name} {variant}: planted mismatch")
        return check(name, variant, *args)

    monkeypatch.setattr(pipeline, "check", failing_check)
    with pytest.raises(ParityError, match="planted mismatch"):
        export_models(
            {"sae": exported["models"]["sae"]},
            exported["dataset"],
            split.train,
            split.test,
            repo,
            variants=["onnx_fp32", "torchscript_fp32"],
        )
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


@pytest.mark.slow  # starts the embedded Triton
def test_ragged_requests_batch_into_one_execution_and_a_bad_one_fails_alone(
    exported: dict, triton: EmbeddedTriton
) -> None:
    """Single-user requests of different lengths, sent together, are executed in batches (one
    forward pass each) and get exactly what each gets alone; an out-of-range index fails only
    its own request."""
    import asyncio

    import tritonclient.grpc.aio as tritonaio

    from server.triton_metrics import batching_between, scrape

    feeds = _feeds(exported, "sae")
    users = [{n: v[i : i + 1] for n, v in feeds.items()} for i in range(len(next(iter(feeds.values()))))]
    for user in users:  # cut each to its own history length (feeds pad every row to the longest)
        length = max(int((user["ITEM_IDX__0"] >= 0).sum()), 1)
        user["ITEM_IDX__0"], user["RATING__1"] = user["ITEM_IDX__0"][:, :length], user["RATING__1"][:, :length]
        user["CANDIDATE_IDX__3"] = np.arange(length % 5 + 1, dtype=np.int64)[None]
    bad = {
        **users[0],
        "ITEM_IDX__0": np.full((1, 3), 10**9, dtype=np.int64),
        "RATING__1": np.full((1, 3), 4.0, dtype=np.float32),
    }
    names = [
        r["repository_model"]
        for r in exported["rows"]
        if r["model"] == "sae" and r["variant"] in ("torchscript_fp32", "onnx_fp32")
    ]

    def inputs(user: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
        out = []
        for tname, tensor in user.items():
            kind = "INT64" if tensor.dtype == np.int64 else "FP32"
            infer_input = grpcclient.InferInput(tname, list(tensor.shape), kind)
            infer_input.set_data_from_numpy(tensor)
            out.append(infer_input)
        return out

    async def burst(name: str) -> list:
        async with tritonaio.InferenceServerClient(triton.grpc_url) as client:
            calls = [client.infer(name, inputs(u)) for u in [*users, bad, *users]]
            return await asyncio.gather(*calls, return_exceptions=True)

    for name in names:
        alone = [triton.client.infer(name, inputs(u)) for u in users]
        before = scrape(triton.metrics_url)
        together = asyncio.run(burst(name))
        counts = batching_between(before, scrape(triton.metrics_url))[name]
        assert counts["requests"] >= 2 * len(users)  # the Python backend counts an error response too
        assert counts["avg_batch"] > 1.5, counts  # batches formed across different lengths
        failed = together[len(users)]
        assert isinstance(failed, Exception) and "bounds" in str(failed).lower(), failed
        for got, want in zip(together[: len(users)] + together[len(users) + 1 :], alone + alone, strict=True):
            assert not isinstance(got, Exception), got
            for tname in ("TOP_IDX__0", "TOP_SCORE__1", "CANDIDATE_SCORE__2"):
                assert got.as_numpy(tname).shape == want.as_numpy(tname).shape, (name, tname)
                np.testing.assert_allclose(
                    got.as_numpy(tname), want.as_numpy(tname), rtol=1e-5, atol=1e-5, err_msg=f"{name} {tname}"
                )


@pytest.mark.slow  # starts the embedded Triton
def test_bursts_of_batched_requests_never_wait_out_the_batchers_idle_timer(
    exported: dict, triton: EmbeddedTriton
) -> None:
    """Eight concurrent requests, forty times: one runs at once, the rest queue and go as
    the next batch as soon as the instance is free. With a queue policy in the config, Triton
    2.51 held that batch for its scheduler's 500 ms idle wait in one burst out of 10 to 25, which
    the server saw as a model missing its budget (export/repository.py)."""
    import asyncio

    import tritonclient.grpc.aio as tritonaio

    feeds = _feeds(exported, "rbm")
    user = {n: v[:1] for n, v in feeds.items()}
    name = next(
        r["repository_model"] for r in exported["rows"] if r["model"] == "rbm" and r["variant"] == "torchscript_fp32"
    )
    tensors = []
    for tname, tensor in user.items():
        infer_input = grpcclient.InferInput(tname, list(tensor.shape), "INT64" if tensor.dtype == np.int64 else "FP32")
        infer_input.set_data_from_numpy(tensor)
        tensors.append(infer_input)

    async def bursts() -> list[float]:
        async with tritonaio.InferenceServerClient(triton.grpc_url) as client:
            await client.infer(name, tensors)  # first-call costs paid outside the bursts
            walls = []
            for _ in range(40):
                started = time.perf_counter()
                await asyncio.gather(*(client.infer(name, tensors) for _ in range(8)))
                walls.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.05)
            return walls

    walls = asyncio.run(bursts())
    # A burst takes a few ms; the stall is the batcher's fixed 500 ms wait, so 400 ms separates them
    # on any machine that can run this suite at all.
    assert max(walls) < 400, sorted(walls)[-5:]


def test_the_one_graph_two_tower_equals_its_two_halves(exported: dict) -> None:
    """One call (user tower + item scorer in one graph) answers what the two calls in a row answer."""
    graphs, task = exported["graphs"], exported["task"]
    histories = task.history[task.users]
    fused = torch_runner(graphs["two_tower"])(_feeds(exported, "two_tower"))
    embedding = torch_runner(graphs["two_tower_user"])(_feeds(exported, "two_tower_user"))[0]
    items = _feeds(exported, "two_tower_items")
    top_idx, top_score = torch_runner(graphs["two_tower_items"])(items)
    np.testing.assert_allclose(fused[2], embedding, rtol=1e-6)
    np.testing.assert_allclose(fused[1], top_score, rtol=1e-5)
    assert (fused[0] == top_idx).all()
    assert histories.shape[0] == len(top_idx)


def test_the_rbm_graph_written_as_linear_layers_scores_as_the_trained_rbm(exported: dict) -> None:
    """The RBM graph holds its weights as two nn.Linear layers (so int8 applies); it must score
    exactly as the trained model's own einsum pass."""
    task, model = exported["task"], exported["models"]["rbm"]
    feeds = _feeds(exported, "rbm")
    served = torch_runner(exported["graphs"]["rbm"])(feeds)[2]
    offline = model.score(task.history[task.users], task.users)
    expected = np.take_along_axis(offline, feeds["CANDIDATE_IDX__3"], axis=1)
    finite = np.isfinite(expected)
    assert finite.mean() > 0.5
    np.testing.assert_allclose(served[finite], expected[finite], rtol=1e-4, atol=1e-5)


def _full_rung_feeds(exported: dict, width: int) -> dict[str, np.ndarray]:
    """The full-rung graph's inputs as the server sends them: local candidates the user did not rate,
    -1 padded to ``width`` (the candidate count), a few fewer than that for some users."""
    feeds = _feeds(exported, contract.FULL_RUNG)
    n_items = exported["graphs"][contract.FULL_RUNG].n_items
    local = np.full((len(feeds["ITEM_IDX__0"]), width), -1, dtype=np.int64)
    for row, rated in enumerate(feeds["ITEM_IDX__0"]):
        eligible = np.setdiff1d(np.arange(n_items), rated[rated >= 0])
        picked = np.random.default_rng(row).permutation(eligible)[: width - row % 3]
        local[row, : len(picked)] = picked
    return {**feeds, "CANDIDATE_IDX__4": local}


def test_the_full_rung_graph_answers_what_its_members_graphs_answer(exported: dict) -> None:
    """Member by member, the full-rung graph returns what the per-model plan gets from the separate
    graphs: the two-tower graph's outputs, the candidates the server would make of them
    (server.recommend: its top-N and the local candidates by its score, the first C), and each
    ranker's catalogue graph over those candidates."""
    from server.fusion import merge, ranked

    graphs = exported["graphs"]
    full = graphs[contract.FULL_RUNG]
    width = 30
    feeds = _full_rung_feeds(exported, width)
    named = dict(zip(contract.full_rung(full.members).outputs, torch_runner(full)(feeds), strict=True))
    own = contract.full_rung_outputs(full.members)
    items, ratings, codes, exclude, local = feeds.values()
    two_tower = torch_runner(graphs["two_tower"])(
        dict(zip(contract.TWO_TOWER.inputs, (items, ratings, codes, exclude), strict=True))
    )
    for name, want in zip(own["two_tower"], two_tower, strict=True):
        np.testing.assert_allclose(named[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    item_scores = torch_runner(graphs["two_tower_items"].scores)({"e": two_tower[2]})[0]
    generated = named[contract.GENERATED]
    assert generated.shape == local.shape
    for row in range(len(items)):
        seeds = local[row][local[row] >= 0]
        top = ranked(two_tower[0][row], two_tower[1][row])
        expected = merge(top, seeds, item_scores[row][seeds]).items[:width]
        got = generated[row][generated[row] >= 0]
        assert got.tolist() == expected.tolist(), row
        assert (generated[row][len(got) :] == -1).all()
    for member in full.members[1:]:
        scorer = torch_runner(graphs[member])(
            dict(zip(contract.CATALOG.inputs, (items, ratings, exclude, generated), strict=True))
        )
        for name, want in zip(own[member], scorer, strict=True):
            np.testing.assert_allclose(named[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow  # starts the embedded Triton
def test_the_served_full_rung_answers_what_the_served_members_answer(exported: dict, triton: EmbeddedTriton) -> None:
    """Through the real Triton: the full-rung model's outputs equal the members' own models called
    with the same inputs (the rankers with its candidates), for requests of different candidate
    counts sent together (batched, padded, cut back per request)."""
    import asyncio

    import tritonclient.grpc.aio as tritonaio

    from server.triton_metrics import batching_between, scrape

    full = exported["graphs"][contract.FULL_RUNG]
    own = contract.full_rung_outputs(full.members)
    variant = "torchscript_fp32"
    users = []
    for width in (8, 20, 30):
        feeds = _full_rung_feeds(exported, width)
        users += [{n: v[i : i + 1] for n, v in feeds.items()} for i in range(4)]

    def inputs(user: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
        out = []
        for tname, tensor in user.items():
            infer_input = grpcclient.InferInput(
                tname, list(tensor.shape), "INT64" if tensor.dtype == np.int64 else "FP32"
            )
            infer_input.set_data_from_numpy(tensor)
            out.append(infer_input)
        return out

    name = contract.model_name(contract.FULL_RUNG, variant)

    async def together() -> list:
        async with tritonaio.InferenceServerClient(triton.grpc_url) as client:
            return await asyncio.gather(*(client.infer(name, inputs(u)) for u in users))

    triton.client.infer(name, inputs(users[0]))  # first-call costs outside the measured burst
    before = scrape(triton.metrics_url)
    answers = asyncio.run(together())
    assert batching_between(before, scrape(triton.metrics_url))[name]["avg_batch"] > 1.0
    for user, answer in zip(users, answers, strict=True):
        items, ratings, codes, exclude, local = user.values()
        generated = answer.as_numpy(contract.GENERATED)
        assert generated.shape == local.shape  # cut back to this request's own candidate count
        alone = dict(zip(contract.full_rung(full.members).outputs, torch_runner(full)(user), strict=True))
        assert (generated == alone[contract.GENERATED]).all()
        tt = triton.client.infer(
            f"two_tower_{variant}",
            inputs(dict(zip(contract.TWO_TOWER.inputs, (items, ratings, codes, exclude), strict=True))),
        )
        for fused_name, own_name in zip(own["two_tower"], contract.TWO_TOWER.outputs, strict=True):
            np.testing.assert_allclose(answer.as_numpy(fused_name), tt.as_numpy(own_name), rtol=1e-5, atol=1e-5)
        for member in full.members[1:]:
            scored = triton.client.infer(
                f"{member}_{variant}",
                inputs(dict(zip(contract.CATALOG.inputs, (items, ratings, exclude, generated), strict=True))),
            )
            for fused_name, own_name in zip(own[member], contract.CATALOG.outputs, strict=True):
                np.testing.assert_allclose(
                    answer.as_numpy(fused_name), scored.as_numpy(own_name), rtol=1e-5, atol=1e-5, err_msg=fused_name
                )
