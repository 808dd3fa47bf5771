"""The ``survey-mass`` command line. Thin: parse, call one function per command, print.

Heavy libraries are imported inside the commands, so ``survey-mass --help`` answers at once. Errors a user can
cause (:class:`~survey_mass.errors.SurveyMassError`) print one line and exit non-zero, with no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EPILOG = """examples:
  survey-mass run --footprint dr12
  survey-mass footprint dr12 --json
  survey-mass mock --footprint box:150,160,0,10 --out box.zarr --workers 2
  survey-mass mock --footprint box:147.25,147.75,2.25,2.75 --out box.zarr --frames box_frames
  survey-mass ingest --frames frames/ --candidates clusters.fits --out real.zarr
  survey-mass query dr12_masses "SELECT name, z, log10_m500 FROM catalog ORDER BY log10_m500 DESC LIMIT 20"
  survey-mass explain dr12_masses --id 3 --png cluster3.png --json
  survey-mass report dr12_masses --out dr12_report
  survey-mass bench --json
"""


def _positive_int(v: str) -> int:
    i = int(v)
    if i < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return i


FOOTPRINT_HELP = "dr12, a MOC FITS file, or box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX"


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(
        prog="survey-mass",
        description="Galaxy-cluster masses with honest uncertainties, for every cluster in a sky survey.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"survey-mass {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_run,
        _add_footprint,
        _add_mock,
        _add_ingest,
        _add_train,
        _add_query,
        _add_explain,
        _add_report,
        _add_bench,
        _add_store_info,
        _add_validate,
    ):
        add(sub)
    return p


def _add_run(sub) -> None:
    # every flag defaults to None: unset flags leave the pipeline's value (survey_mass.pipelines.RUN_FLAGS)
    r = sub.add_parser("run", help="CNN masses for every cluster of a footprint, written as a HATS catalog")
    r.add_argument("--footprint", help=f"{FOOTPRINT_HELP} (default: the pipeline's)")
    r.add_argument("--pipeline", help="pipeline TOML (default: the shipped dr12.toml); flags override it")
    r.add_argument("--store", help="cutout store (default: build or reuse the embedded mock store)")
    r.add_argument("--model", help="model directory (default: the shipped weights)")
    r.add_argument("--out", help="catalog directory (default: ./<footprint>_masses)")
    r.add_argument("--scheduler", help="address of a running Dask scheduler")
    r.add_argument(
        "--workers",
        type=_positive_int,
        help="local inference workers (default: the pipeline's; 1 = in-process, >1 = a Dask LocalCluster)",
    )
    r.add_argument("--device", choices=["auto", "cpu", "cuda"])
    r.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="the CNN backbone's precision at inference (default auto: fp16 on a GPU, bf16 on a CPU that computes it "
        "natively, else fp32; each moves no mass by more than 0.005 dex)",
    )
    r.add_argument(
        "--device-prep",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the fast path for GPUs: sky and normalisation on the device, the CPU only reads (the same masses; "
        "default: the pipeline's, off)",
    )
    r.add_argument(
        "--attribution",
        choices=["auto", "all", "sample", "none"],
        help="pixel maps (integrated gradients from blank sky) for every row, a seeded sample, or none (auto: all "
        "on a GPU, else sample); every row gets its exact contributions regardless",
    )
    r.add_argument(
        "--margin-arcsec",
        type=float,
        help="margin cache written with the catalog, arcsec (default: the pipeline's, 60; 0 for none): lsdb's "
        "cross-matches and neighbour searches within it are exact across partition borders",
    )
    r.add_argument("--overwrite", action="store_true", help="replace an existing catalog instead of resuming")
    r.add_argument("--no-progress", action="store_true")


def _add_footprint(sub) -> None:
    f = sub.add_parser("footprint", help="describe a footprint: area, partition order and partitions")
    f.add_argument("spec", help=FOOTPRINT_HELP)
    f.add_argument("--order", type=int, default=None, help="partition order (default 2)")
    f.add_argument(
        "--json", action="store_true", help="print {name, area_deg2, order, n_partitions, partitions}"
    )
    f.add_argument("--png", metavar="FILE", help="draw a Mollweide map with the redMaPPer clusters over it")


def _add_mock(sub) -> None:
    m = sub.add_parser("mock", help="render a mock SDSS survey of cluster cutouts into a Zarr store")
    m.add_argument("--footprint", required=True, help=FOOTPRINT_HELP)
    m.add_argument("--out", required=True, help="output store directory (resumes if it exists)")
    m.add_argument(
        "--codec",
        choices=["zstd", "none"],
        default="zstd",
        help="the images' codec: zstd (default) or none (CRC32C checksums only, about 7%% more bytes: the store "
        "a GPU run with --device-prep reads without decompressing on the CPU)",
    )
    m.add_argument(
        "--frames",
        metavar="DIR",
        help="also render the SDSS corrected frames (frame-{band}-{run}-{camcol}-{field}.fits.bz2, nanomaggies) "
        "of the same clusters, same seed, into DIR, with DIR/candidates.parquet: the input of "
        "'survey-mass ingest' (resumes if it exists)",
    )
    m.add_argument(
        "--candidates",
        help="candidate catalog (FITS/CSV/Parquet: ra, dec, z[, richness]); default: redMaPPer DR8",
    )
    m.add_argument(
        "--no-candidates",
        action="store_true",
        help="draw the clusters from the halo mass function (lambda >= 20; their richness in the store's "
        "'richness' column) instead of taking a candidate catalog",
    )
    m.add_argument("--seed", type=int, help="mock seed (default: MockConfig's, 2022)")
    m.add_argument(
        "--density", type=float, help="draw clusters from the mass function at this many per deg^2"
    )
    m.add_argument("--workers", type=_positive_int, default=min(2, os.cpu_count() or 1))
    m.add_argument("--limit", type=_positive_int, help="keep only the first N candidates (quick looks)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing store instead of resuming")
    m.add_argument("--no-progress", action="store_true")
    m.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override a mock physics parameter (repeatable; dotted names for nested ones, e.g. "
        "sky_noise_scale=1.26, seeing_scale=1.5, richness_relation.slope=1.3); recorded in the provenance",
    )


def _add_ingest(sub) -> None:
    i = sub.add_parser("ingest", help="cut real SDSS corrected frames into a Zarr cutout store")
    i.add_argument("--frames", required=True, help="directory of frame-{band}-*.fits(.bz2) files")
    i.add_argument("--candidates", required=True, help="candidate catalog (FITS/CSV/Parquet)")
    i.add_argument("--out", required=True)
    i.add_argument(
        "--model", help="the model the store is for: its geometry is the store's (default: the shipped model)"
    )
    i.add_argument(
        "--cutout-size",
        type=int,
        help="cutout side in pixels; must be the model's (default: the model's, 64)",
    )
    i.add_argument(
        "--pixel-scale",
        type=float,
        help="store pixel scale in arcsec; must be the model's (default: the model's, 6.336: SDSS pixels "
        "binned 16 x 16)",
    )
    i.add_argument("--order", type=int, default=2)
    i.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="local workers (1 = in-process, >1 = a Dask LocalCluster)",
    )
    i.add_argument("--scheduler", help="address of a running Dask scheduler")
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--no-progress", action="store_true")


def _add_train(sub) -> None:
    # unset flags: the pipeline's [training] (with --pipeline), then TrainConfig's defaults
    t = sub.add_parser("train", help="train the two-stage CNN and the richness baseline on a store")
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True, help="model directory (an interrupted training resumes from it)")
    t.add_argument(
        "--pipeline", help="take the defaults below from this pipeline's [training] (e.g. train_shipped)"
    )
    t.add_argument("--folds", type=_positive_int, help="cross-validation folds (default 5)")
    t.add_argument("--seed", type=int, help="default 2022")
    t.add_argument("--epochs", type=_positive_int, help="stage-1 epochs (default 2)")
    t.add_argument(
        "--stage1-images", type=_positive_int, help="single-band images per stage-1 epoch (default 40000)"
    )
    t.add_argument("--variant", choices=["cpu", "gpu"], help="backbone width (gpu: 2x wider; default cpu)")
    t.add_argument(
        "--calibration-store",
        action="append",
        metavar="STORE",
        help="an independent mock store (other seed, perturbed physics) on which the error below the labels' "
        "selection is calibrated (repeatable); without one that term is 0",
    )
    t.add_argument(
        "--labels",
        help=LABELS_HELP
        + "; they replace the store's labels (matched by id, else within 3' and |dz| < 0.05(1+z))",
    )
    t.add_argument(
        "--label-selection",
        metavar="SEL",
        help=SELECTION_HELP + " (default none: a plain fit; with a selection the fit models it and the "
        "unlabelled clusters count as non-detections)",
    )
    t.add_argument(
        "--label-scale",
        choices=["true", "hydrostatic"],
        help="the labels' mass scale (default true); hydrostatic labels (X-ray, as MCXC's) are divided by 1 - b "
        "onto the true scale the catalogue reports",
    )
    t.add_argument(
        "--one-minus-b", metavar="V[+-SD]", help="1 - b for hydrostatic labels (default 0.80+-0.10)"
    )
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto: a GPU if there is one")
    t.add_argument("--no-progress", action="store_true")


def _add_query(sub) -> None:
    q = sub.add_parser(
        "query",
        help="SQL (DuckDB) over a mass catalog; the table is called 'catalog'",
        description="Run SQL over a mass catalog with DuckDB. The table is called 'catalog'. "
        "A cone search opens only the partitions it touches. Queries never write to the catalog.",
        epilog="""examples:
  survey-mass query dr12_masses "SELECT id, z, log10_m500, log10_m500_err FROM catalog ORDER BY log10_m500 DESC LIMIT 20"
  survey-mass query dr12_masses --cone 180.0 30.0 60 --columns id ra dec log10_m500
  survey-mass query dr12_masses --where "quality = 0 AND z < 0.2" --format csv --out nearby.csv""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("catalog", help="catalog directory written by survey-mass run")
    q.add_argument(
        "sql", nargs="?", help="one SELECT statement over the table 'catalog' (default: all columns)"
    )
    q.add_argument(
        "--cone",
        nargs=3,
        type=float,
        metavar=("RA", "DEC", "RADIUS_ARCMIN"),
        help="cone search (deg, arcmin)",
    )
    q.add_argument("--where", help='extra SQL condition on catalog, e.g. "quality = 0"')
    q.add_argument("--columns", nargs="+", metavar="COLUMN", help="columns to return (without SQL)")
    q.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    q.add_argument("--out", help="write the result to this file (not inside the catalog)")
    q.add_argument(
        "--max-rows", type=_positive_int, default=50, help="rows shown by --format table (default 50)"
    )


