"""The scoring service, in one place: what a served variant is (`config`), its wire format and request checks
(`api`), live streams' state (`streams`), the Ray Serve application (`app`), the HTTP front door Serve loads into
its proxies (`http_guard`), and deploying it from the driver (`deploy`). `serve/config.yaml` at the repository
root describes the same application for `serve run` outside the harness.

Only `app` and `deploy` import Ray; importing this package imports neither.
"""
