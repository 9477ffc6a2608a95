"""``diagram()`` emits mermaid that parses (the stateDiagram-v2 subset transitions writes)."""

from __future__ import annotations

import re

import pytest

from whih_control.procedure import _TRANSITIONS, MOTION_PHASES, Phase, diagram

ID = r"[A-Za-z_][A-Za-z0-9_]*"
FORMS = {
    "state_decl": re.compile(rf'^state "([^"]+)" as ({ID})$'),
    "composite_open": re.compile(rf"^state ({ID}) \{{$"),
    "composite_close": re.compile(r"^\}$"),
    "class_use": re.compile(rf"^[Cc]lass ({ID}) ({ID})$"),
    "class_def": re.compile(rf"^classDef ({ID}) [^\s]+$"),
    "initial": re.compile(rf"^\[\*\] --> ({ID})$"),
    "edge": re.compile(rf"^({ID}) --> ({ID}): (.+)$"),
    "direction": re.compile(r"^direction (LR|RL|TB|BT)$"),
    "header": re.compile(r"^stateDiagram-v2$"),
}
LABEL = re.compile(rf"^{ID}( \[{ID}( & {ID})*\])?$")


class MermaidError(ValueError):
    pass


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, str, list[str]]], list[str]]:
    """Parse the subset; returns declared states (id -> label), edges, initial targets."""
    lines = text.split("\n")
    if lines[0] == "---":  # front matter with the title
        end = lines.index("---", 1)
        if not all(re.match(r"^[\w ]+$", line) for line in lines[1:end]):
            raise MermaidError("bad front matter")
        lines = lines[end + 1 :]
    body = [line.strip() for line in lines]
    if not body or body[0] != "stateDiagram-v2":
        raise MermaidError(f"first statement must be stateDiagram-v2, got {body[:1]}")
    states: dict[str, str] = {}
    composites: set[str] = set()
    edges: list[tuple[str, str, list[str]]] = []
    initial: list[str] = []
    classes: set[str] = set()
    depth = 0
    for number, line in enumerate(body, start=1):
        if not line:
            continue
        found = [(name, m) for name, rx in FORMS.items() if (m := rx.match(line))]
        if not found:
            raise MermaidError(f"line {number}: unknown statement {line!r}")
        form, m = found[0]
        if form == "state_decl":
            states[m[2]] = m[1]
        elif form == "composite_open":
            if m[1] not in states:
                raise MermaidError(f"line {number}: composite {m[1]} not declared before")
            composites.add(m[1])
            depth += 1
        elif form == "composite_close":
            depth -= 1
            if depth < 0:
                raise MermaidError(f"line {number}: unbalanced }}")
        elif form == "class_def":
            classes.add(m[1])
        elif form == "class_use":
            if m[2] not in classes:
                raise MermaidError(f"line {number}: class {m[2]} used before classDef")
        elif form == "initial":
            initial.append(m[1])
        elif form == "edge":
            labels = [part.strip() for part in m[3].split(" | ")]
            for label in labels:
                if not LABEL.match(label):
                    raise MermaidError(f"line {number}: bad edge label {label!r}")
            edges.append((m[1], m[2], labels))
    if depth:
        raise MermaidError(f"{depth} unclosed braces")
    for src, dst, _ in edges:
        for s in (src, dst):
            if s not in states:
                raise MermaidError(f"edge references undeclared state {s}")
    for s in initial:
        if s not in states:
            raise MermaidError(f"initial references undeclared state {s}")
    return states, edges, initial


def test_diagram_parses_and_covers_every_phase() -> None:
    text = diagram("mermaid")
    states, edges, initial = parse(text)
    for phase in Phase:
        assert phase.value in states, phase
    assert "idle" in initial and "hand_in_hand_retro_step" in initial
    by_pair = {(s, d): labels for s, d, labels in edges}
    for phase in MOTION_PHASES:
        assert (phase.value, "fault") in by_pair, phase
        assert (phase.value, "paused") in by_pair, phase
        assert any(lab.startswith("pause") for lab in by_pair[(phase.value, "paused")])
        assert (phase.value, "aborted") in by_pair
        assert "abort" in by_pair[(phase.value, "aborted")]
    assert ("fault", "paused") in by_pair and ("fault", "ready") in by_pair
    assert not any(src == "fault" and dst in MOTION_PHASES for src, dst, _ in edges)
    # an end is left only when a callback failed on the way in (e.g. the log could not be written)
    assert all(labels == ["fail"] for src, _, labels in edges if src in ("complete", "aborted"))
    # every labelled transition of the spec shows up
    n_labels = sum(len(labels) for _, _, labels in edges)
    assert n_labels == len(_TRANSITIONS)
    assert ("hand_in_hand_verify", "crossed") in by_pair


@pytest.mark.parametrize(
    "bad",
    [
        "stateDiagram-v2\n  state a {\n",
        "stateDiagram-v2\n  a --> b: go\n",
        'stateDiagram-v2\n  state "a" as a\n  a -> a\n',
        "flowchart LR\n",
        'stateDiagram-v2\n  state "a" as a\n  }\n',
    ],
)
def test_parser_rejects_broken_mermaid(bad: str) -> None:
    with pytest.raises(MermaidError):
        parse(bad)


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="fmt \\(='dot'\\)"):
        diagram("dot")
