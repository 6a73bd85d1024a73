"""labelled_data: the layout of labelled radiograph datasets, shared by training, retrieval and the input gate's fit.

A ground-floor room (imports only `imaging`, for the one decoding path). Public surface:
- `Sample`, `DataOptions`, `DatasetError`: one labelled image; how a dataset becomes a binary task and its splits
- `discover`, `read_manifest`, `load_samples`, `select`, `relabel`: finding samples and defining the task
- `split_by_patient`, `assign_test_split`, `patient_id_from_name`: patient-level splits
- `cache_images`, `load_square_images`, `label_indices`: decoded, cached arrays for training and evaluation
- nodules (labelled_data.nodules): `NoduleSample` (image label + radiologist boxes), `load_boxed_set`
  (nih-nodule-boxes), `load_weak_set` (nih-nodule by `split_aligned`), `parse_boxes`;
  `read_expert_nodule_reads(DIR)` (labelled_data.expert_reads): the workstation's exported nodule reviews
- `DataSource`, `parse_source`, `load_source`, `train_val_split`: several datasets in one run, each with its own task
  definition, population tag and validation split
"""

from labelled_data.catalog import (
    IMAGE_SUFFIXES,
    DataOptions,
    DatasetError,
    Sample,
    assign_test_split,
    cache_images,
    discover,
    label_indices,
    load_samples,
    load_square_images,
    patient_id_from_name,
    read_manifest,
    relabel,
    select,
    split_by_patient,
)
from labelled_data.expert_reads import read_expert_nodule_reads
from labelled_data.nodules import NoduleSample, load_boxed_set, load_weak_set, parse_boxes
from labelled_data.sources import DataSource, load_source, parse_source, train_val_split

__all__ = [
    "IMAGE_SUFFIXES",
    "DataOptions",
    "DataSource",
    "DatasetError",
    "NoduleSample",
    "Sample",
    "assign_test_split",
    "cache_images",
    "discover",
    "label_indices",
    "load_boxed_set",
    "load_samples",
    "load_source",
    "load_square_images",
    "load_weak_set",
    "parse_boxes",
    "parse_source",
    "patient_id_from_name",
    "read_expert_nodule_reads",
    "read_manifest",
    "relabel",
    "select",
    "split_by_patient",
    "train_val_split",
]
