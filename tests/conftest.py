"""Shared test settings: ROOT is the checkout (pytest.ini puts it on sys.path); tests marked `longest` are
collected first, so that with the suite spread over the cores (pytest-xdist) none of them starts last and
leaves the other workers idle at the end."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)   # stable: the rest keep their order
