"""Collapsed stacks as something a person can read: a self-contained SVG flame graph, speedscope's JSON, or the
collapsed text itself.

The SVG is drawn here (not flamegraph.pl's): one rectangle per frame, a frame's width its share of the samples,
siblings in name order so two graphs of the same code line up. The root is at the top (an icicle graph): asyncio
stacks are 30-80 frames deep, and a browser opens a tall SVG at its top, where the wide frames should be. It needs
nothing from the network and no script: each frame's `<title>` is the browser's hover text (name, samples,
share), and its label is cut to fit. Frames narrower than `MIN_WIDTH` pixels are left out (with their children),
which bounds the file's size whatever the number of stacks; the samples they held still count in their parents'
widths. Colours are warm, a hue per top-level package (so "sqlalchemy" and "synccore" read as areas) and a
lightness per function; the labels the sampler adds (`account:3`, `thread:NAME`) are blue and `(idle)` grey.

    python -m ops.flame [--format svg|speedscope|collapsed] [--title T] < stacks.txt > graph.svg
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

Stack = tuple[str, ...]

WIDTH = 1200
FRAME_HEIGHT = 17
MIN_WIDTH = 0.3  # pixels
CHAR_WIDTH = 6.6  # pixels of an 11 px monospace glyph, to cut labels without measuring text
TOP = 50  # room for the title lines
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


@dataclass(slots=True)
class Node:
    name: str
    total: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def tree(stacks: Mapping[Stack, int]) -> Node:
    """The stacks merged into one tree under a root that holds every sample."""
    root = Node("all")
    for stack, count in stacks.items():
        if count <= 0:
            continue
        root.total += count
        node = root
        for name in stack:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = Node(name)
            child.total += count
            node = child
    return root


def parse_collapsed(text: str) -> Counter[Stack]:
    """Collapsed text (`a;b;c 12` lines) back into stacks; ValueError names the first line that is not one."""
    stacks: Counter[Stack] = Counter()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        frames, _, count = line.rstrip().rpartition(" ")
        if not frames or not count.isdigit():
            raise ValueError(f"line {number} is not `frame;frame count`: {line[:80]!r}")
        stacks[tuple(frames.split(";"))] += int(count)
    return stacks


def collapsed(stacks: Mapping[Stack, int]) -> str:
    return "".join(f"{';'.join(stack)} {count}\n" for stack, count in sorted(stacks.items()) if count > 0)


def speedscope(stacks: Mapping[Stack, int], name: str = "inboxql") -> dict[str, object]:
    """speedscope's file format (a "sampled" profile: one sample per distinct stack, weighted by its count), for
    https://www.speedscope.app or the npm `speedscope` app run offline."""
    index: dict[str, int] = {}
    samples: list[list[int]] = []
    weights: list[int] = []
    for stack, count in sorted(stacks.items()):
        if count <= 0:
            continue
        samples.append([index.setdefault(frame, len(index)) for frame in stack])
        weights.append(count)
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": [{"name": frame} for frame in index]},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "inboxql ops.flame",
    }


def _colour(name: str) -> str:
    if name == "(idle)":
        return "rgb(200,200,200)"
    if name.startswith(("account:", "thread:")):
        shade = zlib.crc32(name.encode()) % 40
        return f"rgb({90 + shade},{150 + shade},{225})"
    package = name.split(":", 1)[0].split(".", 1)[0]
    hue = zlib.crc32(package.encode()) % 50  # red to orange-yellow
    light = 55 + zlib.crc32(name.encode()) % 20
    return f"hsl({hue},85%,{light}%)"


def _label(name: str, width: float) -> str:
    fits = int((width - 6) / CHAR_WIDTH)
    if fits < 3:
        return ""
    return name if len(name) <= fits else name[: fits - 2] + ".."


def svg(stacks: Mapping[Stack, int], title: str = "inboxql profile", subtitle: str = "") -> str:
    """A flame graph of `stacks` as a standalone SVG document."""
    root = tree(stacks)
    scale = WIDTH / root.total if root.total else 0.0
    frames: list[tuple[int, float, float, Node]] = []  # depth, x, width, node

    def place(node: Node, depth: int, x: float) -> None:
        frames.append((depth, x, node.total * scale, node))
        for name in sorted(node.children):
            child = node.children[name]
            width = child.total * scale
            if width >= MIN_WIDTH:
                place(child, depth + 1, x)
            x += width

    if root.total:
        place(root, 0, 0.0)
    depth = max((d for d, _, _, _ in frames), default=0)
    height = TOP + (depth + 1) * FRAME_HEIGHT + 10
    total = root.total
    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH + 20}" height="{height}" '
        f'viewBox="0 0 {WIDTH + 20} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        'font-size="11">\n',
        "<style>g.f:hover rect{stroke:#222;stroke-width:1}text{pointer-events:none}</style>\n",
        f'<rect x="0" y="0" width="{WIDTH + 20}" height="{height}" fill="#fdfaf3"/>\n',
        f'<text x="{(WIDTH + 20) / 2}" y="20" text-anchor="middle" font-size="15">{escape(title)}</text>\n',
        f'<text x="{(WIDTH + 20) / 2}" y="38" text-anchor="middle" fill="#555">'
        f"{escape(subtitle or f'{total} samples')}</text>\n",
    ]
    if not total:
        parts.append(f'<text x="10" y="{TOP + 12}" fill="#555">no samples</text>\n')
    for level, x, width, node in frames:
        y = TOP + level * FRAME_HEIGHT
        share = 100.0 * node.total / total
        hover = f"{node.name} ({node.total} samples, {share:.2f}%)"
        parts.append(
            f'<g class="f"><title>{escape(hover)}</title>'
            f'<rect x="{10 + x:.2f}" y="{y}" width="{width:.2f}" height="{FRAME_HEIGHT - 1}" '
            f'fill="{_colour(node.name)}" rx="1"/>'
        )
        text = _label(node.name, width)
        if text:
            parts.append(f'<text x="{13 + x:.2f}" y="{y + FRAME_HEIGHT - 5}">{escape(text)}</text>')
        parts.append("</g>\n")
    parts.append("</svg>\n")
    return "".join(parts)


def render(stacks: Mapping[Stack, int], fmt: str, title: str = "inboxql profile", subtitle: str = "") -> str:
    """`stacks` in one of FORMATS."""
    if fmt == "svg":
        return svg(stacks, title, subtitle)
    if fmt == "speedscope":
        return json.dumps(speedscope(stacks, title))
    if fmt == "collapsed":
        return collapsed(stacks)
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")


FORMATS: Sequence[str] = ("svg", "collapsed", "speedscope")
MEDIA_TYPES: Mapping[str, str] = {
    "svg": "image/svg+xml",
    "collapsed": "text/plain; charset=utf-8",
    "speedscope": "application/json",
}


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.flame", description="collapsed stacks (stdin) to a graph")
    parser.add_argument("--format", choices=FORMATS, default="svg")
    parser.add_argument("--title", default="inboxql profile")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        stacks = parse_collapsed(sys.stdin.read())
    except ValueError as exc:
        print(f"ops.flame: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(stacks, args.format, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
