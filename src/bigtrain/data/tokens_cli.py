"""`bigtrain-tokens`: the command line of the tokens writer (data/shard_writer.py); one line and exit 2 for a bad input.

    bigtrain-tokens write OUT INPUTS... [--tokenizer tok.json] [--workers N] [--shard-tokens N]
                          [--text-field text] [--hf-format json|parquet|arrow|csv|text]
                          [--hf-dataset DIR [--split train]] [--eod TOKEN] [--max-bytes N] [--overwrite]

docs/lm.md ("Preparing a corpus") describes the inputs and the layout written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bigtrain.config.errors import ConfigError
from bigtrain.data.documents import Inputs
from bigtrain.data.shard_writer import write_corpus


class OneLineParser(argparse.ArgumentParser):
    """argparse, whose errors are one line (`bigtrain-tokens: ...`) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"bigtrain-tokens: {message} (see bigtrain-tokens write --help)\n")


def parser() -> OneLineParser:
    p = OneLineParser(
        prog="bigtrain-tokens", description="Write tokenised corpora: a folder of shards and an index."
    )
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="tokenise documents into the corpus folder OUT")
    w.add_argument("out", help="the corpus folder to write (train with data=tokens data.path=OUT)")
    w.add_argument(
        "inputs",
        nargs="*",
        help="text files, folders, globs; .jsonl, .parquet and .arrow files are tables of documents",
    )
    w.add_argument("--stdlib", action="store_true", help="also the .py files of Python's standard library")
    w.add_argument("--tokenizer", default=None, help="a tokenizers JSON file (default: bytes)")
    w.add_argument(
        "--eod",
        default=None,
        help="the end-of-document token (default: the tokenizer's <|endoftext|>, </s>, ...)",
    )
    w.add_argument(
        "--text-field", default="text", help="the text column of tables and datasets (default: text)"
    )
    w.add_argument("--hf-format", choices=("json", "parquet", "arrow", "csv", "text"), default=None,
                   help="read the inputs with datasets.load_dataset(FORMAT, data_files=INPUTS)")  # fmt: skip
    w.add_argument("--hf-dataset", default=None, help="a folder saved by datasets' save_to_disk")
    w.add_argument("--split", default="train", help="the split of a saved DatasetDict (default: train)")
    w.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="tokenising processes (default: all cores)"
    )
    w.add_argument(
        "--shard-tokens", type=int, default=100_000_000, help="tokens per shard (default: 100,000,000)"
    )
    w.add_argument("--max-bytes", type=int, default=None, help="stop after this many bytes of text")
    w.add_argument(
        "--overwrite", action="store_true", help="replace an existing corpus OUT once the new one is complete"
    )
    return p


def _inputs(args, fail) -> Inputs:
    from bigtrain.data.corpus import expand_paths, stdlib_files

    if args.hf_dataset is not None:
        if args.inputs or args.stdlib or args.hf_format:
            fail("--hf-dataset is the only input: drop the files, --stdlib and --hf-format")
        if (
            not (Path(args.hf_dataset) / "dataset_info.json").is_file()
            and not (Path(args.hf_dataset) / "dataset_dict.json").is_file()
        ):
            fail(f"{args.hf_dataset} is not a folder saved by datasets' save_to_disk")
        return Inputs(text_field=args.text_field, hf_dataset=Path(args.hf_dataset), split=args.split)
    missing = [i for i in args.inputs if not any(c in i for c in "*?[") and not os.path.exists(i)]
    if missing:
        fail(f"{missing[0]} does not exist: give files, folders or globs")
    files = expand_paths(args.inputs) + (stdlib_files() if args.stdlib else [])
    if not files:
        fail("no input file: give files, folders or globs, --stdlib, or --hf-dataset")
    return Inputs(tuple(files), text_field=args.text_field, hf_format=args.hf_format)


def main(argv: list[str] | None = None) -> None:
    """`bigtrain-tokens write OUT INPUT...`: one clear line and exit status 2 for a bad input."""
    p = parser()
    # Inputs may follow options (`write OUT --hf-format json a.jsonl`): argparse leaves them over.
    args, rest = p.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.inputs = [*args.inputs, *rest]

    def fail(line: str):
        p.exit(2, f"bigtrain-tokens: {line}\n")

    out = Path(args.out)
    if out.suffix in (".bin", ".json"):
        fail(f"{out} names a file: a corpus is a folder, give a folder name (e.g. {out.with_suffix('')})")
    if args.workers < 1 or args.shard_tokens < 1 or (args.max_bytes is not None and args.max_bytes < 1):
        fail("--workers, --shard-tokens and --max-bytes must be at least 1")
    inputs = _inputs(args, fail)
    try:
        index = write_corpus(out, inputs, tokenizer=args.tokenizer, eod_name=args.eod, workers=args.workers,
                             shard_tokens=args.shard_tokens, max_bytes=args.max_bytes, overwrite=args.overwrite)  # fmt: skip
    except ConfigError as e:
        fail(str(e))
    print(
        f"wrote {out}: {index['n_tokens']:,} tokens ({index['dtype']}) in {len(index['shards'])} shards, "
        f"{index['documents']:,} documents, from {index['n_bytes']:,} bytes"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
