"""The container tests' images: the public bases (pulled, or local stand-ins made here when
no registry is reachable) and the repository's image, built once for the run."""

import pytest

from tests.container.podman import IMAGE, build_image, ensure_base_images, has_podman, inspect


@pytest.fixture(scope="session")
def image():
    """The repository's image, freshly built; its inspect record. Skips only on a machine
    without podman (``make test`` installs it): where podman is, a failure fails."""
    if not has_podman():
        pytest.skip("podman is not installed (make test installs it)")
    ensure_base_images()
    build_image(IMAGE)
    return inspect("image", IMAGE)
