"""The leaderboard: the run's ok cells ranked beside NAB's published detectors (harness.scoring.published)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.report.tables import markdown
from harness.results.schema import Status
from harness.scoring.profiles import NAB_PROFILES, REFERENCE_PROFILE

if TYPE_CHECKING:
    import pandas as pd

    from harness.plan import Plan

PROFILES = tuple(p.name for p in NAB_PROFILES)  # the leaderboard's nab_<profile> columns
BOARD_METRICS = ["nab_standard", "nab_standard_cv", "nab_reward_low_FP_rate", "nab_reward_low_FN_rate", "f1", "alert_precision",
                 "recall", "range_f1", "latency_mean_s", "fp_events"]


def leaderboard(table: "pd.DataFrame", p: "Plan") -> tuple[str, str]:
    """The run's ok cells ranked with NAB's published detectors (CSV, Markdown).

    Every detector whose raw outputs sit in the corpus's `results/<name>/` is re-scored on the same files (a
    subset too), with the same profiles, probation and threshold policy as the run's cells, so its F1,
    precision, recall, latency and FP events stand beside ours. NAB's published scoreboard covers the whole
    corpus only: it is merged (column `published_standard`, and rows for detectors without raw outputs) only
    when the run used the whole corpus."""
    import pandas as pd

    from harness.scoring.published import published_scoreboard, rescore_published

    ok = table[table["status"] == Status.OK.value]
    rows = [{"detector": r["cell"], "source": "this run", **{m: r[m] for m in BOARD_METRICS}} for _, r in ok.iterrows()]
    thresholds_file = p.scenario.scoring.thresholds if p.thresholds is not None else None
    rescored, notes = rescore_published(p.corpus, p.profiles, p.scenario.scoring.probation_percent, thresholds_file)
    for r in rescored:
        at = r.report.detection[REFERENCE_PROFILE]
        rows.append({
            "detector": r.name,
            "source": "NAB raw outputs, re-scored",
            **{f"nab_{k}": r.report.profiles[k].score for k in PROFILES if k in r.report.profiles},
            "nab_standard_cv": r.standard_cv,
            "f1": at.f1, "alert_precision": at.precision, "recall": at.recall, "range_f1": at.range_f1,
            "latency_mean_s": at.latency_mean_s, "fp_events": at.fp_events,
        })
    published = published_scoreboard(p.corpus_root)
    if published is not None and not p.corpus.only:
        have = {r["detector"] for r in rows if r["source"] != "this run"}
        for r in rows:
            if r["source"] != "this run" and r["detector"] in published:
                r["published_standard"] = published[r["detector"]].get(REFERENCE_PROFILE)
        for name, scores in published.items():
            if name not in have:
                rows.append({"detector": name, "source": "NAB published", **{f"nab_{k}": scores.get(k) for k in PROFILES},
                             "published_standard": scores.get(REFERENCE_PROFILE)})
        notes.append("NAB published: NAB's scoreboard (results/final_results.json), which covers the whole corpus; "
                     "`published_standard` is its standard score beside the re-scored one.")
    elif published is not None:
        notes.append(f"NAB's published scoreboard covers the whole corpus only, so it is not merged for this subset "
                     f"({', '.join(p.corpus.only)}); the published detectors' raw outputs are re-scored on the subset instead.")
    columns = ["detector", "source", *BOARD_METRICS] + (["published_standard"] if any("published_standard" in r for r in rows) else [])
    board = pd.DataFrame(rows, columns=columns)
    board = board.sort_values("nab_standard", ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    md = markdown(board) + ("".join(f"\n- {n}" for n in notes) + "\n" if notes else "")
    return board.to_csv(index=False), md
