"""Apps (job types, upstreams, policies) for the app-loading tests, imported with --app."""
