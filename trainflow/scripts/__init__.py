"""Uploaded training scripts and project archives: receiving, checking, storing."""
