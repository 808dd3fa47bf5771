"""One entry point for a survey run: :func:`run_pipeline` does what ``survey-mass run`` does.

From a notebook::

    from survey_mass import load_pipeline, run_pipeline

    p = load_pipeline("smoke").updated(cluster={"workers": 1}, attribution={"mode": "none"})
    summary = run_pipeline(p, out="smoke_masses")
    summary.rows, summary.cutouts_per_s

The command line only turns its flags into a :class:`~survey_mass.pipelines.Pipeline`
(:func:`~survey_mass.pipelines.pipeline_with_flags`), calls :func:`run_pipeline` and prints the summary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from .errors import PipelineError, SurveyMassError
from .pipelines import Pipeline


def _print(message: str) -> None:
    print(message, flush=True)


def safe_name(spec: str) -> str:
    """A file-name-safe form of a footprint name (``box:150,160,0,12`` -> ``box_150_160_0_12``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(spec)).strip("_") or "footprint"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is there, else ``cpu``; others unchanged."""
    if device == "auto":
        from .engine import gpu_available

        return "cuda" if gpu_available() else "cpu"
    return device


def resolve_attribution(mode: str, device: str) -> str:
    """``auto`` -> ``all`` on a GPU, ``sample`` on a CPU; others unchanged."""
    if mode == "auto":
        return "all" if device == "cuda" else "sample"
    return mode


def mock_config(pipeline: Pipeline, order: int):
    """The :class:`~survey_mass.mock.survey.MockConfig` of ``pipeline.mock`` (partitions of ``order``).

    Unset keys keep MockConfig's defaults; a bad ``mock.set`` override is a PipelineError naming the pipeline.
    """
    from .mock.survey import MockConfig

    mock = pipeline.mock
    fields = mock.model_dump(exclude_none=True, exclude={"set", "candidates"})
    if not mock.uses_embedded_candidates:
        fields["candidates"] = os.path.basename(mock.candidates)
    try:
        return MockConfig.with_overrides(mock.set, order=order, **fields)
    except SurveyMassError as exc:
        raise PipelineError(f"{pipeline.source}: mock.set: {exc}") from None


def build_run_mock(pipeline: Pipeline, footprint, store: str | Path, *, client=None, progress=True, log=None):
    """Build (or reuse) the run's mock store from ``pipeline.mock``, fanned out over every core."""
    from .candidates import load_redmapper, read_candidates
    from .mock.survey import build_mock_store

    mock = pipeline.mock
    cfg = mock_config(pipeline, order=footprint.order)  # physics overrides are checked before any work
    if mock.density is not None:
        what = f"clusters drawn from the mass function, {mock.density:g} per deg^2"
    elif mock.uses_embedded_candidates:
        what = "real redMaPPer DR8 candidates"
    else:
        what = f"candidates from {mock.candidates}"
    if log:
        log(f"store: building or reusing the embedded mock store {store} ({what})")
    candidates = load_redmapper() if mock.uses_embedded_candidates else read_candidates(mock.candidates)
    s = build_mock_store(
        footprint,
        store,
        candidates=candidates,
        workers=os.cpu_count() or 1,  # rendering fans out over every core
        client=client,
        config=cfg,
        progress=progress,
    )
    if log:
        log(
            f"store: {s['clusters']} clusters in {s['partitions']} partitions ({s['partitions_built']} rendered in "
            f"{s['wall_s']} s, {s['partitions_skipped']} reused)"
        )
    return s


def run_pipeline(
    pipeline: Pipeline,
    client=None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = _print,
):
    """Run a pipeline: masses for every cluster of its footprint, written as a HATS catalog.

    Resolves the footprint, the device (``auto``: a GPU if there is one) and the attribution mode (``auto``:
    all on a GPU, a seeded sample on a CPU); builds or reuses the embedded mock store when ``store.path`` is
    empty (``<footprint>_store.zarr``); uses the shipped model when ``model.path`` is empty; then runs
    :func:`~survey_mass.inference.run.run_catalog`.

    Parameters
    ----------
    pipeline
        What to run (:func:`~survey_mass.pipelines.load_pipeline`, changed with ``Pipeline.updated``).
    client
        A ``distributed.Client`` to run the mock build and the inference on (default: ``cluster`` section).
    out
        Catalog directory (default ``./<footprint>_masses``).
    overwrite
        Replace an existing catalog instead of resuming it.
    progress
        Show progress bars and the cluster's dashboard.
    log
        Called with each one-line notice (the store being built, the attribution sample); None for silence.

    Returns
    -------
    RunSummary
        Also written to ``<out>/run.json``.
    """
    from .footprint import parse_footprint
    from .inference.run import RunOptions, run_catalog
    from .resources import model_dir

    fp = parse_footprint(pipeline.footprint.spec, order=pipeline.footprint.partition_order)
    name = safe_name(fp.name)
    device = resolve_device(pipeline.inference.device)
    mode = resolve_attribution(pipeline.attribution.mode, device)
    store = pipeline.store.path or f"{name}_store.zarr"
    if not pipeline.store.path:
        build_run_mock(pipeline, fp, store, client=client, progress=progress, log=log)
    opts = RunOptions(
        batch_size=pipeline.inference.batch_size,
        device=device,
        precision=pipeline.inference.precision,
        device_prep=pipeline.inference.device_prep,
        attribution=mode,
        ig_steps=pipeline.attribution.ig_steps,
        ig_baselines=pipeline.attribution.ig_baselines,
        ig_tolerance_dex=pipeline.attribution.ig_tolerance_dex,
        sample_fraction=pipeline.attribution.sample_fraction,
    )
    if mode == "sample" and log:
        log(
            f"attribution: every row gets its exact contributions (contrib_*); pixel maps (integrated gradients "
            f"from blank sky, {opts.ig_baselines} baselines) on a seeded {opts.sample_fraction:.1%} sample, about "
            "0.6 s per cutout per CPU core; other rows have attributed = false and null map summaries. Use "
            "--attribution all for every row (a GPU is the practical way)."
        )
    return run_catalog(
        store_path=store,
        model_path=pipeline.model.path or str(model_dir()),
        catalog=str(out or f"{name}_masses"),
        footprint=fp,
        opts=opts,
        scheduler=pipeline.cluster.scheduler or None,
        workers=pipeline.cluster.workers,
        client=client,
        overwrite=overwrite,
        progress=progress,
        name=f"{name}_masses",
        margin_arcsec=pipeline.catalog.margin_arcsec,
    )
