"""The process: the composition root, the supervisor of app loops, config reloads, the
listening sockets, systemd and signals. May import every layer but the CLI."""
