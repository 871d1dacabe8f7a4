"""Accuracy on labeled data, float against 8- and 16-bit, side by side (docs/eval.md).

DATA is a list file of 'path label' lines, an ImageNet-style folder of class folders, or
unlabeled images (then top-1 agreement with float and the output SNR are reported).

Examples:
  tidlc eval model.onnx --data val.txt --mean 123.7,116.3,103.5 --scale 0.017 --calib calib.txt
  tidlc eval ../shared/corpus/caffe/cifar10_quick/cifar10_quick.prototxt --data samples/ --json eval.json
"""
from __future__ import annotations

import argparse
import sys

from tidlc.cli_options import add_model_options, add_quant_options, names_list

NAME = "eval"
HELP = "accuracy (top-1/top-5) or agreement with float, per precision, on a data set"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="a model file")
    p.add_argument("--data", required=True, metavar="DATA", help="list file, class folders or images")
    p.add_argument("--task", choices=("classify", "detect"), default="classify",
                   help="classify: top-1/top-5; detect: COCO mAP (--data is a COCO-format JSON; needs pycocotools)")
    p.add_argument("--decoder", default="detect", metavar="NAME",
                   help="--task detect: the post-processor (tidlc run --post's names; default: the one that fits)")
    p.add_argument("--score-threshold", type=float, default=0.05, metavar="S",
                   help="--task detect: smallest score kept before mAP (default 0.05)")
    p.add_argument("--precision", type=names_list, default=("float", "8", "16"), metavar="LIST",
                   help="comma-separated: float, 8, 16 (default all three)")
    p.add_argument("--frames", type=int, metavar="N", help="evaluate the first N frames only")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the frames in N worker processes (identical results; one kernel thread each)")
    p.add_argument("--json", metavar="FILE", help="also write the tidlc.eval/1 document ('-': print it instead)")
    add_model_options(p)
    add_quant_options(p)


def run(args, options) -> int:
    from tidlc.evaluate import evaluate, render_text, write_json
    live = sys.stderr.isatty() and args.json != "-"
    last = {}

    def progress(label: str, done: int, total: int) -> None:
        if live and (done == total or done - last.get(label, 0) >= max(1, total // 20)):
            last[label] = done
            print(f"\reval {label}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    if args.task == "detect":
        return _detect(args, options, progress)
    result = evaluate(args.model, args.data, options, precisions=args.precision, frames=args.frames,
                      task=args.task, progress=progress, workers=args.workers)
    if args.json == "-":
        import json
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return 0
    sys.stdout.write(render_text(result))
    if args.json:
        write_json(result, args.json)
        print(f"  wrote {args.json}")
    return 0


def _detect(args, options, progress) -> int:
    import json

    from tidlc.evaluate import evaluate_detection
    rows = evaluate_detection(args.model, args.data, options, precisions=args.precision, frames=args.frames,
                              decoder=args.decoder, threshold=args.score_threshold, progress=progress)
    doc = {"schema": "tidlc.eval/1", "model": args.model, "task": "detect", "labeled": True,
           "rows": [{"precision": r.precision, "frames": r.frames, "map": round(r.map, 4), "map50": round(r.map50, 4),
                     "detections": r.detections, "fps": round(r.fps, 2)} for r in rows]}
    if args.json == "-":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    head = f"{'precision':<10} {'frames':>6} {'mAP':>7} {'mAP@.5':>7} {'boxes':>6} {'fps':>8}"
    lines = [f"{args.model}: detect (COCO mAP by pycocotools)", "", head, "-" * len(head)]
    for r in doc["rows"]:
        lines.append(f"{r['precision']:<10} {r['frames']:>6} {r['map']:>7.3f} {r['map50']:>7.3f} "
                     f"{r['detections']:>6} {r['fps']:>8.1f}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        from tidlc.fileio import atomic_write
        with atomic_write(args.json) as fh:
            fh.write((json.dumps(doc, indent=2) + "\n").encode())
        print(f"  wrote {args.json}")
    return 0
