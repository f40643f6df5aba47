"""The flame graph renderer: well-formed standalone SVG whose frames are as wide as their samples, speedscope's
JSON, and collapsed text that reads back the same."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from ops.flame import MIN_WIDTH, WIDTH, parse_collapsed, render, speedscope, svg, tree

SVG = "{http://www.w3.org/2000/svg}"

STACKS: Counter[tuple[str, ...]] = Counter(
    {
        ("account:3", "synccore.folder:FolderSync.initial", "mime.parse:<lambda>"): 60,
        ("account:3", "synccore.folder:FolderSync.initial", "schema.unit:Store.commit"): 30,
        ("gateway.http:GatewayView.run", "json:dumps"): 9,
        ("(idle)",): 1,
    }
)


def frames(document: str) -> dict[str, tuple[float, str]]:
    """name -> (width, hover title) of every drawn frame."""
    root = ET.fromstring(document.encode())
    found: dict[str, tuple[float, str]] = {}
    for group in root.iter(f"{SVG}g"):
        title = group.findtext(f"{SVG}title") or ""
        rect = group.find(f"{SVG}rect")
        assert rect is not None
        found[title.rsplit(" (", 1)[0]] = (float(rect.attrib["width"]), title)
    return found


def test_the_svg_is_well_formed_and_each_frame_is_as_wide_as_its_samples() -> None:
    document = svg(STACKS, "inboxql profile", "100 samples")
    drawn = frames(document)  # ElementTree raises on anything that is not well-formed XML
    assert drawn["all"][0] == pytest.approx(WIDTH)
    assert drawn["mime.parse:<lambda>"][0] == pytest.approx(WIDTH * 0.60, abs=0.01)
    assert drawn["account:3"][0] == pytest.approx(WIDTH * 0.90, abs=0.01)
    assert drawn["mime.parse:<lambda>"][1] == "mime.parse:<lambda> (60 samples, 60.00%)"
    assert "&lt;lambda&gt;" in document  # escaped, in the title and the label
    assert "<script" not in document
    assert "http://" not in document.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_children_hang_below_their_parent_root_at_the_top() -> None:
    root = ET.fromstring(svg(STACKS).encode())
    rects = {(g.findtext(f"{SVG}title") or "").rsplit(" (", 1)[0]: g.find(f"{SVG}rect") for g in root.iter(f"{SVG}g")}
    parent, child = rects["account:3"], rects["synccore.folder:FolderSync.initial"]
    assert parent is not None
    assert child is not None
    assert float(child.attrib["y"]) > float(parent.attrib["y"])
    assert float(child.attrib["x"]) >= float(parent.attrib["x"])


def test_frames_too_narrow_to_see_are_left_out_but_still_counted() -> None:
    stacks = Counter({("main", "busy"): 1_000_000, ("main", "rare", "rarer"): 1})
    drawn = frames(svg(stacks))
    assert "rare" not in drawn
    assert "rarer" not in drawn
    assert WIDTH / 1_000_001 < MIN_WIDTH
    assert drawn["main"][1] == "main (1000001 samples, 100.00%)"


def test_no_samples_is_still_a_document() -> None:
    root = ET.fromstring(svg(Counter()).encode())
    assert "no samples" in "".join(root.itertext())


def test_collapsed_text_reads_back_the_same() -> None:
    text = render(STACKS, "collapsed")
    assert "account:3;synccore.folder:FolderSync.initial;mime.parse:<lambda> 60\n" in text
    assert parse_collapsed(text) == STACKS
    with pytest.raises(ValueError, match="line 2"):
        parse_collapsed("a;b 3\nnot a stack line\n")


def test_speedscope_json_names_each_frame_once_and_weights_each_stack() -> None:
    document = json.loads(render(STACKS, "speedscope", "initial sync"))
    names = [f["name"] for f in document["shared"]["frames"]]
    assert len(names) == len(set(names))
    (profile,) = document["profiles"]
    assert profile["type"] == "sampled"
    assert profile["endValue"] == 100
    rebuilt = Counter(
        {tuple(names[i] for i in sample): w for sample, w in zip(profile["samples"], profile["weights"], strict=True)}
    )
    assert rebuilt == STACKS
    assert speedscope(STACKS)["exporter"] == "inboxql ops.flame"


def test_tree_totals() -> None:
    root = tree(STACKS)
    assert root.total == 100
    assert root.children["account:3"].children["synccore.folder:FolderSync.initial"].total == 90


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(STACKS, "png")


def test_the_module_renders_stdin() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ops.flame", "--title", "from stdin"],
        input=render(STACKS, "collapsed"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "from stdin" in done.stdout
    assert "FolderSync.initial" in frames(done.stdout)["synccore.folder:FolderSync.initial"][1]
