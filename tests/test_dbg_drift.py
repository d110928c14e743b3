from __future__ import annotations
import numpy as np, torch, scipy.sparse as sp
from pathlib import Path
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from tests.stack import ServerThread, settings_for

def test_dbg(serving_artifacts, serving_triton, tmp_path: Path) -> None:
    from server.bundle import load_bundle
    bundle = load_bundle(serving_artifacts.bundle)
    settings = settings_for(serving_artifacts, serving_triton.grpc_url, tmp_path, variants=["torchscript_fp32"], drift_window=1_000)
    seen = []
    with ServerThread(settings) as server, RecommenderClient(server.target, timeout=30, retry=NO_RETRY) as client:
        orig = server.server.drift.observe_answer
        def spy(user_id, history_size, model_scores=None):
            seen.append((user_id, history_size, {k: np.asarray(v[:10]) for k, v in (model_scores or {}).items()}))
            return orig(user_id, history_size, model_scores)
        server.server.drift.observe_answer = spy
        for user in list(bundle.user_index)[:3]:
            client.recommend(str(user), k=10, budget_ms=5000)
    hist = sp.load_npz(bundle.folder / "histories.npz").tocsr()
    g = torch.jit.load(str(next(serving_artifacts.repository.glob("ease_torchscript_fp32/*/model.pt"))))
    print(type(next(iter(bundle.user_index))))
    for user_id, n, scores in seen:
        idx = bundle.user_index.get(user_id, bundle.user_index.get(int(user_id)) if user_id.isdigit() else None)
        row = hist[idx]
        items = torch.tensor(row.indices[None].astype(np.int64)); rat = torch.tensor(row.data[None].astype(np.float32))
        none = torch.full((1, 1), -1, dtype=torch.int64)
        with torch.no_grad():
            _, top, _ = g(items, rat, none, none)
        print(user_id, n, row.nnz, {k: np.round(np.asarray(v, float), 4) for k, v in scores.items()})
        print("   offline", np.round(top[0, :10].numpy(), 4))