def _add_explain(sub) -> None:
    e = sub.add_parser(
        "explain", help="recompute one cluster's attribution map, draw it into a PNG, and test it (AOPC)"
    )
    e.add_argument("catalog", help="catalog directory written by survey-mass run")
    e.add_argument("--id", required=True, type=int, help="the cluster's id")
    e.add_argument("--png", help="output PNG (optional with --json)")
    e.add_argument("--json", action="store_true", help="print one JSON object: contributions, map, AOPC")
    e.add_argument("--store", help="cutout store (default: the one the catalog records)")
    e.add_argument("--model", help="model directory (default: the shipped weights, if they made the catalog)")
    e.add_argument(
        "--baselines",
        type=_positive_int,
        help="blank-sky baselines of the map (default: the run's, so the summaries are the row's; more is smoother)",
    )


def _add_report(sub) -> None:
    rp = sub.add_parser("report", help="sky map, mass-redshift, errors and calibration pictures of a catalog")
    rp.add_argument("catalog", help="catalog directory written by survey-mass run")
    rp.add_argument("--out", required=True, help="directory for the PNGs, report.md and report.json")


def _add_bench(sub) -> None:
    bn = sub.add_parser(
        "bench",
        help="throughput: bare model, store I/O, the pipeline with 1..N workers, attribution, and the naive way",
    )
    bn.add_argument("--json", action="store_true", help="print one JSON object of figures")
    bn.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bn.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="the backbone's inference precision, the same for every leg (default auto, as survey-mass run)",
    )
    bn.add_argument("--store", help="benchmark on this store (default: a mock of --footprint, made once)")
    bn.add_argument(
        "--footprint",
        help="footprint of the benchmark store (default: box:120,160,0,22, about 2,500 mock clusters; with "
        "--full box:120,200,-5,40, 15,577 clusters in 26 partitions)",
    )
    bn.add_argument(
        "--full", action="store_true", help="the 15,577-cutout store (about 20 minutes on 2 cores)"
    )
    bn.add_argument(
        "--repeat", type=_positive_int, default=3, help="timings of each leg; rates are medians (default 3)"
    )
    bn.add_argument(
        "--max-workers", type=_positive_int, help="pipeline workers to try, 1..N (default: cores/GPUs)"
    )
    bn.add_argument("--workdir", help="keep the benchmark store and files here (default: a temporary folder)")
    bn.add_argument("--no-progress", action="store_true")


