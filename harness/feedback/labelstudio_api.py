"""`harness feedback push|pull RUN --label-studio URL`: the review log's unjudged entries as tasks of a Label
Studio project, and the reviewers' annotations read back, through Label Studio's SDK (`pip install
'harness[labelstudio]'`).

The project is created on the first push, with harness.feedback.labelstudio's labeling config (the stream around
each alert as a time series), and recorded in the run folder (`review/labelstudio-project.json`), so a later push
adds only the entries the project lacks and `pull` needs no project id. The API key is a personal access token
(Label Studio: Account & Settings) or a legacy token, read from `--api-key-file` or `LABEL_STUDIO_API_KEY` (the
SDK's own variable), never from the command line, where `ps` shows it.
"""

from __future__ import annotations

import os
from typing import Any

from harness.errors import InputError, RunStopped

KEY_ENV = "LABEL_STUDIO_API_KEY"
PAGE = 100  # tasks per page when listing a project


def api_key(path: str | None) -> tuple[str, str]:
    """(the API key, where it came from) from `--api-key-file`, else LABEL_STUDIO_API_KEY; one InputError line if
    neither has one."""
    from harness.tokens import read_token

    if path is not None:
        return read_token(path, "--api-key-file"), "--api-key-file"
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise InputError(f"no API key: pass --api-key-file PATH or set {KEY_ENV} (a personal access token, from "
                         "Label Studio's Account & Settings)", field="--label-studio")
    return key, KEY_ENV


class ServerError(RunStopped):
    """Label Studio answered with an error status (exit 1, one line)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class Server:
    """One Label Studio, its failures turned into one line each: a URL where nothing answers or a refused key
    is the user's input (exit 2); anything else the server says is named with its status (exit 1)."""

    def __init__(self, url: str, key: str, key_source: str, timeout_s: float = 60.0):
        try:
            from label_studio_sdk import LabelStudio
        except ImportError:
            raise InputError("Label Studio's SDK is not installed: pip install 'harness[labelstudio]'",
                             field="--label-studio") from None
        self.url, self.key_source = url.rstrip("/"), key_source
        self.ls = LabelStudio(base_url=self.url, api_key=key, timeout=timeout_s)
        self.call(self.ls.users.whoami)  # the URL and the key, checked before anything is sent

    def call(self, method, *args: Any, **kwargs: Any) -> Any:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            return method(*args, **kwargs)
        except httpx.TransportError as exc:
            raise InputError(f"cannot reach Label Studio at {self.url} ({type(exc).__name__}: {exc})",
                             field="--label-studio") from None
        except ApiError as exc:
            detail = exc.body.get("detail") if isinstance(exc.body, dict) else exc.body
            if exc.status_code in (401, 403):
                raise InputError(f"Label Studio at {self.url} refused the API key from {self.key_source} "
                                 f"(HTTP {exc.status_code}: {detail})", field="--label-studio") from None
            raise ServerError(f"Label Studio at {self.url} answered HTTP {exc.status_code}: {detail}", exc.status_code) from None

    def project(self, project_id: int | None, title: str, label_config: str) -> tuple[int, bool]:
        """(id, created): the recorded project if the server still has it, else a new one with `label_config`."""
        if project_id is not None:
            try:
                self.call(self.ls.projects.get, id=project_id)
                return project_id, False
            except ServerError as exc:
                if exc.status != 404:
                    raise
        made = self.call(self.ls.projects.create, title=title, label_config=label_config,
                         description="review of a harness run's alerts: is each an anomaly, or normal?")
        return made.id, True

    def tasks(self, project_id: int) -> list[dict]:
        """Every task of the project with its annotations, as Label Studio's JSON export holds them."""
        pages = self.call(self.ls.tasks.list, project=project_id, fields="all", page_size=PAGE)
        return [{"id": t.id, "data": t.data, "annotations": t.annotations or []} for t in self.call(list, pages)]

    def add(self, project_id: int, todo: list[dict]) -> int:
        """Import the tasks the project does not have yet (by review id); returns how many were added."""
        have = {t["data"].get("review_id") for t in self.tasks(project_id)}
        new = [t for t in todo if t["data"]["review_id"] not in have]
        if new:
            self.call(self.ls.projects.import_tasks, id=project_id, request=new)
        return len(new)
