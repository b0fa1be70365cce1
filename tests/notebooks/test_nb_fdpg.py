"""Execute notebooks/fdpg.ipynb headless (quick settings) and compare its results with figures/ (slow)."""

import pytest

from tests.test_notebooks import check_notebook_executes, kernel_env  # noqa: F401  (fixture)


@pytest.mark.slow
def test_notebook_executes_headless(kernel_env, tmp_path):  # noqa: F811
    check_notebook_executes("fdpg", kernel_env, tmp_path)
