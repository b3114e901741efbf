"""Linearize a pretrained softmax encoder: write its LION twin (every shared weight copied) and print what was not
copied and which new LION weights start from their initialisation.

    # transformers BERT (a folder with config.json + weights, or a hub id) -> a lion_bert folder
    python scripts/linearize.py SRC_FOLDER OUT_FOLDER --attention lion-s
    python scripts/linearize.py minilm OUT_FOLDER --attention lion-d     # all-MiniLM-L6-v2, shipped offline
    #   then: import lion; AutoModel.from_pretrained(OUT_FOLDER)

    # timm ViT / DeiT (weights from a file, or timm's own download when online) or a lion image run
    python scripts/linearize.py --timm deit_tiny_patch16_224 --weights deit_tiny.safetensors OUT --attention lion-d
    python scripts/linearize.py logs/runs/mnist_softmax-s0/checkpoints/best.ckpt OUT --attention lion-s
    #   then: import lion.convert; lion.convert.load_vit(OUT)   (timm.create_model with the weights file)

Options: --decay-init default|paper, --decay-horizon LO HI (initial memory horizons in tokens), --feature-map,
--normalize/--no-normalize (the twin's mixer; defaults: see lion.convert), --report-json to write the report.
Then distil the twin towards its teacher: docs/DISTILL.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("paths", nargs="+", metavar="SOURCE OUT",
                    help="SOURCE: transformers folder / hub id, 'minilm', or a lion run (.ckpt or run directory); "
                         "OUT: output folder. With --timm give OUT only")
    ap.add_argument("--timm", help="timm model name of the teacher (ViT / DeiT)")
    ap.add_argument("--weights", help="weights file of the --timm teacher (else timm downloads its own)")
    ap.add_argument("--timm-kwargs", default="{}", help="JSON of extra timm.create_model arguments of the teacher")
    ap.add_argument("--attention", default="lion-s", help="lion-lit, lion-d, lion-s, lion-d-ms, lion-s-ms, softmax")
    ap.add_argument("--decay-init", default="default", choices=("default", "paper"))
    ap.add_argument("--decay-horizon", nargs=2, type=float, metavar=("LO", "HI"))
    ap.add_argument("--feature-map", choices=("auto", "elu1", "silu_norm", "none"))
    ap.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--report-json", help="also write the report here (it is always written into OUT)")
    ap.add_argument("--compare", action="store_true",
                    help="instead of converting: SOURCE is the teacher, the other paths are saved students; "
                         "transformers folders: the cosine similarity of their mean-pooled sentence embeddings "
                         "with the teacher's on --sentences; ViT folders: test accuracy on --images")
    ap.add_argument("--sentences", default="rotten_tomatoes_test",
                    help="--compare: rotten_tomatoes_test (the held-out Rotten Tomatoes test part, never distilled "
                         "on) or a text file, one sentence per line")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--images", default="mnist5k", help="--compare with ViT students: the packaged image set "
                                                          "(mnist5k, digits) whose test part is classified")
    ap.add_argument("--data-dir", default="data", help="--compare with ViT students: data cache directory")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(args)

    import json

    import lion  # noqa: F401
    from lion.convert import UnsupportedModelError, linearize, load_teacher, save_twin, teacher_folder

    if len(args.paths) != (1 if args.timm else 2):
        ap.error("give SOURCE OUT, or --timm NAME OUT")
    args.source, args.out = (None, args.paths[0]) if args.timm else args.paths
    if args.timm:
        import timm

        kw = json.loads(args.timm_kwargs)
        if args.weights:
            kw.update(pretrained=True, pretrained_cfg_overlay=dict(file=args.weights))
        teacher = timm.create_model(args.timm, **kw).eval()
        tokenizer_from = None
    else:
        try:
            teacher = load_teacher(args.source)
        except UnsupportedModelError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        tokenizer_from = teacher_folder(args.source)
    mixer = {}
    if args.feature_map:
        mixer["feature_map"] = args.feature_map
    if args.normalize is not None:
        mixer["normalize"] = args.normalize
    try:
        twin, report = linearize(teacher, args.attention, decay_init=args.decay_init,
                                 decay_horizon=args.decay_horizon, mixer=mixer)
    except UnsupportedModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    line = save_twin(twin, args.out, report, tokenizer_from=tokenizer_from)
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.as_dict(), indent=1))
    print(report)
    print(f"written: {args.out}\nload it with:  {line}")
    return 0


def compare(args) -> int:
    import json

    import torch
    from transformers import AutoModel

    import lion  # noqa: F401
    from lion.convert import load_teacher
    from lion.data import get_tokenizer
    from lion.data.common import text_lines
    from lion.data.unlabeled import rotten_tomatoes_sentences
    from lion.tasks.distill import compare_sentence_embeddings

    if len(args.paths) < 2:
        print("error: --compare needs TEACHER STUDENT [STUDENT ...]", file=sys.stderr)
        return 2
    teacher = load_teacher(args.paths[0])
    if (Path(args.paths[1]) / "timm_args.json").is_file():
        return compare_images(teacher, args)
    students = {p: AutoModel.from_pretrained(p) for p in args.paths[1:]}
    if args.sentences == "rotten_tomatoes_test":
        texts = rotten_tomatoes_sentences("test")
    else:
        texts = [ln.strip() for ln in text_lines(args.sentences) if ln.strip()]
    tok = get_tokenizer("bert-base-uncased" if args.paths[0] == "minilm" else args.paths[0])
    with torch.inference_mode():
        res = compare_sentence_embeddings(teacher, students, texts, tok, max_length=args.max_length)
    print(json.dumps({"sentences": args.sentences, "n": len(texts), "cosine": res}, indent=1))
    return 0


def compare_images(teacher, args) -> int:
    """ViT students: test accuracy of the teacher and of each student (and their agreement with the teacher) on
    the test part of a packaged image set (--images, default mnist5k, as MNISTDataModule splits it)."""
    import json

    import torch

    from lion.convert import load_vit
    from lion.data.images import PackagedImageDataModule

    students = {p: load_vit(p).eval() for p in args.paths[1:]}
    pe = teacher.patch_embed
    dm = PackagedImageDataModule(data_dir=args.data_dir, dataset=args.images, image_size=pe.img_size[0],
                                 in_chans=pe.proj.in_channels, batch_size=256, num_workers=0)
    dm.setup()
    x, y = dm.datasets["test"].tensors
    teacher.eval()
    with torch.inference_mode():
        t = torch.cat([teacher(b) for b in x.split(256)]).argmax(-1)
        res = {"teacher": {"acc": (t == y).float().mean().item()}}
        for p, m in students.items():
            s = torch.cat([m(b) for b in x.split(256)]).argmax(-1)
            res[p] = {"acc": (s == y).float().mean().item(), "agreement": (s == t).float().mean().item()}
    print(json.dumps({"images": f"{args.images} test part", "n": len(y), "results": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
