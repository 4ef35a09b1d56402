"""The `adastate` command."""

from __future__ import annotations

import argparse
import sys

from .errors import AdaStateError


def _cmd_info(args: argparse.Namespace) -> int:
    from .model.loader import inspect_checkpoint

    for path in args.paths:
        info = inspect_checkpoint(path, text_len=args.text_len, num_heads=args.num_heads)
        print("\n".join(info.lines()))
    return 0


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from .model.random_weights import TINY, save_random_checkpoint

    path = save_random_checkpoint(args.path, TINY, seed=args.seed, layout=args.layout)
    print(f"wrote a tiny random-weight Wan2.1 DiT ({args.layout} layout) to {path}")
    print("it only exercises the machinery: its video is noise")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adastate",
        description="AdaState: streaming text-to-video with a self-evolving anchor (Wan2.1).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser(
        "info", help="describe a DiT checkpoint: format, size, dtype, parameter count"
    )
    info.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint file or model folder")
    info.add_argument(
        "--text-len",
        type=int,
        default=None,
        help="text length (default: from the file's config, else 512)",
    )
    info.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads (default: from the file's config, else width / 128)",
    )
    info.set_defaults(func=_cmd_info)
    tiny = sub.add_parser(
        "tiny-model", help="write a tiny random-weight DiT checkpoint (smoke tests, no download)"
    )
    tiny.add_argument("path", help="output .safetensors (or .pt for --layout self-forcing)")
    tiny.add_argument(
        "--layout", default="comfyui", choices=["comfyui", "official", "self-forcing"]
    )
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_cmd_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AdaStateError as err:
        print(f"adastate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adastate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
