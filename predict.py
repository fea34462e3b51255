"""Classify new, unlabelled images with a trained run, and show why.

    python predict.py runs/lymphoma slide.tif                     # one image: class, probabilities, entropy
    python predict.py runs/lymphoma archive/ --csv > results.csv  # every image under a folder, recursively
    python predict.py RUN IMAGES... --json --looks 16             # JSON lines; average of 16 looks
    python predict.py RUN IMAGES... --pictures explained/         # the attention picture of each image
    python predict.py RUN slides/ --geojson annotations/          # patches and attention for QuPath
    python predict.py RUN archive/ --report review/ --looks 8     # review/index.html, the doubtful first
    python predict.py RUN archive/ --csv --output scores.csv --workers 2     # 2 local processes (Dask)
    python predict.py RUN archive/ --json --output scores.jsonl --scheduler tcp://host:8786 --resume

Each image is read, brought to the run's image size (as train.py does with images of another size),
looked at by the attention network once and classified from P sampled patches. A whole-slide image (a
tiled or pyramidal TIFF, .svs, ...) is never decoded whole: its attention view comes from the pyramid and
its patches are regions of level 0, at the slide's own size (README, "Whole-slide images"). The sampling is random:
--looks K averages the class probabilities of K independent looks and reports their spread, and every
image's draws come from its own generator, seeded by --seed and the image's path, so a prediction is the
same whatever else is predicted with it. Images are read one at a time: memory does not grow with their
number. An image that cannot be read is an error row (the rest go on); if no image could be read, the
program ends with one line and exit code 2.

--workers N (N > 1) starts a local Dask cluster of N processes; --scheduler ADDRESS uses an existing one.
The workers read the images themselves (only paths travel) and each builds the model once; rows are
written in the input's order as they come. --output FILE writes them there (flushed row by row) and
--resume skips the images FILE already holds, so a stopped archive continues where it was.
"""
import argparse
import csv
import json
import os
import sys

from attention_sampling.application.cli import OneLineParser, positive_int
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.memory import keep_freed_memory
from attention_sampling.application.prediction import CHECKPOINT_FILES
from attention_sampling.application.settings import Training
from nn import threads


