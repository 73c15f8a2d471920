import pytest


@pytest.mark.benchmark
def test_x(hello):
    assert hello == 1
