"""Label Studio, for real reviewers: the review log's unjudged entries as Label Studio tasks (its JSON import
format, with a labeling config of one choice: anomaly or normal), and verdicts read back from Label Studio's
JSON export (each task's latest annotation that was not cancelled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.results.review_log import VERDICTS, Entry

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


_ABSENT = object()  # a key the export does not have


def _shown(value: Any) -> str:
    """A bad value as the export spells it, short enough for one line."""
    if value is _ABSENT:
        return "nothing"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _expect(value: Any, kind: type, where: str, path: Path, optional: bool = False) -> Any:
    """`value` if it is a `kind`; an `optional` one may be null or absent (Label Studio leaves out what is not
    there yet), and is then empty. Anything else is one InputError naming the place in the export."""
    if optional and (value is None or value is _ABSENT):
        return kind()
    if not isinstance(value, kind):
        raise InputError(f"expected {'an object' if kind is dict else 'a list'}, got {_shown(value)}", path, where)
    return value


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError("file does not exist", path) from None
    except IsADirectoryError:
        raise InputError("is a folder: expected Label Studio's JSON export file", path) from None
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror})", path) from None
    except RecursionError:  # json's decoder recurses once per level: [[[[...]]]] thousands deep
        raise InputError("expected Label Studio's JSON export, could not parse it (nested too deeply)", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"expected Label Studio's JSON export, could not parse it ({exc})", path) from None


def _verdict(annotation: dict, where: str, path: Path) -> str | None:
    """The annotation's choice in our `verdict` control; None when it has none. Results of other controls, and
    relations (which have no `from_name`), are left alone, but each must still be an object."""
    for k, r in enumerate(_expect(annotation.get("result", _ABSENT), list, f"{where}.result", path, optional=True)):
        r = _expect(r, dict, f"{where}.result[{k}]", path)
        if r.get("from_name") != CONTROL:
            continue
        value = _expect(r.get("value", _ABSENT), dict, f"{where}.result[{k}].value", path)
        choices = _expect(value.get("choices", _ABSENT), list, f"{where}.result[{k}].value.choices", path)
        if choices:
            if choices[0] not in VERDICTS:
                raise InputError(f"verdict must be {' or '.join(VERDICTS)}, got {_shown(choices[0])}", path,
                                 f"{where}.result[{k}].value.choices[0]")
            return choices[0]
    return None


def read_export(path: str | Path) -> dict[str, str]:
    """{review id: verdict} from a Label Studio JSON export: per task, its latest annotation that was not
    cancelled and has a verdict; tasks without one are left out. The whole export is checked before anything is
    returned, so a malformed one changes nothing: one InputError names the place, e.g. tasks[3].annotations."""
    path = Path(path)
    data = _load(path)
    if not isinstance(data, list):
        raise InputError(f"expected Label Studio's JSON export: a list of tasks, got {_shown(data)}", path)
    out = {}
    for n, task in enumerate(data):
        where = f"tasks[{n}]"
        task = _expect(task, dict, where, path)
        rid = _expect(task.get("data", _ABSENT), dict, f"{where}.data", path, optional=True).get("review_id", _ABSENT)
        if not isinstance(rid, str):
            raise InputError(f"expected the id of a review log entry (tasks must come from `harness feedback export`), "
                             f"got {_shown(rid)}", path, f"{where}.data.review_id")
        verdicts = []
        for k, annotation in enumerate(_expect(task.get("annotations", _ABSENT), list, f"{where}.annotations", path, optional=True)):
            annotation = _expect(annotation, dict, f"{where}.annotations[{k}]", path)
            verdict = _verdict(annotation, f"{where}.annotations[{k}]", path)
            if verdict is not None and not annotation.get("was_cancelled"):
                verdicts.append(verdict)
        if verdicts:
            out[rid] = verdicts[-1]  # the latest annotation with a verdict wins
    return out
