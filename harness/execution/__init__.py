"""Where tasks run: the Ray runner (the only code that imports Ray) and the placement that turns a task's needs
into Ray options."""
