"""Label Studio, for real reviewers: the review log's unjudged entries as Label Studio tasks, each showing the
stream around its alert as a time series (the values, the detector's score and its threshold) with one choice,
anomaly or normal; and verdicts read back from Label Studio's JSON export, or the same tasks read through its API
(each task's latest annotation that was not cancelled). harness.feedback.labelstudio_api talks to a server."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.corpus.layout import SeriesFile
from harness.errors import InputError
from harness.feedback import CONTEXT_ROWS
from harness.results.review_log import VERDICTS, Entry

CONTROL = "verdict"  # the Choices tag's name: what an annotation's result says `from_name`
VIEW = "stream"  # the TimeSeries tag's name: what the choice is about (`to_name`)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the review log's stamps (harness.results.review_log.stamp)

LABEL_CONFIG = f"""<View>
  <Header value="$title"/>
  <Text name="summary" value="$summary"/>
  <TimeSeries name="{VIEW}" valueType="json" value="$series" timeColumn="time" timeFormat="{TIME_FORMAT}"
              timeDisplayFormat="%Y-%m-%d %H:%M" overviewChannels="value" overviewWidth="100%">
    <Channel column="value" legend="value" strokeColor="#1f77b4" displayFormat=",.4~g" height="180"/>
    <MultiChannel height="180">
      <Channel column="score" legend="anomaly score" strokeColor="#d62728" displayFormat=".4~g"/>
      <Channel column="threshold" legend="threshold" strokeColor="#7f7f7f" displayFormat=".4~g"/>
    </MultiChannel>
    <Channel column="entry" legend="the alert (or the missed window)" strokeColor="#ff7f0e" displayFormat=".0f" height="50"/>
  </TimeSeries>
  <Choices name="{CONTROL}" toName="{VIEW}" choice="single" showInline="true" required="true">
    <Choice value="anomaly" hint="a real anomaly: the alert was right (or the window was missed)"/>
    <Choice value="normal" hint="normal behaviour: a false alarm (or a window that marks nothing)"/>
  </Choices>
</View>
"""


def _numbers(values: np.ndarray) -> list[float | None]:
    """JSON numbers; a missing value (NaN) is null, a gap in the plotted line."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, np.float64)]


def series(f: SeriesFile, scores: np.ndarray, e: Entry, context: int = CONTEXT_ROWS) -> dict[str, list]:
    """The rows around an entry, as Label Studio's TimeSeries reads inline JSON: one list per column."""
    lo, hi = max(0, e.first_row - context), min(f.n_rows, e.last_row + 1 + context)
    times = np.datetime_as_string(np.asarray(f.timestamps[lo:hi], "datetime64[s]"), unit="s")
    rows = np.arange(lo, hi)
    return {"time": [t.replace("T", " ") for t in times], "value": _numbers(f.values[lo:hi]),
            "score": _numbers(np.asarray(scores, np.float64)[lo:hi]), "threshold": [e.threshold] * (hi - lo),
            "entry": ((rows >= e.first_row) & (rows <= e.last_row)).astype(float).tolist()}


def tasks(entries: list[Entry], files: Sequence[SeriesFile], scores: Mapping[str, Sequence[np.ndarray]],
          context: int = CONTEXT_ROWS) -> list[dict[str, Any]]:
    """Label Studio import tasks for the unjudged entries; each carries its review id back, and the stream around
    it (`scores`: each cell's scores, a file each, in the order of `files`)."""
    at = {f.name: k for k, f in enumerate(files)}
    out = []
    for e in entries:
        if e.judged:
            continue
        what = "alert" if e.kind == "alert" else "window without an alert"
        k = at[e.stream]
        out.append({"data": {
            "review_id": e.id,
            "title": f"{e.stream}: {what} at {e.time}",
            "summary": (f"detector {e.detector} ({e.cell}), {e.policy} threshold {e.threshold:.6g}: "
                        f"score {e.score:.6g} from {e.time} to {e.end_time}, rows {e.first_row}-{e.last_row}"),
            "stream": e.stream, "kind": e.kind, "time": e.time, "end_time": e.end_time, "score": e.score,
            "series": series(files[k], scores[e.cell][k], e, context),
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


def _expect(value: Any, kind: type, where: str, path: str | Path, optional: bool = False) -> Any:
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


def _verdict(annotation: dict, where: str, path: str | Path) -> str | None:
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
    """{review id: verdict} from a Label Studio JSON export file (parse_export)."""
    path = Path(path)
    return parse_export(_load(path), path)


def parse_export(data: Any, path: str | Path) -> dict[str, str]:
    """{review id: verdict} from Label Studio's tasks (its JSON export, or the tasks its API lists): per task, its
    latest annotation that was not cancelled and has a verdict; tasks without one are left out. All of it is
    checked before anything is returned, so a malformed one changes nothing: one InputError names `path` (a file,
    or the project's URL) and the place, e.g. tasks[3].annotations."""
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
