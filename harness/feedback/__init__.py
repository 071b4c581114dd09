"""The review loop: a run's review log, verdicts from people (Label Studio) or a simulated reviewer, and a
feedback policy that uses the verdicts once they have arrived (docs/thresholds.md, "The feedback loop")."""

CONTEXT_ROWS = 150  # records a Label Studio task shows each side of its entry: a day and a half at NAB's usual 5 minutes
