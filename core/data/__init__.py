"""Offline datasets, tasks and users' own data (see ``datasets``, ``tasks``, ``user``, ``photos``)."""

from .datasets import (
    IMAGE_SIZE,
    MEAN,
    STD,
    Dataset,
    DatasetUnavailable,
    denormalize,
    fashion_available,
    load_digits,
    load_fashion,
    load_mnist,
    normalize,
    read_idx,
)
from .photos import load_photos, photo_batch
from .subset import stratified_subset, subset_seed
from .tasks import TASKS, available_tasks, get_task, mixture, task_names
from .user import load_user_dataset

__all__ = [
    "IMAGE_SIZE",
    "MEAN",
    "STD",
    "TASKS",
    "Dataset",
    "DatasetUnavailable",
    "available_tasks",
    "denormalize",
    "fashion_available",
    "get_task",
    "load_digits",
    "load_fashion",
    "load_mnist",
    "load_photos",
    "load_user_dataset",
    "mixture",
    "normalize",
    "photo_batch",
    "read_idx",
    "stratified_subset",
    "subset_seed",
    "task_names",
]
