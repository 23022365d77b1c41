"""Shared test settings: ROOT is the checkout (pytest.ini puts it on sys.path)."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