def parse_args(argv=None):
    parser = OneLineParser(prog="predict.py", description=__doc__.split("\n\n")[0].strip(),
                           formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=28,
                                                                                width=110))
    parser.add_argument("run", metavar="RUN", help="run folder written by train.py")
    parser.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+",
                        help="image files, or folders searched recursively for images")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per image (JSON lines)")
    output.add_argument("--csv", action="store_true", help="CSV with a header line")
    parser.add_argument("--output", metavar="FILE", help="write the rows to FILE instead of stdout")
    parser.add_argument("--resume", action="store_true",
                        help="with --output: skip the images FILE already holds and append the others")
    parser.add_argument("--pictures", metavar="DIR", help="write each image's attention picture into DIR")
    parser.add_argument("--geojson", metavar="DIR",
                        help="write each image's patches and attention as a GeoJSON file into DIR (QuPath)")
    parser.add_argument("--report", metavar="DIR", help="write a review page, DIR/index.html, and its images")
    parser.add_argument("--looks", type=positive_int, default=1, metavar="K",
                        help="average the class probabilities of K independent looks (default 1)")
    parser.add_argument("--checkpoint", choices=tuple(CHECKPOINT_FILES), default="best",
                        help="best: best.npz, chosen on validation (default); last: checkpoint.npz; "
                             "average: average.npz, the weight average of a run trained with --average-from")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the patch sampling (default 0)")
    parser.add_argument("--tissue", choices=("auto", "none"), default=None,
                        help="auto: sample each image on its tissue only, found on the attention view (an image "
                             "without tissue is an error row); none: everywhere (default: as the run was trained; "
                             "none for a run made before --tissue)")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=positive_int, default=1, metavar="N",
                         help="processes of a local Dask cluster (default 1: in this process, no Dask)")
    cluster.add_argument("--scheduler", metavar="ADDRESS", help="use the Dask cluster at ADDRESS (tcp://host:port)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.resume and not args.output:
        parser.error("--resume needs --output FILE: the rows already there are what it skips")
    if args.resume and not (args.json or args.csv):
        parser.error("--resume needs --json or --csv: it reads back the rows of --output")
    return args


def find_images(inputs):
    """Files as given, folders searched recursively (sorted) -> list of paths; a missing input is an error."""
    from attention_sampling.application.data import IMAGE_EXTENSIONS

    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(item) for name in names
                           if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise AttentionSamplingError(f"{item}: no images in this folder ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise AttentionSamplingError(f"{item}: no such file or folder")
    return paths


def done_paths(path, kind):
    """The images an earlier run already wrote to `path` (JSON lines or CSV). A last line cut by a kill is
    removed from the file (its image is predicted again), so the rows appended next start on a line of their own."""
    if not os.path.isfile(path):
        return set()
    with open(path, "rb+") as handle:
        content = handle.read()
        if content and not content.endswith(b"\n"):
            handle.truncate(content.rfind(b"\n") + 1)
    with open(path, newline="") as handle:
        if kind == "json":
            done = set()
            for line in handle:
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    pass  # a line cut by a kill: that image is predicted again
            return done
        return {row["path"] for row in csv.DictReader(handle) if row.get("path") and row.get("error") is not None}


class Writer:
    """Rows as they come, to stdout or --output: a table, JSON lines, or CSV; flushed row by row."""

    def __init__(self, kind, classes, stream, header=True, tissue=False):
        self.kind, self.classes, self.stream = kind, classes, stream
        self.tissue = tissue  # --tissue auto: each row's share of patches on tissue, a column of its own
        if kind == "csv":
            self.csv = csv.writer(stream, lineterminator="\n")
            if header:
                self.csv.writerow(["path", "prediction", *[f"p_{name}" for name in classes], "attention_entropy",
                                   "looks", "spread", "agreement", *(["on_tissue"] if tissue else []), "error"])

    def write(self, row):
        if self.kind == "json":
            print(json.dumps(row), file=self.stream)
        elif self.kind == "csv":
            probabilities = row.get("probabilities", {})
            self.csv.writerow([row["path"], row.get("prediction", ""),
                               *[probabilities.get(name, "") for name in self.classes],
                               row.get("attention_entropy", ""), row.get("looks", ""), row.get("spread", ""),
                               row.get("agreement", ""), *([row.get("on_tissue", "")] if self.tissue else []),
                               row.get("error", "")])
        elif "error" in row:
            print(f"{row['path']}  ERROR  {row['error']}", file=self.stream)
        else:
            chances = "  ".join(f"{name} {p:.3f}" for name, p in row["probabilities"].items())
            looks = f"  (spread {row['spread']:.3f} over {row['looks']} looks)" if row["looks"] > 1 else ""
            on_tissue = f"  on tissue {row['on_tissue']:.0%}" if "on_tissue" in row else ""
            print(f"{row['path']}  {row['prediction']}  [{chances}]  attention entropy "
                  f"{row['attention_entropy']:.2f}{looks}{on_tissue}", file=self.stream)
        self.stream.flush()


def run(args):
    from tqdm import tqdm

    from attention_sampling.application.prediction import checkpoint_path, model_from_checkpoint, predict_in_process

    checkpoint = checkpoint_path(args.run, args.checkpoint)
    config, _, _ = model_from_checkpoint(checkpoint)  # a foreign or broken checkpoint stops here, in one line
    tissue = args.tissue or Training.from_dict(config).tissue
    paths = find_images(args.inputs)
    kind = "json" if args.json else "csv" if args.csv else "table"
    if args.resume:
        done = done_paths(args.output, kind)
        paths = [path for path in paths if path not in done]
        print(f"predict.py: resuming {args.output}: {len(done)} image(s) done, {len(paths)} to go", file=sys.stderr)
    for flag, directory in (("--pictures", args.pictures), ("--geojson", args.geojson)):
        if directory:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as error:
                raise AttentionSamplingError(f"{flag} {directory}: {error.strerror or error}") from None
    report = None
    if args.report:
        from attention_sampling.application.report import Report

        report = Report(args.report, args.run, resume=args.resume)
    try:
        stream = open(args.output, "a" if args.resume else "w", newline="") if args.output else sys.stdout
    except OSError as error:
        raise AttentionSamplingError(f"--output {args.output}: {error.strerror or error}") from None
    client = None
    try:
        writer = Writer(kind, config["classes"], stream, header=not (args.resume and stream.tell() > 0),
                        tissue=tissue == "auto")
        if args.workers > 1 or args.scheduler:
            from attention_sampling.application.cluster import connect, predict_on_cluster

            client = connect(args.scheduler, args.workers)
            rows = predict_on_cluster(client, checkpoint, paths, args.seed, args.looks, args.pictures, tissue=tissue,
                                      geojson=args.geojson, report=args.report)
        else:
            rows = predict_in_process(checkpoint, paths, args.seed, args.looks, args.pictures, tissue, args.geojson,
                                      args.report)
        failed = []
        for row in tqdm(rows, total=len(paths), unit="img", disable=args.quiet or len(paths) <= 1, file=sys.stderr):
            if "error" in row:
                failed.append(row["error"])
                if len(paths) == 1:
                    raise AttentionSamplingError(row["error"])
            if report is not None:
                report.add(row)
            row.pop("report", None)
            writer.write(row)
    finally:
        if client is not None:
            client.close()
            if not args.scheduler:
                client.cluster.close()
        if stream is not sys.stdout:
            stream.close()
    if failed and len(failed) == len(paths):
        raise AttentionSamplingError(f"none of the {len(paths)} images could be read (first: {failed[0]})")
    if failed:
        print(f"predict.py: warning: {len(failed)} of {len(paths)} images could not be read (error rows)",
              file=sys.stderr)
    return 0


def main(argv=None):
    args = parse_args(argv)
    threads.use("numba")  # image by image: the kernels' faster build for millisecond calls (nn/threads.py)
    keep_freed_memory()  # each image's arrays reuse the last image's pages (memory.py)
    try:
        return run(args)
    except AttentionSamplingError as error:
        print(f"predict.py: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (predict.py ... | head): stop quietly
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
