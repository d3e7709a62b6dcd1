from core.runtime import configure_threads

configure_threads()

from core.cli import main  # noqa: E402

raise SystemExit(main())
