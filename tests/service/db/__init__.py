"""Tests of the skyphot service."""
