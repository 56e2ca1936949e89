"""The kit shared by the test suite and the benchmark; each need has one helper, here.

- `config`: the TOML config builder (`config_text`, `app_table`, `toml_value`).
- `webhooks`: signed GitHub pushes and GitLab token headers; recorded deliveries.
- `net`: `free_port()`.
- `probes`: `eventually(...)`, and what fault tests read off a daemon.
- `inprocess`: the daemon in the test's event loop (`started`, `serving`).
- `world` / `multiapp`: one app, or several, on real parts (`World`, `RunningDaemon`,
  `daemon_for`); `daemon_process`: the daemon as a subprocess (`DaemonProcess`).
- `http_face`: the HTTP app on a real Supervisor with stand-in loops; `cli`: `reconciler ...`.
- `fakes`: in-memory adapters behind the ports (`FakeWorld`).
- `services`, `gitrepo`, `registry_process`, `sshd`: dockerd, the registry, git and sshd.
"""
