"""Accuracy on labeled data, float against 8- and 16-bit, side by side (docs/eval.md).

DATA is a list file of 'path label' lines, an ImageNet-style folder of class folders, or
unlabeled images (then top-1 agreement with float and the output SNR are reported); with
--task detect a COCO-format JSON (mAP) or images (box agreement with float); with --task
segment images, and --masks DIR of PNG label masks named like them (mIoU, pixel accuracy).

Examples:
  tidlc eval model.onnx --data val.txt --mean 123.7,116.3,103.5 --scale 0.017 --calib calib.txt
  tidlc eval cifar10_quick.prototxt --weights cifar10_quick_iter_5000.caffemodel --mean 125.3,123,113.9 \
      --channel-order bgr --data samples/ --calib samples/ --json eval.json
  tidlc eval seg.onnx --task segment --data images/ --masks masks/ --calib images/ --plot iou.png
  tidlc eval yolox.onnx --task detect --data val.json --decoder 'yolox{classes=80}' --calib calib/
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
    p.add_argument("--task", choices=("classify", "detect", "segment"), default="classify",
                   help="classify: top-1/top-5; detect: COCO mAP (--data is a COCO-format JSON; needs pycocotools) "
                        "or, given images, box agreement with float; segment: mIoU and pixel accuracy (--masks)")
    p.add_argument("--masks", metavar="DIR",
                   help="--task segment: PNG label masks named like the images (DIR/STEM.png; 255 = ignored)")
    p.add_argument("--decoder", default=None, metavar="NAME",
                   help="--task detect|segment: the post-processor, with options (tidlc run --post's names, e.g. "
                        "'yolov5{classes=80}'; default: the one that fits)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the per-class (else per-image) deltas of each precision to float (needs matplotlib)")
    p.add_argument("--score-threshold", type=float, default=0.05, metavar="S",
                   help="--task detect: smallest score kept before mAP (default 0.05)")
    p.add_argument("--precision", type=names_list, default=("float", "8", "16"), metavar="LIST",
                   help="comma-separated: float, 8, 16 (default all three)")
    p.add_argument("--frames", type=int, metavar="N", help="evaluate the first N frames only")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the frames in N worker processes (identical results; one kernel thread each)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run the frames as Ray tasks on the cluster at ADDRESS, or on a local Ray without one "
                        "(identical results; pip install \"tidlc[ray]\"; docs/scale.md)")
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

    if args.masks and args.task != "segment":
        from tidlc.diagnostics import TidlcError
        raise TidlcError(f"--masks goes with --task segment, not {args.task}", hint="--task segment", code="option")
    if args.plot:
        from tidlc.evalplot import check_path
        check_path(args.plot)  # before the long run
    if args.task in ("detect", "segment"):
        return _task(args, options, progress)
    result = evaluate(args.model, args.data, options, precisions=args.precision, frames=args.frames,
                      task=args.task, progress=progress, workers=args.workers, ray=args.ray)
    if args.plot:
        from tidlc.evalplot import plot
        plot(result.to_dict(), args.plot)
    if args.json == "-":
        import json
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return 0
    sys.stdout.write(render_text(result))
    if args.json:
        write_json(result, args.json)
        print(f"  wrote {args.json}")
    if args.plot:
        print(f"  wrote {args.plot}")
    return 0


def _task(args, options, progress) -> int:
    """--task detect|segment (tidlc.evaluate_tasks): the document, its table, --json and --plot."""
    import json

    from tidlc import evaluate_tasks as tasks
    common = {"precisions": args.precision, "frames": args.frames, "progress": progress}
    decoder = args.decoder or args.task
    if args.task == "segment":
        doc = tasks.evaluate_segmentation(args.model, args.data, options, masks=args.masks, decoder=decoder, **common)
    elif args.data.lower().endswith(".json"):
        from tidlc.evaluate import evaluate_detection
        doc = tasks.detection_document(args.model, evaluate_detection(
            args.model, args.data, options, decoder=decoder, threshold=args.score_threshold, **common))
    else:
        doc = tasks.detection_agreement(args.model, args.data, options, decoder=decoder,
                                        threshold=args.score_threshold, **common)
    if args.plot:
        from tidlc.evalplot import plot
        plot(doc, args.plot)
    if args.json == "-":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    sys.stdout.write(tasks.render(doc))
    if args.json:
        from tidlc.fileio import atomic_write
        with atomic_write(args.json) as fh:
            fh.write((json.dumps(doc, indent=2) + "\n").encode())
        print(f"  wrote {args.json}")
    if args.plot:
        print(f"  wrote {args.plot}")
    return 0
