"""A pytest plugin of ``scripts/test.sh`` (``-p tests.book_last``): the browser test runs last.

The test command builds the book in the background while pytest runs the
unit tests and the chapters under nbval; the browser test waits for that
build, so it goes after everything else rather than blocking the rest.
"""

BROWSER_TEST = "test_rendered_book.py"


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name == BROWSER_TEST)  # stable: order kept otherwise
