"""Blob storage for exposure files and job artifacts."""
