"""The ``neas`` command: one subcommand per recipe.

Every user-input error is a :class:`~neas.errors.NeasError`, printed as one line
(``neas: error: ...``) with exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from neas.errors import NeasError

__all__ = ["main", "build_parser"]


def _load_arch_and_space(spec: str, space_spec: "str | None"):
    from neas.space import EnsembleArch, SearchSpace

    arch = EnsembleArch.resolve(spec)
    space_name = space_spec
    if space_name is None and str(spec).endswith(".json") and Path(spec).is_file():
        stored = json.loads(Path(spec).read_text()).get("space")
        if isinstance(stored, dict):
            return arch, SearchSpace.from_dict(stored)
        space_name = stored
    return arch, SearchSpace.resolve(space_name or "imagenet")


def _cmd_arch(args) -> int:
    from neas.recipes.inspect import arch_report, arch_summary

    arch, space = _load_arch_and_space(args.arch, args.space)
    arch.validate(space)
    if args.json:
        print(json.dumps(arch_summary(space, arch, args.num_classes, args.input_size)))
    else:
        print(arch_report(space, arch, args.num_classes, args.input_size, title=str(args.arch)))
    return 0


def _cmd_space(args) -> int:
    from neas.recipes.inspect import space_report
    from neas.space import SearchSpace

    space = SearchSpace.resolve(args.space)
    print(space.to_yaml() if args.yaml else space_report(space))
    return 0


def recipe_config(cls, args, fields):
    """Resolves a recipe config: dataclass defaults <- ``--config`` YAML <- explicit CLI flags."""
    from neas.config import from_dict, load_yaml

    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    try:
        return from_dict(cls, data)
    except NeasError as exc:
        where = f"{args.config}: " if getattr(args, "config", None) else ""
        raise NeasError(f"{where}{exc}") from None


def _training_command(module: str, config: str, runner: str, artefact: str):
    """A subcommand that resolves a recipe config, runs it, and prints its main artefact."""

    def command(args) -> int:
        import importlib

        from neas import dist

        recipe = importlib.import_module(f"neas.recipes.{module}")
        cls = getattr(recipe, config)
        run = getattr(recipe, runner)(recipe_config(cls, args, cls.__dataclass_fields__))
        if dist.is_main_process():
            print(f"{artefact.split('.')[0]}: {run / artefact}")
        dist.cleanup()
        return 0

    return command


_cmd_train_supernet = _training_command("train_supernet", "SupernetConfig", "train_supernet", "supernet.safetensors")
_cmd_search = _training_command("search", "SearchConfig", "search", "arch.json")
_cmd_retrain = _training_command("retrain", "RetrainConfig", "retrain", "model.safetensors")


def _cmd_latency_table(args) -> int:
    from tqdm import tqdm

    from neas.cost.latency import measure_latency_table
    from neas.dist import local_device
    from neas.space import SearchSpace

    space = SearchSpace.resolve(args.space)
    device = local_device(args.device)
    total = sum(1 for spec in space.layers for op in spec.ops if not op.is_skip)
    with tqdm(total=total, desc="latency table", disable=None) as bar:
        table = measure_latency_table(space, args.num_classes, device, args.batch_size, args.repeats, progress=bar)
    table.save(args.out)
    print(f"latency table of {space.name!r} on {table.device}: {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    from pathlib import Path

    from neas.recipes.evaluate import EvaluateConfig, evaluate, format_result

    cfg = recipe_config(EvaluateConfig, args, EvaluateConfig.__dataclass_fields__)
    result = evaluate(cfg)
    if args.json is not None:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
            return 0
        Path(args.json).write_text(text + "\n")
    print(format_result(result))
    return 0


def _cmd_export(args) -> int:
    from neas.ensemble.export import export
    from neas.recipes.evaluate import load_model

    net, meta = load_model(args.checkpoint, args.official_checkpoint, args.arch)
    meta = {k: v for k, v in meta.items() if k not in ("format", "arch", "space", "num_classes")}
    diff = export(net, args.format, args.out, meta=meta, opset=args.opset)
    print(f"exported {args.format} to {args.out}; verified on a batch: max |difference| from PyTorch {diff:.2e}")
    return 0


def _cmd_run(args) -> int:
    from neas import dist
    from neas.config import from_dict, load_yaml
    from neas.recipes.run import DEMO, RunConfig, format_summary, run_pipeline

    data = load_yaml(args.config or DEMO)
    if args.out is not None:
        data["out"] = args.out
    if args.resume:
        data["resume"] = True
    try:
        cfg = from_dict(RunConfig, data)
    except NeasError as exc:
        raise NeasError(f"{args.config or DEMO}: {exc}") from None
    summary = run_pipeline(cfg)
    if dist.is_main_process():
        print(format_summary(summary))
    dist.cleanup()
    return 0


def _cmd_report(args) -> int:
    from neas.report import build_report

    print(f"report: {build_report(args.run)}")
    return 0


def _cmd_rank(args) -> int:
    from neas.recipes.rank import RankConfig, rank

    results = rank(recipe_config(RankConfig, args, RankConfig.__dataclass_fields__))
    for path, r in results["supernets"].items():
        lo, hi = r["kendall_tau_ci95"]
        print(f"{path} ({r['shrink']}): Kendall tau {r['kendall_tau']:.3f} [{lo:.3f}, {hi:.3f}], "
              f"Spearman rho {r['spearman_rho']:.3f} over {r['n']} ensembles")
    print(f"rank: {args.out}/rank.json")
    return 0


def _cmd_ablate(args) -> int:
    from neas.recipes import ablate
    from neas.recipes.retrain import RetrainConfig

    if args.ablation in ("homo-hetero", "split"):
        base = recipe_config(RetrainConfig, args, [f for f in RetrainConfig.__dataclass_fields__ if f not in ("arch", "out", "resume")])
        if args.ablation == "homo-hetero":
            record = ablate.homo_hetero(args.arch, base, args.out)
        else:
            record = ablate.split_ablation(args.arch, base, args.out, equal_budget=args.equal_budget)
    elif args.ablation == "paths":
        reuse = {}
        for item in args.reuse or []:
            k, sep, run = item.partition("=")
            if not sep or not k.isdigit():
                raise NeasError(f"--reuse {item!r}: expected K=RUN_DIR, e.g. 2=runs/cifar10")
            reuse[int(k)] = run
        record = ablate.paths_ablation(args.config, args.paths, args.out, reuse)
    else:
        record = ablate.search_ablation(args.run, args.out, args.top)
    print(Path(args.out, "ablate.md").read_text().rstrip())
    print(f"ablate: {args.out}/ablate.json ({record['ablation']})")
    return 0


def _cmd_subimagenet(args) -> int:
    from neas.data.subimagenet import make_subimagenet

    listing = make_subimagenet(args.imagenet, args.out, args.classes, args.train_per_class, args.val_per_class, args.seed)
    print(f"subImageNet: {len(listing['classes'])} classes in {args.out} (listed in {args.out}/classes.json)")
    return 0


def _cmd_carve_test(args) -> int:
    from neas.data.carve import carve_test_split

    listing = carve_test_split(args.src, args.out, args.test_fraction, args.split)
    test = sum(len(v) for v in listing["test"].values())
    print(f"carved: {listing['train']} train / {test} test images in {args.out} (test files listed in {args.out}/split.json)")
    return 0


def _retrain_flags(p) -> None:
    """The options of `neas retrain` other than --arch/--out/--resume (shared with `neas ablate`)."""
    p.add_argument("--config", help="YAML file with any of the options below as keys")
    p.add_argument("--space", help="search space (default: the arch file's, else imagenet)")
    p.add_argument("--data")
    p.add_argument("--data-dir")
    _bool_flag(p, "download", "let torchvision download cifar10/cifar100")
    p.add_argument("--recipe", help="small | imagenet (defaults for the options below)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr-per-2048", type=float, help="learning rate per 2048 images")
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--randaugment", help="timm RandAugment policy, or none")
    p.add_argument("--erase-prob", type=float)
    p.add_argument("--ema-decay", type=float, help="0 disables the EMA")
    p.add_argument("--holdout", type=float, help="leave out this held-out fraction of the training split")
    p.add_argument("--eval-split", help="test (default) or holdout")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--compile", help="torch.compile the training forward: auto (runs of >= 5000 steps), on, off")
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    _bool_flag(p, "amp", "mixed precision on CUDA")
    p.add_argument("--workers", type=int)


def _bool_flag(p, name, help):
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=None, help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neas", description="One-shot neural ensemble architecture search (NEAS).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("arch", help="print an ensemble architecture with its cost")
    p.add_argument("arch", help="neas-s, neas-m, neas-l or an arch JSON file")
    p.add_argument("--space", help="search space preset or YAML file (default: the file's, else imagenet)")
    p.add_argument("--input-size", type=int, help="input resolution (default: the space's)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_arch)

    p = sub.add_parser("space", help="print a search space")
    p.add_argument("space", help="preset (imagenet, cifar, tiny) or YAML file")
    p.add_argument("--yaml", action="store_true", help="print the resolved space as YAML")
    p.set_defaults(func=_cmd_space)

    p = sub.add_parser("train-supernet", help="train the K-path supernet with search-space shrinking")
    p.add_argument("--config", help="YAML file with any of the options below as keys")
    p.add_argument("--space", help="search space preset or YAML file (default tiny)")
    p.add_argument("--data", help="digits | cifar10 | cifar100 | imagefolder (default digits)")
    p.add_argument("--data-dir", help="dataset root")
    _bool_flag(p, "download", "let torchvision download cifar10/cifar100")
    p.add_argument("--out", help="run directory (default runs/supernet)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="images per process and step")
    p.add_argument("--lr", type=float, help="base learning rate (default 0.5 x global batch / 1024)")
    p.add_argument("--holdout", type=float, help="held-out fraction of the training split (default 0.1)")
    _bool_flag(p, "augment", "random crops (+ flips except on digits) for in-memory data (default on)")
    p.add_argument("--shrink", help="diversity | accuracy | none")
    p.add_argument("--shrink-every", type=int, help="E: epochs between shrinking rounds")
    p.add_argument("--shrink-drop", type=int, help="k: combinations dropped per round")
    p.add_argument("--shrink-until", type=int, help="T: stop shrinking at this many combinations")
    p.add_argument("--shrink-samples", type=int, help="Z: ensembles sampled per round")
    p.add_argument("--shrink-beta", type=float, help="beta of the similarity exp(-beta * distance)")
    p.add_argument("--shrink-gamma", type=float, help="gamma of the quality exp(gamma * accuracy)")
    p.add_argument("--bn-batches", type=int, help="R: BN recalibration batches per probed ensemble")
    p.add_argument("--probe-images", type=int, help="held-out images each probed ensemble is scored on")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    _bool_flag(p, "amp", "mixed precision on CUDA (default on)")
    p.add_argument("--workers", type=int, help="loader processes for on-disk datasets")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_train_supernet)

    p = sub.add_parser("search", help="search the trained supernet for the best ensemble under a budget")
    p.add_argument("--config", help="YAML file with any of the options below as keys")
    p.add_argument("--supernet", help="supernet-training run directory")
    p.add_argument("--out", help="search directory (default runs/search)")
    p.add_argument("--strategy", help="evolution | random")
    for metric in ("macs", "paper-flops", "params"):
        p.add_argument(f"--min-{metric}", help=f"lower bound on {metric} (K/M/G suffixes)")
        p.add_argument(f"--max-{metric}", help=f"upper bound on {metric} (K/M/G suffixes)")
    p.add_argument("--min-latency-ms", type=float)
    p.add_argument("--max-latency-ms", type=float, help="latency bound, from a table measured on this machine")
    p.add_argument("--latency-mode", help="sequential | parallel (how the K paths' latencies combine)")
    p.add_argument("--split", type=int, nargs="+", metavar="S", help="search only split points LO [HI] (0: no shared layers)")
    p.add_argument("--population", type=int, help="P (default 50)")
    p.add_argument("--parents", type=int, help="top-k parents (default 10)")
    p.add_argument("--generations", type=int, help="default 20")
    p.add_argument("--mutations", type=int, help="per generation (default 25)")
    p.add_argument("--crossovers", type=int, help="per generation (default 25)")
    p.add_argument("--p-split", type=float, help="P_s (default 0.1)")
    p.add_argument("--p-layer", type=float, help="P_m (default 0.1)")
    p.add_argument("--evaluations", type=int, help="random search: candidates (default population x generations)")
    p.add_argument("--bn-batches", type=int, help="R: BN recalibration batches (default 4)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--val-images", type=int, help="held-out images per candidate (default all)")
    p.add_argument("--data-dir", help="where the supernet's dataset lives now")
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--workers", type=int)
    p.add_argument("--resume", action="store_true", default=None)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("latency-table", help="measure the per-(layer, op) latency table of a space on this machine")
    p.add_argument("--space", required=True)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_latency_table)

    p = sub.add_parser("retrain", help="retrain an ensemble from scratch with the released models' recipe")
    p.add_argument("--arch", help="neas-s, neas-m, neas-l or an arch JSON file (e.g. a search's arch.json)")
    p.add_argument("--out")
    p.add_argument("--resume", action="store_true", default=None)
    _retrain_flags(p)
    p.set_defaults(func=_cmd_retrain)

    p = sub.add_parser("evaluate", help="top-1/top-5/loss of an ensemble and of each path, with cost and latency")
    p.add_argument("--checkpoint", help="a neas weights file or retrain run directory")
    p.add_argument("--official-checkpoint", help="a released NEAS .pth.tar file")
    p.add_argument("--arch", help="with --official-checkpoint: neas-s, neas-m or neas-l")
    p.add_argument("--data", help="default: the dataset the weights were trained on")
    p.add_argument("--data-dir")
    p.add_argument("--split", help="default test")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    _bool_flag(p, "latency", "measure the latency (default on)")
    p.add_argument("--json", nargs="?", const="-", help="print JSON, or write it to this file")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="export an ensemble as one module (safetensors or ONNX), verified")
    p.add_argument("--checkpoint", help="a neas weights file or retrain run directory")
    p.add_argument("--official-checkpoint", help="a released NEAS .pth.tar file")
    p.add_argument("--arch", help="with --official-checkpoint: neas-s, neas-m or neas-l")
    p.add_argument("--format", required=True, help="safetensors | onnx")
    p.add_argument("--out", required=True)
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("run", help="the whole pipeline in one run directory (no arguments: the digits demo)")
    p.add_argument("--config", help="YAML pipeline config (default: the built-in demo, configs/demo.yaml)")
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("rank", help="Kendall tau / Spearman rho of supernet vs from-scratch accuracies (with 95% CIs)")
    p.add_argument("--supernet", nargs="+", required=True, help="supernet run directories to compare")
    p.add_argument("--num-archs", type=int, default=30)
    p.add_argument("--from-space", default="full", help="'full' or a supernet run directory whose shrunk space to sample")
    p.add_argument("--scratch-epochs", type=int, default=10)
    p.add_argument("--scratch-batch-size", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_rank)

    p = sub.add_parser("ablate", help="the paper's ablations: homo-hetero, split, paths, search (resumable drivers)")
    ab = p.add_subparsers(dest="ablation", required=True, metavar="ABLATION")
    q = ab.add_parser("homo-hetero", help="retrain the searched ensemble and its mirrored (homogeneous) variants (Table 3)")
    q.add_argument("--arch", required=True, help="an arch JSON file (a search's arch.json) or neas-s/m/l")
    q.add_argument("--out", required=True)
    _retrain_flags(q)
    q.set_defaults(func=_cmd_ablate)
    q = ab.add_parser("split", help="retrain the ensemble with and without shared layers, and the best unshared one under the same budget (Table 4)")
    q.add_argument("--arch", required=True, help="an arch JSON file (a search's arch.json) or neas-s/m/l")
    q.add_argument("--out", required=True)
    _bool_flag(q, "equal-budget", "also search the best unshared ensemble under the search's budget (default: on when the arch comes from `neas search`)")
    _retrain_flags(q)
    q.set_defaults(func=_cmd_ablate, equal_budget=True)
    q = ab.add_parser("paths", help="run one `neas run` config for K = 2, 3, 5 ... paths under its budget (Table 5)")
    q.add_argument("--config", required=True, help="a `neas run` YAML config (its budget and stages are used for every K)")
    q.add_argument("--paths", type=int, nargs="+", default=[2, 3, 5], help="values of K (default 2 3 5)")
    q.add_argument("--reuse", nargs="+", metavar="K=RUN", help="a finished `neas run` of the same config to use for K")
    q.add_argument("--out", required=True)
    q.set_defaults(func=_cmd_ablate)
    q = ab.add_parser("search", help="evolution vs random search at equal evaluations, from runs with compare_random (Figure 5)")
    q.add_argument("--run", nargs="+", required=True, help="`neas run` directories with search/ and search_random/")
    q.add_argument("--top", type=int, default=10, help="also track the mean of the top-N ensembles found (default 10)")
    q.add_argument("--out", required=True)
    q.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("subimagenet", help="write the paper's 100-class subImageNet (250 train + 50 val per class)")
    p.add_argument("--imagenet", required=True, help="ImageNet root with train/<class>/ and val/<class>/")
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--train-per-class", type=int, default=250)
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_subimagenet)

    p = sub.add_parser("carve-test", help="split a train-only image folder into fixed, stratified train/ and test/ parts")
    p.add_argument("src", help="a folder with train/<class>/<image> (e.g. our CIFAR-10 copy)")
    p.add_argument("--out", required=True)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--split", default="train", help="the sub-folder to split (default: train)")
    p.set_defaults(func=_cmd_carve_test)

    p = sub.add_parser("report", help="write RUN_DIR/report/index.html with the run's plots")
    p.add_argument("run", help="a `neas run` directory")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args) or 0
    except NeasError as exc:
        print(f"neas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