def _add_store_info(sub) -> None:
    s = sub.add_parser("store-info", help="summarise a cutout store")
    s.add_argument("store")
    s.add_argument("--json", action="store_true")


LABELS_HELP = (
    "real labels (FITS/CSV/Parquet): id or ra/dec, log10_m500 (M500c, Msun, h = 0.7), optionally "
    "log10_m500_err, z and survey"
)
SELECTION_HELP = (
    "how the labels were selected: none, mcxc (MCXC's surveys), xray:LIMIT, xray:SURVEY=LIMIT,...,*=LIMIT "
    "(0.1-2.4 keV erg/s/cm^2, per label survey) or sz:SNR"
)


def _add_validate(sub) -> None:
    # unset --footprint/--seed keep the suite's; the orchestration is survey_mass.validate.validate
    v = sub.add_parser(
        "validate",
        help="robustness: a model's MAE, bias and 68%% coverage on mock surveys with perturbed physics",
    )
    v.add_argument("--model", help="model directory (default: the shipped weights)")
    v.add_argument("--suite", help="suite TOML (default: the shipped survey_mass/data/validation_suite.toml)")
    v.add_argument("--footprint", help=f"{FOOTPRINT_HELP} (default: the suite's)")
    v.add_argument("--seed", type=int, help="mock seed of every store (default: the suite's)")
    v.add_argument(
        "--out",
        help="directory for the stores, catalogs, validation.json and validation.md (reused on a rerun; "
        "default ./validation; with --real, real_validation.{json,md,png}, default ./real_validation)",
    )
    v.add_argument(
        "--workers",
        type=_positive_int,
        default=min(2, os.cpu_count() or 1),
        help="workers for the mock builds and the inference (1 = in-process, >1 = a Dask LocalCluster)",
    )
    v.add_argument(
        "--only", action="append", metavar="NAME", help="run only this perturbation of the suite (repeatable)"
    )
    r = v.add_argument_group(
        "real labels (--real)",
        "score a catalogue's estimators against real masses at the real clusters (default: the shipped MCXC "
        "X-ray masses of redMaPPer clusters, their selection and hydrostatic scale folded in)",
    )
    r.add_argument("--real", action="store_true", help="validate against real labels instead of mocks")
    r.add_argument("--catalog", help="the survey-mass catalogue to score (with --real)")
    r.add_argument("--labels", help=LABELS_HELP + " (default: the shipped MCXC cross-match)")
    r.add_argument(
        "--label-selection", metavar="SEL", help=SELECTION_HELP + " (default: mcxc with MCXC, else none)"
    )
    r.add_argument(
        "--label-scale",
        choices=["true", "hydrostatic"],
        help="the labels' mass scale (default: hydrostatic for MCXC, else true); hydrostatic labels are compared "
        "after log10(1 - b)",
    )
    r.add_argument(
        "--one-minus-b",
        metavar="V[+-SD]",
        help="hydrostatic over true mass, with its uncertainty (default 0.80+-0.10, the lensing calibrations; "
        "MCXC's own labels ask 0.60 once their selection is modelled)",
    )
    v.add_argument("--no-progress", action="store_true")


