"""The dashboard the daemon serves: HTML pages of every app, live phase updates over
Server-Sent Events, and the templates, stylesheet and script they need (all in this package,
nothing from elsewhere). `dashboard.setup` mounts it on the HTTP app."""
