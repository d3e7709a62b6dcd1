"""Public hosting: the server's guard (same origin, logins, API names, upload space), the per-request
and per-visitor limits, the image store's quotas, and public model names (docs/public.md)."""
