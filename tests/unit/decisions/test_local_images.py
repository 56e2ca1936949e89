"""Local images after a rollout: only tags naming another revision than the live and the
previous one go; every other tag stays."""

from __future__ import annotations

from reconciler.decisions.local_images import LocalImage, revision_of, stale_tags

LIVE, PREVIOUS, OLD, OLDER = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
REPO = "127.0.0.1:5000/web"


def test_revisions_other_than_the_live_and_previous_go_from_both_image_kinds() -> None:
    images = [
        LocalImage("sha256:1", (f"{REPO}:{LIVE}",)),
        LocalImage("sha256:2", (f"{REPO}:{PREVIOUS}",)),
        LocalImage("sha256:3", (f"{REPO}:{OLD}",)),
        LocalImage("sha256:4", (f"reconciler-test/web:{OLD}", f"reconciler-test/web:{OLDER}")),
        LocalImage("sha256:5", (f"reconciler-test/web:{LIVE}",)),
    ]
    assert stale_tags(images, keep={LIVE, PREVIOUS}) == [
        f"{REPO}:{OLD}",
        f"reconciler-test/web:{OLD}",
        f"reconciler-test/web:{OLDER}",
    ]


def test_tags_that_name_no_revision_stay_even_on_an_old_image() -> None:
    """The cache image's tag, a human's tag, an untagged image: nothing to remove."""
    images = [
        LocalImage("sha256:1", (f"{REPO}:{OLD}", f"{REPO}:cache-test", f"{REPO}:debug")),
        LocalImage("sha256:2", ()),
        LocalImage("sha256:3", ("<none>:<none>",)),
        LocalImage("sha256:4", (f"{REPO}:{OLD[:12]}",)),
    ]
    assert stale_tags(images, keep={LIVE}) == [f"{REPO}:{OLD}"]


def test_the_revision_of_a_reference() -> None:
    assert revision_of(f"{REPO}:{LIVE}") == LIVE
    assert revision_of(f"{REPO}:{LIVE}@sha256:{'e' * 64}") == LIVE
    assert revision_of(f"127.0.0.1:5000/{LIVE}") is None  # a port, not a tag
    assert revision_of(f"{REPO}:latest") is None
    assert revision_of("web") is None
