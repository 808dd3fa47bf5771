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
  survey-mass ingest --frames frames/ --candidates clusters.fits --out real.zarr
  survey-mass query dr12_masses "SELECT name, z, log10_m500 FROM catalog ORDER BY log10_m500 DESC LIMIT 20"
  survey-mass explain dr12_masses --id 3 --png cluster3.png
  survey-mass report dr12_masses --out dr12_report
  survey-mass bench --json
"""


def _positive_int(v: str) -> int:
    i = int(v)
    if i < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return i


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

    r = sub.add_parser("run", help="CNN masses for every cluster of a footprint, written as a HATS catalog")
    r.add_argument(
        "--footprint",
        help="dr12, a MOC FITS file, or box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX (default: the pipeline's)",
    )
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
        "--attribution",
        choices=["all", "sample", "none"],
        help="IG x Grad-CAM summaries for every row, a seeded sample (CPU default), or none",
    )
    r.add_argument("--overwrite", action="store_true", help="replace an existing catalog instead of resuming")
    r.add_argument("--no-progress", action="store_true")

    f = sub.add_parser("footprint", help="describe a footprint: area, partition order and partitions")
    f.add_argument("spec", help="dr12, a MOC FITS file, or box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX")
    f.add_argument("--order", type=int, default=None, help="partition order (default 2)")
    f.add_argument(
        "--json", action="store_true", help="print {name, area_deg2, order, n_partitions, partitions}"
    )
    f.add_argument("--png", metavar="FILE", help="draw a Mollweide map with the redMaPPer clusters over it")

    m = sub.add_parser("mock", help="render a mock SDSS survey of cluster cutouts into a Zarr store")
    m.add_argument(
        "--footprint", required=True, help="dr12, a MOC FITS file, or box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX"
    )
    m.add_argument("--out", required=True, help="output store directory (resumes if it exists)")
    m.add_argument(
        "--candidates",
        help="candidate catalog (FITS/CSV/Parquet: ra, dec, z[, richness]); default: redMaPPer DR8",
    )
    m.add_argument("--seed", type=int, default=2022)
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

    i = sub.add_parser("ingest", help="cut real SDSS corrected frames into a Zarr cutout store")
    i.add_argument("--frames", required=True, help="directory of frame-{band}-*.fits(.bz2) files")
    i.add_argument("--candidates", required=True, help="candidate catalog (FITS/CSV/Parquet)")
    i.add_argument("--out", required=True)
    i.add_argument("--cutout-size", type=int, default=64)
    i.add_argument(
        "--pixel-scale",
        type=float,
        default=6.336,
        help="store pixel scale in arcsec (default 6.336, SDSS pixels binned 16 x 16, as the shipped model)",
    )
    i.add_argument("--order", type=int, default=2)
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train", help="train the two-stage CNN and the richness baseline on a store")
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True, help="model directory (an interrupted training resumes from it)")
    t.add_argument("--folds", type=_positive_int, default=5)
    t.add_argument("--seed", type=int, default=2022)
    t.add_argument("--epochs", type=_positive_int, default=2, help="stage-1 epochs (default 2)")
    t.add_argument(
        "--stage1-images", type=_positive_int, default=40000, help="single-band images per stage-1 epoch"
    )
    t.add_argument("--variant", choices=["cpu", "gpu"], default="cpu", help="backbone width (gpu: 2x wider)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    t.add_argument("--no-progress", action="store_true")

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

    e = sub.add_parser("explain", help="recompute one cluster's attribution maps and draw them into a PNG")
    e.add_argument("catalog", help="catalog directory written by survey-mass run")
    e.add_argument("--id", required=True, type=int, help="the cluster's id")
    e.add_argument("--png", required=True, help="output PNG")
    e.add_argument("--store", help="cutout store (default: the one the catalog records)")
    e.add_argument("--model", help="model directory (default: the shipped weights, if they made the catalog)")
    e.add_argument(
        "--steps", type=_positive_int, default=1024, help="integrated-gradients steps (default 1024)"
    )

    rp = sub.add_parser("report", help="sky map, mass-redshift, errors and calibration pictures of a catalog")
    rp.add_argument("catalog", help="catalog directory written by survey-mass run")
    rp.add_argument("--out", required=True, help="directory for the PNGs, report.md and report.json")

    bn = sub.add_parser(
        "bench",
        help="throughput: bare model, store I/O, the pipeline with 1..N workers, attribution, and the naive way",
    )
    bn.add_argument("--json", action="store_true", help="print one JSON object of figures")
    bn.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bn.add_argument("--store", help="benchmark on this store (default: a mock of --footprint, made once)")
    bn.add_argument(
        "--footprint",
        default="box:120,200,-5,40",
        help="footprint of the benchmark store (default: 15,577 mock clusters, 26 partitions)",
    )
    bn.add_argument(
        "--max-workers", type=_positive_int, help="pipeline workers to try, 1..N (default: cores/GPUs)"
    )
    bn.add_argument("--workdir", help="keep the benchmark store and files here (default: a temporary folder)")
    bn.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("store-info", help="summarise a cutout store")
    s.add_argument("store")
    s.add_argument("--json", action="store_true")
    return p


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


def _safe_name(spec: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(spec)).strip("_") or "footprint"


def cmd_run(args) -> int:
    from .footprint import parse_footprint
    from .inference.run import RunOptions, run_catalog
    from .pipelines import load_pipeline
    from .resources import model_dir

    pipe = load_pipeline(args.pipeline or "dr12")
    spec = args.footprint or pipe["footprint"]["spec"]
    fp = parse_footprint(spec, order=pipe["footprint"].get("partition_order", 2))
    name = _safe_name(fp.name)
    device = args.device or pipe["inference"].get("device", "auto")
    if device == "auto":
        from .inference.cluster import gpu_available

        device = "cuda" if gpu_available() else "cpu"
    mode = args.attribution or ("all" if device == "cuda" else pipe["attribution"].get("mode", "sample"))
    store = args.store or pipe["store"].get("path") or f"{name}_store.zarr"
    progress = not args.no_progress
    if not args.store and not pipe["store"].get("path"):
        from .candidates import load_redmapper
        from .mock.survey import MockConfig, build_mock_store

        mock = pipe.get("mock", {})
        print(
            f"store: building or reusing the embedded mock store {store} (real redMaPPer DR8 candidates)",
            flush=True,
        )
        s = build_mock_store(
            fp,
            store,
            candidates=load_redmapper(),
            workers=max(args.workers or 0, os.cpu_count() or 1),  # rendering fans out over every core
            config=MockConfig(seed=mock.get("seed", 2022)),
            progress=progress,
        )
        print(
            f"store: {s['clusters']} clusters in {s['partitions']} partitions ({s['partitions_built']} rendered in "
            f"{s['wall_s']} s, {s['partitions_skipped']} reused)",
            flush=True,
        )
    model = args.model or pipe["model"].get("path") or str(model_dir())
    out = args.out or f"{name}_masses"
    att = pipe["attribution"]
    opts = RunOptions(
        batch_size=pipe["inference"].get("batch_size", 64),
        device=device,
        attribution=mode,
        ig_steps=att.get("ig_steps", RunOptions.ig_steps),
        sample_fraction=att.get("sample_fraction", 0.05),
    )
    if mode == "sample":
        print(
            f"attribution: IG ({opts.ig_steps} steps) x Grad-CAM on a seeded {opts.sample_fraction:.2%} sample "
            "(IG costs about 1.5 s per cutout on 2 CPU cores); other rows have null summaries and quality bit 64 "
            "(NO_ATTRIBUTION). Use --attribution all for every row (a GPU is the practical way).",
            flush=True,
        )
    summary = run_catalog(
        store_path=store,
        model_path=model,
        catalog=out,
        footprint=fp,
        opts=opts,
        scheduler=args.scheduler or pipe["cluster"].get("scheduler") or None,
        workers=args.workers or pipe["cluster"].get("workers", 2),
        overwrite=args.overwrite,
        progress=progress,
        name=f"{name}_masses",
    )
    print(
        f"catalog {summary['catalog']}: {summary['rows']} rows in {summary['partitions']} partitions "
        f"({summary['partitions_computed']} computed, {summary['partitions_skipped']} already there); "
        f"{summary['wall_s']} s, {summary['cutouts_per_s']} cutouts/s; {summary['attributed']} rows attributed; "
        f"model {summary['model_id']}"
    )
    glob = f"{summary['catalog']}/dataset/**/*.parquet"
    print("query it, e.g. the 10 most massive clusters:")
    print(
        f'  survey-mass query {out} "SELECT name, z, log10_m500, log10_m500_err, log10_m500_richness '
        f'FROM catalog ORDER BY log10_m500 DESC LIMIT 10"'
    )
    print(f"  (or DuckDB directly: read_parquet('{glob}', hive_partitioning = false))")
    return 0


def cmd_mock(args) -> int:
    from .candidates import load_redmapper, read_candidates
    from .footprint import parse_footprint
    from .mock.survey import MockConfig, build_mock_store

    name = os.path.basename(args.candidates) if args.candidates else "redmapper_dr8_v5.10"
    # physics overrides (--set) are checked before any work
    cfg = MockConfig.with_overrides(args.set, seed=args.seed, density=args.density, candidates=name)
    fp = parse_footprint(args.footprint)
    cands = read_candidates(args.candidates) if args.candidates else load_redmapper()
    if args.limit:
        cands = cands.iloc[: args.limit]
    summary = build_mock_store(
        fp,
        args.out,
        candidates=cands,
        config=cfg,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(
        f"mock store {summary['store']}: {summary['clusters']} clusters in {summary['partitions']} partitions "
        f"({summary['partitions_built']} built, {summary['partitions_skipped']} already there) from "
        f"{summary['candidates']}; {summary['wall_s']} s, {summary['cutouts_per_s']} cutouts/s, "
        f"{summary['store_bytes'] / 1e6:.0f} MB"
    )
    return 0


def cmd_ingest(args) -> int:
    from .store.ingest import ingest_frames

    summary = ingest_frames(
        args.frames,
        args.candidates,
        args.out,
        cutout_size=args.cutout_size,
        pixel_scale=args.pixel_scale,
        order=args.order,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        f"ingested {summary['cutouts']} cutouts from {summary['frames']} frames into {summary['store']} "
        f"({summary['partitions']} partitions; {summary['flagged']} flagged, {summary['outside']} candidates "
        f"outside every frame skipped)"
    )
    return 0


def cmd_train(args) -> int:
    from .training.train import TrainConfig, train

    if args.folds < 2:
        from .errors import SurveyMassError

        raise SurveyMassError("--folds must be at least 2")
    cfg = TrainConfig(
        folds=args.folds,
        seed=args.seed,
        stage1_epochs=args.epochs,
        stage1_images=args.stage1_images,
        variant=args.variant,
        device=args.device,
    )
    r = train(args.store, args.out, cfg, progress=not args.no_progress)
    s = r["summary"]
    acc = ", ".join(f"{b} {v:.2f}" for b, v in r["band_accuracy"].items())
    print(f"model written to {args.out} ({r['timing_s']['total'] / 60:.1f} min): band accuracy {acc}")
    print(
        f"out-of-fold MAE vs labels: CNN {s['mean_fold_mae_cnn']:.3f} dex, richness {s['mean_fold_mae_richness']:.3f} dex "
        f"(ratio {s['mae_ratio_cnn_over_richness']:.2f}); 68% coverage {r['calibration']['coverage_68_after']:.2f}; "
        f"report: {args.out}/report.md"
    )
    pop = s.get("population")
    if pop:
        print(
            f"out-of-fold MAE vs true mass, {pop['n']} unlabelled clusters: CNN {pop['cnn_vs_truth']['mae']:.3f} dex, "
            f"richness {pop['richness_vs_truth']['mae']:.3f} dex (ratio {pop['mae_ratio_cnn_over_richness']:.2f}); "
            f"CNN 68% coverage {pop['cnn_coverage_68']:.2f} (extrapolation term tau "
            f"{r['calibration'].get('extrapolation_tau', 0.0):.3f} dex, calibrated on the mock's true masses)"
        )
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
    from .explain.cluster import explain_cluster

    r = explain_cluster(args.catalog, args.id, args.png, store=args.store, model=args.model, steps=args.steps)
    fr = ", ".join(f"{b} {r[f'attr_frac_{b}']:.2f}" for b in "ugriz")
    print(
        f"cluster {r['id']}: attribution per band {fr}; mean radius {r['attr_radius_arcmin']:.2f} arcmin; "
        f"IG delta {r['ig_delta']:.2%} -> {r['png']}"
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
        c, r = v["cnn"], v["richness"]
        if c.get("n"):
            print(
                f"  vs {ref}: CNN MAE {c['mae']:.3f} dex (68% coverage {c['coverage_68']:.2f}), "
                f"richness MAE {r['mae']:.3f} dex, n={c['n']:,}"
            )
    return 0


def cmd_bench(args) -> int:
    from .resources import benchmarks_module

    bm = benchmarks_module()
    r = bm.run_benchmarks(
        store=args.store,
        footprint=args.footprint,
        device=args.device,
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
        f"{r['cutouts']} cutouts in {r['partitions']} partitions on {r['device']} ({r['torch_threads']} threads)"
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
        f"  (d) attribution                   {r['attribution_s_per_cutout']:8.3f} s/cutout ({r['attribution_ig_steps']} IG steps)"
    )
    print(
        f"  (e) naive FITS + DataLoader       {r['naive_cutouts_per_s']:8.1f} cutouts/s   (reading alone {r['naive_io_cutouts_per_s']:.1f})"
    )
    print(
        f"  pipeline / model {r['pipeline_over_model']:.2f}; pipeline / naive {r['pipeline_over_naive']:.2f}"
    )
    for name, p in r["projection"].items():
        print(
            f"  projection {name}: {p['clusters']:,} clusters in {p['hours_masses']:.2f} h "
            f"({p['hours_with_attribution_all']:.1f} h with attribution on every row)"
        )
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
        "survey": st.attrs["survey"],
        "kind": st.attrs.get("kind"),
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
