"""What a run records: typed results (`schema`), the run folder that owns every path (`folder`), the review log's
file format (`review_log`), and the metric columns the table, the INT8 gate and regression checks read (`columns`)."""
