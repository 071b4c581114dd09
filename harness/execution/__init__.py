"""Where tasks run, and the harness's Ray code: the runner (the only module that starts or joins Ray), the
placement that turns a task's needs into Ray options, and the serving cluster (`serving.py`: deployments on Ray
Serve, load generators as actors). Each imports Ray lazily; outside this package only serve/app.py uses Ray."""
