"""What several tabs share: the Studio's own tables (studio_log), the picture of one session with its
boxes (session), session filters (filters), pictures and figures (render, charts), imports of runs
made elsewhere (importers), and who is asking (visitors)."""