# --- commands ---------------------------------------------------------------------------------------------


def cmd_footprint(args) -> int:
    from .footprint import DEFAULT_PARTITION_ORDER, parse_footprint

    fp = parse_footprint(args.spec, order=args.order if args.order is not None else DEFAULT_PARTITION_ORDER)
    d = fp.to_dict()
    if args.json:
        print(json.dumps(d))
    else:
        print(f"name:          {d['name']}")
        print(f"area:          {d['area_deg2']:.1f} deg^2")
        print(
            f"order:         {d['order']} (nested HEALPix partitions of {53.7 / 4 ** (d['order'] - 2):.2f} deg^2)"
        )
        print(f"partitions:    {d['n_partitions']}")
    if args.png:
        from .explain.figures import footprint_map

        footprint_map(fp, args.png)
        if not args.json:
            print(f"map:           {args.png}")
    return 0


def cmd_run(args) -> int:
    from .api import run_pipeline
    from .paths import catalog_dataset, primary_catalog
    from .pipelines import load_pipeline, pipeline_with_flags

    pipe = pipeline_with_flags(
        load_pipeline(args.pipeline or "dr12"),
        footprint=args.footprint,
        store=args.store,
        model=args.model,
        scheduler=args.scheduler,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
        device_prep=args.device_prep,
        attribution=args.attribution,
        margin_arcsec=args.margin_arcsec,
    )
    s = run_pipeline(pipe, out=args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(
        f"catalog {s.catalog}: {s.rows} rows in {s.partitions} partitions "
        f"({s.partitions_computed} computed, {s.partitions_skipped} already there); "
        f"{s.wall_s} s" + (f", {s.cutouts_per_s} cutouts/s" if s.cutouts_per_s else "") + "; "
        f"{s.attributed} rows attributed; "
        f"model {s.model_id}"
    )
    glob = f"{catalog_dataset(primary_catalog(s.catalog))}/**/*.parquet"
    print("query it, e.g. the 10 most massive clusters:")
    print(
        f'  survey-mass query {s.catalog} "SELECT name, z, log10_m500, log10_m500_err, log10_m500_lambda '
        f'FROM catalog ORDER BY log10_m500 DESC LIMIT 10"'
    )
    print(f"  (or DuckDB directly: read_parquet('{glob}', hive_partitioning = false))")
    if s.margin_arcsec:
        print(
            f'  (or lsdb: lsdb.open_catalog({s.catalog!r}) opens it with its {s.margin_arcsec:g}" margin cache)'
        )
    return 0


def cmd_mock(args) -> int:
    from .candidates import load_redmapper, read_candidates
    from .footprint import parse_footprint
    from .mock.survey import MockConfig, build_mock_store

    # unset flags keep MockConfig's defaults; physics overrides (--set) are checked before any work
    given = {
        "seed": args.seed,
        "density": args.density,
        "candidates": os.path.basename(args.candidates) if args.candidates else None,
    }
    cfg = MockConfig.with_overrides(args.set, **{k: v for k, v in given.items() if v is not None})
    fp = parse_footprint(args.footprint)
    if args.no_candidates and args.candidates:
        from .errors import SurveyMassError

        raise SurveyMassError("mock: --no-candidates and --candidates exclude each other")
    if args.frames:  # checked before any work: a directory of someone else's files is refused at once
        from .mock.frames import check_frames_directory

        check_frames_directory(args.frames)
    cands = read_candidates(args.candidates) if args.candidates else load_redmapper()
    if args.no_candidates:
        cands = None
    elif args.limit:
        cands = cands.iloc[: args.limit]
    summary = build_mock_store(
        fp,
        args.out,
        candidates=cands,
        config=cfg,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        codec=args.codec,
    )
    print(
        f"mock store {summary['store']}: {summary['clusters']} clusters in {summary['partitions']} partitions "
        f"({summary['partitions_built']} built, {summary['partitions_skipped']} already there) from "
        f"{summary['candidates']}; {summary['wall_s']} s, {summary['cutouts_per_s']} cutouts/s, "
        f"{summary['store_bytes'] / 1e6:.0f} MB"
    )
    if args.frames:
        from .mock.frames import build_mock_frames

        fr = build_mock_frames(
            fp,
            args.frames,
            candidates=cands,
            config=cfg,
            workers=args.workers,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
        print(
            f"mock frames {fr['frames_dir']}: {fr['frames']} frames of {fr['fields']} fields touched by "
            f"{fr['clusters']} clusters' cutouts ({fr['fields_rendered']} rendered, {fr['fields_skipped']} already "
            f"there); {fr['wall_s']} s, {fr['frames_per_s']} frames/s, {fr['mb_per_frame']} MB per frame; "
            f"candidates in {fr['candidates']}"
        )
    return 0


def _shipped_geometry() -> dict:
    """The shipped model's input geometry (model card ``input``): cutout_size, pixel_scale_arcsec."""
    from .paths import MODEL_CARD
    from .resources import model_dir

    return json.loads((model_dir() / MODEL_CARD).read_text())["input"]


def cmd_ingest(args) -> int:
    from .store.ingest import ingest_frames

    summary = ingest_frames(
        args.frames,
        args.candidates,
        args.out,
        model=args.model,
        cutout_size=args.cutout_size,
        pixel_scale=args.pixel_scale,
        order=args.order,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    print(
        f"ingested {summary['cutouts']} cutouts from {summary['frames']} frames into {summary['store']} "
        f"({summary['partitions']} partitions, {summary['partitions_skipped']} already there; {summary['flagged']} "
        f"flagged, {summary['outside']} candidates outside every frame skipped); frame index: "
        f"{summary['frame_index_reused']} frames reused, {summary['frames_indexed']} read"
    )
    return 0


def cmd_train(args) -> int:
    from .errors import SurveyMassError
    from .labels import parse_one_minus_b
    from .paths import REPORT_MD
    from .pipelines import TrainingSection, load_pipeline
    from .training.train import train

    if args.folds is not None and args.folds < 2:
        raise SurveyMassError("--folds must be at least 2")
    section = load_pipeline(args.pipeline).training if args.pipeline else TrainingSection()
    cfg = section.train_config(
        folds=args.folds,
        seed=args.seed,
        stage1_epochs=args.epochs,
        stage1_images=args.stage1_images,
        variant=args.variant,
        device=args.device,
        calibration_stores=tuple(args.calibration_store) if args.calibration_store else None,
        labels=args.labels,
        label_selection=args.label_selection,
        label_scale=args.label_scale,
        one_minus_b=parse_one_minus_b(args.one_minus_b) if args.one_minus_b else None,
    )
    if (args.label_selection or args.label_scale or args.one_minus_b) and not args.labels:
        raise SurveyMassError(
            "--label-selection, --label-scale and --one-minus-b describe --labels; give --labels too"
        )
    r = train(args.store, args.out, cfg, progress=not args.no_progress)
    s = r.summary
    acc = ", ".join(f"{b} {v:.2f}" for b, v in r.band_accuracy.items())
    print(f"model written to {args.out} ({r.timing_s['total'] / 60:.1f} min): band accuracy {acc}")
    print("out of fold (dex):           MAE vs labels   MAE vs truth   bias vs truth   68% coverage (truth)")
    for name, sc in s.estimators.items():
        t = sc.vs_truth
        print(
            f"  {name:<26} {sc.vs_label.mae:>13.3f}   "
            + (
                f"{t.mae:>12.3f}   {t.bias:>+13.3f}   {sc.coverage_68:>20.2f}"
                if t and t.mae is not None
                else ""
            )
        )
    print(f"report: {Path(args.out) / REPORT_MD}")
    return 0


def cmd_query(args) -> int:
    from .catalog.query import Cone, query, write_result

    cone = Cone(ra=args.cone[0], dec=args.cone[1], radius_arcmin=args.cone[2]) if args.cone else None
    res = query(args.catalog, args.sql, cone=cone, where=args.where, columns=args.columns)
    write_result(res.table, args.format, args.out, catalog=args.catalog, max_rows=args.max_rows)
    sys.stdout.flush()
    print(
        f"{res.table.num_rows} rows from {len(res.files)} of {res.n_partitions} partition files"
        + (f" -> {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


def cmd_explain(args) -> int:
    import json

    from .errors import SurveyMassError
    from .explain.cluster import explain_cluster

    if not args.png and not args.json:
        raise SurveyMassError("explain: give --png FILE, --json, or both")
    if args.baselines and args.baselines != 1 and args.baselines % 2:
        raise SurveyMassError(
            f"explain: --baselines must be 1 or even (antithetic pairs), got {args.baselines}"
        )
    r = explain_cluster(
        args.catalog, args.id, args.png, store=args.store, model=args.model, baselines=args.baselines
    )
    if args.json:
        print(json.dumps(r))
        return 0
    c = ", ".join(f"{g} {v:+.3f}" for g, v in r["contributions"].items() if v is not None)
    print(
        f"cluster {r['id']}: log10 M500 {r['log10_m500']:.3f} = {r['log10_m500_reference']:.3f} (reference) + "
        f"contributions {c}; map explains {r['attr_delta_dex']:+.3f} dex vs blank sky (completeness "
        f"{r['ig_completeness_dex']:.4f} dex); deletion AOPC {r['aopc']:.3f} vs {r['aopc_random']:.3f} random -> "
        f"{r['png']}"
    )
    return 0


def cmd_report(args) -> int:
    from .explain.report import catalog_report

    s = catalog_report(args.catalog, args.out)
    print(
        f"report of {s['rows']:,} rows written to {args.out}: "
        + ", ".join(Path(f).name for f in s["files"].values())
    )
    for ref, v in s["reference"].items():
        c = v["headline"]
        if c.get("n"):
            base = ", ".join(
                f"{name} MAE {v[k]['mae']:.3f} dex"
                for k, name in (("lambda", "catalogue λ"), ("lambda_bcg", "λ + BCG"))
                if v.get(k, {}).get("n")
            )
            print(
                f"  vs {ref}: headline MAE {c['mae']:.3f} dex (68% coverage {c['coverage_68']:.2f})"
                + (f", {base}" if base else "")
                + f", n={c['n']:,}"
            )
    return 0


def cmd_bench(args) -> int:
    from .resources import benchmarks_module

    bm = benchmarks_module()
    r = bm.run_benchmarks(
        store=args.store,
        # a given store is benchmarked whole (the footprint only selects the pipeline leg's partitions)
        footprint=args.footprint
        or (bm.ALL_SKY if args.store else bm.FULL_FOOTPRINT if args.full else bm.DEFAULT_FOOTPRINT),
        repeat=args.repeat,
        device=args.device,
        precision=args.precision,
        max_workers=args.max_workers,
        workdir=args.workdir,
        progress=not args.no_progress and not args.json,
    )
    r["projection"] = {
        k: bm.projection(r, n) for k, n in (("dr12_redmapper", 26350), ("lsst_like", 1_000_000))
    }
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"{r['cutouts']} cutouts in {r['partitions']} partitions on {r['device']} ({r['torch_threads']} threads, "
        f"backbone {r['precision']})"
    )
    print(
        f"  (a) model (CNN folds + richness)  {r['model_cutouts_per_s']:8.1f} cutouts/s   CNN alone {r['cnn_cutouts_per_s']:.1f}"
    )
    print(f"  (b) store read + decode (no-op)   {r['io_cutouts_per_s']:8.1f} cutouts/s")
    by_w = ", ".join(f"{w}: {v:.1f}" for w, v in r["pipeline_cutouts_per_s_by_workers"].items())
    print(
        f"  (c) pipeline end to end           {r['pipeline_cutouts_per_s']:8.1f} cutouts/s   by workers {by_w}"
    )
    print(
        f"  (d) attribution                   {r['attribution_s_per_cutout']:8.3f} s/cutout (IG from {r['attribution_ig_steps']} steps per baseline)"
    )
    print(
        f"  (e) naive FITS + DataLoader       {r['naive_cutouts_per_s']:8.1f} cutouts/s   (reading alone {r['naive_io_cutouts_per_s']:.1f}; "
        f"with {r['cpu_count']} loader workers {r['naive_loader_workers_cutouts_per_s']:.1f})"
    )
    lo_m, hi_m = r["pipeline_over_model_range"]
    lo_n, hi_n = r["pipeline_over_naive_range"]
    print(
        f"  pipeline / model {r['pipeline_over_model']:.2f} ({lo_m:.2f}-{hi_m:.2f}); pipeline / naive "
        f"{r['pipeline_over_naive']:.2f} ({lo_n:.2f}-{hi_n:.2f}); medians of {r['repeat']} timings, the ranges "
        "from their extremes"
    )
    for name, p in r["projection"].items():
        print(
            f"  projection {name}: {p['clusters']:,} clusters in {p['hours_masses']:.2f} h "
            f"({p['hours_with_attribution_all']:.1f} h with attribution on every row)"
        )
    return 0


def cmd_validate(args) -> int:
    if args.real:
        return _validate_real(args)
    real_only = [
        f for f in ("catalog", "labels", "label_selection", "label_scale", "one_minus_b") if getattr(args, f)
    ]
    if real_only:
        from .errors import SurveyMassError

        raise SurveyMassError(f"validate: --{real_only[0].replace('_', '-')} needs --real")
    args.out = args.out or "validation"
    from .resources import model_dir
    from .validate import REPORT_JSON, REPORT_MD, format_table, load_suite, validate

    suite = load_suite(args.suite, footprint=args.footprint, seed=args.seed, only=args.only)
    report = validate(
        args.model or model_dir(),
        suite,
        args.out,
        workers=args.workers,
        progress=not args.no_progress,
        log=None if args.no_progress else (lambda line: print(line, flush=True)),
    )
    print(f"model {report.model_id} on {report.footprint} (seed {report.seed}), {report.wall_s} s:")
    print(format_table(report), end="")
    print(f"written: {Path(args.out) / REPORT_MD}, {Path(args.out) / REPORT_JSON}")
    return 0


def _validate_real(args) -> int:
    from .errors import SurveyMassError
    from .labels import LabelSelection, parse_one_minus_b, read_labels
    from .validate_real import markdown, validate_real, write_real

    if not args.catalog:
        raise SurveyMassError("validate --real needs --catalog (a survey-mass catalogue)")
    out = Path(args.out or "real_validation")
    if out.exists() and not out.is_dir():
        raise SurveyMassError(f"validate --real: --out {str(out)!r} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SurveyMassError(f"validate --real: cannot create --out {str(out)!r} ({exc.strerror})") from None
    labels = read_labels(args.labels) if args.labels else None
    # no selection given: a user's labels are unselected; MCXC's is the mock's label fit (validate_real's default)
    selection = LabelSelection.parse(args.label_selection) if args.label_selection else None
    report = validate_real(
        args.catalog,
        labels,
        labels_name=str(args.labels) if args.labels else "MCXC x redMaPPer DR8 (package data)",
        selection=selection,
        scale=args.label_scale or ("true" if args.labels else "hydrostatic"),
        one_minus_b=parse_one_minus_b(args.one_minus_b) if args.one_minus_b else None,
    )
    files = write_real(report, out)
    print(markdown(report), end="")
    print("written: " + ", ".join(str(f) for f in files))
    return 0


def cmd_store_info(args) -> int:
    import numpy as np

    from .quality import describe
    from .store import open_store

    st = open_store(args.store)
    parts = st.partitions
    counts = {p: st.check_partition(p) for p in parts}
    labelled = 0
    qual: dict[str, int] = {}
    for p in parts:
        cols = st.columns(p)
        if "log10_m500_label" in cols:
            labelled += int(np.isfinite(cols["log10_m500_label"]).sum())
        for q in cols["quality"].tolist():
            qual[describe(q)] = qual.get(describe(q), 0) + 1
    info = {
        "store": str(st.path),
        "survey": st.meta.survey,
        "kind": st.meta.kind,
        "cutouts": sum(counts.values()),
        "partitions": len(parts),
        "order": st.order,
        "cutout_size": st.cutout_size,
        "pixel_scale_arcsec": st.pixel_scale,
        "labelled": labelled,
        "quality": qual,
    }
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k + ':':20s}{v}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "footprint": cmd_footprint,
    "mock": cmd_mock,
    "ingest": cmd_ingest,
    "train": cmd_train,
    "store-info": cmd_store_info,
    "query": cmd_query,
    "explain": cmd_explain,
    "report": cmd_report,
    "bench": cmd_bench,
    "validate": cmd_validate,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    import signal

    from .errors import SurveyMassError

    def _terminated(signum, frame):  # SIGTERM (a batch system's stop) behaves like Ctrl-C
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        pass
    try:
        return COMMANDS[args.command](args)
    except SurveyMassError as exc:
        print(f"survey-mass {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"survey-mass {args.command}: interrupted; finished partitions are kept, rerun to resume",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        from .errors import disk_failure
        from .storage import storage_failure

        line = storage_failure(exc) or disk_failure(exc)
        if line is None:
            raise
        print(f"survey-mass {args.command}: error: {line}", file=sys.stderr)
        return 2


def entry() -> None:
    """Console-script entry point.

    After an interrupt, finished partitions are on disk and every temporary is gone; exit at once so that
    background threads (Zarr's event loop, Dask's) cannot print shutdown noise after the one-line message.
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
