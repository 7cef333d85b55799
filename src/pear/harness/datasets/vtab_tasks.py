"""The 19 VTAB-1k tasks (folder name -> number of classes), their groups and the other
spellings of two folders: plain data, importable without torch (`pear suite --help` lists
the presets made of them)."""

from __future__ import annotations

VTAB_TASKS: dict[str, int] = {
    "cifar": 100,
    "caltech101": 102,
    "dtd": 47,
    "oxford_flowers102": 102,
    "oxford_iiit_pet": 37,
    "svhn": 10,
    "sun397": 397,
    "patch_camelyon": 2,
    "eurosat": 10,
    "resisc45": 45,
    "diabetic_retinopathy": 5,
    "clevr_count": 8,
    "clevr_dist": 6,
    "dmlab": 6,
    "kitti": 4,
    "dsprites_loc": 16,
    "dsprites_ori": 16,
    "smallnorb_azi": 18,
    "smallnorb_ele": 9,
}

# Some public VTAB-1k copies spell these two folders differently.
TASK_ALIASES: dict[str, str] = {"cifar100": "cifar", "oxford_pet": "oxford_iiit_pet"}

_TASK_ORDER = list(VTAB_TASKS)
VTAB_GROUPS: dict[str, list[str]] = {
    "Natural": _TASK_ORDER[:7],
    "Specialized": _TASK_ORDER[7:11],
    "Structured": _TASK_ORDER[11:],
}
