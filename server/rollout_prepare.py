"""Bring a bundle up beside the live one, or refuse it with nothing changed.

Checks, in order, each refusal saying what is wrong: the bundle loads and fits together (schema
version, files, catalogue and id-map sizes, id-map digest), it is not the live bundle, it has a
version of every model the live bundle serves and their files are in the repository, it has
golden requests. Then Triton loads its versions beside the live ones (explicit model control,
``version_policy: specific``), the recommender is warmed up through the real path, and the golden
requests must give export's answers. On any failure the candidate's versions are unloaded again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import grpc
import numpy as np

from server.bundle import BundleError, load_bundle
from server.errors import RecsysError
from server.golden import load_golden, verify
from server.recommend import warm_up_query
from server.runtime import BundleRuntime, build_runtime, pins_of
from server.settings import Settings
from server.store import Store
from server.triton_models import ModelLoadError, ModelPool

log = logging.getLogger(__name__)


class RolloutRefused(RecsysError):
    """The rollout command cannot be done; nothing was changed. The message says why."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def owner(runtime: BundleRuntime) -> str:
    return str(runtime.bundle.folder.resolve())


async def prepare(path: Path, live: BundleRuntime, settings: Settings, pool: ModelPool, store: Store) -> BundleRuntime:
    try:
        bundle = load_bundle(path)
    except BundleError as err:
        raise RolloutRefused(f"refused: {err}") from None
    if bundle.version == live.version:
        raise RolloutRefused(f"refused: bundle version {bundle.version} is the live bundle ({live.bundle.folder})")
    pins = pins_of(bundle, pool)
    lacking = [m for m in live.pool.models if m not in pins]
    if lacking:
        raise RolloutRefused(
            f"refused: bundle {bundle.version} has no version of {', '.join(lacking)}, which the live bundle serves"
        )
    absent = [f"{m}/{v}" for m, v in pins.items() if not (settings.model_repository / m / v).is_dir()]
    if absent:
        raise RolloutRefused(f"refused: model files missing in {settings.model_repository}: {', '.join(absent)}")
    runtime = build_runtime(bundle, settings, pool, store)
    try:
        load_golden(runtime)
        await pool.refresh(load=False)  # what is loaded now: a version another replica loaded is not reloaded
        await asyncio.gather(*(pool.load_versions(m, pool.wanted(m) | set(pool.versions.get(m, ()))) for m in pins))
        await pool.refresh(load=False)
        not_ready = [m for m in pins if not pool.has(m, pins[m])]
        if not_ready:
            raise ModelLoadError(f"Triton reports {', '.join(not_ready)} not ready after loading")
        await runtime.recommender.warm_up(rounds=2)
        await warm_on_users(runtime)
        problems = await verify(runtime, settings.rollout_golden_min_overlap, settings.rollout_golden_tolerance)
        if problems:
            raise RolloutRefused(f"refused: golden requests fail on bundle {bundle.version}: {'; '.join(problems)}")
    except (FileNotFoundError, ModelLoadError) as err:
        await discard(runtime, pool)
        raise RolloutRefused(f"refused: {err}; nothing changed, the live bundle serves on") from None
    except BaseException:
        await discard(runtime, pool)
        raise
    return runtime


async def warm_on_users(runtime: BundleRuntime, users: int = 64) -> None:
    """Known users with histories of every length, through the real path: the fixed warm-up query
    has one length, TorchScript specialises on input shapes in its first calls, and the guardrails
    start judging the candidate's latency as soon as it takes traffic."""
    bundle = runtime.bundle
    by_length = np.argsort(np.diff(bundle.histories.indptr), kind="stable")
    ids = {row: user for user, row in bundle.user_index.items()}
    for row in by_length[np.linspace(0, len(by_length) - 1, num=min(users, len(by_length))).astype(int)]:
        query = dataclasses.replace(warm_up_query("ensemble", "auto", {}), user_id=ids[int(row)])
        await runtime.recommender.recommend(query, None, "warm-up")


async def discard(runtime: BundleRuntime, pool: ModelPool) -> None:
    """Unload the versions only ``runtime`` used (others stay: a bundle may share a version)."""
    pool.release(owner(runtime))
    for model, version in runtime.pool.pins.items():
        keep = pool.wanted(model)
        if version in keep or not keep:
            continue
        try:
            await pool.load_versions(model, keep)
        except ModelLoadError as err:  # the versions stay loaded: wasteful, not wrong
            log.warning("could not unload model=%s version=%s: %s", model, version, err)
    await pool.refresh(load=False)
