#!/usr/bin/env python3
"""Print a file as a markdown section whose code fence its content cannot close.

    python .github/scripts/md_section.py [--keep] [--tail-bytes N] TITLE FILE

The fence is one backtick longer than the longest run of backticks in the content (at least
three), so a file name or message holding ```` ``` ```` stays inside the block. ``--keep``
starts the section with the marker that ``sticky_comment.fit`` never truncates away (the
failure report survives a long plan). Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys

KEEP = "<!-- reconcile-keep -->"


def fence_for(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def section(title: str, text: str, keep: bool = False) -> str:
    fence = fence_for(text)
    body = text if text.endswith("\n") or not text else text + "\n"
    title = " ".join(title.split()).replace("<", "&lt;")
    return "".join([f"\n{KEEP}\n" if keep else "\n", f"**{title}**\n\n", f"{fence}\n", body, f"{fence}\n"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("title")
    parser.add_argument("file")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--tail-bytes", type=int, default=20000)
    args = parser.parse_args(argv)
    with open(args.file, "rb") as fh:
        data = fh.read()
    if len(data) > args.tail_bytes:
        data = data[-args.tail_bytes:]
    sys.stdout.write(section(args.title, data.decode("utf-8", "replace"), keep=args.keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
