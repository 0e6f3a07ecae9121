"""Downloads of official archives (only when a loader is called with `download=True`)."""

import os
import tarfile

import keras


def fetch_and_extract(url, sha256, dest_dir):
    """Downloads `url` into `dest_dir` (checking its SHA-256), then unpacks it there."""
    dest_dir = os.path.abspath(dest_dir)
    os.makedirs(dest_dir, exist_ok=True)
    archive = keras.utils.get_file(origin=url, file_hash=sha256, cache_subdir=dest_dir)
    with tarfile.open(archive) as tar:
        tar.extractall(dest_dir, filter="data")
