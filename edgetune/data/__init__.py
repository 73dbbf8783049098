"""Device-side data for ``edgetune train``: load, check, batch; numpy only, never torch.

>>> spec = ImageSpec(image_size=32, channels=3, num_classes=10)
>>> train, val = split(load_dataset("cifar.npz", spec), fraction=0.1, seed=0)
>>> sampler = BatchSampler(len(train), batch_size=32, seed=0)
>>> batch = train.batch(sampler.batch_indices(epoch=0, index=0))  # {"pixel_values", "labels"}

Every problem with a data file raises :class:`DataError` (an ``EdgetuneError``): one line,
``<file>: <problem>``.
"""

from edgetune.data.base import Dataset, Subset, split
from edgetune.data.errors import DataError
from edgetune.data.folder import ImageFolderDataset, load_image_folder
from edgetune.data.images import ArrayImageDataset, load_npz
from edgetune.data.lm import LMDataset, load_lm
from edgetune.data.loader import load_dataset
from edgetune.data.resize import normalize, resize
from edgetune.data.sampler import BatchSampler, permutation
from edgetune.data.spec import ImageSpec, LMSpec, TextSpec
from edgetune.data.text import TextDataset, load_text
from edgetune.data.tokenizer import build_bpe_tokenizer, build_word_level_tokenizer, load_tokenizer

__all__ = [
    "ArrayImageDataset", "BatchSampler", "DataError", "Dataset", "ImageFolderDataset",
    "ImageSpec", "LMDataset", "LMSpec", "Subset", "TextDataset", "TextSpec", "build_bpe_tokenizer",
    "build_word_level_tokenizer",
    "load_dataset", "load_image_folder", "load_lm", "load_npz", "load_text", "load_tokenizer", "normalize",
    "permutation", "resize", "split",
]
