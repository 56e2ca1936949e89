"""The race of SPEC 22: push to live for a small Node.js app, the daemon against the old
pipeline as a shell script, on one machine and one sandbox."""
