"""The Studio app (Gradio 6): Ask, Inspect, Annotate and Train tabs over one SQLite session log.

`Studio` is what every tab's `build(studio)` receives: the log, the data folder and the
settings given on the command line. app/ui.py puts the tabs on one page; each tab is a folder
(app/ask, app/inspecting, app/annotate, app/training) beside app/shared (map: docs/app.md).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from app.public.limits import ServerLimits
from app.shared.studio_log import StudioLog
from core.media import DEFAULT_MAX_IMAGE_PIXELS

ROOT = Path(__file__).resolve().parents[1]

UI_ONLY = {"api_name": False}
"""For events only the page itself triggers: private (Gradio names them false, false_1, ...), so they
never take a documented name (/open_session) and app/public/guard.py routes no API call to them; the page
calls them by index. The API page lists the named endpoints (/ask, /sessions, /annotate_save, ...)."""


@dataclass
class Studio:
    log: StudioLog
    data_dir: Path
    backend: str = "transformers"  # default backend name for the Ask tab
    model: str | None = None  # default model: hub id, path, or (openai) URL; None = embedded model
    replay: str | None = None  # replay file for --backend replay
    backend_options: dict = field(default_factory=dict)  # load_backend options for the default backend
    enable_training: bool = False
    step_delay: float = 0.0  # pause before each generated turn (demos, crash tests)
    max_upload_mb: float = 200.0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # refused from the header, before decoding
    max_concurrent_runs: int = 8  # questions answered at once (/ask's concurrency limit)
    public: bool = False  # public mode (--public, or on a Space): see docs/public.md
    auth: bool = False  # a login is required (launch(auth=...)): logged-in users are trusted operators
    media_roots: list[Path] = field(default_factory=list)  # folders imports may read pictures from
    # per browser tab (gradio session hash): the cancel events of its running generations
    cancels: dict[str, list[threading.Event]] = field(default_factory=dict)
    # per browser tab (gradio session hash): the visitor token its browser keeps, so a reload keeps the list
    visitors: OrderedDict[str, str] = field(default_factory=OrderedDict)
    limits: ServerLimits = field(default_factory=ServerLimits)  # per-request and per-visitor bounds
    lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs: object = field(default=None, repr=False)

    @property
    def jobs(self):
        """The JobRunner for the Train tab (runs under <data>/runs), made on first use."""
        with self.lock:
            if self._jobs is None:
                from app.training.jobs import JobRunner

                self._jobs = JobRunner(self.log, self.data_dir / "runs")
            return self._jobs

    @property
    def isolate(self) -> bool:
        """Each visitor sees only their own sessions: public mode with no login in front."""
        return self.public and not self.auth

    @property
    def admin(self) -> bool:
        """Import, Annotate, Export and delete are built: off in public mode unless a login is required."""
        return not self.public or self.auth

    @property
    def images_dir(self) -> Path:
        return self.log.images.root

    def served_dirs(self) -> list[Path]:
        """The only folders of the data dir Gradio may serve: pictures made for display and examples."""
        return [self.static_dir(), self.data_dir / "examples", ROOT / "assets"]

    def private_paths(self) -> list[Path]:
        """Never served, whatever else allows it: the DB and its journal, stored images, exports, runs."""
        db = self.log.path
        return [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal"), self.log.images.root,
                self.data_dir / "exports", self.data_dir / "runs", self.data_dir / "logs"]

    def static_dir(self) -> Path:
        """Pictures made for display (crop-beside-source, frame strips), content-addressed too."""
        path = self.data_dir / "views"
        path.mkdir(parents=True, exist_ok=True)
        return path
