"""What a run folder shows: its tables (tables), the leaderboard beside NAB's published detectors
(leaderboard), its plots (plots). Each module renders from typed cell results; the run folder
(harness.results.folder) decides where the renders go."""
