import pytest

from tests.lint.deployment import Deployment


@pytest.fixture
def deployment(tmp_path) -> Deployment:
    return Deployment(tmp_path / "deploy")
