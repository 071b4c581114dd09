"""Label Studio, for real reviewers: the review log's unjudged entries as Label Studio tasks (its JSON import
format, with a labeling config of one choice: anomaly or normal), and verdicts read back from Label Studio's
JSON export (each task's latest annotation that was not cancelled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.feedback.log import VERDICTS, Entry

CONTROL = "verdict"  # the Choices tag's name: what an annotation's result says `from_name`

LABEL_CONFIG = f"""<View>
  <Header value="$title"/>
  <Text name="summary" value="$summary"/>
  <Choices name="{CONTROL}" toName="summary" choice="single" showInline="true" required="true">
    <Choice value="anomaly" hint="a real anomaly: the alert was right (or the window was missed)"/>
    <Choice value="normal" hint="normal behaviour: a false alarm (or a window that marks nothing)"/>
  </Choices>
</View>
"""


def tasks(entries: list[Entry]) -> list[dict[str, Any]]:
    """Label Studio import tasks for the unjudged entries; each carries its review id back."""
    out = []
    for e in entries:
        if e.judged:
            continue
        what = "alert" if e.kind == "alert" else "window without an alert"
        out.append({"data": {
            "review_id": e.id,
            "title": f"{e.stream}: {what} at {e.time}",
            "summary": (f"detector {e.detector} ({e.cell}), {e.policy} threshold {e.threshold:.6g}: "
                        f"score {e.score:.6g} from {e.time} to {e.end_time}, rows {e.first_row}-{e.last_row}"),
            "stream": e.stream, "kind": e.kind, "time": e.time, "end_time": e.end_time, "score": e.score,
        }})
    return out


def read_export(path: str | Path) -> dict[str, str]:
    """{review id: verdict} from a Label Studio JSON export; tasks without a usable annotation are left out."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError("file does not exist", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"expected Label Studio's JSON export, could not parse it ({exc})", path) from None
    if not isinstance(data, list):
        raise InputError("expected Label Studio's JSON export: a list of tasks", path)
    out = {}
    for n, task in enumerate(data):
        rid = (task.get("data") or {}).get("review_id") if isinstance(task, dict) else None
        if not isinstance(rid, str):
            raise InputError(f"task {n}: no data.review_id (tasks must come from `harness feedback export`)", path)
        done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        for annotation in reversed(done):  # the latest annotation with a verdict wins
            choices = [c for r in annotation.get("result") or [] if r.get("from_name") == CONTROL
                       for c in (r.get("value") or {}).get("choices") or []]
            if choices:
                if choices[0] not in VERDICTS:
                    raise InputError(f"task {n} ({rid}): verdict must be {' or '.join(VERDICTS)}, got {choices[0]!r}", path)
                out[rid] = choices[0]
                break
    return out
