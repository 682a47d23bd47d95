"""``galaxy-pipeline <command>``: a thin command line over the package's modules.

Each command is a function ``run_<name>(args)``; its arguments are declared in
:func:`build_parser`. Errors a user can fix (bad paths, bad values, bad files) are printed as
one line and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from galaxy_pipeline.data.mock_population import DEFAULT_POPULATION, POPULATIONS
from galaxy_pipeline.schedulers import SCHEDULER_NAMES
from galaxy_pipeline.version import __version__

USER_ERRORS = (ValueError, OSError, KeyError)
"""Errors printed as one line with exit code 2; OSError covers missing or unwritable paths, full disks, busy ports."""

OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EADDRINUSE: "another program uses that address: choose another --port",
    errno.EACCES: "no permission: choose another path or change its permissions",
    errno.EPERM: "no permission: choose another path or change its permissions",
    errno.EROFS: "the file system is read-only: write elsewhere",
}
"""What to do about an operating-system error, by errno."""


def run_info(args: argparse.Namespace) -> int:
    """Print the versions of the package and its main dependencies, and the compute device."""
    import accelerate
    import datasets
    import diffusers
    import huggingface_hub
    import photutils
    import torch
    import transformers

    versions = {
        "galaxy_pipeline": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "photutils": photutils.__version__,
    }
    for name, version in versions.items():
        print(f"{name:>16}: {version}")
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    elif torch.backends.mps.is_available():
        device = "mps"
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    print(f"{'device':>16}: {device}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    """Upload a saved pipeline with its model card (and evaluation report) to the Hugging Face Hub."""
    from galaxy_pipeline.hub import push_pipeline

    url = push_pipeline(
        args.model,
        args.repo,
        private=args.private,
        revision=args.revision,
        report_dir=args.report,
        commit_message=args.message,
        license=args.license,
    )
    print(f"Pushed {args.model} to {url}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """Generate galaxies at given redshifts, or at a catalogue's, into FITS/PNG/NPY files or a sharded HF dataset."""
    from galaxy_pipeline.catalogue import read_redshifts
    from galaxy_pipeline.generate import generate_to_files
    from galaxy_pipeline.hub import load_pipeline
    from galaxy_pipeline.processes import process_state

    if args.redshifts is not None:
        redshifts = read_redshifts(args.redshifts, args.redshift_column)
    else:
        redshifts = args.z
        bad = [z for z in redshifts if not 0 <= z < float("inf")]
        if bad:
            raise ValueError(f"--z must be finite redshifts >= 0; got {bad}.")
    check_can_write(args.out)
    state = process_state()
    pipe, source = load_pipeline(
        args.model,
        revision=args.revision,
        device=args.device or str(state.device),  # load_pipeline checks it
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile_unet=args.compile,
    )
    manifest = generate_to_files(
        pipe,
        redshifts,
        n_per_redshift=args.n,
        seed=args.seed,
        out_dir=args.out,
        formats=args.format,
        scheduler=args.scheduler,
        steps=args.steps,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        model_id=source.model_id,
        revision=source.commit,
        allow_extrapolation=args.allow_extrapolation,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if state.is_main_process:
        print(f"Wrote {len(redshifts) * args.n} galaxies; manifest: {manifest}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Generate one galaxy per real redshift of a split, measure both alike, write the report and figures."""
    from galaxy_pipeline.data.loading import load_split
    from galaxy_pipeline.evaluation.evaluate import evaluate_pipeline, load_predictor
    from galaxy_pipeline.hub import check_device, load_pipeline
    from galaxy_pipeline.processes import process_state

    split = load_split(args.data, args.split)
    device = args.device or str(process_state().device)
    check_device(device)
    predictor = load_predictor(args.predictor, device) if args.predictor else None
    pipe, source = load_pipeline(args.model, revision=args.revision, device=device)
    report = evaluate_pipeline(
        pipe,
        split,
        args.out,
        n=args.n,
        predictor=predictor,
        batch_size=args.batch_size,
        seed=args.seed,
        num_inference_steps=args.steps,
        scheduler=args.scheduler,
        guidance_scale=args.guidance_scale,
        model_id=f"{source.model_id}@{source.commit}" if source.commit else source.model_id,
        data_id=f"{args.data} ({args.split})",
        predictor_id=args.predictor,
        morphology_workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if process_state().is_main_process:
        check = report["spearman"]["size_vs_redshift"]
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[check["pass"]]
        detected = [report["detection"][name]["detection_rate"] for name in ("real", "generated")]
        print(
            f"Evaluated {report['counts']['n_real']} real and {report['counts']['n_generated']} generated galaxies: "
            f"detected {detected[0]:.1%} / {detected[1]:.1%}; size-redshift Spearman check {verdict}. "
            f"Report: {args.out}/report.md"
        )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Print one markdown table comparing `evaluate` reports (seeds of one recipe with --spread)."""
    from galaxy_pipeline.evaluation.compare import compare_reports

    print(compare_reports(args.reports, labels=args.labels, spread=args.spread))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Serve the Gradio demo of a pipeline on this machine."""
    from galaxy_pipeline.demo import build_demo, check_port
    from galaxy_pipeline.hub import load_pipeline

    check_port(args.host, args.port)
    pipe, source = load_pipeline(args.model, revision=args.revision, device=args.device)
    demo = build_demo(pipe, max_images=args.max_images, max_steps=args.max_steps, source=source)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share == "yes")
    return 0


def run_export_space(args: argparse.Namespace) -> int:
    """Write a ready-to-push Hugging Face Space (Gradio app) serving a Hub model."""
    from galaxy_pipeline.space import export_space

    folder = export_space(args.folder, args.model, title=args.title, package=args.package, overwrite=args.overwrite)
    print(
        f"Wrote a Gradio Space for {args.model} to {folder}; push it with `hf upload <user>/<space> {folder} "
        "--repo-type space`."
    )
    return 0


def run_data_mock(args: argparse.Namespace) -> int:
    """Write a GalSim mock of GalaxiesML: one file, or train/validation/test files with --splits."""
    from galaxy_pipeline.data.mock import write_mock, write_mock_splits
    from galaxy_pipeline.data.mock_population import import_galsim

    check_can_write(args.out)
    try:
        import_galsim()
    except ImportError as error:
        raise ValueError(str(error)) from error
    options = {
        "workers": args.workers,
        "progress": not args.quiet,
        "overwrite": args.overwrite,
        "population": args.population,
    }
    if args.splits is None:
        written = [write_mock(args.out, args.n, args.seed, **options)]
    else:
        fractions = args.splits or (0.8, 0.1, 0.1)
        written = list(write_mock_splits(args.out, args.n, args.seed, fractions=fractions, **options).values())
    for path in written:
        print(path)
    return 0


def run_data_convert(args: argparse.Namespace) -> int:
    """Convert GalaxiesML HDF5 files into a Hugging Face DatasetDict folder (and optionally push it)."""
    from galaxy_pipeline.data.dataset_card import push_dataset_to_hub
    from galaxy_pipeline.data.galaxiesml import convert_galaxiesml

    files = {
        split: path
        for split, path in (("train", args.train), ("validation", args.validation), ("test", args.test))
        if path
    }
    if not files:
        raise ValueError("pass at least one of --train, --validation, --test (GalaxiesML .hdf5 files).")
    if args.private and not args.push_to_hub:
        raise ValueError("--private only applies with --push-to-hub REPO.")
    check_can_write(args.out)
    summary = convert_galaxiesml(
        files,
        args.out,
        overwrite=args.overwrite,
        chunk_size=args.chunk_size,
        progress=not args.quiet,
        num_proc=args.num_proc,
    )
    print(summary)
    if args.push_to_hub:
        url = push_dataset_to_hub(args.out, args.push_to_hub, private=args.private)
        print(f"Pushed {args.out} to {url}")
    return 0


def check_can_write(path: str | os.PathLike, option: str = "--out") -> None:
    """Raise ValueError if ``path`` cannot be created: its nearest existing folder above is a file or unwritable."""
    target = Path(path).expanduser().absolute()
    if target.exists():
        return
    ancestor = next(parent for parent in target.parents if parent.exists())
    if not ancestor.is_dir():
        raise ValueError(f"Cannot write {option} {path}: {ancestor} is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write {option} {path}: no permission to create files in {ancestor}.")


def error_message(error: BaseException) -> str:
    """One line describing a user error: the problem, the path or address it concerns, and what to do."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, OSError) and error.strerror:
        paths = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        text = f"{error.strerror}: {paths}" if paths else error.strerror
        if error.errno in OS_ERROR_HINTS:
            text = f"{text} ({OS_ERROR_HINTS[error.errno]})"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scheduler`` and ``--steps``, shared by the commands that sample."""
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULER_NAMES,
        default=None,
        help="sampler (default: the trained DDPM; recommended: dpm --steps 10-25 for previews, ddim --steps 50 for "
        "exams; docs/sampling.md)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="denoising steps (default: all training steps for DDPM, 50 others)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``galaxy-pipeline`` command."""
    parser = argparse.ArgumentParser(
        prog="galaxy-pipeline", description="Redshift-conditioned diffusion models of HSC galaxies."
    )
    parser.add_argument("--version", action="version", version=f"galaxy_pipeline {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="print package versions and the compute device")
    info.set_defaults(handler=run_info)

    data = commands.add_parser("data", help="make or convert GalaxiesML-schema HDF5 files")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    mock = data_commands.add_parser(
        "mock",
        help="write a GalSim mock of GalaxiesML (needs pip install 'galaxy-pipeline[mock]')",
        description="Write GalSim bulge+disk galaxies, with their true parameters, in the GalaxiesML HDF5 schema.",
    )
    mock.add_argument("--n", type=int, required=True, help="number of galaxies (all splits together)")
    mock.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes; default 0)")
    mock.add_argument("--out", required=True, help="output .hdf5 file, or folder with --splits")
    mock.add_argument(
        "--splits",
        nargs="*",
        type=float,
        metavar="FRACTION",
        help="write train/validation/test files named as GalaxiesML's into --out; fractions default 0.8 0.1 0.1",
    )
    mock.add_argument(
        "--population",
        choices=sorted(POPULATIONS),
        default=DEFAULT_POPULATION,
        help=f"galaxy population (default {DEFAULT_POPULATION}; blue_compact is held out for exams, docs/data.md)",
    )
    mock.add_argument("--workers", type=int, default=None, help="worker processes (default: every CPU)")
    mock.add_argument("--overwrite", action="store_true", help="replace existing output files")
    mock.add_argument("--quiet", action="store_true", help="no progress bar")
    mock.set_defaults(handler=run_data_mock)

    convert = data_commands.add_parser(
        "convert",
        help="convert GalaxiesML HDF5 files into a Hugging Face dataset folder",
        description="Validate GalaxiesML files, then stream them into a datasets.DatasetDict folder "
        "(load it with datasets.load_from_disk); rows with non-finite pixels or redshift are dropped and counted.",
    )
    convert.add_argument("--train", default=None, help="training split .hdf5 file")
    convert.add_argument("--validation", default=None, help="validation split .hdf5 file")
    convert.add_argument("--test", default=None, help="test split .hdf5 file")
    convert.add_argument("--out", required=True, help="output dataset folder (must not exist unless --overwrite)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing converted dataset at --out")
    convert.add_argument("--chunk-size", type=int, default=512, help="rows read at a time (default 512)")
    convert.add_argument("--num-proc", type=int, default=None, help="reader processes (default one)")
    convert.add_argument("--push-to-hub", default=None, metavar="REPO", help="then upload to the Hub as user/name")
    convert.add_argument("--private", action="store_true", help="create the Hub repository as private")
    convert.add_argument("--quiet", action="store_true", help="no progress bars")
    convert.set_defaults(handler=run_data_convert)

    push = commands.add_parser("push", help="upload a saved pipeline and its model card to the Hugging Face Hub")
    push.add_argument("--model", required=True, help="pipeline folder written by save_pretrained")
    push.add_argument("--repo", required=True, help="target Hub repository, user/name (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", default=None, help="branch to push to (default main)")
    push.add_argument("--report", default=None, help="output folder of `galaxy-pipeline evaluate` (report.json)")
    push.add_argument("--message", default="Upload GalaxyRedshiftPipeline", help="commit message")
    push.add_argument("--license", default="cc-by-4.0", help="license of the weights (default cc-by-4.0)")
    push.set_defaults(handler=run_push)

    generate = commands.add_parser(
        "generate",
        help="generate galaxies at given redshifts, or a catalogue's, to FITS/PNG/NPY files or a HF dataset",
        description="Generate galaxies into --out. Resumable (rerun the same command after a kill); shards over "
        "processes under `accelerate launch --num_processes N -m galaxy_pipeline.cli generate ...`.",
    )
    generate.add_argument("--model", required=True, help="pipeline folder or Hub id user/name")
    generate.add_argument("--revision", default=None, help="Hub branch, tag or commit of the model")
    where = generate.add_mutually_exclusive_group(required=True)
    where.add_argument("--z", type=float, nargs="+", help="redshift(s) to generate at")
    where.add_argument("--redshifts", default=None, help="catalogue table (.csv, .fits, .parquet) of redshifts")
    generate.add_argument(
        "--redshift-column", default="redshift", help="column of --redshifts holding the redshift (default redshift)"
    )
    generate.add_argument("--n", type=int, default=8, help="galaxies per redshift (default 8)")
    generate.add_argument("--seed", type=int, default=0, help="base seed; image k uses seed + k (default 0)")
    _add_sampler_arguments(generate)
    generate.add_argument("--out", required=True, help="output folder")
    generate.add_argument(
        "--format",
        nargs="+",
        choices=("fits", "png", "npy", "hf"),
        default=["fits"],
        help="file formats; hf: a Hugging Face dataset in parquet shards (default fits)",
    )
    generate.add_argument(
        "--device", default=None, help="torch device: cpu, cuda, cuda:1, mps (default: this process's accelerator)"
    )
    generate.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weights dtype")
    generate.add_argument("--channels-last", action="store_true", help="channels_last UNet weights (GPU speed-up)")
    generate.add_argument("--compile", action="store_true", help="torch.compile the UNet (long runs; compiles first)")
    generate.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    generate.add_argument(
        "--shard-size", type=int, default=1024, help="images per shard, the unit resumed after a kill (default 1024)"
    )
    generate.add_argument(
        "--allow-extrapolation", action="store_true", help="generate outside the trained redshift range"
    )
    generate.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    generate.set_defaults(handler=run_generate)

    evaluate = commands.add_parser(
        "evaluate",
        help="the paper's evaluation: generate one galaxy per real redshift, compare morphology and redshifts",
        description="Generate one galaxy at the redshift of each of the first N rows of a converted split, measure "
        "real and generated galaxies identically, and write report.json, report.md and the paper's figures. "
        "Resumable (rerun the same command); shards over processes under `accelerate launch`.",
    )
    evaluate.add_argument("--model", required=True, help="pipeline folder or Hub id user/name")
    evaluate.add_argument("--revision", default=None, help="Hub branch, tag or commit of the model")
    evaluate.add_argument("--data", required=True, help="converted dataset folder (galaxy-pipeline data convert)")
    evaluate.add_argument("--split", default="test", help="split of --data to compare with (default test)")
    evaluate.add_argument("--n", type=int, default=None, help="use the first N rows of the split (default all)")
    _add_sampler_arguments(evaluate)
    evaluate.add_argument(
        "--guidance-scale", type=float, default=1.0, help="classifier-free guidance on redshift (default 1: none)"
    )
    evaluate.add_argument(
        "--predictor", default=None, help="RedshiftPredictor folder for photo-z metrics and the Frechet distance"
    )
    evaluate.add_argument("--batch-size", type=int, default=64, help="galaxies per batch (default 64)")
    evaluate.add_argument("--seed", type=int, default=0, help="base seed; galaxy k uses seed + k (default 0)")
    evaluate.add_argument("--device", default=None, help="torch device (default: accelerate's, e.g. cuda:<rank>)")
    evaluate.add_argument("--workers", type=int, default=1, help="processes for the morphology measurement")
    evaluate.add_argument("--out", required=True, help="output folder (rerun with the same settings to resume)")
    evaluate.add_argument("--overwrite", action="store_true", help="discard an earlier run with other settings")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(handler=run_evaluate)

    compare = commands.add_parser(
        "compare",
        help="compare evaluate reports in one markdown table",
        description="Headline numbers and every judged scorecard cell of several `evaluate` output folders.",
    )
    compare.add_argument("reports", nargs="+", help="evaluate output folders (each holds report.json)")
    compare.add_argument("--labels", nargs="+", help="a column name per folder (default: folder names)")
    compare.add_argument(
        "--spread", action="store_true", help="the folders are training seeds of one recipe: mean +- std over them"
    )
    compare.set_defaults(handler=run_compare)

    demo = commands.add_parser("demo", help="serve the Gradio demo of a pipeline on localhost")
    demo.add_argument("--model", required=True, help="pipeline folder or Hub id user/name")
    demo.add_argument("--revision", default=None, help="Hub branch, tag or commit of the model")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    demo.add_argument("--share", choices=("yes", "no"), default="no", help="make a public gradio.live link")
    demo.add_argument("--device", default="cpu", help="torch device (default cpu)")
    demo.add_argument("--max-images", type=int, default=8, help="most galaxies per request (default 8)")
    demo.add_argument("--max-steps", type=int, default=100, help="most denoising steps per request (default 100)")
    demo.set_defaults(handler=run_demo)

    space = commands.add_parser("export-space", help="write a Hugging Face Space (Gradio app) serving a Hub model")
    space.add_argument("folder", help="folder to write app.py, requirements.txt and README.md to")
    space.add_argument("--model", required=True, help="Hub id of the model the Space serves, user/name")
    space.add_argument("--title", default=None, help="Space title (default from the model name)")
    space.add_argument(
        "--package", default=None, help="requirement installing galaxy_pipeline (default the released version)"
    )
    space.add_argument("--overwrite", action="store_true", help="replace files of an earlier export")
    space.set_defaults(handler=run_export_space)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``galaxy-pipeline`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        command = " ".join(name for name in (args.command, getattr(args, "data_command", None)) if name)
        print(f"galaxy-pipeline {command}: error: {error_message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
