"""Execute notebooks/preference_games.ipynb headless on the committed figures/ data (JALIGN_TEST_PIPELINES=1: a fresh quick run)."""

from tests.test_notebooks import check_notebook_executes, kernel_env  # noqa: F401  (fixture)


def test_notebook_executes_headless(kernel_env, tmp_path):  # noqa: F811
    check_notebook_executes("preference_games", kernel_env, tmp_path)
