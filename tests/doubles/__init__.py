"""Test doubles: an in-memory engine (:mod:`.runtime`) and a clock moved by hand (:mod:`.clock`).

They live with the tests, outside the ``clawhq`` package, so nothing in production can import
them by accident.
"""
